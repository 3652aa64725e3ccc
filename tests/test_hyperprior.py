"""The bmshj2018-hyperprior-style codec: deterministic, exports and validates at fp32 with both
exporters, and its sub-modules, validated one by one, find the CompressAI-style bug (the exported
bottleneck loses the dequantization with the medians) that the whole model only shows as wrong
z_hat and likelihoods."""

from __future__ import annotations

import pytest
import torch

import deployval
from deployval.catalog.zoo import hyperprior
from deployval.model.spec import InputSpec, ModelSpec, RunConfig

OUTPUTS = ("x_hat", "y_likelihoods", "z_hat")


def whole(factory: str = "deployval.catalog.zoo.hyperprior:build") -> ModelSpec:
    return ModelSpec("hyperprior", inputs=(InputSpec("x", hyperprior.IMAGE),), factory=factory, output_names=OUTPUTS)


def submodule(name: str, export_drops_medians: bool = False) -> ModelSpec:
    """What sub-module validation does: the sub-module alone, with its own input shape and range."""
    shape, (low, high) = hyperprior.SUBMODULES[name]

    def factory() -> torch.nn.Module:
        return getattr(hyperprior.build(export_drops_medians=export_drops_medians), name)

    factory.__qualname__ = f"hyperprior.{name}" + ("_without_medians" if export_drops_medians else "")
    return ModelSpec(f"hyperprior.{name}", inputs=(InputSpec("input", shape, low=low, high=high),), factory=factory)


def test_structure_is_deterministic_and_fits_the_declared_shapes():
    a, b = hyperprior.build(), hyperprior.build()
    x = torch.rand(hyperprior.IMAGE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_a, out_b = a(x), b(x)
    assert all(torch.equal(p, q) for p, q in zip(out_a, out_b))
    x_hat, likelihoods, z_hat = out_a
    assert x_hat.shape == hyperprior.IMAGE and likelihoods.shape == (1, hyperprior.M, 4, 4)
    assert z_hat.shape == (1, hyperprior.N, 1, 1) and ((likelihoods > 0) & (likelihoods <= 1)).all()
    assert not torch.equal(hyperprior.build(seed=1).g_a[0].weight, a.g_a[0].weight)
    medians = a.entropy_bottleneck.medians()
    assert medians.abs().max() > 0.1 and not torch.equal(medians, medians.round())  # losing them matters
    assert torch.allclose(z_hat - medians, (z_hat - medians).round())  # z_hat = round(z - m) + m
    with torch.no_grad():  # every sub-module takes its declared input shape and feeds the next one
        y = a.g_a(x)
        assert tuple(y.shape) == hyperprior.SUBMODULES["h_a"][0] == hyperprior.SUBMODULES["g_s"][0]
        z = a.h_a(y.abs())
        assert tuple(z.shape) == hyperprior.SUBMODULES["entropy_bottleneck"][0] == hyperprior.SUBMODULES["h_s"][0]
        assert a.h_s(a.entropy_bottleneck(z)).shape == y.shape
        low, high = hyperprior.SUBMODULES["h_a"][1]
        assert low <= y.abs().min() and y.abs().max() < high


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_validates_on_onnx_runtime(exporter):
    report = deployval.compare(whole(), backends=["torch", "torchscript", "ort"], exporter=exporter,
                               time_budget_s=0.05)
    assert report.exit_code == 0, [(r.label, r.reason) for r in report.results]
    assert report.result("ort").outputs[2].metrics["max_abs"] == 0.0  # z_hat: rounding lands on the same bins


def test_submodule_validation_finds_the_lost_medians():
    broken = deployval.compare(whole("deployval.catalog.zoo.hyperprior:build_without_medians"),
                               backends=["torch", "ort"], time_budget_s=0.05)
    failing = {o.name for o in broken.result("ort").outputs if not o.passed}
    # validated whole, the outputs say z_hat and the likelihoods are wrong, not which piece did it
    # (x_hat = g_s(round(y)) does not see z_hat here; a real decoder would decode y with wrong scales)
    assert failing == {"z_hat", "y_likelihoods"}
    verdicts = {}
    for name in hyperprior.SUBMODULES:
        report = deployval.compare(submodule(name, export_drops_medians=True), backends=["torch", "ort"],
                                   time_budget_s=0.05)
        verdicts[name] = report.exit_code
    assert verdicts == {"g_a": 0, "h_a": 0, "entropy_bottleneck": 1, "h_s": 0, "g_s": 0}


def test_debug_localizes_the_lost_medians():
    from deployval.debug.run import run_debug

    report = run_debug(whole("deployval.catalog.zoo.hyperprior:build_without_medians"), "ort", "fp32", RunConfig())
    assert report.first_divergent == "entropy_bottleneck"
    assert report.localized.label == "entropy_bottleneck" and report.triage.verdict == "export"
    assert report.layer("h_a").status == "pass" and report.layer("g_a").status == "pass"


def test_validate_every_declared_submodule_from_the_command_line(cli, tmp_path):
    import json

    report_path = tmp_path / "subs.json"
    result = cli("validate", "hyperprior", "--submodule", "all", "--time-budget", "0.05", "--json", report_path,
                 "-q")
    assert result.code == 0, result.out + result.err
    suite = json.loads(report_path.read_text())
    assert suite["entries"] == [f"hyperprior.{name}" for name in hyperprior.SUBMODULES]
    assert suite["summary"]["verdict"] == "PASS"


def test_an_undeclared_submodule_of_a_factory_model_with_its_shape(cli, tmp_path):
    result = cli("compare", "deployval.catalog.zoo.hyperprior:build_without_medians",
                 "--submodule", "entropy_bottleneck", "--input-shape", "input=1x32x1x1",
                 "--input-range", "input=-5,5", "-b", "torch,ort", "--time-budget", "0.05", "-q")
    assert result.code == 1, result.out + result.err
    assert "hyperprior:build_without_medians.entropy_bottleneck" in result.out
    unknown = cli("compare", "hyperprior", "--submodule", "decoder", "-q")
    assert unknown.code == 2 and "declares no sub-module 'decoder'" in unknown.err
