"""--ray: a data set judged by a pool of Ray actors on a local cluster (loopback) gives the result of
the single-process run: the same samples, failures, worst samples and metrics over the samples; and
it still does when a worker dies mid-run (its sample retried on a restarted actor, counted once)."""

from __future__ import annotations

import _thread
import faulthandler
import importlib.util
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import TESTS, CliResult, assert_one_line_error

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="Ray is not installed (pip install 'deployval[ray]')")

DEADLINE_S = 120  # a lost worker that is never replaced would hang the run: interrupt it instead


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """One local Ray instance for the in-process tests of this module (each run joins it, as a Python API
    user's would, and leaves it running): starting one per test cost ~6 s each. Its workers find the
    test factories and the file through which `dies_once` dies once."""
    import ray
    from dv_test_models import DIES_ONCE_ENV

    marker = tmp_path_factory.mktemp("ray") / "died"
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), DIES_ONCE_ENV: str(marker)}
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        yield marker
    finally:
        ray.shutdown()


@pytest.fixture
def ray_session(capsys, ray_cluster):
    """Bounds the test: past DEADLINE_S every thread's stack goes to the terminal and the test gets a
    KeyboardInterrupt (which no `except Exception` in Ray or a row's crash isolation swallows, unlike an
    alarm's exception); a process that cannot even be interrupted exits 60 s later."""
    with capsys.disabled():
        terminal = os.dup(sys.stderr.fileno())  # the terminal's stderr, not the captured one

    def expired() -> None:
        faulthandler.dump_traceback(file=terminal)
        _thread.interrupt_main()

    timer = threading.Timer(DEADLINE_S, expired)
    timer.daemon = True
    timer.start()
    faulthandler.dump_traceback_later(DEADLINE_S + 60, exit=True, file=terminal)
    try:
        yield ray_cluster
    finally:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()
        os.close(terminal)


