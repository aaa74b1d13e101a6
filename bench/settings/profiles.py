"""What a run is: the profile (data, detector, schedule, measurement) as plain dataclasses.

These dataclasses are the single source of truth for every setting: their types and the
ranges in each field's metadata are what `bench.settings.load` checks `--set`, `--config` files
and `config.yaml` against. Every stage of the pipeline reads its own section.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError


def rule(**checks: Any) -> dict[str, Any]:
    """Field metadata for `bench.settings.load.validate`: min (>=), above (>), max (<=), below (<),
    choices, and for tuples nonempty; a tuple's checks apply to each element."""
    return {"checks": checks}


# A setting in which runs merged into one report (bench.compare) may differ: which seeds and backbones ran,
# where, and how cost was measured. Every other setting must agree.
MAY_DIFFER = {"may_differ": True}


@dataclass
class SyntheticConfig:
    """The embedded synthetic COCO-format set (used when no --data is given)."""

    num_train: int = field(default=400, metadata=rule(min=1))
    num_val: int = field(default=100, metadata=rule(min=1))
    image_size: int = field(default=192, metadata=rule(min=32))
    seed: int = 0  # of the generator; the training seeds are Profile.seeds


@dataclass
class DetectorConfig:
    """Faster R-CNN + FPN settings shared by every backbone."""

    min_size: int = field(default=192, metadata=rule(min=32))
    max_size: int = field(default=192, metadata=rule(min=32))
    # One anchor size per pyramid level P2-P6, in input pixels.
    anchor_sizes: tuple[int, ...] = field(default=(32, 64, 128, 256, 512), metadata=rule(min=1, length=5))
    aspect_ratios: tuple[float, ...] = field(default=(0.5, 1.0, 2.0), metadata=rule(above=0, nonempty=True))
    # torchvision applies the pre-NMS top-n per FPN level, the post-NMS top-n per image.
    rpn_pre_nms_top_n_train: int = field(default=2000, metadata=rule(min=1))
    rpn_pre_nms_top_n_test: int = field(default=1000, metadata=rule(min=1))
    rpn_post_nms_top_n_train: int = field(default=2000, metadata=rule(min=1))
    rpn_post_nms_top_n_test: int = field(default=1000, metadata=rule(min=1))
    rpn_batch_size_per_image: int = field(default=256, metadata=rule(min=1))  # anchors sampled for the RPN loss
    box_batch_size_per_image: int = field(default=512, metadata=rule(min=1))
    box_detections_per_img: int = field(default=100, metadata=rule(min=1))
    box_score_thresh: float = field(default=0.05, metadata=rule(min=0, below=1))
    # RoI level k = floor(4 + log2(sqrt(wh) / roi_canonical_scale)), clamped to P2-P5: the FPN
    # rule. The paper's 224 is in pixels of an 800 px input; a smaller input scales it.
    roi_canonical_scale: float = field(default=224.0, metadata=rule(above=0))
    # "auto": frozen BatchNorm and stem when ImageNet weights are loaded (paper Table 1),
    # trainable BatchNorm from scratch (paper Table 2). Or force "frozen" / "batch".
    norm: str = field(default="auto", metadata=rule(choices=("auto", "frozen", "batch")))
    # timm starts every residual block as the identity (its last BatchNorm scale at 0, Goyal et al.
    # 2017); false starts that scale at 1, as torchvision's and detectron2's ResNets do. Only for
    # random init: loaded weights overwrite it.
    zero_init_last: bool = True


