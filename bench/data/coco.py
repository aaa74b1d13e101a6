"""COCO-format annotations: read once, checked record by record, turned into a compact index.

A wrong record is found before training, in one line that names the file, the record and the
fix. Problems a training set can live with (a box of no size or outside its image, an
annotation of an image the file does not list) are skipped and counted instead, unless
`strict`; validation ground truth is scored as pycocotools reads it, so it is checked, never
altered. The index (flat arrays: image files, sizes, boxes, labels) is all that training
keeps of a 450 MB annotation file, and it is cached, so each file is parsed once.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from ..config import DataSource
from ..errors import DataError
from ..files import atomic_write, write_json

INDEX_VERSION = 1
# Image headers are checked up front (size, readable) for sets up to this many images (COCO
# val: about a second); larger sets are checked as each image is loaded.
EAGER_IMAGE_CHECK = 10_000
SKIP_KINDS = {
    "non_positive_size": "boxes with non-positive size",
    "outside_image": "boxes outside their image",
    "unknown_image": "annotations whose image_id is not in the file's images",
}


def coco_layout(root: str | Path) -> DataSource:
    """The paths of a COCO 2017 folder (annotations/, train2017/, val2017/)."""
    root = Path(root)
    require(root, is_dir=True)
    src = DataSource(
        train_ann=str(root / "annotations" / "instances_train2017.json"),
        train_images=str(root / "train2017"),
        val_ann=str(root / "annotations" / "instances_val2017.json"),
        val_images=str(root / "val2017"),
    )
    for ann, images in ((src.train_ann, src.train_images), (src.val_ann, src.val_images)):
        require(Path(ann), is_dir=False)
        require(Path(images), is_dir=True)
    return src


def require(path: Path, is_dir: bool) -> None:
    if not (path.is_dir() if is_dir else path.is_file()):
        raise DataError(f"missing {'directory' if is_dir else 'file'}: {path}")


# --------------------------------------------------------------------------- reading and checking


def read_annotations(path: str | Path) -> dict[str, Any]:
    """The parsed file, with every record's structure and types checked (DataError otherwise)."""
    path = Path(path)
    require(path, is_dir=False)
    try:
        with path.open("rb") as file:
            data = json.load(file)
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from None
    except (UnicodeDecodeError, OSError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    keys = data if isinstance(data, dict) else {}
    missing = [key for key in ("images", "annotations", "categories") if key not in keys]
    if missing:
        raise DataError(f"{path} is not a COCO detection file: missing {', '.join(missing)}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise DataError(f"{path}: '{key}' must be a list, found {type(data[key]).__name__}")
    _check_records(data, path)
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _image_problem(image: Any) -> str | None:
    if not isinstance(image, dict):
        return "is not an object"
    if not _is_int(image.get("id")):
        return f"id must be an integer, got {image.get('id')!r}"
    if not isinstance(image.get("file_name"), str) or not image["file_name"]:
        return f"file_name must be a non-empty string, got {image.get('file_name')!r}"
    for key in ("width", "height"):
        if not _is_int(image.get(key)) or image[key] < 1:
            return f"{key} must be a positive integer, got {image.get(key)!r}"
    return None


def _category_problem(category: Any) -> str | None:
    if not isinstance(category, dict):
        return "is not an object"
    if not _is_int(category.get("id")):
        return f"id must be an integer, got {category.get('id')!r}"
    if not isinstance(category.get("name"), str):
        return f"name must be a string, got {category.get('name')!r}"
    return None


def _annotation_problem(annotation: Any) -> str | None:
    if not isinstance(annotation, dict):
        return "is not an object"
    for key in ("id", "image_id", "category_id"):
        if not _is_int(annotation.get(key)):
            return f"{key} must be an integer, got {annotation.get(key)!r}"
    bbox = annotation.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
        return f"bbox must be 4 finite numbers [x, y, width, height], got {bbox!r}"
    if annotation.get("iscrowd", 0) not in (0, 1):
        return f"iscrowd must be 0 or 1, got {annotation.get('iscrowd')!r}"
    if "area" in annotation and not _is_number(annotation["area"]):
        return f"area must be a number, got {annotation['area']!r}"
    return None


def _check_records(data: dict[str, Any], path: Path) -> None:
    """Structure and types of every record, unique ids, known categories: one line on the first fault."""
    checks = (("images", "image", _image_problem), ("categories", "category", _category_problem),
              ("annotations", "annotation", _annotation_problem))
    for key, what, problem_of in checks:
        seen: set[int] = set()
        for position, record in enumerate(data[key]):
            problem = problem_of(record)
            if problem is None and record["id"] in seen:
                problem = f"id {record['id']} is used twice"
            if problem:
                raise DataError(f"{path}: {what} #{position}{_id_of(record)} {problem}; fix or remove that record")
            seen.add(record["id"])
    if not data["categories"]:
        raise DataError(f"{path}: no categories")
    categories = {category["id"] for category in data["categories"]}
    for position, annotation in enumerate(data["annotations"]):
        if annotation["category_id"] not in categories:
            raise DataError(f"{path}: annotation #{position} (id {annotation['id']}) has category_id "
                            f"{annotation['category_id']}, which is not in 'categories'; fix or remove that record")


def _id_of(record: Any) -> str:
    return f" (id {record['id']})" if isinstance(record, dict) and _is_int(record.get("id")) else ""


def image_path(image_dir: Path, file_name: str, ann_path: Path, image_id: int) -> Path:
    """The image's path, which must lie inside `image_dir`: '../x.jpg' or '/etc/x' is refused."""
    root = image_dir.resolve()
    path = (root / file_name).resolve()
    if not path.is_relative_to(root):
        raise DataError(f"{ann_path}: image id {image_id} has file_name {file_name!r}, which points outside "
                        f"{image_dir}; file names must be relative paths inside the image folder")
    return path


def check_images(index: ImageIndex, ann_path: Path, image_dir: Path) -> None:
    """Every listed image exists inside the folder; for sets up to EAGER_IMAGE_CHECK images, each
    header is read too (readable, of the stated size). A missing image would stop training hours in."""
    eager = len(index) <= EAGER_IMAGE_CHECK
    for position in range(len(index)):
        record = index.record(position)
        path = image_path(image_dir, record["file_name"], ann_path, record["id"])
        if not path.is_file():
            raise DataError(f"{path}: image listed in the annotations is missing (image id {record['id']} in {ann_path})")
        if eager:
            check_image_size(path, record, ann_path)


def check_image_size(path: Path, image: dict[str, Any], ann_path: Path, size: tuple[int, int] | None = None) -> None:
    """The image can be read and is as large as the annotation file says (PIL reads only the header)."""
    if size is None:
        try:
            with Image.open(path) as pil:
                size = pil.size
        except (OSError, Image.DecompressionBombError) as err:
            raise DataError(f"{path}: cannot read image id {image['id']} ({err}); replace or remove it") from None
    if size != (image["width"], image["height"]):
        raise DataError(f"{path}: image is {size[0]}x{size[1]} but {ann_path} says {image['width']}x{image['height']} "
                        f"(image id {image['id']}); its boxes would be misplaced: fix the file or the record")


def ground_truth(data: dict[str, Any]) -> COCO:
    """pycocotools' COCO object from an already parsed (and checked) file, without re-reading it."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


# --------------------------------------------------------------------------- the training index


@dataclass
class ImageIndex:
    """Per image: id, file, size and training boxes (xyxy, contiguous labels 1..K), as flat arrays."""

    image_ids: np.ndarray  # int64 [N], sorted
    file_names: np.ndarray  # str [N]
    widths: np.ndarray  # int64 [N]
    heights: np.ndarray  # int64 [N]
    starts: np.ndarray  # int64 [N + 1]: image i's boxes are boxes[starts[i]:starts[i + 1]]
    boxes: np.ndarray  # float32 [M, 4], clipped to the image
    labels: np.ndarray  # int64 [M], 1..K in sorted category-id order (0 is the background)
    category_ids: np.ndarray  # int64 [K], sorted
    category_names: np.ndarray  # str [K]
    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> {"count", "example_id"}

    def __len__(self) -> int:
        return len(self.image_ids)

    def record(self, position: int) -> dict[str, Any]:
        """Image `position` as the annotation file's record: id, file_name, width, height."""
        return {"id": int(self.image_ids[position]), "file_name": str(self.file_names[position]),
                "width": int(self.widths[position]), "height": int(self.heights[position])}

    def save(self, path: Path) -> None:
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "skipped"}
        atomic_write(path, lambda file: np.savez(file, **arrays, skipped=json.dumps(self.skipped)))

    @classmethod
    def load(cls, path: Path) -> ImageIndex:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        return cls(**{**arrays, "skipped": json.loads(str(arrays["skipped"]))})


def build_index(data: dict[str, Any], ann_path: Path, strict: bool = False) -> ImageIndex:
    """The training index of a checked file; skippable problems counted, or fatal with `strict`."""
    images = sorted(data["images"], key=lambda image: image["id"])
    sizes = {image["id"]: (image["width"], image["height"]) for image in images}
    category_ids = sorted(category["id"] for category in data["categories"])
    label_of = {category_id: label for label, category_id in enumerate(category_ids, start=1)}
    per_image: dict[int, list[tuple[list[float], int]]] = {image["id"]: [] for image in images}
    skipped: Counter[str] = Counter()
    examples: dict[str, int] = {}
    for annotation in data["annotations"]:
        kind = _skip_kind(annotation, sizes)
        if kind:
            skipped[kind] += 1
            examples.setdefault(kind, annotation["id"])
            if strict:
                raise DataError(f"{ann_path}: annotation id {annotation['id']} is among the {SKIP_KINDS[kind]}, "
                                "which --strict-data refuses; fix or remove it, or run without --strict-data to skip it")
        elif not annotation.get("iscrowd", 0):  # crowd regions are not objects to regress
            per_image[annotation["image_id"]].append((_clipped_xyxy(annotation["bbox"], sizes[annotation["image_id"]]),
                                                      label_of[annotation["category_id"]]))
    if not any(per_image.values()):
        raise DataError(f"{ann_path}: no usable object (every annotation is missing, crowd or skipped); "
                        "a detector cannot be trained on it")
    counts = [len(per_image[image["id"]]) for image in images]
    flat = [item for image in images for item in per_image[image["id"]]]
    names = {category["id"]: category["name"] for category in data["categories"]}
    return ImageIndex(
        image_ids=np.array([image["id"] for image in images], dtype=np.int64),
        file_names=np.array([image["file_name"] for image in images], dtype=str),
        widths=np.array([image["width"] for image in images], dtype=np.int64),
        heights=np.array([image["height"] for image in images], dtype=np.int64),
        starts=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        boxes=np.array([box for box, _ in flat], dtype=np.float32).reshape(-1, 4),
        labels=np.array([label for _, label in flat], dtype=np.int64),
        category_ids=np.array(category_ids, dtype=np.int64),
        category_names=np.array([names[c] for c in category_ids], dtype=str),
        skipped={kind: {"count": n, "example_id": examples[kind], "file": str(ann_path)} for kind, n in skipped.items()},
    )


def _skip_kind(annotation: dict[str, Any], sizes: dict[int, tuple[int, int]]) -> str | None:
    if annotation["image_id"] not in sizes:
        return "unknown_image"
    x, y, w, h = annotation["bbox"]
    if w <= 0 or h <= 0:
        return "non_positive_size"
    width, height = sizes[annotation["image_id"]]
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return "outside_image"
    return None


def _clipped_xyxy(bbox: list[float], size: tuple[int, int]) -> list[float]:
    x, y, w, h = bbox
    width, height = size
    return [max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)]


