"""The CLI's option groups: each command's options land in the right group fields, a command offers
exactly its options, and what the groups make of them (RunConfig, backend options, reproduction
arguments) survives a round trip through the reproduction line. No model is run."""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from conftest import ROOT, assert_one_line_error

from deployval.cli import app
from deployval.cli.common import backend_options
from deployval.cli.grouping import Omit, grouped, run_config, run_settings
from deployval.cli.groups import BackendSettings, Cache, ModelInputs, Quantization, Tolerances
from deployval.errors import UsageError
from deployval.model.spec import RunConfig


@dataclass
class FakeSpec:
    """What run_config and the reproduction line read of a spec (resolving a real model needs torch)."""

    name: str = "m"
    run_defaults: dict[str, Any] = field(default_factory=dict)


def click_command(*path: str) -> Any:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


def parse(*argv: str, path: tuple[str, ...] = ()) -> dict[str, Any]:
    """The body's arguments (one object per group) for `deployval <command> argv`, as typer parses them."""
    path = path or (argv[0],)
    argv = argv[len(path):] if argv[:len(path)] == path else argv
    command = click_command(*path)
    ctx = command.make_context(" ".join(path), [str(a) for a in argv])
    values = dict(ctx.params)
    for param in command.params:  # as typer hands them on: lists, and None for a repeatable option not given
        if isinstance(values[param.name], tuple):
            values[param.name] = list(values[param.name]) or (None if param.default is None else [])
    return command.callback.bind(values)


def options(*path: str) -> list[str]:
    return [opt for p in click_command(*path).params for opt in p.opts + p.secondary_opts if opt.startswith("-")]


MODEL_INPUTS = ["--inputs", "--input-shape", "--input-range", "--checkpoint", "--trust-checkpoint"]
QUANT = ["--calibration", "--calibration-preprocess", "--calibration-limit", "--calibration-method"]
BACKEND = ["--keep-int64", "--trt-workspace", "--trt-fp16-route", "--backend-option"]
REPORTS = ["--json", "--junit", "--markdown", "--html"]
CACHE = ["--cache-dir", "--no-cache", "--quiet", "-q"]
DATASET = ["--dataset", "--limit", "--preprocess", "--save-failing", "--worst", "--pass-fraction", "--labels",
           "--max-top1-drop", "--max-dice-drop", "--shape-grid", "--batch-invariance", "--ray", "--ray-address",
           "--ray-workers"]

# Every command's options (order aside): none added, none lost by the grouping.
EXPECTED = {
    ("compare",): ["--backends", "-b", "--precisions", "-p", *MODEL_INPUTS, "--allow-nonfinite-inputs", "--seed",
                   "--submodule", "--arg", "--save-inputs", "--save-outputs", "--expected", "--atol", "--rtol",
                   "--tolerance", "--slices", "--task", "--judge", "--allow-nonfinite", "--warmup", "--iterations",
                   "--time-budget", "--repeat", "--device", "--exporter", *QUANT, "--int8-exclude",
                   "--int8-activation-matmuls", "--keep-fp32", *BACKEND, "--isolate", "--no-isolate", "--timeout",
                   *DATASET, *REPORTS, *CACHE, "--verbose", "-v"],
    ("validate",): ["--all", "--manifest", "--shard", "--device", *MODEL_INPUTS, "--seed", "--submodule", "--arg",
                    "--slices", "--task", "--judge", "--allow-nonfinite", "--iterations", "--time-budget", "--repeat",
                    *QUANT,
                    "--int8-exclude",
                    "--int8-activation-matmuls",
                    "--keep-fp32", *BACKEND, "--isolate", "--no-isolate", "--timeout", *DATASET, *REPORTS, *CACHE,
                    "--verbose", "-v"],
    ("debug",): ["--backend", "-b", "--precision", "-p", "--modules", "-m", *MODEL_INPUTS, "--allow-nonfinite-inputs",
                 "--seed", "--arg", "--atol", "--rtol", "--slices", "--device", "--exporter", *QUANT, "--int8-exclude",
                 "--int8-activation-matmuls", "--keep-fp32", "--dataset", "--limit", "--preprocess", "--json",
                 "--html", "--repro",
                 "--model-explorer", "--cache-dir",
                 "--no-cache", "--memory-budget", "--own-errors", "--triage", "--no-triage", "--quiet", "-q"],
    ("precision",): ["--precision", "-p", "--sweep", "--bits", "--plot", *MODEL_INPUTS, "--allow-nonfinite-inputs",
                     "--seed", "--arg", "--atol", "--rtol", "--tolerance", "--slices", *QUANT,
                     "--int8-activation-matmuls",
                     "--exporter",
                     "--verify", "--no-verify", "--all-layers", "--json", "--dataset", "--limit", "--preprocess",
                     "--labels", *CACHE],
    ("export",): ["--out", "-o", "--kinds", *MODEL_INPUTS, "--seed", "--arg", "--exporter", *QUANT, "--int8-exclude",
                  "--int8-activation-matmuls", "--keep-fp32", *CACHE],
    ("report", "merge"): ["--json", "--junit", "--markdown", "--allow-missing-shards"],
    ("report", "diff"): ["--json", "--markdown", "--error-growth", "--error-floor", "--latency-tolerance"],
}


