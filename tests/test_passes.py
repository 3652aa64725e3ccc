"""ONNX passes: load/check, simplify, int64 -> int32, fp16 and int8 on small graphs."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from deployval.errors import ExportError, UsageError
from deployval.export.fp16 import convert_fp16
from deployval.export.int8 import quantize_int8
from deployval.export.int32 import INT32_MAX, cast_int64_to_int32
from deployval.export.onnx_io import check_onnx, load_onnx, run_onnxruntime
from deployval.export.simplify import simplify_onnx

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
OPSET = 18


def i64(name: str, values, shape=None) -> onnx.TensorProto:
    arr = np.asarray(values, dtype=np.int64)
    return numpy_helper.from_array(arr if shape is None else arr.reshape(shape), name)


def f32(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def make_model(nodes, inputs, outputs, initializers=(), opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    model.metadata_props.add(key="origin", value="test")
    onnx.checker.check_model(model, full_check=True)
    return model


def int64_free(model: onnx.ModelProto) -> bool:
    g = model.graph
    return (
        all(v.type.tensor_type.elem_type != TP.INT64 for v in [*g.input, *g.output])
        and all(t.data_type != TP.INT64 for t in g.initializer)
        and all(
            a.t.data_type != TP.INT64 and not (n.op_type == "Cast" and a.name == "to" and a.i == TP.INT64)
            for n in g.node
            if not n.name.endswith("__cast_int64")
            for a in n.attribute
        )
    )


def assert_same_outputs(original: onnx.ModelProto, converted: onnx.ModelProto, feeds: dict) -> dict:
    """Run both on ORT (int64 feeds cast to int32 for the converted one) and demand equality."""
    int32_inputs = {v.name for v in converted.graph.input if v.type.tensor_type.elem_type == TP.INT32}
    feeds32 = {k: (v.astype(np.int32) if k in int32_inputs else v) for k, v in feeds.items()}
    ref = run_onnxruntime(original, feeds)
    out = run_onnxruntime(converted, feeds32)
    assert list(ref) == list(out)
    for name in ref:
        a, b = ref[name], out[name]
        if a.dtype == np.int64:
            assert b.dtype == np.int32, name
            b = b.astype(np.int64)
        assert a.shape == b.shape, name
        assert np.array_equal(a, b), name
    return ref


def convert_and_check(model: onnx.ModelProto, feeds: dict):
    converted, details = cast_int64_to_int32(model)
    onnx.checker.check_model(converted, full_check=True)
    assert int64_free(converted)
    assert [o.name for o in converted.graph.output] == [o.name for o in model.graph.output]
    assert {p.key: p.value for p in converted.metadata_props} == {p.key: p.value for p in model.metadata_props}
    original_names = {n.name for n in model.graph.node if n.name}
    assert original_names <= {n.name for n in converted.graph.node}
    assert_same_outputs(model, converted, feeds)
    return converted, details


# --------------------------------------------------------------------------- int64 -> int32


def embedding_model() -> onnx.ModelProto:
    """ids -> Gather (embedding) -> shape arithmetic -> Reshape/Slice/... -> ArgMax, many int64 ops."""
    n = helper.make_node
    nodes = [
        n("Gather", ["emb", "ids"], ["e"], name="embedding"),  # [2, 5, 4]
        n("Shape", ["e"], ["s"], name="shape"),
        n("Gather", ["s", "c0"], ["b"], name="get_b", axis=0),
        n("Gather", ["s", "c1"], ["l"], name="get_l", axis=0),
        n("Mul", ["b", "l"], ["bl"], name="mul_bl"),
        n("Unsqueeze", ["bl", "ax0"], ["bl_u"], name="unsq_bl"),
        n("Concat", ["bl_u", "minus1"], ["shp"], name="concat_shape", axis=0),
        n("Reshape", ["e", "shp"], ["r"], name="reshape"),  # [10, 4]
        n("Reshape", ["r", "shape_const"], ["r2"], name="reshape_const"),  # [10, 4] via int64 initializer
        n("Slice", ["r2", "one", "big", "ax0", "one"], ["sl"], name="slice_tail"),  # rows 1: (INT64_MAX end)
        n("Slice", ["r2", "minus1", "small", "ax0", "minus1"], ["rev"], name="slice_rev"),  # reversed (INT64_MIN end)
        n("Shape", ["sl"], ["s2"], name="shape2"),
        n("Gather", ["s2", "c0"], ["rows"], name="get_rows", axis=0),
        n("Range", ["c0", "rows", "c1"], ["rng"], name="range"),  # int64 [9]
        n("Unsqueeze", ["rng", "ax1"], ["rng_u"], name="unsq_rng"),
        n("Expand", ["rng_u", "s2"], ["ex"], name="expand"),  # int64 [9, 4]
        n("Cast", ["ex"], ["exf"], name="cast_f", to=TP.FLOAT),
        n("Add", ["sl", "exf"], ["z"], name="add"),
        n("ArgMax", ["z"], ["am"], name="argmax", axis=1, keepdims=0),  # int64 output
        n("ConstantOfShape", ["s2"], ["cos"], name="cos", value=i64("v", [3], [1])),
        n("Add", ["cos", "ex"], ["cos_ex"], name="add_int"),
        n("Cast", ["z"], ["zi"], name="cast_i64", to=TP.INT64),
        n("Tile", ["ids", "reps"], ["tiled"], name="tile"),
        n("Unsqueeze", ["tiled", "ax0"], ["t_u"], name="unsq_t"),
        n("Squeeze", ["t_u", "ax0"], ["t_sq"], name="squeeze_t"),
        n("ReduceSum", ["z", "ax1"], ["zs"], name="reduce", keepdims=0),
        n("TopK", ["zs", "k"], ["top_v", "top_i"], name="topk"),
        n("NonZero", ["am"], ["nz"], name="nonzero"),
        n("Constant", [], ["cint"], name="const_int", value_int=7),
        n("Add", ["am", "cint"], ["am7"], name="add7"),
    ]
    inits = [
        f32("emb", np.random.default_rng(0).normal(size=(20, 4))),
        i64("c0", 0),
        i64("c1", 1),
        i64("ax0", [0]),
        i64("ax1", [1]),
        i64("minus1", [-1]),
        i64("one", [1]),
        i64("big", [INT64_MAX]),
        i64("small", [INT64_MIN]),
        i64("shape_const", [10, 4]),
        i64("reps", [1, 2]),
        i64("k", [3]),
    ]
    outputs = [
        ("am", TP.INT64, [9]),
        ("rev", TP.FLOAT, [10, 4]),
        ("cos_ex", TP.INT64, [9, 4]),
        ("zi", TP.INT64, [9, 4]),
        ("t_sq", TP.INT64, [2, 10]),
        ("top_v", TP.FLOAT, [3]),
        ("top_i", TP.INT64, [3]),
        ("nz", TP.INT64, [1, None]),
        ("am7", TP.INT64, [9]),
    ]
    return make_model(nodes, [("ids", TP.INT64, [2, 5])], outputs, inits)


def test_int32_many_int64_ops() -> None:
    model = embedding_model()
    ids = np.random.default_rng(1).integers(0, 20, size=(2, 5)).astype(np.int64)
    converted, d = convert_and_check(model, {"ids": ids})
    assert d.int32_inputs == ["ids"] and d.inputs == 1
    assert d.outputs == 7  # every int64 output, float outputs untouched
    assert d.clamped_slice_bounds == 2  # INT64_MAX and INT64_MIN
    assert d.casts_retargeted == 1  # Cast(to=INT64)
    assert d.constants == 2  # ConstantOfShape value, Constant value_int
    # int64-only outputs: Shape x2, ArgMax, TopK indices, NonZero
    assert d.casts_after == 5
    # One shared Cast(to=INT64) per value feeding an int64-only input: ax0 (Unsqueeze x2, Squeeze),
    # ax1 (Unsqueeze, ReduceSum), shp and shape_const (Reshape), reps (Tile), k (TopK). Expand and
    # ConstantOfShape read Shape's own int64 output instead of casting its int32 copy back.
    assert d.casts_before == 6
    by_name = {n.name: n for n in converted.graph.node}
    assert by_name["cast_i64"].attribute[0].i == TP.INT32
    # Expand reads the original int64 shape directly, not an int32 -> int64 round trip.
    assert by_name["expand"].input[1] == by_name["shape2"].output[0]
    inserted = [n.name for n in converted.graph.node if n.name not in {m.name for m in model.graph.node}]
    assert len(inserted) == len(set(inserted)) == d.casts_before + d.casts_after
    # Deterministic: the same input gives the same output.
    again, _ = cast_int64_to_int32(model)
    assert again.SerializeToString() == converted.SerializeToString()
    # The input model is left alone.
    assert model.graph.input[0].type.tensor_type.elem_type == TP.INT64


def test_int32_is_identity_without_int64() -> None:
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")], [("x", TP.FLOAT, [2])], [("y", TP.FLOAT, [2])]
    )
    converted, d = cast_int64_to_int32(model)
    assert not d.changed
    assert converted.graph.SerializeToString() == model.graph.SerializeToString()


def test_int32_out_of_range_constant_is_refused() -> None:
    nodes = [
        helper.make_node("Add", ["x", "huge"], ["y"], name="add_huge"),
        helper.make_node("Slice", ["x", "zero", "huge"], ["z"], name="slice_huge"),
    ]
    model = make_model(
        nodes,
        [("x", TP.INT64, [3])],
        [("y", TP.INT64, [3]), ("z", TP.INT64, [3])],
        [i64("huge", [5_000_000_000]), i64("zero", [0])],
    )
    with pytest.raises(UsageError) as err:
        cast_int64_to_int32(model)
    message = err.value.one_line()
    assert "\n" not in err.value.message
    assert "initializer 'huge'" in message and "5000000000" in message
    assert "Add 'add_huge' input 'B'" in message and "Slice 'slice_huge' input 'ends'" in message


def test_int32_out_of_range_constant_node_is_refused() -> None:
    nodes = [
        helper.make_node("Constant", [], ["c"], name="const_big", value=i64("cv", [-(2**40)])),
        helper.make_node("Mul", ["x", "c"], ["y"], name="mul_big"),
    ]
    model = make_model(nodes, [("x", TP.INT64, [1])], [("y", TP.INT64, [1])])
    with pytest.raises(UsageError, match=r"Constant 'const_big'.*-1099511627776.*Mul 'mul_big'"):
        cast_int64_to_int32(model)


def test_int32_slice_sentinel_through_concat() -> None:
    """The legacy exporter builds Slice ends with Concat; the sentinel is still clamped."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["d0"], name="d0", axis=0),
        helper.make_node("Unsqueeze", ["d0", "axes"], ["d0u"], name="unsq"),
        helper.make_node("Concat", ["d0u", "big"], ["ends"], name="concat", axis=0),
        helper.make_node("Slice", ["x", "starts", "ends", "axes01"], ["y"], name="slice"),
    ]
    inits = [i64("zero", 0), i64("axes", [0]), i64("big", [INT64_MAX]), i64("starts", [1, 1]), i64("axes01", [0, 1])]
    model = make_model(nodes, [("x", TP.FLOAT, [4, 6])], [("y", TP.FLOAT, [3, 5])], inits)
    converted, d = convert_and_check(model, {"x": np.arange(24, dtype=np.float32).reshape(4, 6)})
    assert d.clamped_slice_bounds == 1
    big = next(t for t in converted.graph.initializer if t.name == "big")
    assert numpy_helper.to_array(big).tolist() == [INT32_MAX]


