"""Models used by the end-to-end tests, importable as `dv_test_models:NAME` (tests/ is put on
PYTHONPATH). Each one is small enough to run in milliseconds."""

from __future__ import annotations

import torch
from torch import nn


class ExportTrap(nn.Module):
    """Computes something else while being exported: the classic exporter-only code path
    (e.g. a custom symbolic or an `is_in_onnx_export()` branch that is wrong)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.middle = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.relu(self.stem(x))
        y = self.middle(x)
        if torch.onnx.is_in_onnx_export():
            y = y * 1.05  # the defect: only the exported graph scales this layer
        y = torch.relu(y)
        return self.head(y), x.mean(dim=(2, 3))


def export_trap() -> nn.Module:
    torch.manual_seed(0)
    return ExportTrap().eval()


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 3)
        self.embed = nn.Embedding(20, 3)

    def forward(self, features: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        mixed = self.proj(features) + self.embed(ids).sum(dim=1)
        return {"scores": mixed, "best": mixed.argmax(dim=-1)}


def two_inputs() -> nn.Module:
    torch.manual_seed(0)
    return TwoInputs().eval()


def tiny_conv() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()


def raises() -> nn.Module:
    raise RuntimeError("cannot build: weights server unreachable")


def not_a_module() -> object:
    return {"weights": 1}


class BigOffset(nn.Module):
    """Adds an int64 constant that does not fit int32: the int64 -> int32 pass must refuse it."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids + 2**40) % 7


def big_offset() -> nn.Module:
    return BigOffset().eval()


class HotLayer(nn.Module):
    """Healthy in fp32, but one layer's activations (~1e5) exceed fp16's 65504; the norm after it
    brings the output back to O(1), so only a faithful fp16 run (or the range check) shows it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.amplify = nn.Conv2d(8, 8, 1)
        self.norm = nn.InstanceNorm2d(8, affine=True)
        self.head = nn.Conv2d(8, 2, 1)
        with torch.no_grad():
            self.amplify.weight.fill_(9000.0)
            self.amplify.bias.fill_(10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.amplify(torch.relu(self.stem(x)) + 1.0))))


def hot_layer() -> nn.Module:
    torch.manual_seed(0)
    return HotLayer().eval()


class OutlierChannel(nn.Module):
    """One channel of ~500 next to channels of ~1: int8's per-tensor activation scale for
    `mix`'s input becomes ~4, every small value rounds to zero, and int8 fails. `mix` ignores the
    outlier channel, so keeping `mix` in fp32 is the whole cure (the other layers quantize well)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.mix = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(8, 2, 3, padding=1)
        with torch.no_grad():
            self.stem.bias[0] = 500.0
            self.mix.weight[:, 0].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(self.stem(x)))


def outlier_channel() -> nn.Module:
    torch.manual_seed(0)
    return OutlierChannel().eval()


class Boosted(nn.Module):
    """`boost` and `norm` output small values, but the product computed between them in forward
    exceeds fp16's 65504: only a check of every tensor (not of module outputs) sees it. The relu
    keeps onnx-simplifier from folding the product into the conv's weights."""

    def __init__(self) -> None:
        super().__init__()
        self.boost = nn.Conv2d(4, 4, 1)
        self.norm = nn.InstanceNorm2d(4, affine=True)
        with torch.no_grad():
            self.boost.weight.copy_(2.0 * torch.eye(4).view(4, 4, 1, 1))
            self.boost.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.relu(self.boost(x)) * 250.0 * 250.0)


class FunctionalOverflow(nn.Module):
    """Inputs in [0, 1) reach ~1.2e5 inside `block`'s forward code (inputs below 0.5 stay within
    fp16). ONNX Runtime's CPU provider keeps the product in fp32 between Conv and InstanceNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.block = Boosted()
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


def functional_overflow() -> nn.Module:
    torch.manual_seed(0)
    return FunctionalOverflow().eval()


class Scaled(nn.Module):
    """forward() with non-tensor arguments (--arg): a float and a string that choose the computation."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, scale: float = 1.0, mode: str = "plain") -> torch.Tensor:
        y = self.proj(x) * scale
        return torch.tanh(y) if mode == "tanh" else y


def scaled() -> nn.Module:
    torch.manual_seed(0)
    return Scaled().eval()


