"""Training: one step per backbone stays finite, the schedule is the paper's, runs repeat exactly."""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch

from bench import data
from bench.config import TrainConfig, get_profile
from bench.detector import build_detector
from bench.train import LOSS_COLUMNS, TrainingDiverged, build_optimizer, build_scheduler, scaled_lr, train


def train_smoke(name: str, source: data.DataSource, out: Path, iterations: int, seed: int = 0) -> list[dict]:
    profile = get_profile("smoke")
    cfg = dataclasses.replace(profile.train, iterations=iterations)
    dataset = data.CocoDetection.from_files(source.train_ann, source.train_images, train=True, hflip=0.5, seed=seed)
    torch.manual_seed(seed)
    model = build_detector(name, dataset.num_classes, profile.detector)
    out.mkdir(parents=True, exist_ok=True)
    train(model, lambda start: data.build_train_loader(dataset, cfg.batch_size, seed, start=start), cfg, out,
          torch.device("cpu"), progress=False)
    with (out / "loss.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", ["detnet59", "resnet50", "resnet101"])
def test_one_iteration_is_finite(name: str, smoke_data: data.DataSource, tmp_path: Path) -> None:
    (row,) = train_smoke(name, smoke_data, tmp_path, iterations=1)
    assert list(row) == list(LOSS_COLUMNS)
    losses = [float(row[k]) for k in ("loss", "loss_classifier", "loss_box_reg", "loss_objectness")]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[0] > 0
    checkpoint = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert checkpoint["iteration"] == 1 and "optimizer" in checkpoint


def test_same_seed_same_losses(smoke_data: data.DataSource, tmp_path: Path) -> None:
    first = train_smoke("resnet50", smoke_data, tmp_path / "a", iterations=2)
    second = train_smoke("resnet50", smoke_data, tmp_path / "b", iterations=2)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("images_per_s", "elapsed_s")} for r in rows]  # noqa: E731
    assert strip(first) == strip(second)


def test_warmup_then_steps_with_linear_scaling() -> None:
    cfg = TrainConfig(batch_size=4, base_lr=0.02, base_batch=16, iterations=90, warmup_iters=10,
                      warmup_factor=0.3, lr_steps=(2 / 3, 8 / 9))
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    lrs = []
    for _ in range(cfg.iterations):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert scaled_lr(cfg) == pytest.approx(0.005)
    assert lrs[0] == pytest.approx(0.3 * 0.005)
    assert lrs[5] == pytest.approx((0.3 + 0.7 * 5 / 10) * 0.005)
    assert lrs[10] == pytest.approx(0.005) and lrs[59] == pytest.approx(0.005)
    assert lrs[60] == pytest.approx(0.0005) and lrs[80] == pytest.approx(0.00005)


def test_divergence_is_reported(smoke_data: data.DataSource, tmp_path: Path) -> None:
    profile = get_profile("smoke")
    dataset = data.CocoDetection.from_files(smoke_data.train_ann, smoke_data.train_images, train=True)
    model = build_detector("resnet50", dataset.num_classes, profile.detector)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="loss_classifier became nan at iteration 1"):
        train(model, lambda start: data.build_train_loader(dataset, 2, 0, start=start), profile.train, tmp_path,
              torch.device("cpu"), progress=False)
    assert not (tmp_path / "checkpoint.pth").exists()  # nothing saved from a diverged state
