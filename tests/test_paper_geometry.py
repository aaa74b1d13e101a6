"""The `paper` profile's real-scale path on the CPU: 800 x 1333 inputs, 2 iterations at batch 2, evaluation
(of one image: the receptive-field analysis at this size costs half a minute per image)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from bench.detector import build_detector
from bench.settings import get_profile

# 1000 x 600 images: the detector resizes them to 1333 x 800, the paper's input size.
WIDTH, HEIGHT = 1000, 600
BOXES = [(40, 40, 560, 520, 1), (620, 60, 160, 140, 2), (800, 400, 30, 30, 1), (300, 300, 12, 12, 2)]


def write_split(root: Path, split: str, seed: int, count: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    images = root / split
    images.mkdir(parents=True)
    records, annotations = [], []
    for image_id in range(1, count + 1):
        canvas = Image.fromarray(rng.integers(60, 120, (HEIGHT, WIDTH, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(canvas)
        for x, y, w, h, category in BOXES:
            draw.rectangle((x, y, x + w - 1, y + h - 1), fill=(200, 40, 40) if category == 1 else (40, 40, 200))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        canvas.save(images / f"{image_id}.jpg")
        records.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": WIDTH, "height": HEIGHT})
    ann = root / f"{split}.json"
    ann.write_text(json.dumps({"images": records, "annotations": annotations,
                               "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]}))
    return ann, images


@pytest.mark.slow
def test_paper_profile_runs_end_to_end_at_800_by_1333(tmp_path: Path) -> None:
    train_ann, train_images = write_split(tmp_path / "data", "train", 0, count=2)
    val_ann, val_images = write_split(tmp_path / "data", "val", 1, count=1)
    out = tmp_path / "run"
    argv = ["--profile", "paper", "--backbones", "detnet59", "--device", "cpu", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress",
            "--train-ann", str(train_ann), "--train-images", str(train_images),
            "--val-ann", str(val_ann), "--val-images", str(val_images),
            "--set", "train.batch_size=1", "--set", "train.iterations=2", "--set", "train.workers=0",
            # the cost measurement is not what this test is about: keep it small
            "--set", "measure.detection_size=256", "--set", "measure.batch_sizes=[1]",
            "--set", "measure.dtypes=[float32]", "--set", "measure.channels_last=[false]",
            "--set", "measure.repeats=1", "--set", "measure.min_run_time=0.01"]
    done = subprocess.run([sys.executable, "-m", "bench.run", *argv], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    folder = out / "seed0" / "detnet59"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["train"]["iterations"] == 2 and np.isfinite(metrics["train"]["final_loss"])
    assert metrics["num_images"] == 1
    analysis = json.loads((folder / "analysis.json").read_text())
    levels = {row["level"]: row["rois"] for row in analysis["roi_levels"]}
    assert 0 < sum(levels.values()) <= 1000  # at most the paper profile's 1000 test proposals per image
    rows = analysis["proposal_recall"]
    assert all(0 <= r["recall"] <= 1 if r["objects"] else np.isnan(r["recall"]) for r in rows), rows
    recall = {(r["size"], r["proposals"], r["iou"]): r["recall"] for r in rows if r["objects"]}
    for (size, k, iou), value in recall.items():  # more proposals, or a looser IoU, never cover fewer objects
        assert value >= max(v for (s, k2, i), v in recall.items() if s == size and k2 <= k and i >= iou)
    detections = json.loads((folder / "detections.json").read_text())
    assert all(x + w <= WIDTH + 1 and y + h <= HEIGHT + 1 for x, y, w, h in (d["bbox"] for d in detections))
    assert (out / "report.md").is_file()


@pytest.mark.slow
def test_large_rois_pool_from_detnet_p5_at_800_by_1333() -> None:
    """In a training step the box head pools the ground-truth boxes too: the 560 x 520 box, 747 x 693 at
    1333 x 800, has k = floor(4 + log2(720 / 224)) = 5, so it must come from P5 (DetNet's stride 16)."""
    profile = get_profile("paper")
    model = build_detector("detnet59", 3, profile.detector).train()
    levels: list[int] = []
    mapper = model.roi_heads.box_roi_pool.map_levels
    model.roi_heads.box_roi_pool.map_levels = lambda boxes: (found := mapper(boxes), levels.extend(
        (found + mapper.k_min).tolist()))[0]
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h, _ in BOXES], dtype=torch.float32)
    image = torch.rand(3, HEIGHT, WIDTH)
    model([image], [{"boxes": boxes, "labels": torch.tensor([c for *_, c in BOXES])}])
    ((height, width),) = model.transform([image])[0].image_sizes
    assert width == 1333 and abs(height - 800) <= 1  # 600 x 4/3, rounded down
    assert 5 in levels and set(levels) <= {2, 3, 4, 5}