def test_int32_refuses_subgraph_with_int64_and_passes_clean_one() -> None:
    def if_model(int64_inside: bool) -> onnx.ModelProto:
        if int64_inside:  # truncate through int64, entirely inside the branch
            then_nodes = [
                helper.make_node("Cast", ["x"], ["t"], name="inner_to_int", to=TP.INT64),
                helper.make_node("Cast", ["t"], ["tf"], name="inner_to_float", to=TP.FLOAT),
            ]
        else:
            then_nodes = [helper.make_node("Relu", ["x"], ["tf"], name="inner_relu")]
        then_g = helper.make_graph(then_nodes, "then", [], [helper.make_tensor_value_info("tf", TP.FLOAT, [3])])
        else_g = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["e"], name="inner_id")],
            "else",
            [],
            [helper.make_tensor_value_info("e", TP.FLOAT, [3])],
        )
        node = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)
        return make_model([node], [("x", TP.FLOAT, [3]), ("c", TP.BOOL, [])], [("y", TP.FLOAT, [3])])

    with pytest.raises(
        ExportError, match=r"'branch' uses int64 with subgraphs \(If\), which this pass does not handle"
    ):
        cast_int64_to_int32(if_model(int64_inside=True))
    converted, d = cast_int64_to_int32(if_model(int64_inside=False))
    assert not d.changed
    assert converted.graph.SerializeToString() == if_model(int64_inside=False).graph.SerializeToString()


