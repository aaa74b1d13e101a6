"""bench.data: synthetic set, COCO layout, dataset targets, flips and batching."""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from bench.data import (
    SYNTHETIC_CATEGORIES,
    CocoDetection,
    DataError,
    build_eval_loader,
    build_train_loader,
    coco,
    coco_layout,
    collate,
    epoch_batches,
    load_split,
    make_synthetic,
    skip_warnings,
)
from bench.settings import DataSource, SyntheticConfig


def check_source(src: DataSource) -> None:
    """Read and check both splits as a run does before training."""
    for ann, images in ((src.train_ann, src.train_images), (src.val_ann, src.val_images)):
        load_split(ann, images, cache_dir=None, strict=False, keep_data=False)

TINY = SyntheticConfig(num_train=4, num_val=2, image_size=64, seed=3)


# --------------------------------------------------------------------------- synthetic set

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> DataSource:
    cfg = SyntheticConfig(num_train=30, num_val=6, image_size=192, seed=0)
    return make_synthetic(cfg, tmp_path_factory.mktemp("cache"))


def test_synthetic_is_deterministic(tmp_path: Path) -> None:
    first, second = make_synthetic(TINY, tmp_path / "a"), make_synthetic(TINY, tmp_path / "b")
    assert Path(first.train_ann).read_bytes() == Path(second.train_ann).read_bytes()
    assert Path(first.val_ann).read_bytes() == Path(second.val_ann).read_bytes()
    other = make_synthetic(SyntheticConfig(**{**vars(TINY), "seed": 4}), tmp_path / "a")
    assert Path(other.train_ann).parent != Path(first.train_ann).parent
    assert Path(other.train_ann).read_bytes() != Path(first.train_ann).read_bytes()


def test_synthetic_is_reused(tmp_path: Path) -> None:
    src = make_synthetic(TINY, tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in Path(src.train_ann).parent.rglob("*")}
    assert make_synthetic(TINY, tmp_path) == src
    assert {p: p.stat().st_mtime_ns for p in Path(src.train_ann).parent.rglob("*")} == stamps


def test_half_written_synthetic_is_regenerated(tmp_path: Path) -> None:
    src = make_synthetic(TINY, tmp_path)
    root = Path(src.train_ann).parent
    expected = Path(src.train_ann).read_bytes()
    (root / "complete.json").unlink()  # as if interrupted before the marker was written
    Path(src.val_ann).unlink()
    assert make_synthetic(TINY, tmp_path) == src
    assert (root / "complete.json").is_file() and Path(src.val_ann).is_file()
    assert Path(src.train_ann).read_bytes() == expected
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temporary folders left


def test_synthetic_is_valid_coco(synthetic: DataSource) -> None:
    check_source(synthetic)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(synthetic.train_ann)
    assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == list(SYNTHETIC_CATEGORIES)
    assert sorted(coco.cats) == list(range(1, len(SYNTHETIC_CATEGORIES) + 1))
    for image_id, image in coco.imgs.items():
        with Image.open(Path(synthetic.train_images) / image["file_name"]) as pil:
            assert pil.size == (image["width"], image["height"]) == (192, 192)
        annotations = coco.imgToAnns[image_id]
        assert 2 <= len(annotations) <= 6
        for a in annotations:
            x, y, w, h = a["bbox"]
            assert x >= 0 and y >= 0 and x + w <= 192 and y + h <= 192
            assert w >= 8 and h >= 8 and a["area"] == w * h and a["iscrowd"] == 0


def test_synthetic_sizes_cover_coco_bins(synthetic: DataSource) -> None:
    areas = [a["area"] for a in json.loads(Path(synthetic.train_ann).read_text())["annotations"]]
    small = sum(a < 32**2 for a in areas)
    large = sum(a > 96**2 for a in areas)
    medium = len(areas) - small - large
    assert min(small, medium, large) >= len(areas) / 6, (small, medium, large)


# --------------------------------------------------------------------------- COCO layout

def _ann(id: int, image_id: int, category_id: int, bbox: list[int], iscrowd: int = 0) -> dict:
    area = bbox[2] * bbox[3]
    return {"id": id, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "area": area, "iscrowd": iscrowd}


