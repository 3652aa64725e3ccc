"""Built-in models. Specs only: the network code lives in one module per model and is imported
when the model is built, so listing the zoo costs no torch import."""

from __future__ import annotations

from ...model.spec import InputSpec, ModelSpec, SubmoduleSpec, TaskSpec, Tolerance, ToleranceTable

FINE_ORGANS = ModelSpec(
    name="fine_organs",
    description="nnU-Net v1 3d_fullres-style abdominal segmentation (6 stages 32->320, 14 classes)",
    factory="deployval.catalog.zoo.fine_organs:build",
    checkpoint_loader="deployval.catalog.zoo.fine_organs:load_checkpoint",
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
    factory="deployval.catalog.zoo.srcnn:build",
    inputs=(InputSpec("image", (1, 3, 256, 256), low=0.0, high=1.0),),
    output_names=("upscaled",),
)

CONVS = ModelSpec(
    name="convs",
    description="four blocks of three 3x3 convs (the layer-alignment tutorial's model)",
    factory="deployval.catalog.zoo.convs:build",
    inputs=(InputSpec("x", (1, 3, 32, 32), low=-1.0, high=1.0),),
    output_names=("y",),
)

TAGGER = ModelSpec(
    name="tagger",
    description="token tagger: int64 token ids -> embedding -> MLP -> tag logits and argmax tags (int64)",
    factory="deployval.catalog.zoo.tagger:build",
    inputs=(InputSpec("tokens", (1, 32), dtype="int64", low=0, high=1000),),
    output_names=("logits", "tags"),
    task=TaskSpec("classification", axis=-1, outputs=("logits",), topk=3),
)

# bmshj2018-hyperprior-style codec: channels of the transforms / of z (N) and of the latent y (M).
HYPERPRIOR_N, HYPERPRIOR_M = 32, 48
HYPERPRIOR_IMAGE = (1, 3, 64, 64)
# Sub-module -> (input shape, value range): the ranges cover what the whole model feeds each part from
# images in [0, 1) (seed 0: y within +-11, so h_a, which reads |y|, sees [0, 11); z within +-4.5).
HYPERPRIOR_SUBMODULES: dict[str, tuple[tuple[int, ...], tuple[float, float]]] = {
    "g_a": (HYPERPRIOR_IMAGE, (0.0, 1.0)),
    "h_a": ((1, HYPERPRIOR_M, 4, 4), (0.0, 10.0)),
    "entropy_bottleneck": ((1, HYPERPRIOR_N, 1, 1), (-5.0, 5.0)),
    "h_s": ((1, HYPERPRIOR_N, 1, 1), (-5.0, 5.0)),
    "g_s": ((1, HYPERPRIOR_M, 4, 4), (-10.0, 10.0)),
}

HYPERPRIOR = ModelSpec(
    name="hyperprior",
    description="learned image codec in the style of bmshj2018-hyperprior: g_a, h_a, median-dequantizing "
                "entropy bottleneck, h_s, g_s",
    factory="deployval.catalog.zoo.hyperprior:build",
    # g_a downsamples 4 times and h_a twice more: 64 is the smallest size that survives both.
    inputs=(InputSpec("x", HYPERPRIOR_IMAGE, low=0.0, high=1.0, multiple_of=(1, 1, 64, 64)),),
    output_names=("x_hat", "y_likelihoods", "z_hat"),
    submodules=tuple(
        SubmoduleSpec(name, (InputSpec("input", shape, low=low, high=high),))
        for name, (shape, (low, high)) in HYPERPRIOR_SUBMODULES.items()
    ),
    gate={
        "cpu": ("torch:fp32", "torchscript:fp32", "ort:fp32"),
        "cuda": ("torch:fp32", "torchscript:fp32", "ort:fp32", "trt:fp32"),
    },
)

ZOO: dict[str, ModelSpec] = {spec.name: spec for spec in (FINE_ORGANS, SRCNN, CONVS, TAGGER, HYPERPRIOR)}
DEFAULT_MODEL = "fine_organs"
