"""`python -m deployval`."""

from .cli import run

run()
