"""int8 calibration data: arrays and images (with declared preprocessing), and synthetic CT volumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from deployval.catalog.registry import resolve_model
from deployval.errors import UsageError
from deployval.model.arguments import InputShapeArg
from deployval.model.calibration import load_calibration
from deployval.model.preprocess import ImagePreprocess
from deployval.model.spec import RunConfig
from deployval.precision.synthetic import organ_volumes, write_organ_volumes


def _image_spec(channels: int = 3, size: int = 8):
    return resolve_model("dv_test_models:tiny_conv", input_shapes=[InputShapeArg("x", (1, channels, size, size))])


def test_arrays_load_sorted_and_limited(tmp_path):
    rng = np.random.default_rng(0)
    for index in (2, 0, 1):
        np.save(tmp_path / f"{index}.npy", np.full((1, 3, 32, 32), index / 10, dtype=np.float32))
    np.savez(tmp_path / "3.npz", x=rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32))
    (tmp_path / "notes.txt").write_text("ignored")
    spec = resolve_model("convs")
    samples = load_calibration(tmp_path, spec)
    assert len(samples) == 4 and [float(s["x"].flat[0]) for s in samples[:3]] == pytest.approx([0.0, 0.1, 0.2])
    assert len(load_calibration(tmp_path, spec, limit=2)) == 2


def test_images_go_through_the_declared_preprocessing(tmp_path):
    Image.new("RGB", (20, 12), (255, 128, 0)).save(tmp_path / "a.png")
    spec = _image_spec()
    preprocess = ImagePreprocess.parse("scale=0.00392156862745098,mean=0.5/0.5/0.5,std=0.5/0.25/0.5")
    (sample,) = load_calibration(tmp_path, spec, preprocess=preprocess)
    x = sample["x"]
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32  # resized to the input's size
    np.testing.assert_allclose(x[0, :, 0, 0], [1.0, (128 / 255 - 0.5) / 0.25, -1.0], atol=1e-6)
    (bgr,) = load_calibration(tmp_path, spec, preprocess=ImagePreprocess.parse("order=bgr"))
    np.testing.assert_allclose(bgr["x"][0, :, 0, 0], [0.0, 128 / 255, 1.0], rtol=1e-6)


def test_gray_images_for_one_channel_inputs(tmp_path):
    Image.new("RGB", (8, 8), (255, 255, 255)).save(tmp_path / "white.jpg", quality=100)
    (sample,) = load_calibration(tmp_path, _image_spec(channels=1))
    assert sample["x"].shape == (1, 1, 8, 8) and sample["x"].min() > 0.98


@pytest.mark.parametrize("text, message", [
    ("scale", "expected KEY=VALUE"),
    ("resize=big", "expected HxW"),
    ("mean=a/b", "expected a number"),
    ("order=hsv", "rgb or bgr"),
    ("gamma=2", "unknown key 'gamma'"),
    ("std=0", "must not be 0"),
])
def test_bad_preprocess_strings_are_refused(text, message):
    with pytest.raises(UsageError, match=message):
        ImagePreprocess.parse(text)
    with pytest.raises(UsageError, match=message):
        RunConfig(calibration_preprocess=text)


def test_bad_calibration_directories(tmp_path):
    spec = resolve_model("convs")
    with pytest.raises(UsageError, match="not a directory"):
        load_calibration(tmp_path / "missing", spec)
    with pytest.raises(UsageError, match="holds no"):
        load_calibration(tmp_path, spec)
    np.save(tmp_path / "wrong.npy", np.zeros((1, 3, 8, 8), dtype=np.float32))
    with pytest.raises(UsageError, match=r"wrong\.npy"):
        load_calibration(tmp_path, spec)
    (tmp_path / "wrong.npy").unlink()
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UsageError, match="cannot be read"):
        load_calibration(tmp_path, _image_spec())
    with pytest.raises(UsageError, match="one input"):
        load_calibration(tmp_path, resolve_model("dv_test_models:two_inputs", input_shapes=[
            InputShapeArg("features", (1, 4)), InputShapeArg("ids", (1, 5), "int64")]))


def test_compare_calibrates_int8_on_images(cli, tmp_path):
    calibration = tmp_path / "images"
    calibration.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(calibration / f"{index}.png")
    report_path = tmp_path / "r.json"
    result = cli("compare", "convs", "-b", "ort", "-p", "int8", "--calibration", calibration,
                 "--calibration-preprocess", "scale=0.00784313725490196,mean=1", "--json", report_path, "-q")
    assert result.code in (0, 1), result.out + result.err
    step = next(s for s in json.loads(report_path.read_text())["steps"] if s["name"] == "int8")
    assert step["details"]["samples"] == 3 and step["details"]["calibration_source"] == str(calibration)
    bad = cli("compare", "convs", "-b", "ort", "-p", "int8", "--calibration", calibration,
              "--calibration-preprocess", "order=hsv", "-q")
    assert bad.code == 2 and "rgb or bgr" in bad.err


def test_synthetic_volumes_are_structured_and_seeded(tmp_path):
    first, again, other = organ_volumes(1)[0], organ_volumes(1)[0], organ_volumes(1, seed=1)[0]
    assert first.shape == (1, 1, 48, 80, 80) and first.dtype == np.float32
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert first.min() >= -2.0 and first.max() <= 2.0
    body = first > -1.9
    assert 0.2 < body.mean() < 0.8  # air around a body
    # Neighbouring voxels are alike (organs, not noise): the lag-1 correlation of i.i.d. noise is ~0.
    flat, shifted = first[0, 0, :, :, :-1].ravel(), first[0, 0, :, :, 1:].ravel()
    assert np.corrcoef(flat, shifted)[0, 1] > 0.9
    levels = np.histogram(first[body], bins=16, range=(-2, 2))[0]
    assert np.count_nonzero(levels > 0.01 * body.sum()) >= 3  # fat, soft tissue / organs, kidney, bone
    paths = write_organ_volumes(tmp_path, 2, shape=(16, 16, 16))
    spec = resolve_model("fine_organs", input_shapes=[InputShapeArg("input", (1, 1, 16, 16, 16))])
    assert [p.name for p in paths] == ["case_000.npy", "case_001.npy"]
    assert len(load_calibration(tmp_path, spec)) == 2
