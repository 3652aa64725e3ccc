"""ONNX files deployval did not export (tests/onnx_wild.py: the onnx package's public test models,
opsets 6-12 and some of them converted to opset 21, model-zoo architectures at opset 9, the Silero VAD
files at 15-18): fp16 and int8 end as
judged rows or SKIPPED with their reason, never an ERROR from an artifact deployval could not make.
bench/onnx_in_the_wild.py prints the same as a table."""

from __future__ import annotations

import pytest
from onnx_wild import corpus, model_and_inputs

from deployval import api
from deployval.errors import UsageError

# The large model-zoo CNNs take 20-55 s each on 2 cores: in the slow suite (make test-slow).
LARGE = ("light/light_vgg19", "light/light_zfnet512", "light/light_bvlc_alexnet")
MODELS = [pytest.param(*m, id=m[0], marks=[pytest.mark.slow] if m[0] in LARGE else []) for m in corpus()]


@pytest.mark.parametrize(("label", "path", "data"), MODELS)
def test_fp16_and_int8_rows_are_judged_or_skipped(label, path, data, tmp_path):
    path, inputs = model_and_inputs(label, path, data, tmp_path)
    if isinstance(inputs, str):
        pytest.skip(f"the model's test data cannot be fed: {inputs}")
    shapes = {k: v.shape for k, v in (inputs or {}).items() if v.ndim}  # dynamic dimensions follow the data
    try:
        report = api.compare(str(path), backends=("ort",), precisions=("fp32", "fp16", "int8"), inputs=inputs,
                             input_shapes=shapes, iterations=1, cache_dir=tmp_path)
    except UsageError as exc:  # ONNX Runtime cannot run the file itself at fp32 (opset 6, strings, ...)
        pytest.skip(f"no fp32 reference: {exc.one_line()}")
    rows = {r.precision: r for r in report.results}
    assert rows["fp32"].status == "reference"
    for precision in ("fp16", "int8"):
        row = rows[precision]
        assert row.status in ("pass", "fail", "skipped"), f"{precision}: {row.status}: {row.reason}"
        if row.status == "skipped":
            assert "nothing to quantize" in row.reason, row.reason