def skip_warnings(index: ImageIndex) -> list[str]:
    """One line per kind: 'skipped 3 boxes with non-positive size in X.json, e.g. annotation id 1234'."""
    return [
        f"skipped {entry['count']} {SKIP_KINDS[kind]} in {Path(entry['file']).name}, e.g. annotation id {entry['example_id']}"
        for kind, entry in index.skipped.items()
    ]


# --------------------------------------------------------------------------- one parse per file


@dataclass
class Split:
    """One split, read and checked: the parsed file (for ground truth) and the training index."""

    ann_path: Path
    image_dir: Path
    data: dict[str, Any] | None  # None when the index came from the cache
    index: ImageIndex


def load_split(ann_path: str | Path, image_dir: str | Path, cache_dir: str | Path | None, strict: bool,
               keep_data: bool) -> Split:
    """Read, check and index a split. With a cache folder the index is stored under a key of the
    file's path, size and modification time, so a later run (or another rank) skips the parse;
    `keep_data` parses anyway, for ground truth."""
    ann_path, image_dir = Path(ann_path), Path(image_dir)
    require(ann_path, is_dir=False)
    require(image_dir, is_dir=True)
    cached = _cache_path(ann_path, image_dir, cache_dir, strict)
    if cached is not None and cached.is_file() and not keep_data:
        index = ImageIndex.load(cached)
        check_images(index, ann_path, image_dir)  # the images may have changed since
        return Split(ann_path, image_dir, None, index)
    data = read_annotations(ann_path)
    index = build_index(data, ann_path, strict)
    check_images(index, ann_path, image_dir)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        index.save(cached)
        write_json(cached.with_suffix(".json"), {"annotations": str(ann_path), "images": str(image_dir)})
    return Split(ann_path, image_dir, data if keep_data else None, index)


def _cache_path(ann_path: Path, image_dir: Path, cache_dir: str | Path | None, strict: bool) -> Path | None:
    if cache_dir is None:
        return None
    stat = ann_path.stat()
    key = f"{INDEX_VERSION}|{ann_path.resolve()}|{image_dir.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{strict}"
    return Path(cache_dir) / "index" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
