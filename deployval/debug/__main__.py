"""`python -m deployval.debug MODEL ...`: the same as `deployval debug MODEL ...` (the command lives in
deployval/cli/debug.py), with the CLI's error handling and exit codes."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    # Up the layers on purpose: `python -m deployval.debug` is a second door into the command line.
    from ..cli import main as cli_main

    return cli_main(["debug", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # like deployval.cli.run: skip torch's slow interpreter teardown