def test_int32_refuses_custom_domain_with_int64() -> None:
    node = helper.make_node("MyOp", ["x"], ["y"], name="custom", domain="com.example")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TP.INT64, [2])],
        [helper.make_tensor_value_info("y", TP.FLOAT, [2])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.example", 1)]
    )
    with pytest.raises(ExportError, match=re.escape("custom-domain op 'com.example::MyOp'")):
        cast_int64_to_int32(model)


def test_int32_dtype_attribute_found_from_schema() -> None:
    """EyeLike(dtype=INT64) is not listed anywhere: inference shows `dtype` decides the output type."""
    nodes = [helper.make_node("EyeLike", ["x"], ["y"], name="eye", dtype=TP.INT64)]
    model = make_model(nodes, [("x", TP.FLOAT, [3, 3])], [("y", TP.INT64, [3, 3])])
    _, d = convert_and_check(model, {"x": np.zeros((3, 3), np.float32)})
    assert d.dtype_attrs_retargeted == 1 and d.casts_after == 0


@functools.cache
def property_models() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    n = helper.make_node
    nodes = [
        n("Add", ["x", "offset"], ["a"], name="add"),
        n("Mul", ["a", "scale"], ["m"], name="mul"),
        n("ArgMax", ["m"], ["am"], name="argmax", axis=0, keepdims=1),
        n("Gather", ["table", "ids"], ["g"], name="gather", axis=0),
        n("Gather", ["m", "am"], ["picked"], name="pick", axis=0),
        n("Add", ["g", "picked"], ["y"], name="add_y"),
    ]
    inits = [
        i64("offset", [3, -7, 11, 0, 5]),
        i64("scale", [2, -3, 1, 4, -1]),
        i64("table", np.arange(16) * 1000 - 7000),
    ]
    model = make_model(
        nodes,
        [("x", TP.INT64, [5]), ("ids", TP.INT64, [3])],
        [("am", TP.INT64, [1]), ("m", TP.INT64, [5]), ("y", TP.INT64, [3])],
        inits,
    )
    converted, _ = cast_int64_to_int32(model)
    onnx.checker.check_model(converted, full_check=True)
    return model, converted


