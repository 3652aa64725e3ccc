"""deployval: does the deployed model still compute what the PyTorch model computes, and how fast?"""

from ._version import __version__

__all__ = ["__version__"]