@dataclass
class TrainConfig:
    """SGD schedule. The learning rate is `base_lr * batch_size / base_batch` (linear scaling)."""

    batch_size: int = field(default=16, metadata=rule(min=1))
    iterations: int = field(default=180_000, metadata=rule(min=1))
    base_lr: float = field(default=0.02, metadata=rule(above=0))
    base_batch: int = field(default=16, metadata=rule(min=1))
    momentum: float = field(default=0.9, metadata=rule(min=0, below=1))
    weight_decay: float = field(default=1e-4, metadata=rule(min=0))
    # Weight decay of norm weights and of every bias (1-D parameters, timm's rule): none, as
    # detectron2 does for norms and timm for both; decay pulls a trainable BatchNorm's scale to 0.
    norm_bias_weight_decay: float = field(default=0.0, metadata=rule(min=0))
    warmup_iters: int = field(default=500, metadata=rule(min=0))
    warmup_factor: float = field(default=0.3, metadata=rule(above=0, max=1))
    lr_steps: tuple[float, ...] = field(  # fractions of `iterations`, as the paper's 120k/160k of 180k
        default=(120_000 / 180_000, 160_000 / 180_000), metadata=rule(above=0, max=1)
    )
    lr_gamma: float = field(default=0.1, metadata=rule(above=0, max=1))
    hflip: float = field(default=0.5, metadata=rule(min=0, max=1))
    # "auto": bfloat16 autocast where the device runs it natively (recent CPUs and GPUs), else
    # float32; "fp16" uses a gradient scaler (CUDA only). Resolved before config.yaml is written.
    precision: str = field(default="auto", metadata=rule(choices=("auto", "fp32", "bf16", "fp16")))
    channels_last: bool = False
    compile_backbone: bool = False  # torch.compile of the backbone (the first steps compile it)
    pin_memory: bool = True  # page-locked batches for faster copies to a GPU (CUDA only)
    checkpoint_every: int = field(default=0, metadata=rule(min=0))  # 0: only at the end
    eval_every: int = field(default=0, metadata=rule(min=0))  # validation AP every N iterations to eval.csv; 0: off
    log_every: int = field(default=20, metadata=rule(min=1))
    workers: int = field(default=0, metadata=rule(min=0))


@dataclass
class MeasureConfig:
    """Cost measurement: compute, latency, memory."""

    classification_size: int = field(default=224, metadata=rule(min=32))
    detection_size: int = field(default=800, metadata=rule(min=32))
    # RoIs per image for detector compute/latency; 0: as the detector evaluates.
    num_proposals: int = field(default=0, metadata=rule(min=0))
    batch_sizes: tuple[int, ...] = field(default=(1, 2, 4), metadata=rule(min=1, nonempty=True))
    dtypes: tuple[str, ...] = field(
        default=("float32", "bfloat16"), metadata=rule(choices=("float32", "tf32", "bfloat16"), nonempty=True)
    )
    channels_last: tuple[bool, ...] = field(default=(False, True), metadata=rule(nonempty=True))
    compile: tuple[bool, ...] = field(default=(False,), metadata=rule(nonempty=True))  # torch.compile the model too
    min_run_time: float = field(default=0.5, metadata=rule(above=0))  # seconds per torch.utils.benchmark block
    repeats: int = field(default=5, metadata=rule(min=1))  # blocks, for median and IQR
    threads: int = field(default=0, metadata=rule(min=0))  # 0: all cores torch sees
    # With --device cuda, time every setting on the CPU too (for CPU/GPU comparisons); off for GPU-only figures.
    cpu: bool = True


@dataclass
class Profile:
    name: str = "paper"
    # Every backbone is trained once per seed; two or more let the report measure training noise.
    seeds: list[int] = field(default_factory=lambda: [0], metadata={**rule(min=0, nonempty=True), **MAY_DIFFER})
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig, metadata=MAY_DIFFER)


def _paper() -> Profile:
    """Section 4 of the paper: 8 GPUs x 2 images, 180k iterations, short side 800.

    The paper's 12000/2000 (train) and 6000/1000 (test) proposals are totals over the image;
    torchvision applies pre-NMS top-n per level, so Detectron's FPN values (the defaults) are used.
    """
    return Profile(
        name="paper",
        detector=DetectorConfig(min_size=800, max_size=1333),
        train=TrainConfig(checkpoint_every=10_000, workers=4),
    )