@settings(max_examples=60, deadline=None)
@given(
    x=st.lists(st.integers(-(2**28), 2**28), min_size=5, max_size=5),
    ids=st.lists(st.integers(-16, 15), min_size=3, max_size=3),
)
def test_int32_property_preserves_outputs(x: list[int], ids: list[int]) -> None:
    model, converted = property_models()
    assert_same_outputs(model, converted, {"x": np.array(x, dtype=np.int64), "ids": np.array(ids, dtype=np.int64)})


class TinyIndexNet:
    """Embedding + shape arithmetic + slicing + arange + argmax, as exporters really emit them."""

    @staticmethod
    def build():
        import torch

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.emb = torch.nn.Embedding(30, 8)
                self.lin = torch.nn.Linear(8, 6)

            def forward(self, ids: torch.Tensor):
                e = self.emb(ids)
                b, n = ids.shape
                flat = e.reshape(b * n, 8)[1:]
                pos = torch.arange(flat.shape[0]).unsqueeze(1).expand(-1, 6)
                y = self.lin(flat) + pos.to(flat.dtype)
                return y.argmax(-1), y.unsqueeze(0).squeeze(0), (ids * 3 + 1)[:, :-1]

        torch.manual_seed(0)
        return Net().eval()


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_int32_on_torch_exports(tmp_path: Path, dynamo: bool) -> None:
    import torch

    net = TinyIndexNet.build()
    ids = torch.randint(0, 30, (2, 7))
    path = tmp_path / "net.onnx"
    kwargs = {} if dynamo else {"dynamic_axes": {"ids": {0: "batch", 1: "length"}}}
    torch.onnx.export(net, (ids,), str(path), dynamo=dynamo, verbose=False, input_names=["ids"], **kwargs)
    model = load_onnx(path)
    assert any(v.type.tensor_type.elem_type == TP.INT64 for v in model.graph.input)
    _, d = convert_and_check(model, {"ids": ids.numpy()})
    assert d.int32_inputs == ["ids"] and d.outputs >= 2
    if dynamo:  # the dynamo exporter writes the Slice end as INT64_MAX
        assert d.clamped_slice_bounds >= 1