class RateDependent(nn.Module):
    """What an audio TorchScript file looks like: forward(Tensor x, int sr) with a branch per rate."""

    def __init__(self) -> None:
        super().__init__()
        self.conv16k = nn.Conv1d(1, 2, 5, padding=2)
        self.conv8k = nn.Conv1d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor, sr: int) -> torch.Tensor:
        if sr == 16000:
            return self.conv16k(x.unsqueeze(1)).mean(-1)
        return self.conv8k(x.unsqueeze(1)).mean(-1)


def rate_dependent_script(path: str) -> str:
    """Script RateDependent to `path` (a TorchScript file as a package would ship it)."""
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(RateDependent().eval()), path)
    return path


class OutlierShortcut(nn.Module):
    """A residual block whose shortcut conv carries one channel of ~500, which the output drops.
    TensorRT-style int8 quantizes the shortcut input of the residual Add (so that TensorRT fuses the Add
    into the main branch's conv): its per-tensor scale becomes ~4, the small channels round away, and
    the culprit is the Add, not any layer with weights."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.shortcut = nn.Conv2d(3, 8, 1)
        with torch.no_grad():
            self.shortcut.bias[0] = 500.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.b(torch.relu(self.a(x))) + self.shortcut(x))[:, 1:]


def outlier_shortcut() -> nn.Module:
    torch.manual_seed(0)
    return OutlierShortcut().eval()


class Stateful(nn.Module):
    """Keeps state between calls (a streaming model's carried state, here a call counter that scales
    the output): the same inputs give other outputs on the second call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x) * (1.0 + 0.01 * (self.calls % 7))


def stateful() -> nn.Module:
    torch.manual_seed(0)
    return Stateful().eval()


class PositionDependent(nn.Module):
    """Adds each item's index in the batch: a batch of copies of one input gives a different output
    per copy (the failure batch invariance exists to catch)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = torch.arange(x.shape[0], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        return self.conv(x) + offset


def position_dependent() -> nn.Module:
    torch.manual_seed(0)
    return PositionDependent().eval()


class PicksSamples(nn.Module):
    """Refuses an input whose mean is above 5 (a reference that cannot take one sample of a set), and
    stops the run like Ctrl-C on one whose mean is below -5."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.mean()) > 5:
            raise ValueError("this input is out of the model's domain")
        if float(x.mean()) < -5:
            raise KeyboardInterrupt
        return self.conv(x)


def picks_samples() -> nn.Module:
    torch.manual_seed(0)
    return PicksSamples().eval()


DIES_ONCE_MARKER = 7.25  # the first value of the sample a Ray worker dies on
DIES_ONCE_ENV = "DV_TEST_DIES_ONCE"  # the path of the file that lets it die once across all processes


def _in_ray_actor() -> bool:
    import sys

    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


class DiesOnce(nn.Module):
    """Kills its process (a lost worker) the first time a Ray actor runs it on the sample whose first
    value is DIES_ONCE_MARKER. The file named by $DV_TEST_DIES_ONCE gets a line per run there, 'PID ACTOR_ID
    RESTARTED' (RESTARTED 1 in an actor Ray restarted), the first one the process that died. Anywhere else
    (the driver, a local run, an export) a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import os

        path = os.environ.get(DIES_ONCE_ENV)
        if path and _in_ray_actor() and float(x.flatten()[0]) == DIES_ONCE_MARKER:
            import ray

            context = ray.get_runtime_context()
            line = f"{os.getpid()} {context.get_actor_id()} {int(context.was_current_actor_reconstructed)}\n"
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # exactly one process wins
            except FileExistsError:
                with open(path, "a") as f:
                    f.write(line)
            else:
                os.write(fd, line.encode())
                os.close(fd)
                os._exit(1)
        return self.conv(x)


def dies_once() -> nn.Module:
    torch.manual_seed(0)
    return DiesOnce().eval()


# Models whose structure changes while their source does not: the value of an environment variable picks
# a layer, a hyperparameter or a non-persistent buffer, as a config file or a factory argument would.
STRUCTURE_ENV = "DV_TEST_STRUCTURE"


def _structure_choice(default: str) -> str:
    import os

    return os.environ.get(STRUCTURE_ENV, default)


def picks_activation() -> nn.Module:
    """conv, ReLU or Sigmoid (DV_TEST_STRUCTURE=sigmoid), conv: same weights, other layers."""
    torch.manual_seed(0)
    activation = nn.Sigmoid() if _structure_choice("relu") == "sigmoid" else nn.ReLU()
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), activation, nn.Conv2d(4, 2, 1)).eval()


def picks_padding_mode() -> nn.Module:
    """A conv padded with zeros, or reflected (DV_TEST_STRUCTURE=reflect): one hyperparameter, same shapes."""
    torch.manual_seed(0)
    mode = "reflect" if _structure_choice("zeros") == "reflect" else "zeros"
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode), nn.ReLU()).eval()


class ScaledByBuffer(nn.Module):
    """Scales a conv's output by a buffer that is not in the state_dict (persistent=False)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("scale", torch.tensor(scale), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale


def picks_buffer() -> nn.Module:
    """ScaledByBuffer with scale 1, or the value of DV_TEST_STRUCTURE."""
    torch.manual_seed(0)
    return ScaledByBuffer(float(_structure_choice("1.0"))).eval()


class NonFiniteRows(nn.Module):
    """A conv whose output rows 0, 1 and 2 are NaN, +Inf and -Inf (every channel), as a masked or log-of-zero
    output is: the same positions in eager, TorchScript and ONNX. `exported` changes only the exported graph
    (as ExportTrap): 'moved' puts the NaN in row 3 instead of row 0, 'finite_inf' leaves row 1 finite,
    'nan_over_10' makes every element NaN whose input (first two channels) exceeds 10. In every runtime:
    'nan_over_10_all' does that (and nothing else), 'all_nan' makes the whole output NaN."""

    def __init__(self, exported: str = "") -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.exported = exported

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.exported == "all_nan":
            return y * float("nan")
        exporting = torch.onnx.is_in_onnx_export()
        if self.exported in ("nan_over_10", "nan_over_10_all"):
            nan_over_10 = exporting or self.exported == "nan_over_10_all"
            return torch.where(x[:, :2] > 10.0, torch.full_like(y, float("nan")), y) if nan_over_10 else y
        nan_row, inf_row = (3, 1) if exporting and self.exported == "moved" else (0, 1)
        rows = [y[:, :, i:i + 1] for i in range(y.shape[2])]
        rows[nan_row] = rows[nan_row] * float("nan")
        if not (exporting and self.exported == "finite_inf"):
            rows[inf_row] = rows[inf_row].abs() + float("inf")
        rows[2] = -(rows[2].abs() + float("inf"))
        return torch.cat(rows, dim=2)


def nonfinite_rows() -> nn.Module:
    torch.manual_seed(0)
    return NonFiniteRows().eval()


def nonfinite_moved_in_export() -> nn.Module:
    torch.manual_seed(0)
    return NonFiniteRows("moved").eval()


def inf_finite_in_export() -> nn.Module:
    torch.manual_seed(0)
    return NonFiniteRows("finite_inf").eval()


def nan_over_10_in_export() -> nn.Module:
    torch.manual_seed(0)
    return NonFiniteRows("nan_over_10").eval()


def all_nan() -> nn.Module:
    torch.manual_seed(0)
    return NonFiniteRows("all_nan").eval()


def nan_over_10() -> nn.Module:
    torch.manual_seed(0)
    return NonFiniteRows("nan_over_10_all").eval()


class Segfaults(nn.Module):
    """Reads address 0 in its forward pass: the process dies by SIGSEGV, as a crashing native kernel would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import ctypes

        ctypes.string_at(0)
        return x


def segfaults() -> nn.Module:
    return Segfaults().eval()


def hangs_while_built() -> nn.Module:
    """A factory that never returns (a weights download that hangs)."""
    import time

    while True:
        time.sleep(1)


class ExitsInForward(nn.Module):
    """Calls sys.exit(0) in its forward pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import sys

        sys.exit(0)


def exits_in_forward() -> nn.Module:
    return ExitsInForward().eval()


EXPORT_SLEEP_ENV = "DV_TEST_EXPORT_SLEEP"


class SleepsInExport(nn.Module):
    """A conv whose ONNX export takes DV_TEST_EXPORT_SLEEP seconds (none when unset): time to kill the
    process that exports it while the exporter's temporary file is on disk."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import os
        import time

        if torch.onnx.is_in_onnx_export() and os.environ.get(EXPORT_SLEEP_ENV):
            time.sleep(float(os.environ[EXPORT_SLEEP_ENV]))
        return self.conv(x)


def sleeps_in_export() -> nn.Module:
    torch.manual_seed(0)
    return SleepsInExport().eval()


def ten_classes() -> nn.Module:
    """A classifier: (1,3,8,8) -> 10 logits, for --labels cases."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)).eval()