def _default() -> Profile:
    """A 2-core CPU in under a quarter of an hour, three seeds (the fewest a verdict needs), geometry fitted to 192 px.

    80 iterations (of batch 4) is the cut that fits three seeds of two backbones in 15 minutes;
    the README says what it costs against 150.

    Anchors 16-256 px, one octave per level, bracket the objects (10-170 px); the RoI level rule's
    canonical scale is the paper's 224 times 192/800, so objects pool from the levels they would
    at 800 px (large ones from P5). 64 RoIs per image are plenty for 2-6 objects, and bfloat16
    autocast with channels-last (where the CPU runs bfloat16 natively) roughly halve a step.
    """
    return Profile(
        name="default",
        seeds=[0, 1, 2],
        detector=DetectorConfig(
            min_size=192, max_size=192, anchor_sizes=(16, 32, 64, 128, 256), roi_canonical_scale=224 * 192 / 800,
            rpn_pre_nms_top_n_train=1000, rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_train=500,
            rpn_post_nms_top_n_test=300, box_batch_size_per_image=64,
        ),
        train=TrainConfig(
            batch_size=4, iterations=80, warmup_iters=20, lr_steps=(2 / 3, 8 / 9), log_every=5, channels_last=True,
        ),
        measure=MeasureConfig(detection_size=192, batch_sizes=(1,), min_run_time=0.3),
    )


def _smoke() -> Profile:
    return Profile(
        name="smoke",
        synthetic=SyntheticConfig(num_train=8, num_val=4, image_size=128),
        detector=DetectorConfig(
            min_size=128, max_size=128, rpn_pre_nms_top_n_train=200, rpn_pre_nms_top_n_test=100,
            rpn_post_nms_top_n_train=100, rpn_post_nms_top_n_test=50, box_batch_size_per_image=64,
        ),
        train=TrainConfig(batch_size=2, iterations=2, warmup_iters=1, lr_steps=(2 / 3, 8 / 9), log_every=1),
        measure=MeasureConfig(
            detection_size=128, batch_sizes=(1,), dtypes=("float32",),
            channels_last=(False,), min_run_time=0.01, repeats=2,
        ),
    )


PROFILES = {"smoke": _smoke, "default": _default, "paper": _paper}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]()


@dataclass
class DataSource:
    """Where the images and annotations come from; all None means the embedded synthetic set."""

    train_ann: str | None = None
    train_images: str | None = None
    val_ann: str | None = None
    val_images: str | None = None

    @property
    def synthetic(self) -> bool:
        return self.train_ann is None


@dataclass
class BackboneAudit:
    """What makes a comparison fair or not, per backbone: recorded, never set by the user."""

    weights_file: str | None = None
    weights_sha256: str | None = None
    norm: str = "batch"  # the resolved policy: frozen or batch
    frozen_stem: bool = False
    decayed_tensors: int = 0  # weights that get `weight_decay`
    undecayed_tensors: int = 0  # norm weights and biases, which get `norm_bias_weight_decay`
    frozen_tensors: int = 0  # no gradient at all
    # When the weights file comes from a bench.pretrain run folder (and its sha256 still matches
    # that run's classification.json): the run, its data, its top-1 error (%) and GMACs at 224.
    pretrain_run: str | None = None
    pretrain_data: str | None = None
    pretrain_top1_err: float | None = None
    pretrain_gmacs_224: float | None = None


@dataclass
class RunConfig:
    backbones: list[str] = field(default_factory=lambda: ["detnet59", "resnet50"], metadata=MAY_DIFFER)
    profile: Profile = field(default_factory=_default)
    data: DataSource = field(default_factory=DataSource)
    device: str = field(default="cpu", metadata=MAY_DIFFER)
    # Merged runs may use different folders of weights, but all or none of them must use pretrained weights.
    pretrained_dir: str | None = field(default=None, metadata=MAY_DIFFER)
    cache_dir: str = field(default=".cache/detbench", metadata=MAY_DIFFER)
    strict_data: bool = False  # skippable data problems (degenerate boxes...) become errors
    audit: dict[str, BackboneAudit] = field(default_factory=dict, metadata=MAY_DIFFER)

    @property
    def pretrained(self) -> bool:
        return self.pretrained_dir is not None