# --------------------------------------------------------------------------- load / check / simplify


def small_model_bytes() -> bytes:
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [("x", TP.FLOAT, [1, 32])],
        [("y", TP.FLOAT, [1, 32])],
        [f32("w", np.ones((32, 32)))],
    )
    return model.SerializeToString()


@pytest.mark.parametrize(
    "content, expected",
    [
        (os.urandom(4096), "not an ONNX model"),
        (b"", "empty"),
        (b"hello world, this is not a model\n", "not an ONNX model"),
        ("truncated", "not an ONNX model"),
    ],
    ids=["random", "empty", "text", "truncated"],
)
def test_load_onnx_rejects_non_onnx(tmp_path: Path, content, expected: str) -> None:
    if content == "truncated":
        full = small_model_bytes()
        content = full[: len(full) // 2]
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=expected) as err:
        load_onnx(path)
    assert "\n" not in err.value.message


def test_load_onnx_missing_file_and_external_data(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found") as err:
        load_onnx(tmp_path / "nope.onnx")
    assert "\n" not in err.value.message

    model = onnx.load_from_string(small_model_bytes())
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="ext.data", size_threshold=0)
    loaded = load_onnx(path)
    assert numpy_helper.to_array(loaded.graph.initializer[0]).shape == (32, 32)
    (tmp_path / "ext.data").unlink()
    with pytest.raises(UsageError, match=re.escape("external data file 'ext.data' for tensor 'w' is missing")) as err:
        load_onnx(path)
    assert "\n" not in err.value.message


def test_check_onnx_error_class_and_message() -> None:
    model = onnx.load_from_string(small_model_bytes())
    check_onnx(model)
    model.graph.node[0].input[1] = "missing"
    with pytest.raises(ExportError, match="fails the ONNX checker"):
        check_onnx(model)
    with pytest.raises(UsageError, match=r"^'user\.onnx' fails the ONNX checker") as err:
        check_onnx(model, what="'user.onnx'", error=UsageError)
    assert "\n" not in err.value.message


def test_simplify_folds_constants() -> None:
    nodes = [
        helper.make_node("Add", ["a", "b"], ["ab"], name="fold_me"),
        helper.make_node("Identity", ["ab"], ["ab_id"], name="ident"),
        helper.make_node("Mul", ["x", "ab_id"], ["y"], name="mul"),
    ]
    model = make_model(
        nodes, [("x", TP.FLOAT, [4])], [("y", TP.FLOAT, [4])], [f32("a", [1, 2, 3, 4]), f32("b", [1, 1, 1, 1])]
    )
    simplified, d = simplify_onnx(model)
    assert d.nodes_before == 3 and d.nodes_after == 1
    assert d.ops_removed == {"Add": 1, "Identity": 1}
    assert {p.key for p in simplified.metadata_props} >= {"origin"}
    x = np.arange(4, dtype=np.float32)
    assert np.array_equal(run_onnxruntime(simplified, {"x": x})["y"], run_onnxruntime(model, {"x": x})["y"])