def draws_from_global_rng() -> nn.Module:
    """Draws its BatchNorm statistics from torch's global RNG after construction (no seed of its own), as
    trained-weight loaders and init schemes do: only a seeded factory builds the same module twice."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
    bn = model[1]
    bn.running_mean.uniform_(-2, 2)
    bn.running_var.uniform_(0.05, 4)
    return model.eval()


def _os_entropy() -> bytes:
    import os

    return os.urandom(7)


# Where draws_from_the_os gets its seed: a test fixes it in its own (the driver's) process only.
ENTROPY = {"source": _os_entropy}


def draws_from_the_os() -> nn.Module:
    """Draws every weight and BatchNorm statistic from the operating system's entropy, which no seed
    reaches (as a loader that picks a random checkpoint or a time-seeded init does): another process
    judges the reference's module only if it is given the driver's tensors."""
    generator = torch.Generator().manual_seed(int.from_bytes(ENTROPY["source"](), "little"))
    model = draws_from_global_rng()
    with torch.no_grad():
        for tensor in [*model.parameters(), model[1].running_mean]:
            tensor.uniform_(-0.5, 0.5, generator=generator)
        model[1].running_var.uniform_(0.05, 4, generator=generator)
    return model.eval()


# What a factory may read from its process: the driver's value can differ from a fresh process's.
PROCESS_GLOBALS = {"width": 8, "scale": 1.0}


class _Scaled(nn.Module):
    def __init__(self, body: nn.Module, scale: float) -> None:
        super().__init__()
        self.body = body
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * self.scale


def reads_process_globals() -> nn.Module:
    """Its width and output scale come from PROCESS_GLOBALS: a test changes them in its own process, and
    an isolated child or a Ray worker then builds another model than the reference ran."""
    torch.manual_seed(0)
    width = PROCESS_GLOBALS["width"]
    body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 4, 3, padding=1))
    return _Scaled(body, PROCESS_GLOBALS["scale"]).eval()


class _BoxesAndScores(nn.Module):
    """A YOLO-style head: one output of 1x(4+C)xN, box coordinates in pixels (rows 0-3) beside class
    scores in 0..1 (rows 4..): a norm over the whole tensor is the boxes' norm."""

    def __init__(self, classes: int = 6, anchors: int = 64) -> None:
        super().__init__()
        self.anchors = anchors
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(8))
        self.boxes = nn.Conv2d(16, 4, 1)
        self.scores = nn.Conv2d(16, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        boxes = (torch.sigmoid(self.boxes(f)) * 640.0).flatten(2)
        scores = torch.sigmoid(self.scores(f)).flatten(2)
        return torch.cat([boxes, scores], dim=1)


def boxes_and_scores() -> nn.Module:
    torch.manual_seed(0)
    return _BoxesAndScores().eval()


# Task checks (deployval/judge/task_checks.py) as a user plugs them in with --task dv_test_models:NAME.
def same_top_class(reference: dict, outputs: dict, inputs: dict) -> dict:
    """The class (axis 1) each position predicts is the reference's, everywhere."""
    import numpy as np

    name = next(iter(reference))
    agreement = float(np.mean(reference[name].argmax(1) == outputs[name].argmax(1)))
    return {"agreement": agreement, "passed": agreement == 1.0,
            "reason": f"{1 - agreement:.2%} of positions predict another class"}


def check_that_raises(reference: dict, outputs: dict, inputs: dict) -> dict:
    raise ValueError("no decoder for this output")


def check_without_verdict(reference: dict, outputs: dict, inputs: dict) -> dict:
    return {"agreement": 1.0}


class BreaksTheGraph(nn.Module):
    """A data-dependent branch (`.item()`): torch.compile breaks the graph there and runs that part eagerly."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(8, 8)
        self.second = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.first(x)
        if float(y.sum().item()) > 0:
            y = torch.relu(y)
        return self.second(y)


def breaks_the_graph() -> nn.Module:
    torch.manual_seed(0)
    return BreaksTheGraph().eval()
