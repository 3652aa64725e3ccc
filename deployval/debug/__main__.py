"""`python -m deployval.debug MODEL ...`: the debug command with the CLI's error handling and exit
codes, usable whether or not `deployval debug` is registered in the main CLI."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from ..cli import app
    from ..cli import main as cli_main
    from .command import debug_command

    if not any(c.name == "debug" for c in app.registered_commands):
        app.command("debug")(debug_command)
    return cli_main(["debug", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # like deployval.cli.run: skip torch's slow interpreter teardown
