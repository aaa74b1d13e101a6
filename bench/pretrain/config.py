"""What a pretraining run is: profiles of the recipe as dataclasses, merged and checked like bench.run's.

`imagenet` is the recipe the DetNet paper names: DetNet-59 is pretrained on ImageNet-1k like
ResNeXt, batch 256, 224 crops (shared/README.md). Each of its settings below says where it
comes from: the ResNeXt paper (Xie et al., 2017, section 4), the fb.resnet.torch code whose
schedule it uses (`train.lua`), or our reading where neither says (README, Pretraining).
`cpu` finishes in minutes on 2 cores on the generated set; `smoke` is for the tests.

config.yaml starts with its format's `schema_version` (its own numbering, not bench.run's). Version 1
is the only one so far; a file without the key was written by version 1 before the number was.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .. import settings
from ..errors import ConfigError
from ..settings import VERSION_KEY, checked_version, rule

SCHEMA_VERSION = 1


@dataclass
class GeneratedSetConfig:
    """The classification set cut from the synthetic detection images (used when no --data is given)."""

    num_train_images: int = field(default=400, metadata=rule(min=1))  # detection images cropped from
    num_val_images: int = field(default=100, metadata=rule(min=1))
    image_size: int = field(default=192, metadata=rule(min=32))  # of the detection images
    crop_size: int = field(default=72, metadata=rule(min=8))  # each object's crop is stored at this square size
    seed: int = 0


@dataclass
class InputConfig:
    """Image pipeline: timm's `create_transform` for training (random-resized crop, flip, colour jitter) and
    evaluation (resize to input/crop_pct, centre crop)."""

    input_size: int = field(default=224, metadata=rule(min=8))  # ResNeXt/DetNet: 224 crops
    crop_pct: float = field(default=0.875, metadata=rule(above=0, max=1))  # eval: resize 256, centre 224
    scale: tuple[float, ...] = field(default=(0.08, 1.0), metadata=rule(above=0, max=1, length=2))  # Inception crops
    hflip: float = field(default=0.5, metadata=rule(min=0, max=1))
    color_jitter: float = field(default=0.4, metadata=rule(min=0))  # fb.resnet.torch: 0.4 brightness/contrast/sat.
    auto_augment: str | None = None  # a timm policy, e.g. rand-m9-mstd0.5; the paper's recipe has none
    re_prob: float = field(default=0.0, metadata=rule(min=0, max=1))  # random erasing
    interpolation: str = field(default="bilinear", metadata=rule(choices=("bilinear", "bicubic", "random")))
    workers: int = field(default=0, metadata=rule(min=0))


@dataclass
class RecipeConfig:
    """Optimizer, schedule and regularisers. The learning rate is `base_lr * batch_size / base_batch`."""

    batch_size: int = field(default=256, metadata=rule(min=1))  # ResNeXt: 256 over 8 GPUs (global batch)
    epochs: int = field(default=120, metadata=rule(min=1))  # four 30-epoch periods: our reading, see README
    opt: str = "sgd"  # timm's name: SGD with Nesterov momentum, as fb.resnet.torch (ResNeXt's code base)
    base_lr: float = field(default=0.1, metadata=rule(above=0))  # ResNeXt: 0.1 at batch 256
    base_batch: int = field(default=256, metadata=rule(min=1))
    momentum: float = field(default=0.9, metadata=rule(min=0, below=1))  # ResNeXt
    weight_decay: float = field(default=1e-4, metadata=rule(min=0))  # ResNeXt
    # fb.resnet.torch decays every parameter; timm's rule leaves norms and biases undecayed.
    filter_bias_and_bn: bool = False
    sched: str = field(default="multistep", metadata=rule(choices=("multistep", "cosine")))
    # ResNeXt: "divide it by 10 for three times" on fb.resnet.torch's every-30-epochs schedule.
    decay_milestones: tuple[int, ...] = field(default=(30, 60, 90), metadata=rule(min=1))
    decay_rate: float = field(default=0.1, metadata=rule(above=0, max=1))
    warmup_epochs: int = field(default=0, metadata=rule(min=0))
    warmup_lr: float = field(default=1e-5, metadata=rule(above=0))
    min_lr: float = field(default=0.0, metadata=rule(min=0))  # cosine's floor
    mixup: float = field(default=0.0, metadata=rule(min=0))  # alpha; 0: off (not in the 2017 recipe)
    cutmix: float = field(default=0.0, metadata=rule(min=0))
    smoothing: float = field(default=0.0, metadata=rule(min=0, below=1))  # label smoothing; 0: off
    ema_decay: float = field(default=0.0, metadata=rule(min=0, below=1))  # timm ModelEmaV3; 0: off
    precision: str = field(default="fp32", metadata=rule(choices=("fp32", "bf16")))  # bf16: autocast
    checkpoint_every: int = field(default=0, metadata=rule(min=0))  # steps; 0: at each epoch's end only
    log_every: int = field(default=50, metadata=rule(min=1))


@dataclass
class PretrainProfile:
    name: str = "imagenet"
    seed: int = 0
    generated: GeneratedSetConfig = field(default_factory=GeneratedSetConfig)
    input: InputConfig = field(default_factory=InputConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)


@dataclass
class PretrainConfig:
    backbones: list[str] = field(default_factory=lambda: ["detnet59"])
    profile: PretrainProfile = field(default_factory=PretrainProfile)
    data_dir: str | None = None  # an ImageFolder tree with train/ and val/; None: the generated set
    cache_dir: str = ".cache/detbench"
    device: str = "cpu"


def _imagenet() -> PretrainProfile:
    """ImageNet-1k as the paper: ResNeXt's recipe, 224 crops, batch 256, lr 0.1, /10 at epochs 30, 60, 90 of 120."""
    return PretrainProfile(name="imagenet", input=InputConfig(workers=8), recipe=RecipeConfig(checkpoint_every=2000))


