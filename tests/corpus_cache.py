"""Cache cases of the reliability corpus: stale entries that must be rebuilt (STALE, verdict cases) and
damaged entries that must be moved aside and rebuilt (DAMAGED).

A STALE case first runs the model as it was (saving its outputs as golden outputs), then changes what
the model computes without changing anything an older cache key covered (a layer, a hyperparameter, a
non-persistent buffer, an ONNX model's external data) and runs it again from the same cache. A DAMAGED
case fills a cache entry with a valid run of `convs`, damages it, and runs the same command again.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
from corpus import Case, Outcome

TESTS = Path(__file__).parent
STRUCTURE_ENV = "DV_TEST_STRUCTURE"  # read by dv_test_models' picks_* factories
FAST = ["--exporter", "legacy", "--iterations", "1"]  # the cache's behaviour does not depend on the exporter


def run_main(args: list[str], env: dict[str, str] | None = None) -> Outcome:
    """deployval's main() in this process, with `env` set for the run only."""
    from deployval.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, env or {}), contextlib.redirect_stdout(stdout), \
            contextlib.redirect_stderr(stderr):
        code = main([str(a) for a in args])
    return Outcome(code, stdout.getvalue(), stderr.getvalue())


def steps(report: Path) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads(report.read_text())["steps"]}


# ---------------------------------------------------------------------- STALE
def _factory_args(tmp: Path, factory: str, *extra: str) -> list[str]:
    return ["compare", f"dv_test_models:{factory}", "--input-shape", "x=1x3x8x8", "-b", "ort", *FAST,
            "--cache-dir", str(tmp / "cache"), "--json", str(tmp / "r.json"), *extra]


def _golden_then_changed(factory: str, value: str) -> tuple[Callable[[Path], list[str]],
                                                                Callable[[Path, list[str]], Outcome]]:
    """Save golden outputs of the factory's default model (its artifacts cached), then judge the changed
    model's ORT row against them: the rebuilt artifact computes something else, so the row fails."""

    def build(tmp: Path) -> list[str]:
        first = run_main(_factory_args(tmp, factory, "--save-outputs", str(tmp / "golden.npz"), "-q"))
        assert first.code == 0, first.err
        return _factory_args(tmp, factory, "--expected", str(tmp / "golden.npz"))

    def run(tmp: Path, args: list[str]) -> Outcome:
        return run_main(args, {STRUCTURE_ENV: value})

    return build, run


def _reference_then_changed(tmp: Path) -> list[str]:
    first = run_main(_factory_args(tmp, "picks_activation", "-q"))
    assert first.code == 0, first.err
    return _factory_args(tmp, "picks_activation")


def _rebuilt(*names: str) -> Callable[[Path, Outcome], None]:
    def check(tmp: Path, outcome: Outcome) -> None:
        found = steps(tmp / "r.json")
        for name in names:
            assert not found[name]["cached"], f"{name} came from the cache: {found[name]}"

    return check


