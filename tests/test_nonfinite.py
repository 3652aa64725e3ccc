"""NaN and Inf never pass silently: a non-finite reference or golden file is refused unless
--allow-nonfinite; with it, its NaN/Inf positions are masked and must match in every row; an output
that is non-finite everywhere judges nothing; NaN/Inf where the reference is finite fails everywhere."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_one_line_error

from deployval.errors import UsageError
from deployval.judge.metrics import compare_output
from deployval.judge.nonfinite import NonFinite, check_reference, count_nonfinite, kind_mismatches
from deployval.judge.stats import compare_tensors
from deployval.model.spec import RunConfig, Tolerance

NAN, INF = float("nan"), float("inf")
TIGHT = Tolerance(atol=1e-3, rtol=1e-3)
SMALL = ("--input-shape", "x=1x3x8x8", "--iterations", "1", "--no-cache")


# ---------------------------------------------------------------- pure functions on arrays
def test_counts_by_kind():
    assert count_nonfinite(np.array([1.0, NAN, INF, -INF, INF], np.float32)) == NonFinite(1, 2, 1, 5)
    assert count_nonfinite(np.arange(6, dtype=np.float64)).total == 0
    assert count_nonfinite(np.arange(6, dtype=np.int64)) == NonFinite(elements=6)
    assert count_nonfinite(np.zeros((0, 3), np.float32)).everywhere is False
    assert count_nonfinite(np.full(4, NAN)).everywhere


def test_kind_mismatches_count_only_the_references_nonfinite_positions():
    ref = np.array([NAN, INF, -INF, 1.0])
    assert kind_mismatches(ref, np.array([NAN, INF, -INF, 2.0])) == 0
    assert kind_mismatches(ref, np.array([0.0, INF, INF, NAN])) == 2  # NaN -> 0 and -Inf -> +Inf; index 3 is not one
    assert kind_mismatches(ref, np.array([INF, NAN, -INF, 1.0])) == 2


def test_a_nonfinite_reference_fails_the_output_unless_allowed():
    ref = np.array([NAN, INF, -INF, 1.0, 2.0], np.float32)
    cand = np.array([NAN, INF, -INF, 1.0, 2.0], np.float32)
    refused = compare_output("y", ref, cand, TIGHT)
    assert not refused.passed
    assert "the reference has 3 non-finite values (NaN 1, +Inf 1, -Inf 1)" in refused.failures[0]
    assert "--allow-nonfinite" in refused.failures[0]
    assert refused.min_passing == {}
    allowed = compare_output("y", ref, cand, TIGHT, allow_nonfinite=True)
    assert allowed.passed, allowed.failures
    assert allowed.nonfinite_masked == 3 and allowed.to_dict()["nonfinite_masked"] == 3
    assert allowed.metrics["max_abs"] == 0.0 and allowed.metrics["cosine"] == pytest.approx(1.0)
    assert any("masked out of the metrics" in w for w in allowed.warnings)


@pytest.mark.parametrize("cand, fragment", [
    ([NAN, INF, -INF, NAN, 2.0], "1 non-finite values"),  # NaN where the reference is 1.0
    ([NAN, 5.0, -INF, 1.0, 2.0], "1 of 3 positions where the reference is non-finite differ"),  # finite for +Inf
    ([NAN, -INF, -INF, 1.0, 2.0], "1 of 3 positions"),  # -Inf for +Inf
    ([INF, INF, -INF, 1.0, 2.0], "1 of 3 positions"),  # +Inf for NaN
])
def test_with_the_option_the_masked_positions_must_match_in_kind(cand, fragment):
    ref = np.array([NAN, INF, -INF, 1.0, 2.0], np.float32)
    result = compare_output("y", ref, np.array(cand, np.float32), TIGHT, allow_nonfinite=True)
    assert not result.passed
    assert any(fragment in f for f in result.failures), result.failures
    assert result.min_passing == {}


def test_an_output_nonfinite_everywhere_judges_nothing_even_with_the_option():
    ref = np.full((2, 3), NAN, np.float32)
    result = compare_output("y", ref, ref.copy(), Tolerance(rel_l2=0.1), allow_nonfinite=True)
    assert not result.passed
    assert "non-finite everywhere" in result.failures[0] and "nothing to judge" in result.failures[0]


def test_nan_where_the_reference_is_finite_fails_at_any_tolerance():
    ref = np.linspace(-1, 1, 64, dtype=np.float32)
    cand = ref.copy()
    cand[5] = NAN
    for allow in (False, True):
        result = compare_output("y", ref, cand, Tolerance(rel_l2=1e9, cosine=-1.0), allow_nonfinite=allow)
        assert not result.passed and "where the reference is finite" in result.failures[0]
        assert result.min_passing == {}


def test_layer_statistics_require_the_same_kind_too():
    ref = np.array([NAN, INF, 1.0])
    _, same = compare_tensors(ref, np.array([NAN, INF, 1.0]), TIGHT)
    _, moved = compare_tensors(ref, np.array([NAN, 1.0, 1.0]), TIGHT)
    assert same == []
    assert any("1 of 2 positions where the reference is non-finite differ" in f for f in moved)


def test_check_reference_refuses_or_counts():
    outputs = {"a": np.ones(4, np.float32), "b": np.array([NAN, INF, 0.0, 1.0], np.float32)}
    with pytest.raises(UsageError, match=r"output 'b' has 2 non-finite values of 4 \(NaN 1, \+Inf 1, -Inf 0\).*"
                                         r"--allow-nonfinite"):
        check_reference(outputs, "the reference", allow=False)
    assert check_reference(outputs, "the reference", allow=True) == {"b": NonFinite(1, 1, 0, 4)}
    assert check_reference({"a": np.ones(3)}, "the reference", allow=False) == {}
    with pytest.raises(UsageError, match="non-finite everywhere"):
        check_reference({"c": np.full(3, -INF)}, "the reference", allow=True)


def test_the_option_is_a_run_setting_in_every_reproduction():
    assert "--allow-nonfinite" in RunConfig(allow_nonfinite=True).to_args()
    assert "--allow-nonfinite" not in RunConfig().to_args()


# ---------------------------------------------------------------- end to end
def test_an_all_nan_model_is_refused_with_or_without_the_option(cli):
    refused = cli("compare", "dv_test_models:all_nan", "-b", "torch,ort", *SMALL, "-q")
    assert_one_line_error(refused, 2, "output 'output' has 128 non-finite values of 128 (NaN 128, +Inf 0, -Inf 0)")
    assert "--allow-nonfinite" in refused.err
    allowed = cli("compare", "dv_test_models:all_nan", "-b", "torch,ort", *SMALL, "--allow-nonfinite", "-q")
    assert_one_line_error(allowed, 2, "non-finite everywhere")


def test_matching_nonfinite_positions_pass_and_the_policy_is_stated(cli, tmp_path):
    out = tmp_path / "r.json"
    refused = cli("compare", "dv_test_models:nonfinite_rows", "-b", "torch,ort", *SMALL, "-q")
    assert_one_line_error(refused, 2, "(NaN 16, +Inf 16, -Inf 16)")
    result = cli("compare", "dv_test_models:nonfinite_rows", "-b", "torch,ort", *SMALL, "--allow-nonfinite",
                 "--json", out, "--markdown", tmp_path / "r.md", "--junit", tmp_path / "r.xml", "--html",
                 tmp_path / "r.html")
    assert result.code == 0, result.out + result.err
    data = json.loads(out.read_text())
    ort = next(r for r in data["results"] if r["backend"] == "ort")
    assert ort["status"] == "pass" and ort["outputs"][0]["nonfinite_masked"] == 48
    assert "--allow-nonfinite" in ort["reproduce"]
    assert data["analysis"]["nonfinite"] == {"allow_nonfinite": True, "reference": {
        "output": {"nan": 16, "posinf": 16, "neginf": 16, "elements": 128}}}
    assert any(w.startswith("--allow-nonfinite: the reference's non-finite positions") for w in data["warnings"])
    assert "warning: --allow-nonfinite" in result.out
    for report in ("r.md", "r.xml", "r.html"):  # every report that lists warnings states the policy
        assert "-Inf 16) are masked out of the metrics" in (tmp_path / report).read_text(), report


@pytest.mark.parametrize("model, fragment", [
    ("nonfinite_moved_in_export", "16 of 48 positions where the reference is non-finite differ"),
    ("inf_finite_in_export", "16 of 48 positions where the reference is non-finite differ"),
])
def test_a_row_whose_nonfinite_positions_differ_fails(cli, tmp_path, model, fragment):
    out = tmp_path / "r.json"
    result = cli("compare", f"dv_test_models:{model}", "-b", "ort", *SMALL, "--allow-nonfinite", "--json", out,
                 "-q")
    assert result.code == 1, result.out + result.err
    (row,) = [r for r in json.loads(out.read_text())["results"] if r["backend"] == "ort"]
    assert row["status"] == "fail"
    assert any(fragment in f for f in row["outputs"][0]["failures"]), row["outputs"][0]["failures"]


def test_a_finite_run_states_nothing_but_records_the_policy(cli, tmp_path):
    out = tmp_path / "r.json"
    assert cli("compare", "convs", "-b", "torch", "-p", "fp32,fp16", "--iterations", "1", "--json", out,
               "-q").code == 0
    data = json.loads(out.read_text())
    assert data["analysis"]["nonfinite"] == {"allow_nonfinite": False, "reference": {}}
    assert not any("non-finite" in w for w in data["warnings"])


def _inputs_with(tmp_path, value: float, name: str = "in.npy"):
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    x[0, 0, 4, 4] = value
    np.save(tmp_path / name, x)
    return tmp_path / name


def test_nan_where_the_reference_is_finite_fails_the_row(cli, tmp_path):
    out = tmp_path / "r.json"
    result = cli("compare", "dv_test_models:nan_over_10_in_export", "-b", "torch,ort", "--inputs",
                 _inputs_with(tmp_path, 20.0), "--iterations", "1", "--no-cache", "--json", out, "-q")
    assert result.code == 1, result.out + result.err
    ort = next(r for r in json.loads(out.read_text())["results"] if r["backend"] == "ort")
    assert "1 non-finite values (NaN 1, +Inf 0, -Inf 0) where the reference is finite" in ort["reason"]


def test_in_a_dataset_nan_in_a_row_or_in_a_later_samples_reference_never_passes(cli, tmp_path):
    data = tmp_path / "set"
    data.mkdir()
    for i in range(3):
        _inputs_with(data, 20.0 if i == 2 else 0.5, f"s{i}.npy")
    out = tmp_path / "r.json"
    row_nan = cli("compare", "dv_test_models:nan_over_10_in_export", "-b", "ort", "--dataset", data, "--iterations",
                  "1", "--no-cache", "--json", out, "-q")
    assert row_nan.code == 1, row_nan.out + row_nan.err
    ort = next(r for r in json.loads(out.read_text())["results"] if r["backend"] == "ort")
    assert ort["reason"].startswith("1 of 3 samples fail") and "s2.npy" in ort["reason"]
    assert "where the reference is finite" in ort["reason"]
    # The reference itself is NaN on the last sample only: a failure without the option, masked with it.
    reference_nan = cli("compare", "dv_test_models:nan_over_10", "-b", "ort", "--dataset", data, "--iterations", "1",
                        "--no-cache", "--json", out, "-q")
    assert reference_nan.code == 1, reference_nan.out + reference_nan.err
    ort = next(r for r in json.loads(out.read_text())["results"] if r["backend"] == "ort")
    assert "1 of 3 samples fail" in ort["reason"] and "judged only with --allow-nonfinite" in ort["reason"]
    allowed = cli("compare", "dv_test_models:nan_over_10", "-b", "ort", "--dataset", data, "--iterations", "1",
                  "--no-cache", "--allow-nonfinite", "-q")
    assert allowed.code == 0, allowed.out + allowed.err


# ---------------------------------------------------------------- golden files
@pytest.fixture(scope="module")
def nonfinite_golden(tmp_path_factory):
    """nonfinite_rows' inputs and reference outputs (NaN, +Inf, -Inf rows), saved with the option."""
    from deployval.cli import main

    root = tmp_path_factory.mktemp("nonfinite_golden")
    assert main(["compare", "dv_test_models:nonfinite_rows", "-b", "torch", "--input-shape", "x=1x3x8x8",
                 "--iterations", "1", "--allow-nonfinite", "--save-inputs", str(root / "in.npz"),
                 "--save-outputs", str(root / "gold.npz"), "-q"]) == 0
    return root


