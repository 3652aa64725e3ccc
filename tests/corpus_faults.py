"""Fault cases of the reliability corpus: interrupted and killed runs, crashes in the reference, output
paths that collide. Every requested report must survive, marked incomplete.

Signals are real: the case starts `python -m deployval` in its own process (tests/ and a directory that
names the faulty backends of faulty_backends.py as entry points on PYTHONPATH), waits until the faulty
row has begun (it writes its process id to $FAULTY_STARTED), and sends the signal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
from conftest import TESTS
from corpus import Case, Outcome
from faulty_backends import install_entry_points

REPORTS = ("json", "junit", "markdown", "html")
STOP_WITHIN_S = 20.0  # a signalled run must be over by then (the native call it is stuck in lasts 60 s)

MANIFEST = """
[defaults]
iterations = 1

[[model]]
id = "first"
model = "convs"
gate = ["torch:fp32", "ort:fp32"]

[[model]]
id = "second"
model = "convs"
gate = ["torch:fp32", "ort:fp32", "{backend}:fp32"]

[[model]]
id = "third"
model = "convs"
gate = ["torch:fp32", "ort:fp32"]
"""


def environment(tmp: Path) -> dict[str, str]:
    """What a deployval process of these cases runs with: the test models and the faulty backends."""
    plugins = install_entry_points(tmp / "plugins")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(plugins)]),
            "FAULTY_STARTED": str(tmp / "started")}


def start(tmp: Path, args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "deployval", *map(str, args)], cwd=tmp, env=environment(tmp),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_started(tmp: Path, proc: subprocess.Popen[str], timeout: float = 120.0) -> int:
    """Wait until the faulty row has begun; its process id (this run's, or its isolated child's)."""
    deadline = time.monotonic() + timeout
    marker = tmp / "started"
    while not (marker.exists() and marker.read_text().strip()):
        if proc.poll() is not None:
            raise AssertionError(f"deployval ended ({proc.returncode}) before the row began: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the faulty row never began")
        time.sleep(0.05)
    return int(marker.read_text())


def finish(proc: subprocess.Popen[str], within: float = STOP_WITHIN_S) -> Outcome:
    try:
        out, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"deployval did not stop within {within:g} s: {err[-1500:]}") from None
    return Outcome(proc.returncode, out, err)


def signalled(signum: int) -> Callable[[Path, list[str]], Outcome]:
    """Run the case's command and send it `signum` once its faulty row has begun."""

    def run(tmp: Path, args: list[str]) -> Outcome:
        proc = start(tmp, args)
        wait_started(tmp, proc)
        proc.send_signal(signum)
        return finish(proc)

    return run


def in_process_of_its_own(tmp: Path, args: list[str]) -> Outcome:
    """Run the case's command in a deployval process of its own (a hard exit must not end the tests)."""
    return finish(start(tmp, args), within=300.0)


def report_args(tmp: Path, kinds: tuple[str, ...] = REPORTS) -> list[str]:
    return [arg for kind in kinds for arg in (f"--{kind}", str(tmp / f"r.{kind}"))]