@pytest.mark.parametrize("path", list(EXPECTED), ids=" ".join)
def test_every_command_offers_exactly_its_options(path):
    assert sorted(options(*path)) == sorted(EXPECTED[path])
    assert len(options(*path)) == len(set(options(*path)))


def test_compare_options_land_in_their_groups():
    args = parse("compare", "m.onnx", "-b", "torch,ort", "-p", "fp16", "--inputs", "x.npz", "--save-inputs", "s.npz",
                 "--input-shape", "x=1x3x8x8", "--input-shape", "y=2", "--input-range", "x=0,1", "--checkpoint", "w.pt",
                 "--trust-checkpoint", "--allow-nonfinite-inputs", "--seed", "7", "--submodule", "head", "--arg",
                 "sr=16000", "--atol", "0.1", "--rtol", "0.2", "--warmup", "3", "--iterations", "5", "--time-budget",
                 "0.5", "--device", "cuda", "--exporter", "legacy", "--calibration", "cal", "--calibration-preprocess",
                 "scale=1", "--calibration-limit", "4", "--calibration-method", "entropy", "--int8-exclude", "op:Add",
                 "--int8-activation-matmuls", "--keep-fp32", "head*", "--keep-int64", "--trt-workspace", "64",
                 "--trt-fp16-route", "flag", "--backend-option", "ort-trt.workspace_mb=8", "--isolate", "--timeout",
                 "9", "--json", "r.json", "--junit", "r.xml", "--markdown", "r.md", "--html", "r.html",
                 "--cache-dir", "c", "--no-cache", "-q")
    src, tol, timing, export, quant = args["src"], args["tol"], args["timing"], args["export"], args["quant"]
    assert (args["backends"], args["precisions"], args["device"], args["save_inputs"]) == (
        "torch,ort", "fp16", "cuda", Path("s.npz"))
    assert (src.model, src.inputs, src.input_shape, src.input_range, src.checkpoint) == (
        "m.onnx", Path("x.npz"), ["x=1x3x8x8", "y=2"], ["x=0,1"], Path("w.pt"))
    assert (src.trust_checkpoint, src.allow_nonfinite_inputs, src.seed, src.submodule, src.arg) == (
        True, True, 7, ["head"], ["sr=16000"])
    assert (tol.atol, tol.rtol, timing.warmup, timing.iterations, timing.time_budget) == (0.1, 0.2, 3, 5, 0.5)
    assert export.exporter == "legacy"
    assert (quant.calibration, quant.calibration_preprocess, quant.calibration_limit, quant.calibration_method) == (
        Path("cal"), "scale=1", 4, "entropy")
    assert (quant.int8_exclude, quant.int8_activation_matmuls, quant.keep_fp32) == (["op:Add"], True, ["head*"])
    backend = args["backend"]
    assert (backend.keep_int64, backend.trt_workspace, backend.trt_fp16_route, backend.backend_option) == (
        True, 64, "flag", ["ort-trt.workspace_mb=8"])
    assert (args["isolation"].isolate, args["isolation"].timeout) == (True, 9.0)
    files = args["files"]
    assert (files.json_path, files.junit, files.markdown, files.html) == tuple(map(Path, ("r.json", "r.xml", "r.md",
                                                                                          "r.html")))
    assert (args["cache"].cache_dir, args["cache"].no_cache, args["display"].quiet) == (Path("c"), True, True)


def test_defaults_and_subclassed_fields():
    args = parse("compare", "m")
    assert args["src"] == ModelInputs("m") and args["tol"] == Tolerances() and args["cache"] == Cache()
    # --backends defaults per model (torch,torchscript,ort; ort for an ONNX file), when the model is known
    assert (args["backends"], args["precisions"], args["device"]) == (None, "fp32", "cpu")
    debug = parse("debug", "m.onnx", "--atol", "0.5", "--html", "d.html", "-m", "a.*")
    assert type(debug["tol"]).__name__ == "LayerTolerances" and debug["tol"].atol == 0.5
    assert debug["files"].html == Path("d.html") and debug["modules"] == ["a.*"]
    helps = {p.opts[0]: p.help for p in click_command("debug").params}
    assert helps["--atol"] == "Elementwise absolute tolerance for every layer."
    assert parse("validate", "--all")["src"].model is None
    merge = parse("report", "merge", "a.json", "b.json", "--junit", "j.xml", path=("report", "merge"))
    assert merge["reports"] == [Path("a.json"), Path("b.json")] and merge["files"].junit == Path("j.xml")
    assert not merge["files"].offers("html")


def test_an_omitted_option_is_refused(cli):
    assert_one_line_error(cli("export", "m", "--out", "o", "--submodule", "x"), 2, "No such option: --submodule")
    assert_one_line_error(cli("validate", "m", "--warmup", "2"), 2, "No such option: --warmup")
    assert_one_line_error(cli("precision", "m", "--keep-fp32", "x"), 2, "No such option: --keep-fp32")


