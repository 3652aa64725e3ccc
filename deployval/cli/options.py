"""Command-line option types that belong to one command rather than to a group (typer only: no heavy
import). The options commands share are declared once, as groups, in `deployval/cli/groups.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

BACKENDS_PANEL, INPUTS_PANEL = "Backends and precisions", "Model and inputs"  # as the groups name them

DeviceOpt = Annotated[str, typer.Option("--device", help="cpu or cuda.", rich_help_panel=BACKENDS_PANEL)]
BackendsOpt = Annotated[str | None, typer.Option(
    "--backends", "-b", help="Comma-separated backends (see `deployval backends`) [default: torch,torchscript,ort; "
                             "for an ONNX file: ort].", show_default=False, rich_help_panel=BACKENDS_PANEL)]
PrecisionsOpt = Annotated[str, typer.Option("--precisions", "-p", help="fp32, fp16, bf16, int8 (comma-separated).",
                                            rich_help_panel=BACKENDS_PANEL)]
SaveInputsOpt = Annotated[Path | None, typer.Option("--save-inputs", help="Write the inputs used (.npz) for replay.",
                                                    rich_help_panel=INPUTS_PANEL)]
SaveOutputsOpt = Annotated[Path | None, typer.Option(
    "--save-outputs", help="Write the reference's outputs (.npz, golden outputs) for a later --expected.",
    rich_help_panel=INPUTS_PANEL)]
ExpectedOpt = Annotated[Path | None, typer.Option(
    "--expected", help="Golden outputs (.npz, one array per output, e.g. from --save-outputs): judge every row "
                       "against them; for an ONNX or TorchScript file in place of the reference run.",
    rich_help_panel=INPUTS_PANEL)]

TargetPrecisionOpt = Annotated[str, typer.Option(
    "--precision", "-p", help="int8 (Q/DQ on ONNX Runtime) or fp16 (torch half): the precision to analyse.")]
SweepOpt = Annotated[bool, typer.Option(
    "--sweep", help="Instead: fake-quantize every weight to N bits (per tensor and per channel) and measure the "
                    "outputs for each N.")]
BitsOpt = Annotated[str, typer.Option("--bits", help="With --sweep: the bit widths, e.g. 2-8 or 4,6,8.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="With --sweep: write the error-vs-bits plot (PNG).")]
VerifyOpt = Annotated[bool, typer.Option(
    "--verify/--no-verify", help="Build and compare the proposal exactly as `deployval compare` would.")]
AllLayersOpt = Annotated[bool, typer.Option("--all-layers", help="Show every layer, not only the most sensitive.")]
