"""The embedded synthetic COCO-format set: shapes on cluttered backgrounds, sizes over COCO's bins.

It exists so that the whole pipeline, from data to report, runs on any machine in minutes,
with objects small, medium and large by COCO's own area bins; it is generated once per
setting and cached.
"""
from __future__ import annotations

import colorsys
import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..files import publish_dir
from ..settings import DataSource, SyntheticConfig

SYNTHETIC_CATEGORIES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")

# Bump when the drawing changes, so that cached sets from an older generator are not reused.
_GENERATOR_VERSION = 1
_COMPLETE = "complete.json"  # written last: a folder without it is an interrupted run

# sqrt(box area) per COCO size bin, kept clear of the 32 and 96 px bin edges so that
# one-pixel rounding in drawing cannot move an object into the neighbouring bin.
_SIZE_BINS = ((10, 30), (34, 94), (100, 170))  # small, medium, large
# Large objects often find no room and fall back to medium: drawing them more often
# balances the placed counts across the three bins.
_BIN_WEIGHTS = (0.34, 0.2, 0.46)
_MAX_ASPECT = 1.25  # box w/h within [1/1.25, 1.25]
_MIN_VISIBLE = 0.6  # fraction of an object's pixels that later objects must leave in view
_PLACEMENT_TRIES = 30
# Colour is a hint, not the label: most objects take their category's hue (so from-scratch
# training gets going within ~150 iterations), the rest a random hue, so shape must decide.
_CATEGORY_HUE_P = 0.7


def make_synthetic(cfg: SyntheticConfig, cache_dir: str | Path) -> DataSource:
    """Generate (or reuse) the synthetic set for `cfg` under `cache_dir` and return its paths.

    Square images hold 2-6 shapes (`SYNTHETIC_CATEGORIES`) with solid, striped or checker
    fills on muted gradients with faint lines and blotches; sizes are balanced over COCO's
    small / medium / large bins. Colour loosely follows the category (see `_CATEGORY_HUE_P`)
    so that training from scratch learns within a few hundred iterations.

    The folder name hashes the config, so a complete folder is simply reused. Generation writes
    into a private temporary folder that is renamed into place once complete, so concurrent or
    interrupted runs never leave a half-written set where a later run would trust it.
    """
    root = Path(cache_dir) / f"synthetic-{_cache_key(cfg)}"
    if not (root / _COMPLETE).is_file():
        _generate(cfg, root)
    return DataSource(
        train_ann=str(root / "instances_train.json"), train_images=str(root / "train"),
        val_ann=str(root / "instances_val.json"), val_images=str(root / "val"),
    )


def _cache_key(cfg: SyntheticConfig) -> str:
    payload = json.dumps({"generator": _GENERATOR_VERSION, **asdict(cfg)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def _generate(cfg: SyntheticConfig, root: Path) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{root.name}.partial-", dir=root.parent))
    try:
        splits = (("train", cfg.num_train), ("val", cfg.num_val))
        for split_index, (split, count) in enumerate(splits):
            coco = _write_split(tmp / split, count, cfg.image_size, (cfg.seed, split_index))
            (tmp / f"instances_{split}.json").write_text(json.dumps(coco))
        (tmp / _COMPLETE).write_text(json.dumps(asdict(cfg)))
        publish_dir(tmp, root, _COMPLETE)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_split(image_dir: Path, count: int, size: int, seed: tuple[int, int]) -> dict[str, Any]:
    """Draw `count` images into `image_dir` and return their COCO annotation dict."""
    image_dir.mkdir()
    images, annotations = [], []
    for index in range(count):
        image_id = index + 1
        file_name = f"{image_id:06d}.jpg"
        image, objects = _render(np.random.default_rng([*seed, index]), size)
        # 4:4:4 chroma keeps the colour edges of 10 px objects crisp.
        image.save(image_dir / file_name, quality=95, subsampling=0)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for category_id, (x, y, w, h) in objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h),
                "iscrowd": 0,
            })
    categories = [
        {"id": i + 1, "name": name, "supercategory": "shape"}
        for i, name in enumerate(SYNTHETIC_CATEGORIES)
    ]
    info = {"description": "detbench synthetic shapes", "version": str(_GENERATOR_VERSION)}
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def _render(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[tuple[int, tuple]]]:
    """One image and its objects as (category_id, xywh box of the drawn pixels).

    `area` in the annotations is the box area w*h rather than the mask area: the size bins
    are then about an object's extent, the same for a ring as for a filled square.
    Larger size bins are drawn first, so occluders are mostly smaller than what they cover,
    and each object keeps at least `_MIN_VISIBLE` of its pixels in view: nothing is hidden.
    """
    canvas = _background(rng, size)
    max_side = int(0.9 * size)
    fits = np.array([low * _MAX_ASPECT**0.5 <= max_side for low, _ in _SIZE_BINS])
    weights = np.where(fits, _BIN_WEIGHTS, 0.0)
    count = rng.integers(2, 7)
    chosen = sorted(rng.choice(len(_SIZE_BINS), count, p=weights / weights.sum()), reverse=True)
    on_top = np.full((size, size), -1)  # index of the object drawn last at each pixel
    objects: list[tuple[int, tuple]] = []
    pixels: list[int] = []  # drawn pixel count per object
    for size_bin in chosen:
        box = _place(rng, size, max_side, size_bin, on_top, np.array(pixels))
        if box is None:  # only when the image is too small to keep objects apart
            continue
        x, y, w, h = box
        label = int(rng.integers(len(SYNTHETIC_CATEGORIES)))
        mask = _shape_mask(SYNTHETIC_CATEGORIES[label], w, h)
        patch = Image.fromarray(_texture(rng, w, h, _object_colour(rng, label)))
        canvas.paste(patch, (x, y), mask)
        drawn = np.asarray(mask) > 0
        on_top[y:y + h, x:x + w][drawn] = len(objects)
        pixels.append(int(drawn.sum()))
        left, top, right, bottom = mask.getbbox()
        objects.append((label + 1, (x + left, y + top, right - left, bottom - top)))
    noise = rng.normal(0.0, 3.0, (size, size, 3))
    return Image.fromarray((np.asarray(canvas) + noise).clip(0, 255).astype(np.uint8)), objects