def _cpu() -> PretrainProfile:
    """A few minutes on 2 CPU cores: ~500 crops of 5 shape classes at 64 px, 3 epochs, cosine with warm-up.

    Batch 32 at lr 0.1 x 32/256 (the recipe's linear scaling); crops keep at least 35% of the
    object so the shape stays visible.
    """
    return PretrainProfile(
        name="cpu",
        generated=GeneratedSetConfig(num_train_images=120, num_val_images=40, crop_size=72),
        input=InputConfig(input_size=64, scale=(0.35, 1.0)),
        recipe=RecipeConfig(batch_size=32, epochs=3, sched="cosine", warmup_epochs=1, warmup_lr=0.001, log_every=5),
    )


def _smoke() -> PretrainProfile:
    """Seconds, for tests: a few dozen 32-px crops, 2 epochs, with mixup, label smoothing and EMA switched on
    so that every part of the loop runs (and is resumed) at least once."""
    return PretrainProfile(
        name="smoke",
        generated=GeneratedSetConfig(num_train_images=8, num_val_images=4, image_size=128, crop_size=36),
        input=InputConfig(input_size=32, scale=(0.35, 1.0)),
        recipe=RecipeConfig(batch_size=8, epochs=2, sched="cosine", warmup_epochs=1, warmup_lr=0.001, mixup=0.2,
                            smoothing=0.1, ema_decay=0.9, log_every=1),
    )


PROFILES = {"imagenet": _imagenet, "cpu": _cpu, "smoke": _smoke}
SECTIONS = ("generated", "input", "recipe", "seed")  # `--set recipe.epochs=3` means profile.recipe.epochs


def build(profile: str | None = None, file: str | Path | None = None, options: dict[str, Any] | None = None,
          overrides: Sequence[str] = ()) -> PretrainConfig:
    """Profile defaults, then a config file, then command-line options, then `--set key=value`: type- and
    range-checked, a mistake is one ConfigError naming the setting."""
    raw = settings.read_yaml(file) if file is not None else {}
    if "data" in raw:  # every bench.run config.yaml has it, and a bench.pretrain one never did
        raise ConfigError(f"{file} is a bench.run config.yaml, not a bench.pretrain one")
    try:
        checked_version(raw.pop(VERSION_KEY, 1), SCHEMA_VERSION)
    except ConfigError as err:
        raise ConfigError(f"{file}: {err}") from None
    named = raw.get("profile", {}).get("name") if isinstance(raw.get("profile"), dict) else None
    name = profile or named or "imagenet"
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    dotlist = settings.checked_overrides(overrides, SECTIONS, example="recipe.epochs=3")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(PretrainConfig(profile=PROFILES[name]())), raw)
        for key, value in (options or {}).items():
            OmegaConf.update(merged, key, value, merge=False)
        cfg = OmegaConf.to_object(OmegaConf.merge(merged, OmegaConf.from_dotlist(dotlist)))
    except OmegaConfBaseException as err:
        where = f"{file}: " if file is not None and not overrides else ("--set " if overrides else "")
        raise ConfigError(f"{where}{settings.one_line(err)}") from None
    settings.validate(cfg)
    if len(set(cfg.backbones)) != len(cfg.backbones) or not cfg.backbones:
        raise ConfigError(f"backbones must be distinct and at least one, got {cfg.backbones}")
    return cfg


def to_yaml(cfg: PretrainConfig) -> str:
    """config.yaml: its format version, then every setting."""
    return f"{VERSION_KEY}: {SCHEMA_VERSION}\n" + OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: PretrainConfig) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg))
