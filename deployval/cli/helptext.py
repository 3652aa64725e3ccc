"""Help a person can read, without paying for rich at start-up: options in panels (each group names
its panel, `Group.panel`; a command's own options name theirs with `rich_help_panel`), metavars that
say what a value looks like instead of `<list[str]>`, a usage line without braces, and examples.
Click's plain formatter draws it: `deployval --help` stays fast."""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperCommand

# Panels in the order a user reaches for them; a panel not named here follows, in order of appearance.
PANEL_ORDER = ("Model and inputs", "Backends and precisions", "Tolerances and task checks", "int8 and fp16",
               "Timing", "Data sets", "Reports", "Cache and isolation")

# What each value looks like; an option not named here gets one by its type (N, X, PATH, TEXT).
METAVARS = {
    "--backends": "LIST", "--precisions": "LIST", "--precision": "PRECISION", "--kinds": "LIST",
    "--shard": "I/N", "--memory-budget": "MIB", "--inputs": "FILE",
    "--input-shape": "NAME=SHAPE[:DTYPE]", "--input-range": "NAME=LOW,HIGH", "--checkpoint": "FILE",
    "--submodule": "NAME|all", "--arg": "NAME=VALUE", "--save-inputs": "FILE.npz", "--save-outputs": "FILE.npz",
    "--expected": "FILE.npz", "--tolerance": "METRIC=X,...", "--slices": "OUTPUT:AXIS[=GROUPS]",
    "--task": "CHECK", "--judge": "norms|task|both", "--device": "cpu|cuda", "--exporter": "dynamo|legacy",
    "--calibration": "DIR", "--calibration-preprocess": "SPEC", "--calibration-method": "minmax|entropy|percentile",
    "--int8-exclude": "NODE|op:TYPE", "--keep-fp32": "MODULE|node:NAME|op:TYPE", "--trt-workspace": "MIB",
    "--trt-fp16-route": "onnx|flag", "--backend-option": "BACKEND.FIELD=VALUE", "--timeout": "SECONDS",
    "--time-budget": "SECONDS", "--dataset": "DIR", "--preprocess": "SPEC", "--save-failing": "DIR",
    "--worst": "K", "--labels": "FILE.csv", "--shape-grid": "NAME=S1,S2,...", "--ray-address": "ADDRESS",
    "--json": "FILE", "--junit": "FILE", "--markdown": "FILE", "--html": "FILE", "--cache-dir": "DIR",
    "--max-top1-drop": "X[%]", "--max-dice-drop": "X", "--latency-tolerance": "X[%]",
    "--bits": "RANGE", "--plot": "FILE.png", "--backend": "NAME", "--modules": "LIST",
}
BY_TYPE = {"<int>": "N", "<float>": "X", "<path>": "PATH"}


def readable_metavar(param: Any, ctx: Any) -> str:
    for name in param.opts:
        if name in METAVARS:
            return METAVARS[name]
    return BY_TYPE.get(param.display_type(ctx), "TEXT")


class HelpfulCommand(TyperCommand):
    """A typer command whose help shows its options by panel, in the order a user reaches for them, the
    command's own options last."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [re.sub(r"^\{(.+)\}(\.\.\.)?$", r"\1\2", piece) for piece in super().collect_usage_pieces(ctx)]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments: list[tuple[str, str]] = []
        panels: dict[str | None, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                if not param.hidden:
                    arguments.append((param.metavar or param.name.upper(), param.help or ""))
                continue
            if param.param_type_name != "option":
                continue
            if param.metavar is None and not param.is_flag and not param.count:
                param.metavar = readable_metavar(param, ctx)
            record = param.get_help_record(ctx)
            if record is not None:
                panels.setdefault(getattr(param, "rich_help_panel", None), []).append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        own = f"{(self.name or 'command').capitalize()} options"  # the command's own, and --help
        named = {(own if panel is None else panel): records for panel, records in panels.items()}
        order = [*PANEL_ORDER, *(panel for panel in named if panel not in PANEL_ORDER and panel != own), own]
        for panel in sorted(named, key=order.index):
            with formatter.section(panel):
                formatter.write_dl(named[panel])


def examples(*lines: str) -> str:
    """An epilog of example command lines, kept as written (click rewraps a paragraph unless it starts
    with \\b)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
