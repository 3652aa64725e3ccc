"""Built-in models. Specs only: the network code lives in one module per model and is imported
when the model is built, so listing the zoo costs no torch import."""

from __future__ import annotations

from ..spec import InputSpec, ModelSpec, TaskSpec, Tolerance, ToleranceTable

FINE_ORGANS = ModelSpec(
    name="fine_organs",
    description="nnU-Net v1 3d_fullres-style abdominal segmentation (6 stages 32->320, 14 classes)",
    factory="deployval.zoo.fine_organs:build",
    checkpoint_loader="deployval.zoo.fine_organs:load_checkpoint",
    inputs=(
        # z-scored CT intensities; every spatial size must be a multiple of the pooling product 16
        InputSpec("input", (1, 1, 96, 160, 160), low=-2.0, high=2.0, multiple_of=(1, 1, 16, 16, 16)),
    ),
    output_names=("logits",),
    task=TaskSpec("segmentation", axis=1),
    # fp16 flips voxels whose two best logits are nearly tied: measured 99.38% argmax agreement with
    # real half arithmetic (torch CPU, 48x80x80), 99.56-99.63% on ORT's CPU provider (see README).
    tolerances=ToleranceTable({"*:fp16": Tolerance(rel_l2=1e-2, cosine=0.9999, argmax_agreement=0.99)}),
    gate={
        "cpu": ("torch:fp32", "torchscript:fp32", "ort:fp32", "ort:fp16"),
        "cuda": ("torch:fp32", "torchscript:fp32", "ort:fp32", "trt:fp32", "trt:fp16"),
    },
    # A forward pass takes ~20 s at full size on two CPU cores: one timed run after the
    # correctness run is all the latency numbers need.
    run_defaults={"time_budget_s": 1.0},
)

SRCNN = ModelSpec(
    name="srcnn",
    description="SRCNN super-resolution: bicubic x3 upsampling, then 9x9/1x1/5x5 convs 3->64->32->3",
    factory="deployval.zoo.srcnn:build",
    inputs=(InputSpec("image", (1, 3, 256, 256), low=0.0, high=1.0),),
    output_names=("upscaled",),
)

CONVS = ModelSpec(
    name="convs",
    description="four blocks of three 3x3 convs (the layer-alignment tutorial's model)",
    factory="deployval.zoo.convs:build",
    inputs=(InputSpec("x", (1, 3, 32, 32), low=-1.0, high=1.0),),
    output_names=("y",),
)

TAGGER = ModelSpec(
    name="tagger",
    description="token tagger: int64 token ids -> embedding -> MLP -> tag logits and argmax tags (int64)",
    factory="deployval.zoo.tagger:build",
    inputs=(InputSpec("tokens", (1, 32), dtype="int64", low=0, high=1000),),
    output_names=("logits", "tags"),
    task=TaskSpec("classification", axis=-1, outputs=("logits",), topk=3),
)

ZOO: dict[str, ModelSpec] = {spec.name: spec for spec in (FINE_ORGANS, SRCNN, CONVS, TAGGER)}
DEFAULT_MODEL = "fine_organs"
