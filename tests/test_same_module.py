"""One module everywhere: a factory that draws from the global RNG builds the same module in the driver,
in an isolated child and through a row's reproduction line, so every row is judged against the module the
reference ran (once, the isolated fp16 row failed with rel L2 0.17 against another module)."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest

from deployval.model.loading import build_module, seeded_rngs
from deployval.model.spec import ModelSpec

FACTORY = "dv_test_models:draws_from_global_rng"
ARGS = ["--backends", "torch,ort", "--precisions", "fp32,fp16", "--input-shape", "x=1x3x16x16", "--iterations", "1"]


def _metrics(path) -> dict[str, list[float]]:
    report = json.loads(path.read_text())
    return {f"{r['backend']}:{r['precision']}": [o["metrics"]["rel_l2"] for o in r["outputs"]]
            for r in report["results"] if r["status"] != "reference"}


def test_the_factory_is_seeded_and_the_global_rngs_are_restored():
    import torch

    spec = ModelSpec(name="m", inputs=(), factory=FACTORY)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    one, two = build_module(spec, seed=7), build_module(spec, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(one[1].running_var, two[1].running_var)
    assert not torch.equal(one[1].running_var, build_module(spec, seed=8)[1].running_var)
    with seeded_rngs(3):
        first = np.random.random()
    with seeded_rngs(3):
        assert np.random.random() == first


@pytest.mark.parametrize("seed", ["0", "5"])
def test_isolated_rows_and_the_reproduction_line_give_identical_metrics(cli, tmp_path, seed):
    runs = {}
    for name, extra in {"in-process": [], "isolated": ["--isolate"]}.items():
        path = tmp_path / f"{name}.json"
        result = cli("compare", FACTORY, *ARGS, *extra, "--seed", seed, "--no-cache", "--json", path, "-q")
        assert result.code == 0, result.out + result.err
        runs[name] = _metrics(path)
    assert runs["isolated"] == runs["in-process"]
    report = json.loads((tmp_path / "in-process.json").read_text())
    row = next(r for r in report["results"] if r["backend"] == "torch" and r["precision"] == "fp16")
    line = shlex.split(row["reproduce"])
    assert line[:2] == ["deployval", "compare"] and ("--seed" in line) == (seed != "0")
    path = tmp_path / "repro.json"
    result = cli(*line[1:], "--no-cache", "--json", path, "-q")
    assert result.code == 0, result.out + result.err
    assert _metrics(path)["torch:fp16"] == runs["in-process"]["torch:fp16"]


def test_an_isolated_row_judges_the_drivers_weights_even_when_no_seed_reaches_the_factory(cli, tmp_path,
                                                                                         monkeypatch):
    """The factory draws from the OS's entropy (fixed in this, the driver's, process only, so that both runs
    build one module): the child draws other weights, then loads the driver's tensors."""
    import dv_test_models

    monkeypatch.setitem(dv_test_models.ENTROPY, "source", lambda: b"driver")
    runs = {}
    for name, extra in {"in-process": [], "isolated": ["--isolate"]}.items():
        path = tmp_path / f"{name}.json"
        result = cli("compare", "dv_test_models:draws_from_the_os", "--backends", "torch", "--precisions",
                     "fp32,fp16", "--input-shape", "x=1x3x16x16", "--iterations", "1", *extra, "--no-cache",
                     "--json", path, "-q")
        assert result.code == 0, result.out + result.err
        runs[name] = json.loads(path.read_text())
    fp16 = [next(r for r in run["results"] if r["precision"] == "fp16") for run in runs.values()]
    assert fp16[1]["details"].get("isolated") is True
    assert [o["metrics"] for o in fp16[0]["outputs"]] == [o["metrics"] for o in fp16[1]["outputs"]]


@pytest.mark.parametrize("changed, says", [
    ({"width": 6}, "'body.0.weight' is float32[8, 3, 3, 3] there and float32[6, 3, 3, 3] in the driver"),
    ({"scale": 2.0}, "its structure or a non-tensor attribute differs"),
])
def test_a_child_that_builds_another_model_is_an_error_row_naming_why(cli, tmp_path, monkeypatch, changed, says):
    """The driver's factory reads a process global that a fresh process does not share: the isolated
    row is never judged against another model than the reference ran."""
    import dv_test_models

    for key, value in changed.items():
        monkeypatch.setitem(dv_test_models.PROCESS_GLOBALS, key, value)
    path = tmp_path / "r.json"
    result = cli("compare", "dv_test_models:reads_process_globals", "--backends", "torch", "--precisions",
                 "fp16", "--input-shape", "x=1x3x8x8", "--iterations", "1", "--isolate", "--no-cache",
                 "--json", path, "-q")
    assert result.code == 3, result.out + result.err
    row = next(r for r in json.loads(path.read_text())["results"] if r["precision"] == "fp16")
    assert row["status"] == "error" and not row["outputs"]
    assert "the model built in its own process is not the one the reference ran" in row["reason"]
    assert says in row["reason"]


def test_rebuild_refuses_a_module_with_other_parameter_names():
    from deployval.model.loading import build_module, module_digest
    from deployval.run.replica import ReplicaMismatch, capture, rebuild

    spec = ModelSpec(name="m", inputs=(), factory=FACTORY)
    module = build_module(spec, seed=1)
    replica = capture(spec, module, module_digest(spec, module))
    assert replica.nbytes == sum(p.numel() * 4 for p in module.parameters()) + 2 * 8 * 4 + 8  # BN stats, count
    assert module_digest(spec, rebuild(spec, replica, seed=2)) == replica.digest  # another seed: loaded over
    renamed = {("extra." + k if i == 0 else k): v for i, (k, v) in enumerate(replica.tensors.items())}
    with pytest.raises(ReplicaMismatch, match=r"lacks 1 the driver's has .first: 'extra.0.weight'.* has 1 the "
                                              r"driver's lacks .first: '0.weight'"):
        rebuild(spec, type(replica)(replica.digest, renamed), where="on a Ray worker")