def test_a_nonfinite_reference_is_not_saved_without_the_option(cli, tmp_path):
    result = cli("compare", "dv_test_models:nonfinite_rows", "-b", "torch", *SMALL, "--save-outputs",
                 tmp_path / "gold.npz", "-q")
    assert_one_line_error(result, 2, "--allow-nonfinite")
    assert not (tmp_path / "gold.npz").exists()


def test_a_golden_file_with_nan_is_refused_then_judged_by_the_same_rules(cli, nonfinite_golden, tmp_path):
    args = ("compare", "dv_test_models:nonfinite_rows", "-b", "ort", "--inputs", nonfinite_golden / "in.npz",
            "--expected", nonfinite_golden / "gold.npz", "--iterations", "1", "--no-cache", "-q")
    assert_one_line_error(cli(*args), 2, f"--expected '{nonfinite_golden / 'gold.npz'}': output 'output' has 48")
    assert cli(*args, "--allow-nonfinite").code == 0
    moved = cli("compare", "dv_test_models:nonfinite_moved_in_export", *args[2:], "--allow-nonfinite")
    assert moved.code == 1, moved.out + moved.err


def test_a_golden_file_of_only_nan_is_refused_even_with_the_option(cli, nonfinite_golden, tmp_path):
    np.savez(tmp_path / "nan.npz", output=np.full((1, 2, 8, 8), NAN, np.float32))
    result = cli("compare", "dv_test_models:nonfinite_rows", "-b", "ort", "--inputs", nonfinite_golden / "in.npz",
                 "--expected", tmp_path / "nan.npz", "--allow-nonfinite", "--iterations", "1", "-q")
    assert_one_line_error(result, 2, "non-finite everywhere")


