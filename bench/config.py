"""What a run is: the profile (data, detector, schedule, measurement) as plain dataclasses.

Every stage of the pipeline reads its own section; `config.yaml` in a run folder is
`asdict(RunConfig)`, and `RunConfig.from_dict` reads it back so a run can be repeated.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, get_origin, get_type_hints


@dataclass
class SyntheticConfig:
    """The embedded synthetic COCO-format set (used when no --data is given)."""

    num_train: int = 400
    num_val: int = 100
    image_size: int = 192
    seed: int = 0


@dataclass
class DetectorConfig:
    """Faster R-CNN + FPN settings shared by every backbone."""

    min_size: int = 192
    max_size: int = 192
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    # torchvision applies the pre-NMS top-n per FPN level, the post-NMS top-n per image.
    # Fewer proposals and sampled RoIs than the paper keep a CPU step near 1.5 s; the box
    # head's 12544 -> 1024 FC otherwise costs more than the backbone at this image size.
    rpn_pre_nms_top_n_train: int = 1000
    rpn_pre_nms_top_n_test: int = 500
    rpn_post_nms_top_n_train: int = 500
    rpn_post_nms_top_n_test: int = 300
    box_batch_size_per_image: int = 128
    box_detections_per_img: int = 100
    box_score_thresh: float = 0.05
    # RoI level k = floor(4 + log2(sqrt(wh) / roi_canonical_scale)), clamped to P2-P5: the FPN
    # rule, 224 as in the paper. At 192 px no object then pools from P4/P5 (deep features reach
    # P2/P3 through the top-down path); 224 x size / 800 would map objects as at 800 px. The
    # README's results compare both: at the default schedule the choice flips the ranking.
    roi_canonical_scale: float = 224.0
    # "auto": frozen BatchNorm and stem when ImageNet weights are loaded (paper Table 1),
    # trainable BatchNorm from scratch (paper Table 2). Or force "frozen" / "batch".
    norm: str = "auto"


@dataclass
class TrainConfig:
    """SGD schedule. The learning rate is `base_lr * batch_size / base_batch` (linear scaling)."""

    batch_size: int = 4
    iterations: int = 200
    base_lr: float = 0.02
    base_batch: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 20
    warmup_factor: float = 0.3
    lr_steps: tuple[float, ...] = (2 / 3, 8 / 9)  # fractions of `iterations`, as 120k/160k of 180k
    lr_gamma: float = 0.1
    hflip: float = 0.5
    checkpoint_every: int = 0  # 0: only at the end
    log_every: int = 5
    workers: int = 0
    amp: bool = True  # used on CUDA only


@dataclass
class MeasureConfig:
    """Cost measurement: compute, latency, memory."""

    classification_size: int = 224
    detection_size: int = 192
    num_proposals: int = 0  # RoIs per image for detector compute/latency; 0: as the detector evaluates
    batch_sizes: tuple[int, ...] = (1,)  # paper profile: (1, 2, 4); batch 2 here would double a CPU run
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    channels_last: tuple[bool, ...] = (False, True)
    min_run_time: float = 0.5  # seconds per torch.utils.benchmark block
    repeats: int = 5  # blocks, for median and IQR
    threads: int = 0  # 0: all cores torch sees


@dataclass
class Profile:
    name: str
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)


def _smoke() -> Profile:
    return Profile(
        name="smoke",
        synthetic=SyntheticConfig(num_train=8, num_val=4, image_size=128, seed=0),
        detector=DetectorConfig(
            min_size=128, max_size=128, rpn_pre_nms_top_n_train=200, rpn_pre_nms_top_n_test=100,
            rpn_post_nms_top_n_train=100, rpn_post_nms_top_n_test=50, box_batch_size_per_image=64,
        ),
        train=TrainConfig(batch_size=2, iterations=2, warmup_iters=1, log_every=1),
        measure=MeasureConfig(
            detection_size=128, batch_sizes=(1,), dtypes=("float32",),
            channels_last=(False,), min_run_time=0.01, repeats=2,
        ),
    )


def _default() -> Profile:
    return Profile(name="default")


def _paper() -> Profile:
    """Section 4 of the paper: 8 GPUs x 2 images, 180k iterations, short side 800."""
    return Profile(
        name="paper",
        detector=DetectorConfig(
            # The paper's 12000/2000 (train) and 6000/1000 (test) proposals are totals over the
            # image; torchvision applies pre-NMS top-n per level, so Detectron's FPN values are used.
            min_size=800, max_size=1333, rpn_pre_nms_top_n_train=2000, rpn_pre_nms_top_n_test=1000,
            rpn_post_nms_top_n_train=2000, rpn_post_nms_top_n_test=1000, box_batch_size_per_image=512,
        ),
        train=TrainConfig(
            batch_size=16, iterations=180_000, base_lr=0.02, base_batch=16, warmup_iters=500,
            warmup_factor=0.3, lr_steps=(120_000 / 180_000, 160_000 / 180_000),
            checkpoint_every=10_000, log_every=20, workers=4,
        ),
        measure=MeasureConfig(detection_size=800, batch_sizes=(1, 2, 4)),
    )


PROFILES = {"smoke": _smoke, "default": _default, "paper": _paper}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
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
class RunConfig:
    backbones: list[str]
    profile: Profile
    data: DataSource = field(default_factory=DataSource)
    seed: int = 0
    device: str = "cpu"
    pretrained_dir: str | None = None
    cache_dir: str = ".cache/detbench"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        return _build(cls, raw)


def _build(cls: type, raw: dict[str, Any]) -> Any:
    """Rebuild nested dataclasses (and YAML lists as tuples) from a plain dict, rejecting unknown keys."""
    hints = get_type_hints(cls)
    unknown = set(raw) - set(hints)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} setting(s): {', '.join(sorted(unknown))}")
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if is_dataclass(hint):
            if not isinstance(value, dict):
                raise ValueError(f"{cls.__name__}.{name} must be a mapping of settings, not {value!r}")
            value = _build(hint, value)
        elif get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)