def test_omitted_fields_leave_the_spec_defaults_alone():
    spec = FakeSpec(run_defaults={"int8_exclude": ("op:Add",), "keep_fp32": ("head",), "warmup": 4,
                                  "time_budget_s": 1.0})

    def config(*argv: str) -> RunConfig:
        args = parse(*argv)
        groups = [v for k, v in args.items() if k in ("src", "tol", "timing", "export", "quant", "backend",
                                                       "isolation", "cache")]
        return run_config(spec, run_settings(*groups))

    precision = config("precision", "m", "--int8-activation-matmuls")  # offers neither --int8-exclude nor --keep-fp32
    assert (precision.int8_exclude, precision.keep_fp32) == (("op:Add",), ("head",))
    assert precision.int8_activation_matmuls and precision.backend_options == {}
    export = config("export", "m", "--out", "o")  # offers both: the command line's (empty) value wins, as before
    assert (export.int8_exclude, export.keep_fp32) == ((), ())
    assert config("validate", "m").warmup == 4  # no --warmup in validate
    assert config("compare", "m").warmup == 1 and config("compare", "m").time_budget_s == 1.0


ROUND_TRIP = [
    [],
    ["--seed", "3", "--input-shape", "x=1x3x8x8", "--input-range", "x=-1,1", "--arg", "sr=8000", "--arg", "mode=a"],
    ["--atol", "0.01", "--rtol", "0.001", "--warmup", "2", "--time-budget", "0.25", "--exporter", "legacy",
     "--calibration", "cal", "--calibration-preprocess", "scale=0.5", "--calibration-limit", "8",
     "--calibration-method", "percentile", "--int8-exclude", "op:Add", "--int8-exclude", "head.*",
     "--keep-fp32", "norm", "--int8-activation-matmuls", "--keep-int64", "--trt-fp16-route", "flag",
     "--backend-option", "trt.workspace_mb=1024", "--isolate", "--timeout", "30", "--allow-nonfinite-inputs"],
    ["--iterations", "0", "--trt-workspace", "512", "--no-isolate", "--inputs", "x.npz", "--checkpoint", "w.pt",
     "--submodule", "head"],
]


@pytest.mark.parametrize("argv", ROUND_TRIP)
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_reproduction_line_parses_back_to_the_same_run(argv, device):
    spec = FakeSpec(name="m.head")

    def build(args: dict[str, Any]) -> tuple[RunConfig, Any]:
        src, export = args["src"], args["export"]
        groups = [args[k] for k in ("src", "tol", "timing", "export", "quant", "backend", "isolation", "cache")]
        config = run_config(spec, run_settings(*groups, device=args["device"]))
        return config, src.invocation(spec, config, *export.args())

    first = parse("compare", "m", "--device", device, *argv)
    config, invocation = build(first)
    line = shlex.split(invocation.command("torch,ort", "fp32", device))
    assert line[:3] == ["deployval", "compare", "m"]
    again = parse(*line[1:])
    config_again, invocation_again = build(again)
    assert config_again == config
    assert invocation_again == invocation
    for name in ("inputs", "input_shape", "input_range", "checkpoint", "arg", "submodule", "allow_nonfinite_inputs"):
        assert getattr(again["src"], name) == getattr(first["src"], name), name
    if not first["src"].inputs:
        assert again["src"].seed == first["src"].seed


def test_backend_settings_validate_and_merge_with_quantization():
    settings = run_settings(BackendSettings(keep_int64=True, trt_workspace=256),
                            Quantization(int8_activation_matmuls=True))
    assert settings["backend_options"] == {"trt": {"keep_int64": True, "workspace_mb": 256},
                                           "ort-trt": {"workspace_mb": 256}}
    assert settings["int8_activation_matmuls"] is True
    assert settings["backend_options"] == backend_options(True, 256, "onnx")
    with pytest.raises(UsageError, match="--trt-fp16-route"):
        BackendSettings(trt_fp16_route="fast").options()
    with pytest.raises(UsageError, match="--trt-workspace"):
        BackendSettings(trt_workspace=0).options()
    with pytest.raises(UsageError):  # the flag and --backend-option set one field
        BackendSettings(trt_workspace=256, backend_option=["trt.workspace_mb=512"]).options()
    assert "backend_options" not in run_settings(Tolerances(), Cache())  # the spec's stay


def test_grouped_rejects_clashing_or_unknown_fields():
    def clash(*, a: Tolerances, b: Tolerances) -> None:
        pass

    def unknown(*, a: Annotated[Tolerances, Omit("warmup")]) -> None:
        pass

    with pytest.raises(TypeError, match="atol"):
        grouped(clash)
    with pytest.raises(TypeError, match="warmup"):
        grouped(unknown)


def test_cli_import_stays_light():
    code = ("import sys, deployval.cli; "
            "print(sorted(m for m in ('torch', 'numpy', 'onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"