def _write_split(root: Path, split: str) -> None:
    """Three tiny images (RGB wide, grayscale tall, RGBA square without objects)."""
    image_dir = root / f"{split}2017"
    image_dir.mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(image_dir / "a.png")
    gray = Image.linear_gradient("L").resize((24, 32))
    gray.save(image_dir / "b.png")
    Image.new("RGBA", (30, 30), (0, 0, 255, 128)).save(image_dir / "c.png")
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.png", "width": 24, "height": 32},
            {"id": 5, "file_name": "c.png", "width": 30, "height": 30},
        ],
        "annotations": [
            _ann(1, 1, 1, [2, 3, 10, 8]),
            _ann(2, 1, 7, [20, 5, 10, 10]),
            _ann(3, 1, 90, [0, 0, 5, 5], iscrowd=1),
            _ann(4, 1, 7, [5, 5, 0, 4]),  # zero width
            _ann(5, 2, 90, [1, 1, 8, 8]),
            _ann(6, 2, 1, [20, 28, 10, 10]),  # sticks out of the image: clipped, not dropped
            _ann(7, 2, 1, [30, 2, 5, 5]),  # entirely outside: nothing left after clipping
        ],
        "categories": [
            {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 7, "name": "train", "supercategory": "vehicle"},
        ],
    }
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    for split in ("train", "val"):
        _write_split(root, split)
    return root


@pytest.fixture
def train_set(coco_root: Path) -> CocoDetection:
    src = coco_layout(coco_root)
    return CocoDetection.from_files(src.train_ann, src.train_images, train=True)


def test_coco_layout_resolves(coco_root: Path) -> None:
    src = coco_layout(coco_root)
    assert src.train_ann == str(coco_root / "annotations" / "instances_train2017.json")
    assert src.val_images == str(coco_root / "val2017")
    check_source(src)


