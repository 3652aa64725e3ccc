"""Spec parsing and validation: shapes, input arguments, tolerance tables, the divisibility rule."""

from __future__ import annotations

import pytest

from deployval.catalog.zoo import ZOO
from deployval.errors import UsageError
from deployval.model.arguments import parse_input_range, parse_input_shape, parse_list, parse_shape
from deployval.model.spec import InputSpec, Tolerance, ToleranceTable


def test_parse_shape():
    assert parse_shape("1x3x224x224") == (1, 3, 224, 224)
    assert parse_shape("7") == (7,)
    for bad in ("", "1x", "ax3", "1x0x3", "-1x3"):
        with pytest.raises(UsageError):
            parse_shape(bad)


def test_parse_input_shape_and_range():
    arg = parse_input_shape("ids=1x16:int64")
    assert (arg.name, arg.shape, arg.dtype) == ("ids", (1, 16), "int64")
    bare = parse_input_shape("1x3x8x8")
    assert bare.name == "" and bare.shape == (1, 3, 8, 8)
    with pytest.raises(UsageError, match="unknown dtype"):
        parse_input_shape("x=1x2:complex")
    assert parse_input_range("ids=0,1000") == ("ids", 0.0, 1000.0)
    with pytest.raises(UsageError):
        parse_input_range("ids=5,1")


def test_parse_list_refuses_unknown_and_empty():
    assert parse_list("torch, ort,torch", "backend") == ("torch", "ort")
    with pytest.raises(UsageError, match="unknown precision 'fp8'"):
        parse_list("fp32,fp8", "precision", ("fp32", "fp16", "int8"))
    with pytest.raises(UsageError):
        parse_list(" , ", "backend")


def test_fine_organs_refuses_shapes_not_divisible_by_pooling():
    spec = ZOO["fine_organs"]
    assert spec.with_input_shapes({"input": (1, 1, 48, 80, 80)}).inputs[0].shape == (1, 1, 48, 80, 80)
    with pytest.raises(UsageError, match="dim 4 = 100 is not a multiple of 16"):
        spec.with_input_shapes({"input": (1, 1, 48, 80, 100)})
    with pytest.raises(UsageError, match="expected 5 dimensions"):
        spec.with_input_shapes({"input": (1, 48, 80, 80)})


def test_unknown_input_name_is_refused():
    with pytest.raises(UsageError, match="no input 'image'"):
        ZOO["convs"].with_input_shapes({"image": (1, 3, 8, 8)})


def test_input_spec_validation():
    with pytest.raises(UsageError):
        InputSpec("x", (1,), dtype="complex64")
    with pytest.raises(UsageError):
        InputSpec("x", (1,), low=1.0, high=1.0)


def test_tolerance_table_most_specific_wins():
    table = ToleranceTable({
        "*:fp16": Tolerance(rel_l2=0.01),
        "ort:fp16": Tolerance(rel_l2=0.02),
        "ort:fp16:logits": Tolerance(rel_l2=0.03),
    })
    assert table.resolve("ort", "fp16", "logits").rel_l2 == 0.03
    assert table.resolve("ort", "fp16", "other").rel_l2 == 0.02
    assert table.resolve("trt", "fp16", "logits").rel_l2 == 0.01
    assert table.resolve("ort", "fp32", "logits").elementwise  # the built-in fp32 default


def test_tolerance_describe():
    assert Tolerance(atol=1e-3, rtol=1e-3).describe() == "atol=0.001 rtol=0.001"
    assert "cosine>=0.99" in Tolerance(rel_l2=0.01, cosine=0.99).describe()
