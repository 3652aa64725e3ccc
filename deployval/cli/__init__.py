"""The command line. Thin: parse -> call the pipeline -> render -> exit code. One module per command
(compare.py, validate.py, ...), taking the option groups of groups.py, the other helpers they share in
common.py; a new command is a module here, registered below.

Exit codes: 0 every requested check passed; 1 an accuracy check failed; 2 bad usage or bad input
(one line on stderr); 3 a requested backend could not run. Only typer and deployval's light
modules are imported at start-up, so `deployval --help` does not pay for torch.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from ..errors import DeployvalError, ExitCode, first_line
from .common import set_argv
from .compare import compare_command
from .debug import debug_command
from .export import export_command
from .helptext import HelpfulCommand, examples
from .models import backends_command, models_command
from .precision import precision_command
from .report import report_app
from .validate import validate_command

app = typer.Typer(
    name="deployval",
    help="Does the deployed model still compute what the PyTorch model computes, and how fast?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from .._version import __version__

        typer.echo(f"deployval {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Does the deployed model still compute what the PyTorch model computes, and how fast?"""


EXAMPLES = {
    "compare": examples(
        "deployval compare convs",
        "deployval compare fine_organs --backends torch,ort --precisions fp32,fp16 --json report.json",
        "deployval compare mypkg.models:build_net --input-shape x=1x3x224x224 --checkpoint weights.pt",
        "deployval compare net.py:build_net --input-shape x=1x3x224x224 --isolate",
        "deployval compare model.onnx -p fp32,fp16,int8 --calibration samples/",
        "deployval compare convs --dataset samples/ --worst 5 --html report.html"),
    "validate": examples(
        "deployval validate fine_organs --json fine_organs.json --junit fine_organs.junit.xml",
        "deployval validate --all --manifest release.toml --json release.json"),
    "precision": examples(
        "deployval precision convs --precision int8",
        "deployval precision model.onnx --precision fp16 --json sensitivity.json",
        "deployval precision convs --sweep --bits 2-8 --plot sweep.png"),
    "export": examples("deployval export convs --out artifacts/",
                       "deployval export model.ts --input-shape x=1x3x224x224 --out artifacts/ --kinds onnx"),
    "models": examples("deployval models"),
    "backends": examples("deployval backends"),
    "debug": examples("deployval debug convs --backend ort --precision fp16 --html layers.html",
                      "deployval debug model.onnx --backend ort --precision int8 --json layers.json"),
}

for name, command in (("compare", compare_command), ("validate", validate_command), ("precision", precision_command),
                      ("export", export_command), ("models", models_command), ("backends", backends_command),
                      ("debug", debug_command)):
    app.command(name, cls=HelpfulCommand, epilog=EXAMPLES[name])(command)
app.add_typer(report_app, name="report")


def _click_exceptions() -> Any:
    try:  # typer >= 0.20 carries its own copy of click
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - older typer on top of click
        from click import exceptions
    return exceptions


def _usage_message(exc: Any, click_exceptions: Any) -> str:
    """Click's message, but an unknown option suggests only options that look like it (click offers
    any with a ratio of 0.6: `--onnxrt` got `--worst`)."""
    if isinstance(exc, click_exceptions.NoSuchOption):
        import difflib

        close = difflib.get_close_matches(exc.option_name, exc.possibilities or [], n=3, cutoff=0.8)
        return f"No such option: {exc.option_name}" + (f" (did you mean {' or '.join(close)}?)" if close else "")
    return str(exc.format_message())


def main(argv: list[str] | None = None) -> int:
    """Entry point: every error becomes one line on stderr and its exit code, never a traceback."""
    from ..errors import print_error

    set_argv(list(sys.argv[1:] if argv is None else argv))
    click_exceptions = _click_exceptions()
    exit_types = (typer.Exit, getattr(click_exceptions, "Exit", typer.Exit))
    abort_types = (typer.Abort, getattr(click_exceptions, "Abort", typer.Abort))
    try:
        code = app(args=argv, standalone_mode=False, prog_name="deployval")
        return int(code) if isinstance(code, int) else 0
    except exit_types as exc:
        return int(exc.exit_code or 0)
    except abort_types:
        print_error("aborted")
        return 130
    except click_exceptions.ClickException as exc:  # bad option, missing argument, wrong type
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print_error(f"{' '.join(_usage_message(exc, click_exceptions).split())}{hint}")
        return int(ExitCode.USAGE)
    except DeployvalError as exc:
        print_error(exc.one_line())
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except Exception as exc:
        if os.environ.get("DEPLOYVAL_DEBUG"):
            raise
        print_error(f"internal error: {first_line(exc)} (set DEPLOYVAL_DEBUG=1 for the traceback)")
        return int(ExitCode.BACKEND)


def run() -> None:
    code = main()
    # Tearing down torch, onnxscript and their thread pools takes ~1.5 s at interpreter exit, and
    # nothing is left to flush: reports are written (fsync'd) and temp directories removed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
