"""--ray: a data set judged by a pool of Ray actors on a local cluster (loopback) gives the result of
the single-process run: the same samples, failures, worst samples and metrics over the samples."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="Ray is not installed (pip install 'deployval[ray]')")


@pytest.fixture
def ray_session():
    yield
    import ray

    ray.shutdown()


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
    assert one["analysis"]["dataset"]["unusable"] == two["analysis"]["dataset"]["unusable"]
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
    fp16 = next(r for r in two["results"] if (r["backend"], r["precision"]) == ("ort", "fp16"))
    assert fp16["status"] == "fail" and "worst s04.npy" in fp16["reason"]