# --------------------------------------------------------------------------- fp16 / int8


@functools.cache
def conv_model_bytes() -> bytes:
    import io

    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, stride=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 1),
    ).eval()
    with torch.no_grad():  # non-trivial BN statistics
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 1.5)
    buffer = io.BytesIO()
    torch.onnx.export(net, (torch.randn(1, 3, 16, 16),), buffer, dynamo=False, input_names=["x"], output_names=["y"])
    return buffer.getvalue()


def conv_inputs(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(1, 3, 16, 16)).astype(np.float32)} for _ in range(n)]


def test_fp16_keeps_io_and_stays_close() -> None:
    model = onnx.load_from_string(conv_model_bytes())
    half, d = convert_fp16(model)
    io_types = {v.type.tensor_type.elem_type for v in [*half.graph.input, *half.graph.output]}
    assert io_types == {TP.FLOAT}
    assert any(t.data_type == TP.FLOAT16 for t in half.graph.initializer)
    assert d.initializers_converted >= 4 and d.casts_added >= 2
    assert d.overflow == 0 and d.flush_to_zero == 0
    feeds = conv_inputs(1, 3)[0]
    ref = run_onnxruntime(model, feeds)["y"]
    out = run_onnxruntime(half, feeds)["y"]
    assert out.dtype == np.float32
    rel_l2 = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert rel_l2 < 5e-3


def test_fp16_counts_overflow_and_flush_and_block_list() -> None:
    nodes = [
        helper.make_node("Add", ["x", "w"], ["a"], name="add_w"),
        helper.make_node("Mul", ["a", "s"], ["y"], name="keep_me"),
    ]
    model = make_model(
        nodes,
        [("x", TP.FLOAT, [4])],
        [("y", TP.FLOAT, [4])],
        [f32("w", [1e5, -2e5, 1e-9, 0.5]), f32("s", [1, 0.25, 3, 4])],
    )
    half, d = convert_fp16(model, node_block_list=["keep_me"])
    assert d.overflow == 2 and d.flush_to_zero == 1
    assert d.kept_fp32 == ["keep_me"]
    assert "Range" in d.op_block_list  # the converter's defaults are kept
    # keep_me produces the graph output: the converter would leave it fp16 despite keep_io_types.
    assert half.graph.output[0].type.tensor_type.elem_type == TP.FLOAT
    out = run_onnxruntime(half, {"x": np.zeros(4, np.float32)})["y"]
    assert out.dtype == np.float32
    assert np.isfinite(out).all()  # clamped to the fp16 max, not inf
    assert out[0] == pytest.approx(65504.0)


