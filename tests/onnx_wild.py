"""Public ONNX files deployval did not export, for the in-the-wild tests and bench/onnx_in_the_wild.py:
the small models the onnx package ships under onnx/backend/test/data (pytorch-converted,
pytorch-operator, simple: opsets 6-12, with their test_data_set_0 inputs; light: model-zoo
architectures at opset 9 with ConstantOfShape dummy weights) and the Silero VAD files of the
silero-vad package (opsets 15-18)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

SUITES = ("pytorch-converted", "pytorch-operator", "simple", "light")


# Models also run after ONNX's version converter took them to a recent opset (labels "opset21/...").
UPGRADED = ("test_Conv2d", "test_Conv2d_depthwise_strided", "test_Conv3d_groups", "test_ConvTranspose2d",
            "test_Linear", "test_BatchNorm2d_eval", "test_GLU", "test_Softmax", "test_Conv1d_dilated",
            "test_PixelShuffle")
UPGRADE_OPSET = 21


def upgraded(path: Path, directory: Path) -> Path:
    """The model converted to UPGRADE_OPSET, written into `directory`."""
    import onnx

    from deployval.export.graph import upgrade_opset

    converted = upgrade_opset(onnx.load(str(path)), UPGRADE_OPSET)
    out = directory / f"{path.parent.name}-opset{UPGRADE_OPSET}.onnx"
    onnx.save(converted, str(out))
    return out


def model_and_inputs(label: str, path: Path, data: Path | None,
                     directory: Path) -> tuple[Path, dict[str, np.ndarray] | str | None]:
    """The file a corpus entry runs as (converted into `directory` for the upgraded ones) and its inputs:
    the Silero files' speech-like audio, the test data that ships beside a file, None (random), or why its
    data cannot be fed (a string)."""
    inputs = silero_inputs(path) if label.startswith("silero/") else pb_inputs(path, data) if data else None
    if label.startswith(f"opset{UPGRADE_OPSET}/"):
        path = upgraded(path, directory)
    return path, inputs


def corpus() -> list[tuple[str, Path, Path | None]]:
    """(label, model file, test_data_set_0 directory or None)."""
    import onnx

    root = Path(onnx.__file__).parent / "backend" / "test" / "data"
    found = []
    for suite in SUITES:
        for entry in sorted((root / suite).iterdir()):
            if entry.is_dir() and (entry / "model.onnx").is_file():
                data = entry / "test_data_set_0"
                found.append((f"{suite}/{entry.name}", entry / "model.onnx", data if data.is_dir() else None))
            elif entry.suffix == ".onnx":
                found.append((f"{suite}/{entry.stem}", entry, None))
    for name in UPGRADED:
        entry = root / "pytorch-converted" / name
        found.append((f"opset{UPGRADE_OPSET}/{name}", entry / "model.onnx", entry / "test_data_set_0"))
    with contextlib.suppress(ImportError):
        import silero_vad

        for path in sorted((Path(silero_vad.__file__).parent / "data").glob("*.onnx")):
            found.append((f"silero/{path.stem}", path, None))
    return found


def pb_inputs(model_path: Path, data_dir: Path) -> dict[str, np.ndarray] | str:
    """test_data_set_0/input_*.pb keyed by graph input name, or why they cannot be fed."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    feeds: dict[str, np.ndarray] = {}
    files = sorted(data_dir.glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    for index, path in enumerate(files):
        tensor = onnx.TensorProto()
        tensor.ParseFromString(path.read_bytes())
        if not tensor.dims and not tensor.raw_data and tensor.data_type == 0:
            return "non-tensor input (sequence or optional)"
        name = tensor.name if tensor.name in names else (names[index] if index < len(names) else "")
        if not name:
            return f"input_{index}.pb matches no graph input"
        feeds[name] = numpy_helper.to_array(tensor)
    return feeds


def silero_inputs(model_path: Path) -> dict[str, np.ndarray]:
    """Speech-like audio, zero recurrent state, 16 kHz."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        dims = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
        if value.name == "sr":
            feeds["sr"] = np.array(16000, dtype=np.int64)
        elif value.name == "input":
            length = dims[-1] if len(dims) > 1 and dims[-1] > 1 else 512
            t = np.arange(length) / 16000.0
            audio = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.normal(size=length)
            feeds["input"] = audio.reshape(1, length).astype(np.float32)
        else:
            feeds[value.name] = np.zeros(dims, dtype=np.float32)
    for value in model.graph.input:  # silero_vad_half.onnx takes fp16
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16:
            feeds[value.name] = feeds[value.name].astype(np.float16)
    return feeds