def compare_with(backends: str, *more: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["compare", "convs", "-b", backends, "--iterations", "1", "-q", *report_args(tmp), *more]


def manifest_with(backend: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        (tmp / "m.toml").write_text(MANIFEST.replace("{backend}", backend))
        return ["validate", "--all", "--manifest", str(tmp / "m.toml"), "-q",
                *report_args(tmp, ("json", "junit", "markdown"))]

    return build


def reports_kept(statuses: dict[str, str], kinds: tuple[str, ...] = REPORTS, complete: bool = False,
                 ) -> Callable[[Path, Outcome], None]:
    """Every requested report is there and parses; the JSON holds the rows that finished (`statuses`, by
    backend), says whether it is complete, and its verdict is not PASS."""

    def check(tmp: Path, outcome: Outcome) -> None:
        present = sorted(p.name for p in tmp.glob("r.*"))
        assert present == sorted(f"r.{kind}" for kind in kinds), present
        data = json.loads((tmp / "r.json").read_text())
        assert data["complete"] is complete, data["complete"]
        assert data["summary"]["verdict"] != "PASS" and data["summary"]["exit_code"] != 0, data["summary"]
        rows = {r["backend"]: r["status"] for r in data["results"]}
        assert all(rows.get(backend) == status for backend, status in statuses.items()), rows
        if "junit" in kinds:
            root = ET.parse(tmp / "r.junit").getroot()
            errors = sum(int(s.get("errors", "0")) for s in root.iter("testsuite"))  # <testsuites> has no counts
            assert errors > 0, ET.tostring(root)[:500]
        for kind in ("markdown", "html"):
            if kind in kinds:
                verdict = data["summary"]["verdict"]
                assert verdict in (tmp / f"r.{kind}").read_text(), kind

    return check


def child_gone(tmp: Path, outcome: Outcome) -> None:
    """The isolated child (its process id in the marker file) did not outlive the run."""
    pid = int((tmp / "started").read_text())
    deadline = time.monotonic() + 5.0
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        try:
            if "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text():
                return
        except OSError:
            return
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), f"the isolated child {pid} is still running"


def both(*checks: Callable[[Path, Outcome], None]) -> Callable[[Path, Outcome], None]:
    def check(tmp: Path, outcome: Outcome) -> None:
        for one in checks:
            one(tmp, outcome)

    return check


def first_model_kept(tmp: Path, outcome: Outcome) -> None:
    """The suite JSON holds the first model, complete and passed, and is itself incomplete."""
    data = json.loads((tmp / "r.json").read_text())
    assert data["complete"] is False and data["summary"]["verdict"] != "PASS", data["summary"]
    first = next(r for r in data["reports"] if r.get("entry") == "first")
    assert first["complete"] is True and first["summary"]["verdict"] == "PASS", first["summary"]
    assert "third" not in [r.get("entry") for r in data["reports"]]
    for kind in ("junit", "markdown"):
        assert (tmp / f"r.{kind}").exists(), kind
    ET.parse(tmp / "r.junit")
    assert "first" in (tmp / "r.markdown").read_text()


def _inputs(tmp: Path) -> Path:
    np.savez(tmp / "x.npz", x=np.zeros((1, 3, 32, 32), np.float32))
    return tmp / "x.npz"


def _onnx_file(tmp: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(tmp / "m.onnx"))
    return tmp / "m.onnx"


def _manifest_reading(tmp: Path) -> list[str]:
    _inputs(tmp)
    (tmp / "m.toml").write_text('[[model]]\nmodel = "convs"\ninputs = "x.npz"\n')
    return ["validate", "--all", "--manifest", str(tmp / "m.toml"), "--json", str(tmp / "x.npz")]


def _inputs_unchanged(tmp: Path, outcome: Outcome) -> None:
    with np.load(tmp / "x.npz") as data:
        assert list(data) == ["x"] and not data["x"].any()


CASES: list[Case] = [
    Case("sigint-compare", "Ctrl-C (SIGINT) while a backend runs, with --json, --junit, --markdown and --html",
         compare_with("torch,ort,sleeping"), 130, "interrupted (SIGINT) during compare convs: running sleeping fp32",
         fault=True, run=signalled(signal.SIGINT), check=reports_kept({"torch": "reference", "ort": "pass"})),
    Case("sigterm-isolated-row", "SIGTERM while a backend runs in its own process",
         compare_with("torch,ort,sleeping-isolated"), 143, "interrupted (SIGTERM)", fault=True,
         run=signalled(signal.SIGTERM), check=both(reports_kept({"torch": "reference", "ort": "pass"}), child_gone)),
    Case("sigint-native-call", "Ctrl-C while a backend is inside a 60 s native call that signals do not end",
         compare_with("torch,native-blocking"), 130, "a native operation did not return within 1 s", fault=True,
         run=signalled(signal.SIGINT), check=reports_kept({"torch": "reference"})),
    Case("sigint-validate-all", "Ctrl-C during the second model of a three-model validate --all",
         manifest_with("sleeping"), 130, "model 2 of 3 ('second'", fault=True, run=signalled(signal.SIGINT),
         check=first_model_kept),
    Case("reference-segfaults", "the model's forward pass segfaults in the reference run, with --isolate --timeout",
         lambda t: ["compare", "dv_test_models:segfaults", "--input-shape", "x=1x3x8x8", "-b", "torch,ort", "--isolate",
                    "--timeout", "60", "-q", *report_args(t)], 3, "the reference run (torch eager fp32) crashed: "
         "killed by SIGSEGV", fault=True, run=in_process_of_its_own,
         check=reports_kept({"torch": "error", "ort": "error"}, complete=True)),
    Case("factory-hangs", "the model's factory never returns, with --timeout 3",
         lambda t: ["compare", "dv_test_models:hangs_while_built", "--input-shape", "x=1x3x8x8", "-b", "torch,ort",
                    "--timeout", "3", "-q", "--json", str(t / "r.json")], 3, "timed out after 3 s and was killed",
         fault=True, run=in_process_of_its_own, check=reports_kept({"torch": "error"}, ("json",), complete=True)),
    Case("row-calls-sys-exit", "a backend calls sys.exit(0) while it runs in the deployval process",
         compare_with("torch,exiting,ort"), 3, "exiting called sys.exit(0) while it ran in this process", fault=True,
         run=in_process_of_its_own, check=reports_kept({"exiting": "error", "ort": "pass"}, complete=True)),
    Case("row-calls-os-exit", "a backend calls os._exit(0) while it runs in the deployval process",
         compare_with("torch,hard-exiting,ort"), 3, "hard-exiting called os._exit(0)", fault=True,
         run=in_process_of_its_own, check=reports_kept({"hard-exiting": "error", "ort": "pass"}, complete=True)),
    Case("reference-calls-sys-exit", "the model calls sys.exit(0) in its forward pass",
         lambda t: ["compare", "dv_test_models:exits_in_forward", "--input-shape", "x=1x3x8x8", "-b", "torch,ort"], 2,
         "the model called sys.exit(0) during the reference run"),
    Case("reports-same-path", "--json and --junit name the same file",
         lambda t: ["compare", "convs", "--json", str(t / "r.out"), "--junit", str(t / "./r.out")], 2,
         "--json and --junit both name"),
    Case("report-overwrites-inputs", "--json names the --inputs file",
         lambda t: ["compare", "convs", "--inputs", str(_inputs(t)), "--json", str(t / "x.npz")], 2,
         "is the --inputs file", check=_inputs_unchanged),
    Case("outputs-overwrite-inputs", "--save-outputs names the --inputs file",
         lambda t: ["compare", "convs", "--inputs", str(_inputs(t)), "--save-outputs", str(t / "x.npz")], 2,
         "--save-outputs", check=_inputs_unchanged),
    Case("report-overwrites-model", "--markdown names the ONNX model file",
         lambda t: ["compare", str(_onnx_file(t)), "--markdown", str(t / "m.onnx")], 2, "is the model file"),
    Case("report-overwrites-entry-inputs", "validate --all --json names an entry's inputs",
         _manifest_reading, 2, "the inputs of entry 'convs'", check=_inputs_unchanged),
]