def _place(
    rng: np.random.Generator, size: int, max_side: int, size_bin: int,
    on_top: np.ndarray, pixels: np.ndarray,
) -> tuple[int, int, int, int] | None:
    """A xywh box in `size_bin` that leaves every drawn object enough visible pixels.

    Falls back to the next smaller bin when the image has no room left, None past the smallest.
    """
    visible = np.bincount(on_top.ravel() + 1, minlength=len(pixels) + 1)[1:]
    low, high = _SIZE_BINS[size_bin]
    for _ in range(_PLACEMENT_TRIES):
        side = rng.uniform(low, high)
        aspect = np.exp(rng.uniform(-np.log(_MAX_ASPECT), np.log(_MAX_ASPECT)))
        w, h = round(side * aspect**0.5), round(side / aspect**0.5)
        if max(w, h) > max_side:
            continue
        x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        under = on_top[y:y + h, x:x + w].ravel() + 1
        covered = np.bincount(under, minlength=len(pixels) + 1)[1:]
        if np.all(visible - covered >= _MIN_VISIBLE * pixels):
            return x, y, w, h
    return _place(rng, size, max_side, size_bin - 1, on_top, pixels) if size_bin else None


def _shape_mask(shape: str, w: int, h: int) -> Image.Image:
    mask = Image.new("L", (w, h))
    draw = ImageDraw.Draw(mask)
    full = (0, 0, w - 1, h - 1)
    if shape == "circle":
        draw.ellipse(full, fill=255)
    elif shape == "square":
        draw.rectangle(full, fill=255)
    elif shape == "triangle":
        draw.polygon([((w - 1) / 2, 0), (0, h - 1), (w - 1, h - 1)], fill=255)
    elif shape == "cross":
        tw, th = max(w // 3, 2), max(h // 3, 2)
        draw.rectangle(((w - tw) // 2, 0, (w - tw) // 2 + tw - 1, h - 1), fill=255)
        draw.rectangle((0, (h - th) // 2, w - 1, (h - th) // 2 + th - 1), fill=255)
    elif shape == "ring":
        draw.ellipse(full, fill=255)
        tw, th = max(round(w * 0.22), 2), max(round(h * 0.22), 2)
        draw.ellipse((tw, th, w - 1 - tw, h - 1 - th), fill=0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask


def _object_colour(rng: np.random.Generator, label: int) -> np.ndarray:
    if rng.random() < _CATEGORY_HUE_P:
        hue = label / len(SYNTHETIC_CATEGORIES) + rng.normal(0.0, 0.03)
    else:
        hue = rng.random()
    rgb = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.55, 1.0), rng.uniform(0.65, 1.0))
    return np.array(rgb) * 255


def _texture(rng: np.random.Generator, w: int, h: int, colour: np.ndarray) -> np.ndarray:
    """Solid, striped (horizontal, vertical or diagonal) or checker fill, as uint8 HWC."""
    yy, xx = np.mgrid[0:h, 0:w]
    period = int(rng.integers(4, 9))
    kind = rng.integers(3)
    if kind == 0:
        on = np.ones((h, w), dtype=bool)
    elif kind == 1:
        coordinate = (xx, yy, xx + yy)[rng.integers(3)]
        on = (coordinate // (period // 2)) % 2 == 0
    else:
        on = (xx // period + yy // period) % 2 == 0
    return np.where(on[..., None], colour, colour * 0.45).astype(np.uint8)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Muted colour gradient with soft blotches and faint lines: clutter without shapes."""
    c0, c1 = (np.array(_muted(rng)) for _ in range(2))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / (t.max() - t.min())
    gradient = c0 + (c1 - c0) * t[..., None]
    blotch_grid = rng.integers(128 - 20, 128 + 21, (4, 4, 3), dtype=np.uint8)
    blotches = np.asarray(Image.fromarray(blotch_grid).resize((size, size), Image.BICUBIC))
    canvas = Image.fromarray((gradient + blotches - 128.0).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    mean = gradient.mean(axis=(0, 1))
    for _ in range(rng.integers(3, 9)):
        ends = rng.uniform(-0.25 * size, 1.25 * size, 4)
        colour = tuple(int(c) for c in (mean + rng.uniform(-30, 30, 3)).clip(0, 255))
        draw.line(list(ends), fill=colour, width=int(rng.integers(1, 3)))
    return canvas


def _muted(rng: np.random.Generator) -> tuple[float, float, float]:
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.35), rng.uniform(0.3, 0.7))
    return tuple(255 * c for c in rgb)
