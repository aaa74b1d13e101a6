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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from ..errors import DataError
from ..files import atomic_write, write_json
from ..settings import DataSource

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
    """The training index of a checked file; skippable problems counted, or fatal with `strict`.

    Vectorised over annotations: on COCO train (860k boxes) per-image Python lists would add
    about as much memory again as the parsed file itself.
    """
    images = data["images"]
    image_ids = np.fromiter((image["id"] for image in images), np.int64, len(images))
    order = np.argsort(image_ids, kind="stable")
    image_ids = image_ids[order]
    widths = np.fromiter((image["width"] for image in images), np.int64, len(images))[order]
    heights = np.fromiter((image["height"] for image in images), np.int64, len(images))[order]
    anns = data["annotations"]
    count = len(anns)
    ann_ids = np.fromiter((a["id"] for a in anns), np.int64, count)
    owner = np.fromiter((a["image_id"] for a in anns), np.int64, count)
    crowd = np.fromiter((a.get("iscrowd", 0) for a in anns), np.int64, count).astype(bool)
    category = np.fromiter((a["category_id"] for a in anns), np.int64, count)
    xywh = np.fromiter((v for a in anns for v in a["bbox"]), np.float64, 4 * count).reshape(count, 4)
    position = np.searchsorted(image_ids, owner).clip(max=max(len(image_ids) - 1, 0))
    known = image_ids[position] == owner if len(image_ids) else np.zeros(count, bool)
    x1, y1 = xywh[:, 0], xywh[:, 1]
    x2, y2 = x1 + xywh[:, 2], y1 + xywh[:, 3]
    width, height = widths[position], heights[position]
    problems = {  # in SKIP_KINDS' order, as the warnings are printed
        "non_positive_size": known & ((xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)),
        "outside_image": known & (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
        & ((x1 >= width) | (y1 >= height) | (x2 <= 0) | (y2 <= 0)),
        "unknown_image": ~known,
    }
    skipped = {}
    for kind, mask in problems.items():
        if mask.any():
            example = int(ann_ids[mask.argmax()])
            if strict:
                raise DataError(f"{ann_path}: annotation id {example} is among the {SKIP_KINDS[kind]}, which "
                                "--strict-data refuses; fix or remove it, or run without --strict-data to skip it")
            skipped[kind] = {"count": int(mask.sum()), "example_id": example, "file": str(ann_path)}
    keep = ~(problems["unknown_image"] | problems["non_positive_size"] | problems["outside_image"] | crowd)
    if not keep.any():
        raise DataError(f"{ann_path}: no usable object (every annotation is missing, crowd or skipped); "
                        "a detector cannot be trained on it")
    by_image = np.argsort(position[keep], kind="stable")  # the file's order within each image
    boxes = np.stack([x1.clip(min=0), y1.clip(min=0), np.minimum(x2, width), np.minimum(y2, height)], axis=1)
    category_ids = np.array(sorted(c["id"] for c in data["categories"]), dtype=np.int64)
    names = {c["id"]: c["name"] for c in data["categories"]}
    kept_positions = position[keep][by_image]
    return ImageIndex(
        image_ids=image_ids,
        file_names=np.array([images[i]["file_name"] for i in order], dtype=str),
        widths=widths,
        heights=heights,
        starts=np.searchsorted(kept_positions, np.arange(len(image_ids) + 1)).astype(np.int64),
        boxes=boxes[keep][by_image].astype(np.float32),
        labels=np.searchsorted(category_ids, category[keep][by_image]) + 1,
        category_ids=category_ids,
        category_names=np.array([names[c] for c in category_ids.tolist()], dtype=str),
        skipped=skipped,
    )


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