def test_coco_layout_names_missing_path(coco_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        coco_layout(tmp_path / "nowhere")
    shutil.rmtree(coco_root / "val2017")
    with pytest.raises(DataError, match=str(coco_root / "val2017")):
        coco_layout(coco_root)


def test_check_source_rejects_non_coco_json(coco_root: Path) -> None:
    bad = coco_root / "annotations" / "instances_val2017.json"
    bad.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(DataError, match="annotations"):
        check_source(coco_layout(coco_root))
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        check_source(coco_layout(coco_root))


def test_check_source_names_a_missing_image(coco_root: Path) -> None:
    (coco_root / "train2017" / "b.png").unlink()
    with pytest.raises(DataError, match="b.png: image listed in the annotations is missing"):
        check_source(coco_layout(coco_root))


def test_dataset_labels_are_contiguous(train_set: CocoDetection) -> None:
    assert train_set.ids == [1, 2, 5]
    assert train_set.label_to_category_id == {1: 1, 2: 7, 3: 90}
    assert train_set.num_classes == 4
    assert train_set.aspect_ratios() == [40 / 30, 24 / 32, 1.0]


@pytest.mark.parametrize("train", [True, False])
def test_dataset_targets(coco_root: Path, train: bool) -> None:
    src = coco_layout(coco_root)
    dataset = CocoDetection.from_files(src.train_ann, src.train_images, train=train)
    image, target = dataset[0]  # crowd and zero-width boxes dropped
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert torch.allclose(image[:, 0, 0], torch.tensor([200, 10, 10]) / 255)
    assert target["image_id"] == 1
    assert torch.equal(target["boxes"], torch.tensor([[2.0, 3, 12, 11], [20, 5, 30, 15]]))
    assert target["boxes"].dtype == torch.float32
    assert target["labels"].tolist() == [1, 2] and target["labels"].dtype == torch.int64

    image, target = dataset[1]  # grayscale; one box clipped, one outside dropped
    assert image.shape == (3, 32, 24) and torch.equal(image[0], image[2])
    assert torch.equal(target["boxes"], torch.tensor([[1.0, 1, 9, 9], [20, 28, 24, 32]]))
    assert target["labels"].tolist() == [3, 1]

    image, target = dataset[2]  # RGBA, no objects
    assert image.shape == (3, 30, 30) and 0.0 <= image.min() and image.max() <= 1.0
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_hflip_mirrors_boxes(coco_root: Path) -> None:
    src = coco_layout(coco_root)
    plain = CocoDetection.from_files(src.train_ann, src.train_images, train=True)
    flipped = CocoDetection.from_files(src.train_ann, src.train_images, train=True, hflip=1.0)
    for index in range(len(plain)):
        (image, target), (image_f, target_f) = plain[index], flipped[index]
        width = image.shape[-1]
        assert type(image_f) is torch.Tensor and type(target_f["boxes"]) is torch.Tensor
        assert torch.equal(image_f, image.flip(-1))
        boxes, boxes_f = target["boxes"], target_f["boxes"]
        assert torch.equal(boxes_f[:, 0], width - boxes[:, 2])
        assert torch.equal(boxes_f[:, 2], width - boxes[:, 0])
        assert torch.equal(boxes_f[:, 1::2], boxes[:, 1::2])
    evaluation = CocoDetection.from_files(src.train_ann, src.train_images, train=False, hflip=1.0)
    assert torch.equal(evaluation[0][1]["boxes"], plain[0][1]["boxes"])


# --------------------------------------------------------------------------- batching

def _batches(group_ids: list[int], batch_size: int, seed: int) -> list[list[int]]:
    return epoch_batches(group_ids, batch_size, seed, epoch=0)


def test_grouped_batches_do_not_mix_orientations() -> None:
    group_ids = [0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1, 1, 0, 1]  # 7 tall, 11 wide
    batches = _batches(group_ids, batch_size=3, seed=0)
    assert len(batches) == 7 // 3 + 11 // 3
    for batch in batches:
        assert len(batch) == 3 and len({group_ids[i] for i in batch}) == 1
    assert len({i for batch in batches for i in batch}) == 3 * len(batches)
    assert batches == _batches(group_ids, batch_size=3, seed=0)
    assert batches != _batches(group_ids, batch_size=3, seed=1)
    assert batches != epoch_batches(group_ids, 3, seed=0, epoch=1)  # every epoch its own order


def test_train_loader_groups_and_repeats(train_set: CocoDetection) -> None:
    def image_ids(seed: int, start: int = 0) -> list[list[int]]:
        loader = build_train_loader(train_set, batch_size=2, seed=seed, start=start)
        return [[t["image_id"] for t in targets] for _, targets in itertools.islice(loader, 3)]

    batches = image_ids(seed=0)
    assert all(sorted(batch) == [1, 5] for batch in batches)  # one full batch per epoch: the tall image has no partner
    assert image_ids(seed=0) == batches
    assert image_ids(seed=0, start=1) == batches[1:] + image_ids(seed=0, start=3)[:1]  # resuming skips batches
    with pytest.raises(DataError, match="no full batch"):
        build_train_loader(train_set, batch_size=4, seed=0)


def test_eval_loader_keeps_order(coco_root: Path) -> None:
    src = coco_layout(coco_root)
    dataset = CocoDetection.from_files(src.val_ann, src.val_images, train=False)
    batches = list(build_eval_loader(dataset, batch_size=2, workers=0))
    assert [[t["image_id"] for t in targets] for _, targets in batches] == [[1, 2], [5]]
    images, targets = batches[0]
    assert isinstance(images, list) and isinstance(targets, list)
    assert [tuple(i.shape) for i in images] == [(3, 30, 40), (3, 32, 24)]


def test_collate_returns_lists() -> None:
    images, targets = collate([(torch.zeros(3, 2, 2), {"a": 1}), (torch.ones(3, 4, 4), {"a": 2})])
    assert [i.shape[-1] for i in images] == [2, 4] and targets == [{"a": 1}, {"a": 2}]


def test_skippable_problems_are_counted_and_named(coco_root: Path) -> None:
    src = coco_layout(coco_root)
    data = json.loads(Path(src.train_ann).read_text())
    data["annotations"].append(_ann(8, 99, 1, [1, 1, 5, 5]))  # image 99 is not in the file
    Path(src.train_ann).write_text(json.dumps(data))
    split = load_split(src.train_ann, src.train_images, cache_dir=None, strict=False, keep_data=False)
    warnings = skip_warnings(split.index)
    name = Path(src.train_ann).name
    assert warnings == [
        f"skipped 1 boxes with non-positive size in {name}, e.g. annotation id 4",
        f"skipped 1 boxes outside their image in {name}, e.g. annotation id 7",
        f"skipped 1 annotations whose image_id is not in the file's images in {name}, e.g. annotation id 8",
    ]
    with pytest.raises(DataError, match="annotation id 4 is among the boxes with non-positive size"):
        load_split(src.train_ann, src.train_images, cache_dir=None, strict=True, keep_data=False)


def test_index_is_cached_and_parsed_once(coco_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = coco_layout(coco_root)
    first = load_split(src.train_ann, src.train_images, cache_dir=tmp_path, strict=False, keep_data=False)
    assert len(list((tmp_path / "index").glob("*.npz"))) == 1

    def parse_again(path: object) -> None:
        raise AssertionError(f"{path} parsed a second time")

    monkeypatch.setattr(coco, "read_annotations", parse_again)
    second = load_split(src.train_ann, src.train_images, cache_dir=tmp_path, strict=False, keep_data=False)
    assert second.data is None  # read from the cache, not parsed again
    assert all(np.array_equal(getattr(first.index, f), getattr(second.index, f))
               for f in ("image_ids", "file_names", "starts", "boxes", "labels", "category_ids"))
    assert second.index.skipped == first.index.skipped
