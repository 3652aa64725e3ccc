"""Inputs: seeded generation, loading .npy/.npz/.pt, the checks that refuse bad files, replay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deployval.errors import UsageError
from deployval.model.inputs import adapt_for_backend, check_inputs, digest, load_inputs, make_inputs, save_inputs
from deployval.model.spec import InputSpec

SPECS = (InputSpec("x", (1, 3, 4, 4), low=-1, high=1), InputSpec("ids", (1, 5), dtype="int64", low=0, high=10))


def test_seeded_generation_is_reproducible_and_in_range():
    a, b, c = make_inputs(SPECS, 0), make_inputs(SPECS, 0), make_inputs(SPECS, 1)
    assert digest(a) == digest(b) != digest(c)
    assert a["x"].dtype == np.float32 and a["ids"].dtype == np.int64
    assert a["x"].min() >= -1 and a["x"].max() < 1
    assert a["ids"].min() >= 0 and a["ids"].max() < 10


def test_npz_round_trip(tmp_path):
    inputs = make_inputs(SPECS, 3)
    save_inputs(tmp_path / "in.npz", inputs)
    loaded = check_inputs(load_inputs(tmp_path / "in.npz", SPECS), SPECS)
    assert digest(loaded) == digest(inputs)


def test_npy_for_single_input_and_refused_for_two(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 4, 4), np.float32))
    assert load_inputs(tmp_path / "x.npy", SPECS[:1])["x"].shape == (1, 3, 4, 4)
    with pytest.raises(UsageError, match="one array but the model has 2 inputs"):
        load_inputs(tmp_path / "x.npy", SPECS)


def test_pt_tensors_only(tmp_path):
    torch.save({"x": torch.zeros(1, 3, 4, 4), "ids": torch.zeros(1, 5, dtype=torch.int64)}, tmp_path / "in.pt")
    assert set(load_inputs(tmp_path / "in.pt", SPECS)) == {"x", "ids"}
    torch.save({"x": [1, 2, 3]}, tmp_path / "bad.pt")
    with pytest.raises(UsageError, match="not a tensor"):
        load_inputs(tmp_path / "bad.pt", SPECS)


def test_missing_extra_and_misnamed_arrays(tmp_path):
    inputs = make_inputs(SPECS, 0)
    with pytest.raises(UsageError, match="missing ids; unexpected tokens"):
        check_inputs({"x": inputs["x"], "tokens": inputs["ids"]}, SPECS)


@pytest.mark.parametrize(
    "value, message",
    [
        (np.zeros((1, 3, 4), np.float32), "rank 3"),
        (np.zeros((1, 3, 4, 5), np.float32), "shape 1x3x4x5, expected 1x3x4x4"),
        (np.zeros((1, 3, 4, 4), np.complex64), "dtype complex64"),
        (np.zeros((0, 3, 4, 4), np.float32), "is empty"),
        (np.full((1, 3, 4, 4), np.nan, np.float32), "NaN/Inf"),
    ],
)
def test_bad_values_are_refused(value, message):
    inputs = make_inputs(SPECS, 0)
    inputs["x"] = value
    with pytest.raises(UsageError, match=message):
        check_inputs(inputs, SPECS)


def test_nonfinite_allowed_on_request():
    inputs = make_inputs(SPECS, 0)
    inputs["x"][0, 0, 0, 0] = np.inf
    assert np.isinf(check_inputs(inputs, SPECS, allow_nonfinite=True)["x"]).any()


def test_float_for_integer_input_is_refused():
    inputs = make_inputs(SPECS, 0)
    inputs["ids"] = inputs["ids"].astype(np.float32)
    with pytest.raises(UsageError, match="expects integers"):
        check_inputs(inputs, SPECS)


def test_int32_cast_has_a_range_check():
    feeds = {"ids": np.array([[0, 2**31]], dtype=np.int64)}
    with pytest.raises(UsageError, match="do not fit int32"):
        adapt_for_backend(feeds, {"ids": "int32"}, "trt")
    ok = adapt_for_backend({"ids": np.array([[1, 2]], dtype=np.int64)}, {"ids": "int32"}, "trt")
    assert ok["ids"].dtype == np.int32 and ok["ids"].tolist() == [[1, 2]]


def test_unreadable_files(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="cannot read inputs file"):
        load_inputs(tmp_path / "junk.npz", SPECS)
    with pytest.raises(UsageError, match="does not exist"):
        load_inputs(tmp_path / "nope.npz", SPECS)
    (tmp_path / "in.csv").write_text("1,2")
    with pytest.raises(UsageError, match="unsupported type"):
        load_inputs(tmp_path / "in.csv", SPECS)


def test_written_files_follow_the_umask_not_mkstemp(tmp_path):
    import os
    import stat

    save_inputs(tmp_path / "in.npz", make_inputs(SPECS, 0))
    mode = stat.S_IMODE(os.stat(tmp_path / "in.npz").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # readable by others where the umask allows (reports from containers)