def test_int8_qdq_symmetric_and_accurate(tmp_path: Path) -> None:
    model = onnx.load_from_string(conv_model_bytes())
    out_path = tmp_path / "int8.onnx"
    d = quantize_int8(model, iter(conv_inputs(16, 0)), out_path)
    assert out_path.is_file() and d.samples == 16 and d.method == "minmax"
    assert d.quantize_nodes > 0 and d.dequantize_nodes > 0
    assert d.quantized_op_types == ["Conv"]  # Q/DQ on the inputs of the convolutions only (TensorRT's placement)
    assert d.nonzero_zero_points == 0
    quantized = onnx.load(str(out_path))
    inits = {t.name: t for t in quantized.graph.initializer}
    zero_points = [n.input[2] for n in quantized.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zero_points and all(not numpy_helper.to_array(inits[z]).any() for z in zero_points if z in inits)
    for feeds in conv_inputs(4, 99):
        ref = run_onnxruntime(model, feeds)["y"].ravel()
        out = run_onnxruntime(out_path, feeds)["y"].ravel()
        cosine = float(ref @ out / (np.linalg.norm(ref) * np.linalg.norm(out)))
        assert cosine > 0.98


def test_int8_refuses_empty_calibration_and_unknown_method(tmp_path: Path) -> None:
    model = onnx.load_from_string(conv_model_bytes())
    with pytest.raises(UsageError, match="calibration set is empty"):
        quantize_int8(model, [], tmp_path / "q.onnx")
    with pytest.raises(UsageError, match="unknown calibration method"):
        quantize_int8(model, conv_inputs(1, 0), tmp_path / "q.onnx", method="magic")
    with pytest.raises(UsageError, match=r"calibration sample 1: unknown input\(s\) image; missing input\(s\) x"):
        quantize_int8(model, [{"image": np.zeros((1, 3, 16, 16), np.float32)}], tmp_path / "q.onnx")
    with pytest.raises(UsageError, match="no node named 'nope'"):
        quantize_int8(model, conv_inputs(1, 0), tmp_path / "q.onnx", exclude_nodes=["nope"])


def test_int8_percentile_and_excluded_op_type(tmp_path: Path) -> None:
    model = onnx.load_from_string(conv_model_bytes())
    float64_feeds = ({"x": f["x"].astype(np.float64)} for f in conv_inputs(4, 1))  # cast to the input dtype
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    d = quantize_int8(model, float64_feeds, tmp_path / "q.onnx", method="percentile", exclude_nodes=[convs[0]])
    assert d.samples == 4 and d.quantized_per_op_type == {"Conv": len(convs) - 1}
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    dq_outputs = {o for n in quantized.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert not dq_outputs.intersection(next(n for n in quantized.graph.node if n.name == convs[0]).input)
    d = quantize_int8(model, conv_inputs(1, 0), tmp_path / "none.onnx", exclude_op_types=["Conv"])
    assert d.quantized_nodes == 0 and d.quantize_nodes == 0 and d.samples == 0  # all excluded: nothing calibrated


def test_int32_keeps_int64_where_onnxruntime_has_no_int32_kernel() -> None:
    """OneHot allows int32 by schema, but ONNX Runtime has no int32 kernel: kept int64 inside."""
    nodes = [helper.make_node("OneHot", ["ids", "depth", "values"], ["y"], name="onehot", axis=-1)]
    model = make_model(
        nodes, [("ids", TP.INT64, [4])], [("y", TP.INT64, [4, 5])], [i64("depth", [5]), i64("values", [0, 1])]
    )
    ids = np.array([0, 3, 4, 1], dtype=np.int64)
    unchecked, _ = cast_int64_to_int32(model, runtime_check=False)
    onnx.checker.check_model(unchecked, full_check=True)  # valid ONNX ...
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):  # ... that ONNX Runtime cannot run
        run_onnxruntime(unchecked, {"ids": ids.astype(np.int32)})
    _, d = convert_and_check(model, {"ids": ids})
    assert d.kept_int64 == ["OneHot 'onehot'"]
    assert d.casts_before == 3 and d.casts_after == 1


def _activation_scales(path: Path) -> list[float]:
    quantized = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    return [float(inits[n.input[1]]) for n in quantized.graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in inits and inits[n.input[1]].size == 1]


def test_int8_entropy_is_not_minmax_in_disguise(tmp_path: Path) -> None:
    """quantize_static's entropy calibrator has as many histogram bins as quantized bins, which
    leaves only the full range; deployval calibrates entropy itself with 2048 bins."""
    model = onnx.load_from_string(conv_model_bytes())
    minmax, entropy = tmp_path / "minmax.onnx", tmp_path / "entropy.onnx"
    quantize_int8(model, conv_inputs(8, 0), minmax, method="minmax")
    d = quantize_int8(model, conv_inputs(8, 0), entropy, method="entropy")
    assert d.samples == 8 and d.method == "entropy"
    clipped = [e < 0.95 * m for e, m in zip(_activation_scales(entropy), _activation_scales(minmax))]
    assert clipped and any(clipped)  # entropy clips outliers: smaller scales than the full range
    for feeds in conv_inputs(2, 5):
        ref, out = run_onnxruntime(model, feeds)["y"].ravel(), run_onnxruntime(entropy, feeds)["y"].ravel()
        assert float(ref @ out / (np.linalg.norm(ref) * np.linalg.norm(out))) > 0.98


def test_topological_sort_orders_readers_after_producers_and_bodies_after_outer_values():
    from deployval.export.graph import topological_sort

    then_graph = helper.make_graph([helper.make_node("Identity", ["h"], ["t"])], "then", [],
                                   [helper.make_tensor_value_info("t", TP.FLOAT, [2])])
    else_graph = helper.make_graph([helper.make_node("Neg", ["h"], ["e"])], "else", [],
                                   [helper.make_tensor_value_info("e", TP.FLOAT, [2])])
    nodes = [  # the If reads 'h' inside its bodies only; both it and the Relu come before their producers
        helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph, name="if"),
        helper.make_node("Relu", ["g"], ["h"], name="relu"),
        helper.make_node("Abs", ["x"], ["g"], name="abs"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [2]),
                                           helper.make_tensor_value_info("c", TP.BOOL, [])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    assert topological_sort(model.graph)
    assert [n.name for n in model.graph.node] == ["abs", "relu", "if"]
    onnx.checker.check_model(model)
    assert not topological_sort(model.graph)  # already sorted: unchanged


def unshaped_add_model() -> onnx.ModelProto:
    """A Conv whose output is added to a second input with other symbolic dimensions: ONNX Runtime's
    symbolic shape inference cannot merge them, gives up, and saves what it had to the working
    directory (`sym_shape_infer_temp.onnx` and its weights as `<uuid>.data`, as on YOLO-style detectors)."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.normal(size=(16, 3, 3, 3)) * 0.2).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "grid"], ["y"], name="add")]
    return make_model(nodes, [("x", TP.FLOAT, [1, 3, "h", "w"]), ("grid", TP.FLOAT, [1, 16, "gh", "gw"])],
                      [("y", TP.FLOAT, [1, 16, "h", "w"])], [weight])


def test_int8_preprocessing_writes_nothing_in_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    from deployval import api
    from deployval.export.int8 import preprocess_for_quantization

    clean, scratch = tmp_path / "cwd", tmp_path / "tmp"
    clean.mkdir()
    scratch.mkdir()
    monkeypatch.chdir(clean)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the passes' temporary directories go
    rng = np.random.default_rng(1)
    feeds = {"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32),
             "grid": rng.normal(size=(1, 16, 8, 8)).astype(np.float32)}
    model_path = tmp_path / "model.onnx"
    onnx.save(unshaped_add_model(), str(model_path))
    details = quantize_int8(model_path, [feeds], tmp_path / "int8.onnx")
    assert details.preprocess == "no symbolic shape inference"  # the first try failed, as it does on such models
    assert os.listdir(clean) == [] and os.listdir(scratch) == []
    assert Path.cwd() == clean

    garbage = tmp_path / "garbage.onnx"  # every try fails: the scratch directory goes all the same
    garbage.write_bytes(b"not a model")
    assert preprocess_for_quantization(garbage, tmp_path / "out.onnx").startswith("failed: ")
    assert os.listdir(clean) == [] and os.listdir(scratch) == [] and Path.cwd() == clean

    report = api.compare(str(model_path), backends=("ort",), precisions=("fp32", "int8"), inputs=feeds,
                         input_shapes={k: v.shape for k, v in feeds.items()}, iterations=1,
                         cache_dir=tmp_path / "cache")  # the whole int8 build, run by the pipeline
    assert {r.precision: r.status for r in report.results}["int8"] in ("pass", "fail")
    assert os.listdir(clean) == []


def test_a_machine_without_onnx_simplifier_gets_an_export_error_not_a_crash(monkeypatch):
    """The lent GPU machine has no onnxsim: the simplify step fails with its reason, as any export does."""
    import sys

    import onnx

    from deployval.errors import ExportError
    from deployval.export.simplify import simplify_onnx

    monkeypatch.setitem(sys.modules, "onnxsim", None)  # what `import onnxsim` meets where it is not installed
    with pytest.raises(ExportError, match="onnx-simplifier is not installed or does not load"):
        simplify_onnx(onnx.ModelProto())