def onnx_with_external_data(tmp: Path, weight: float = 1.0) -> Path:
    """net.onnx (x + w, then Relu) with w in net.onnx.data beside it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((4,), weight, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(tmp / "net.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="net.onnx.data", size_threshold=0)
    return tmp / "net.onnx"


def _external_data_rewritten(tmp: Path) -> list[str]:
    path = onnx_with_external_data(tmp)
    args = ["compare", str(path), "-b", "ort", "--iterations", "1", "--cache-dir", str(tmp / "cache"),
            "--json", str(tmp / "r.json")]
    first = run_main([*args, "--save-outputs", str(tmp / "golden.npz"), "-q"])
    assert first.code == 0, first.err
    data = tmp / "net.onnx.data"
    data.write_bytes(np.full((4,), 2.0, np.float32).tobytes())  # same size, other weights
    return [*args, "--expected", str(tmp / "golden.npz")]


_activation = _golden_then_changed("picks_activation", "sigmoid")
_padding = _golden_then_changed("picks_padding_mode", "reflect")
_buffer = _golden_then_changed("picks_buffer", "2.0")

STALE: list[Case] = [
    Case("stale-layers", "golden outputs saved from a factory's conv-ReLU-conv, judged after it builds "
         "conv-Sigmoid-conv "
         "(same source, same weights; the cached ONNX was reused and passed)", _activation[0], 1, "FAIL",
         error_line=False, run=_activation[1], check=_rebuilt("export-onnx", "simplify")),
    Case("stale-layers-false-fail", "the same change without golden outputs (the stale ONNX gave a false FAIL)",
         _reference_then_changed, 0, "PASS", error_line=False,
         run=lambda tmp, args: run_main(args, {STRUCTURE_ENV: "sigmoid"}), check=_rebuilt("export-onnx")),
    Case("stale-hyperparameter", "golden outputs, then the conv's padding_mode changes from zeros to reflect",
         _padding[0], 1, "FAIL", error_line=False, run=_padding[1], check=_rebuilt("export-onnx")),
    Case("stale-non-persistent-buffer", "golden outputs, then a buffer registered with persistent=False changes "
         "(it is in no state_dict)", _buffer[0], 1, "FAIL", error_line=False, run=_buffer[1],
         check=_rebuilt("export-onnx")),
    Case("stale-external-data", "golden outputs of net.onnx, then net.onnx.data beside it is rewritten",
         _external_data_rewritten, 1, "FAIL", error_line=False, check=_rebuilt("simplify")),
]


# ---------------------------------------------------------------------- DAMAGED
def entry_args(tmp: Path) -> list[str]:
    return ["compare", "convs", "-b", "ort", *FAST, "--cache-dir", str(tmp / "cache"), "--json", str(tmp / "r.json")]


def filled_entry(tmp: Path) -> Path:
    """The cache entry of a passing `convs` ORT run (exported.onnx, model.onnx and their sidecars)."""
    first = run_main([*entry_args(tmp), "-q"])
    assert first.code == 0, first.err
    (entry,) = (tmp / "cache").iterdir()
    return entry


def write_sidecar(entry: Path, text: str) -> None:
    (entry / "model.onnx.json").write_text(text)


def sidecar_field(entry: Path, name: str, value: object) -> None:
    meta = json.loads((entry / "model.onnx.json").read_text())
    meta[name] = value
    write_sidecar(entry, json.dumps(meta))


def artifact_directory(entry: Path) -> None:
    (entry / "model.onnx").unlink()
    (entry / "model.onnx").mkdir()
    (entry / "model.onnx" / "inside").write_text("x")


def other_input_shape(entry: Path) -> None:
    """model.onnx replaced by one that takes x of 1x3x64x64 (the key says 1x3x32x32), with a sidecar whose
    key, SHA-256 and recorded inputs all match the new file, as an older deployval could leave it."""
    import onnx

    from deployval._util import sha256_file
    from deployval.export.cache_entry import onnx_signature

    model = onnx.load(str(entry / "model.onnx"))
    for dim, size in zip(model.graph.input[0].type.tensor_type.shape.dim, (1, 3, 64, 64)):
        dim.dim_value = size
    del model.graph.value_info[:]
    onnx.save(model, str(entry / "model.onnx"))
    meta = json.loads((entry / "model.onnx.json").read_text())
    meta.update(sha256=sha256_file(entry / "model.onnx"), signature=onnx_signature(entry / "model.onnx"))
    write_sidecar(entry, json.dumps(meta))


def _damaged(damage: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        damage(filled_entry(tmp))
        return entry_args(tmp)

    return build


def _moved_aside(tmp: Path, outcome: Outcome) -> None:
    """The entry was rebuilt (simplify not cached), the damaged files kept aside, and a note said so."""
    assert not steps(tmp / "r.json")["simplify"]["cached"]
    (entry,) = (tmp / "cache").iterdir()
    assert list(entry.glob("model.onnx.damaged-*")) or list(entry.glob("model.onnx.json.damaged-*")), \
        sorted(p.name for p in entry.iterdir())
    assert "moved aside" in outcome.err, outcome.err[-2000:]


# A process killed during the export leaves the temporary file it was writing.
EXPORT_SLEEP_ENV = "DV_TEST_EXPORT_SLEEP"  # read by dv_test_models.sleeps_in_export


def sleeper_args(tmp: Path) -> list[str]:
    return ["compare", "dv_test_models:sleeps_in_export", "--input-shape", "x=1x3x8x8", "-b", "ort", *FAST,
            "--cache-dir", str(tmp / "cache"), "--json", str(tmp / "r.json")]


def killed_during_export(tmp: Path) -> list[str]:
    """Run deployval in its own process until the export's temporary file is there, then SIGKILL it."""
    args = sleeper_args(tmp)
    env = {**os.environ, "PYTHONPATH": _python_path(), EXPORT_SLEEP_ENV: "60"}
    proc = subprocess.Popen([sys.executable, "-m", "deployval", *args, "-q"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp / "cache").glob("*/.exported.*.onnx")):
            assert proc.poll() is None and time.monotonic() < deadline, "the export never started"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return args


def _leftovers_removed(tmp: Path, outcome: Outcome) -> None:
    (entry,) = (tmp / "cache").iterdir()
    names = sorted(p.name for p in entry.iterdir())
    assert not [n for n in names if n.startswith(".")], names
    assert "exported.onnx" in names and "temporary file" in outcome.err, (names, outcome.err[-2000:])


