"""A row's reproduction line is derived from the run's configuration (RunConfig.to_args()), so it
cannot drop an option: running it gives the same numbers."""

from __future__ import annotations

import json
import shlex

from deployval.model.spec import RunConfig


def _rows(path):
    return {(r["backend"], r["precision"]): r for r in json.loads(path.read_text())["results"]}


def test_reproduction_line_gives_the_same_numbers(cli, tmp_path):
    first = tmp_path / "first.json"
    result = cli("compare", "dv_test_models:two_inputs", "--input-shape", "features=2x4",
                 "--input-shape", "ids=2x6:int64", "--input-range", "ids=0,20", "--backends", "ort",
                 "--precisions", "fp32,int8", "--int8-exclude", "op:Gemm", "--calibration-method", "percentile",
                 "--atol", "0.5", "--rtol", "0.01", "--seed", "7", "--iterations", "1", "--json", first, "-q")
    assert result.code in (0, 1), result.err
    row = _rows(first)[("ort", "int8")]
    line = row["reproduce"]
    for option in ("--int8-exclude op:Gemm", "--calibration-method percentile", "--atol 0.5", "--rtol 0.01",
                   "--seed 7", "--iterations 1", "--input-range ids=0,20"):
        assert option in line, line
    again = tmp_path / "again.json"
    argv = shlex.split(line)
    assert argv[:2] == ["deployval", "compare"]
    rerun = cli(*argv[1:], "--json", again, "-q")
    assert rerun.code == result.code, rerun.err
    before, after = row["outputs"], _rows(again)[("ort", "int8")]["outputs"]
    assert [o["metrics"] for o in before] == [o["metrics"] for o in after]
    assert [o["tolerance"] for o in before] == [o["tolerance"] for o in after]


def test_to_args_names_every_setting_that_differs_from_the_default():
    assert RunConfig().to_args() == []
    config = RunConfig(warmup=3, iterations=5, atol=0.1, calibration_method="entropy", int8_exclude=("a*", "op:Add"),
                       keep_fp32=("norm",), isolate=False, backend_options={"trt": {
                           "keep_int64": True, "workspace_mb": 512, "fp16_route": "flag"}})
    args = config.to_args()
    assert shlex.join(args) == ("--warmup 3 --iterations 5 --atol 0.1 --calibration-method entropy "
                                "--int8-exclude 'a*' --int8-exclude op:Add --keep-fp32 norm --no-isolate "
                                "--backend-option trt.keep_int64=true --backend-option trt.workspace_mb=512 "
                                "--backend-option trt.fp16_route=flag")
