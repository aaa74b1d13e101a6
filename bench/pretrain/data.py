"""Classification data: an ImageFolder tree, or crops of the synthetic shapes; timm's dataset and transforms.

Images are read by timm's `ImageDataset` and augmented by timm's `create_transform`. Batches
come from the detection pipeline's `PairedBatchSampler` rather than timm's `create_loader`:
create_loader draws its shuffle order and its workers' seeds from the global RNG, so a run
stopped mid-epoch could only be resumed by replaying the epoch. Here epoch e's order is a
(seed, e) permutation and each sample's augmentation is drawn from generators seeded with
(seed, epoch, index), so step i's batch is the same whether the run got there in one go or
was resumed at i, with any number of workers.
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.data import ImageDataset, create_transform
from torch.utils.data import DataLoader, Dataset

from ..data import PairedBatchSampler, SampleKey, make_synthetic
from ..errors import DataError
from ..files import publish_dir
from ..settings import SyntheticConfig
from .config import GeneratedSetConfig, InputConfig

SPLITS = ("train", "val")
_GENERATOR_VERSION = 1
_COMPLETE = "complete.json"
_CONTEXT = 0.15  # each side of an object's box, as a fraction of its size: some background in every crop


def generated_set(cfg: GeneratedSetConfig, cache_dir: str | Path) -> Path:
    """The ImageFolder tree of object crops from the synthetic detection set, made once per setting.

    Every annotated shape becomes one image of its category (the synthetic set's categories are
    the classes): its box widened by `_CONTEXT`, squared, resized to `crop_size`. Written into a
    private folder renamed into place when complete, as the detection set is.
    """
    payload = json.dumps({"generator": _GENERATOR_VERSION, **asdict(cfg)}, sort_keys=True)
    root = Path(cache_dir) / f"shapes-classification-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"
    if (root / _COMPLETE).is_file():
        return root
    source = make_synthetic(SyntheticConfig(num_train=cfg.num_train_images, num_val=cfg.num_val_images,
                                            image_size=cfg.image_size, seed=cfg.seed), cache_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f"{root.name}.partial-", dir=root.parent))
    try:
        for split, ann, images in (("train", source.train_ann, source.train_images),
                                   ("val", source.val_ann, source.val_images)):
            _write_crops(json.loads(Path(ann).read_text()), Path(images), tmp / split, cfg.crop_size)
        (tmp / _COMPLETE).write_text(payload)
        publish_dir(tmp, root, _COMPLETE)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_crops(coco: dict, image_dir: Path, out: Path, size: int) -> None:
    names = {category["id"]: category["name"] for category in coco["categories"]}
    for name in names.values():
        (out / name).mkdir(parents=True)
    files = {image["id"]: image_dir / image["file_name"] for image in coco["images"]}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        side = max(w, h) * (1 + 2 * _CONTEXT)
        cx, cy = x + w / 2, y + h / 2
        with Image.open(files[ann["image_id"]]) as image:
            crop = image.convert("RGB").crop((round(cx - side / 2), round(cy - side / 2),
                                              round(cx + side / 2), round(cy + side / 2)))
        crop.resize((size, size), Image.BILINEAR).save(out / names[ann["category_id"]] / f"{ann['id']:06d}.png")


def image_folder(root: str | Path) -> Path:
    """Check an ImageFolder tree: train/ and val/, each with one subfolder per class, val's classes among train's."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data {root} is not a folder")
    classes = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"--data {root} has no {split}/ folder; an ImageFolder tree needs train/<class>/ and "
                            "val/<class>/")
        classes[split] = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not classes[split]:
            raise DataError(f"{folder} has no class subfolders")
    extra = sorted(set(classes["val"]) - set(classes["train"]))
    if extra:
        raise DataError(f"{root / 'val'} has classes that train/ lacks: {', '.join(extra[:5])}")
    return root


@contextmanager
def seeded_rngs(seed: list[int]) -> Iterator[None]:
    """Python's, NumPy's and torch's global generators seeded from `seed` inside, put back after: timm's
    transforms draw from all three, and the model's own draws must not see them."""
    python, numpy_state = random.getstate(), np.random.get_state()
    state = np.random.SeedSequence(seed).generate_state(2)
    with torch.random.fork_rng(devices=[]):
        random.seed(int(state[0]))
        np.random.seed(int(state[1]))
        torch.manual_seed(int(state[0]) << 32 | int(state[1]))
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy_state)


class SeededSamples(Dataset):
    """timm's `ImageDataset` with each sample's augmentation drawn from (seed, epoch, index) alone."""

    def __init__(self, images: ImageDataset, transform: Callable, seed: int = 0) -> None:
        self.images, self.transform, self.seed = images, transform, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | SampleKey) -> tuple[torch.Tensor, int]:
        epoch, index = key if isinstance(key, SampleKey) else (0, key)
        image, target = self.images[index]
        with seeded_rngs([self.seed, epoch, index]):
            return self.transform(image), target


def datasets(root: Path) -> tuple[ImageDataset, ImageDataset]:
    """timm's datasets for train/ and val/, val's labels by train's class list."""
    train = ImageDataset(str(root / "train"))
    val = ImageDataset(str(root / "val"), class_map=dict(train.reader.class_to_idx))
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"{root}: train/ or val/ holds no images")
    return train, val


def transforms(cfg: InputConfig) -> tuple[Callable, Callable]:
    """timm's training and evaluation transforms for the profile's input settings."""
    train = create_transform(cfg.input_size, is_training=True, scale=tuple(cfg.scale), hflip=cfg.hflip,
                             color_jitter=cfg.color_jitter, auto_augment=cfg.auto_augment, re_prob=cfg.re_prob,
                             interpolation=cfg.interpolation)
    evaluate = create_transform(cfg.input_size, is_training=False, crop_pct=cfg.crop_pct,
                                interpolation="bilinear" if cfg.interpolation == "random" else cfg.interpolation)
    return train, evaluate


def train_loader(samples: SeededSamples, batch_size: int, workers: int, start: int, rank: int = 0,
                 world: int = 1) -> tuple[DataLoader, int]:
    """Endless batches from step `start` on (`batch_size` is the global batch), and the steps per epoch."""
    sampler = PairedBatchSampler([0] * len(samples), batch_size, samples.seed, start=start, rank=rank, world=world)
    loader = DataLoader(samples, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(samples.seed))
    return loader, sampler.per_epoch


def eval_loader(samples: SeededSamples, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(samples, batch_size=batch_size, shuffle=False, num_workers=workers)