def test_a_finite_models_rows_fail_against_a_golden_file_with_nan(cli, tmp_path):
    from deployval.cli import main

    assert main(["compare", "convs", "-b", "torch", "--iterations", "1", "--save-inputs", str(tmp_path / "in.npz"),
                 "--save-outputs", str(tmp_path / "gold.npz"), "-q"]) == 0
    with np.load(tmp_path / "gold.npz") as saved:
        arrays = {name: saved[name] for name in saved.files}
    arrays["y"].flat[0] = NAN
    np.savez(tmp_path / "nan.npz", **arrays)
    args = ("compare", "convs", "-b", "torch", "--inputs", tmp_path / "in.npz", "--expected", tmp_path / "nan.npz",
            "--iterations", "1")
    assert_one_line_error(cli(*args, "-q"), 2, "(NaN 1, +Inf 0, -Inf 0)")
    out = tmp_path / "r.json"
    failed = cli(*args, "--allow-nonfinite", "--json", out, "-q")
    assert failed.code == 1, failed.out + failed.err
    (row,) = json.loads(out.read_text())["results"]
    assert "1 of 1 positions where the reference is non-finite differ" in row["reason"]


# ---------------------------------------------------------------- Python API and validate
def test_the_python_api_takes_the_option():
    from deployval import api

    with pytest.raises(UsageError, match="--allow-nonfinite"):
        api.compare("dv_test_models:nonfinite_rows", ["torch", "torchscript"], input_shapes={"x": (1, 3, 8, 8)},
                    iterations=1)
    report = api.compare("dv_test_models:nonfinite_rows", ["torch", "torchscript"], input_shapes={"x": (1, 3, 8, 8)},
                         iterations=1, allow_nonfinite=True)
    assert report.exit_code == 0 and report.analysis["nonfinite"]["allow_nonfinite"] is True
    assert report.result("torchscript").outputs[0].nonfinite_masked == 48


def test_validate_takes_the_option(cli, tmp_path):
    out = tmp_path / "r.json"
    result = cli("validate", "convs", "--allow-nonfinite", "--iterations", "1", "--json", out, "-q")
    assert result.code == 0, result.out + result.err
    data = json.loads(out.read_text())
    assert data["analysis"]["nonfinite"]["allow_nonfinite"] is True
    assert all("--allow-nonfinite" in r["reproduce"] for r in data["results"] if r.get("reproduce"))