def _own_cluster_env(**extra: str) -> dict[str, str]:
    """A fresh process's environment that starts its own Ray instance, never the module's."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "PYTHONPATH": str(TESTS), **extra}


def assert_same_report(one: dict, two: dict) -> None:
    """The Ray report's rows, sample counts, failures, worst samples and metrics equal the local run's."""
    assert one["samples"] == two["samples"]
    assert one["analysis"]["dataset"]["unusable"] == two["analysis"]["dataset"]["unusable"]
    assert len(one["results"]) == len(two["results"])
    for a, b in zip(one["results"], two["results"]):
        assert (a["backend"], a["precision"], a["status"], a["samples"]) == (b["backend"], b["precision"],
                                                                             b["status"], b["samples"])
        if "dataset" not in a["details"]:
            continue
        x, y = a["details"]["dataset"], b["details"]["dataset"]
        assert (x["samples"], x["failed"]) == (y["samples"], y["failed"])
        assert [w["sample"] for w in x["worst"]] == [w["sample"] for w in y["worst"]]
        for output, metrics in x["outputs"].items():
            for metric, stats in metrics.items():
                for key, value in stats.items():  # infinities are written as strings
                    other = y["outputs"][output][metric][key]
                    assert value == other if isinstance(value, str) else value == pytest.approx(
                        other, rel=1e-6, abs=1e-12), (a["backend"], a["precision"], metric, key)


def test_a_dataset_on_ray_equals_the_single_process_run(cli, tmp_path, ray_session):
    data = tmp_path / "set"
    data.mkdir()
    rng = np.random.default_rng(5)
    for i in range(7):
        sample = rng.standard_normal((1, 3, 24, 24)) * (40 if i == 4 else 1)
        np.save(data / f"s{i:02d}.npy", sample.astype(np.float32))
    np.save(data / "s50_other_shape.npy", np.zeros((1, 3, 8, 8), np.float32))
    args = ("compare", "srcnn", "--dataset", data, "--backends", "torch,torchscript,ort", "--precisions", "fp32,fp16",
            "--atol", "0.01", "--rtol", "0", "--iterations", "1", "--cache-dir", tmp_path / "cache", "-q")
    local, distributed = tmp_path / "local.json", tmp_path / "ray.json"
    assert cli(*args, "--json", local).code == 1  # the 40x sample fails fp16 at this atol
    result = cli(*args, "--ray", "--ray-workers", "2", "--json", distributed)
    assert result.code == 1, result.out + result.err
    one, two = json.loads(local.read_text()), json.loads(distributed.read_text())
    assert one["samples"] == two["samples"] == 7
    assert_same_report(one, two)
    fp16 = next(r for r in two["results"] if (r["backend"], r["precision"]) == ("ort", "fp16"))
    assert fp16["status"] == "fail" and "worst s04.npy" in fp16["reason"]


def test_a_worker_lost_mid_run_is_replaced_and_its_sample_judged_once(cli, tmp_path, ray_session):
    from dv_test_models import DIES_ONCE_MARKER

    marker = ray_session  # the cluster's workers know it; the driver does not (it never dies there)
    data = tmp_path / "set"
    data.mkdir()
    rng = np.random.default_rng(7)
    for i in range(6):
        sample = rng.standard_normal((1, 3, 16, 16)) * (40 if i == 5 else 1)
        if i == 3:
            sample[0, 0, 0, 0] = DIES_ONCE_MARKER  # the actor judging this sample dies (once)
        np.save(data / f"s{i:02d}.npy", sample.astype(np.float32))
    args = ("compare", "dv_test_models:dies_once", "--input-shape", "x=1x3x16x16", "--dataset", data,
            "--backends", "torch,ort", "--precisions", "fp32,fp16", "--atol", "0.01", "--rtol", "0",
            "--iterations", "1", "--worst", "10", "--cache-dir", tmp_path / "cache", "-q")
    local, distributed = tmp_path / "local.json", tmp_path / "ray.json"
    assert cli(*args, "--json", local).code == 1  # the 40x sample fails fp16 at this atol
    assert not marker.exists()  # the single-process run never dies
    result = cli(*args, "--ray", "--ray-workers", "2", "--json", distributed)
    assert result.code == 1, result.out + result.err
    # A worker really died on s03, and Ray restarted that actor in a new process, which judged s03 again.
    runs = [line.split() for line in marker.read_text().splitlines()]
    (died, actor, _), later = runs[0], runs[1:]
    assert later and all(pid != died for pid, _, _ in later), runs
    assert [actor, "1"] in [[a, restarted] for _, a, restarted in later], runs
    one, two = json.loads(local.read_text()), json.loads(distributed.read_text())
    assert one["samples"] == two["samples"] == 6
    names = [f"s{i:02d}.npy" for i in range(1, 6)]
    for row in two["results"]:
        if "dataset" in row["details"]:
            summary = row["details"]["dataset"]
            assert summary["samples"] == 6 and sorted(w["sample"] for w in summary["worst"]) == ["s00.npy", *names]
    assert_same_report(one, two)
    fp16 = next(r for r in two["results"] if (r["backend"], r["precision"]) == ("ort", "fp16"))
    assert fp16["status"] == "fail" and "worst s05.npy" in fp16["reason"]


def _processes_in(directory: str) -> list[str]:
    """Live processes working in `directory` (every process a run started there inherits it; Ray rewrites
    its processes' command lines and environments, not their working directory), by pid and name."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/stat") as handle:
                head, _, tail = handle.read().rpartition(")")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if cwd == directory and tail.split()[0] != "Z":  # a zombie is dead already, waiting for its parent
            found.append(f"{entry} {head.partition('(')[2]}")
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/cwd"), reason="reads /proc")
def test_a_ray_run_leaves_no_ray_process_behind(tmp_path):
    """deployval starts a local Ray instance for --ray and shuts it down (GCS, raylet, agents, workers) before
    it exits, although the CLI leaves with os._exit; a dangling link in the set is counted, never read by Ray."""
    import subprocess
    import time

    data = tmp_path / "set"
    data.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        np.save(data / f"s{i}.npy", rng.random((1, 3, 32, 32)).astype(np.float32))
    (data / "s9.npy").symlink_to(tmp_path / "gone.npy")
    report = tmp_path / "r.json"
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-m", "deployval", "compare", "convs", "--dataset", str(data),
                           "--backends", "torch,ort", "--iterations", "1", "--ray", "--ray-workers", "1",
                           "--json", str(report)], capture_output=True, text=True, timeout=DEADLINE_S, cwd=work,
                          env=_own_cluster_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Ray keeps to errors without -v: no INFO lines, progress tables or C++ warnings on stderr
    noise = [line for line in proc.stderr.splitlines() if any(word in line for word in (" INFO ", "WARNING",
                                                                                         "core_worker", "Progress"))]
    assert noise == [], noise
    unusable = json.loads(report.read_text())["analysis"]["dataset"]["unusable"]
    assert unusable == [{"sample": "s9.npy", "reason": f"a symbolic link to '{tmp_path / 'gone.npy'}', which does "
                                                      "not exist"}]
    deadline = time.monotonic() + 10  # a process being torn down may take a moment to go
    while _processes_in(str(work)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_in(str(work)) == []


def test_a_factory_drawing_from_the_global_rng_is_the_same_module_on_ray(cli, tmp_path, ray_session):
    """Each actor builds the module with the driver's seed: once, 5 of 6 samples failed on Ray alone."""
    data = tmp_path / "set"
    data.mkdir()
    rng = np.random.default_rng(2)
    for i in range(5):
        np.save(data / f"s{i}.npy", rng.standard_normal((1, 3, 16, 16)).astype(np.float32))
    args = ("compare", "dv_test_models:draws_from_global_rng", "--dataset", data, "--backends", "ort",
            "--iterations", "1", "--seed", "3", "--cache-dir", tmp_path / "cache", "-q")
    local, distributed = tmp_path / "local.json", tmp_path / "ray.json"
    assert cli(*args, "--json", local).code == 0
    result = cli(*args, "--ray", "--ray-workers", "2", "--json", distributed)
    assert result.code == 0, result.out + result.err
    assert_same_report(json.loads(local.read_text()), json.loads(distributed.read_text()))


def _sample_set(tmp_path, count: int = 3):
    data = tmp_path / "set"
    data.mkdir()
    rng = np.random.default_rng(4)
    for i in range(count):
        np.save(data / f"s{i}.npy", rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    return data


def test_each_worker_judges_the_drivers_weights_when_no_seed_reaches_the_factory(cli, tmp_path, ray_session,
                                                                                  monkeypatch):
    """The factory draws from the OS's entropy (fixed in the driver only, so both runs build one module):
    every actor loads the driver's tensors, so the Ray report equals the local one."""
    import dv_test_models

    monkeypatch.setitem(dv_test_models.ENTROPY, "source", lambda: b"driver")
    args = ("compare", "dv_test_models:draws_from_the_os", "--dataset", _sample_set(tmp_path), "--backends",
            "torch,ort", "--precisions", "fp32,fp16", "--iterations", "1", "--cache-dir", tmp_path / "cache", "-q")
    local, distributed = tmp_path / "local.json", tmp_path / "ray.json"
    assert cli(*args, "--json", local).code == 0
    result = cli(*args, "--ray", "--ray-workers", "2", "--json", distributed)
    assert result.code == 0, result.out + result.err
    assert_same_report(json.loads(local.read_text()), json.loads(distributed.read_text()))


def test_a_worker_that_builds_another_model_ends_the_run_with_one_line(tmp_path):
    """The driver (a fresh process, as a user's) changes a global its factory reads; the Ray workers
    build the model without it: the run ends with one line and an incomplete report, never a verdict."""
    path = tmp_path / "r.json"
    args = ["compare", "dv_test_models:reads_process_globals", "--dataset", str(_sample_set(tmp_path)),
            "--backends", "ort", "--iterations", "1", "--cache-dir", str(tmp_path / "cache"), "--ray",
            "--ray-workers", "1", "--json", str(path), "-q"]
    script = ("import sys, dv_test_models; dv_test_models.PROCESS_GLOBALS['scale'] = 2.0; "
              f"from deployval.cli import main; sys.exit(main({args!r}))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=DEADLINE_S,
                          env=_own_cluster_env())
    assert_one_line_error(CliResult(proc.returncode, proc.stdout, proc.stderr), 3,
                          "the model built on a Ray worker is not the one the reference ran")
    assert json.loads(path.read_text())["complete"] is False


def test_a_task_check_judges_every_sample_on_ray_as_it_does_locally(cli, tmp_path, ray_session):
    """The check travels with the run's settings: each actor runs it per sample, the driver applies it."""
    data = tmp_path / "set"
    data.mkdir()
    for i in range(4):
        np.save(data / f"s{i}.npy", np.random.default_rng(i).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32))
    args = ("compare", "convs", "--dataset", data, "--backends", "torch,ort", "--precisions", "fp16",
            "--task", "dv_test_models:same_top_class", "--slices", "y:1", "--iterations", "1",
            "--cache-dir", tmp_path / "cache", "-q")
    local, distributed = tmp_path / "local.json", tmp_path / "ray.json"
    code = cli(*args, "--json", local).code
    assert cli(*args, "--ray", "--ray-workers", "2", "--json", distributed).code == code
    one, two = json.loads(local.read_text()), json.loads(distributed.read_text())
    assert_same_report(one, two)
    for a, b in zip(one["results"], two["results"]):
        if "dataset" in a["details"]:
            assert a["details"]["dataset"]["task"] == b["details"]["dataset"]["task"], a["backend"]