def reader_command(args: list[str]) -> list[str]:
    """A command that cannot write what its user does not own: as root (who writes anything), it runs as
    nobody."""
    command = [sys.executable, "-m", "deployval", *args]
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    assert setpriv, "running as root without setpriv: a read-only cache cannot be made"
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]


def set_writable(tree: Path, writable: bool) -> None:
    for path in [tree, *tree.rglob("*")]:
        path.chmod((0o755 if writable else 0o555) if path.is_dir() else (0o644 if writable else 0o444))


def _python_path() -> str:
    return os.pathsep.join(p for p in [os.environ.get("PYTHONPATH", ""), str(TESTS)] if p)


def run_as_reader(tmp: Path, args: list[str]) -> Outcome:
    """Fill the cache and then read it in a process that cannot write it: both runs go through
    `reader_command` (as root, another user, whose interpreter may differ: a key covers the Python
    version, so the entry must be made by the same one), in a directory that user may enter (pytest's
    are private). Between the runs the lock files are removed and the entry made read-only; afterwards
    the cache and the report are copied back for the check."""
    public = Path(tempfile.mkdtemp(prefix="dv-reader-"))
    try:
        public.chmod(0o777)
        (public / "cache").mkdir(mode=0o777)
        (public / "cache").chmod(0o777)
        mapping = {str(tmp / "r.json"): str(public / "r.json"), str(tmp / "cache"): str(public / "cache")}
        env = {**os.environ, "HOME": str(public), "PYTHONPATH": _python_path(),
               "DEPLOYVAL_CACHE_DIR": str(public / "unused")}
        command = reader_command([mapping.get(a, a) for a in args])
        fill = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=public)
        assert fill.returncode == 0, fill.stderr[-2000:]
        (public / "r.json").unlink()
        for lock in (public / "cache").rglob("*.lock"):
            lock.unlink()
        set_writable(public / "cache", False)
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=public)
        if (public / "r.json").exists():
            shutil.copyfile(public / "r.json", tmp / "r.json")
        set_writable(public / "cache", True)
        shutil.rmtree(tmp / "cache", ignore_errors=True)
        shutil.copytree(public / "cache", tmp / "cache")
        return Outcome(proc.returncode, proc.stdout, proc.stderr)
    finally:
        if (public / "cache").exists():
            set_writable(public / "cache", True)
        shutil.rmtree(public, ignore_errors=True)


def read_only_entry(tmp: Path) -> list[str]:
    """The arguments of a passing `convs` ORT run; run_as_reader fills its entry, then reads it read-only."""
    return entry_args(tmp)


def _read_from_cache(tmp: Path, outcome: Outcome) -> None:
    found = steps(tmp / "r.json")
    assert found["export-onnx"]["cached"] and found["simplify"]["cached"], found
    (entry,) = (tmp / "cache").iterdir()
    assert not list(entry.glob("*.lock")), "a lock file was created in a read-only entry"


DAMAGED: list[Case] = [
    Case("damaged-sidecar-not-object", "model.onnx.json holds valid JSON that is not an object ([1, 2])",
         _damaged(lambda e: write_sidecar(e, "[1, 2]")), 0, "PASS", error_line=False, check=_moved_aside),
    Case("damaged-sidecar-not-json", "model.onnx.json is cut in half",
         _damaged(lambda e: write_sidecar(e, (e / "model.onnx.json").read_text()[:40])), 0, "PASS",
         error_line=False, check=_moved_aside),
    Case("damaged-sidecar-field-type", "model.onnx.json's step is a string, not an object",
         _damaged(lambda e: sidecar_field(e, "step", "simplify")), 0, "PASS", error_line=False, check=_moved_aside),
    Case("damaged-artifact-directory", "model.onnx is a directory", _damaged(artifact_directory), 0, "PASS",
         error_line=False, check=_moved_aside),
    Case("damaged-signature", "model.onnx takes x of 1x3x64x64 where the key says 1x3x32x32, its sidecar matching "
         "it (ONNX Runtime: 'Got invalid dimensions')", _damaged(other_input_shape), 0, "PASS", error_line=False,
         check=_moved_aside),
    Case("damaged-killed-export", "deployval killed (SIGKILL) during the ONNX export: its temporary file stays in "
         "the entry", killed_during_export, 0, "PASS", error_line=False, check=_leftovers_removed),
    Case("damaged-read-only", "a valid cache entry nobody may write, without lock files", read_only_entry, 0, "PASS",
         error_line=False, run=run_as_reader, check=_read_from_cache),
]
