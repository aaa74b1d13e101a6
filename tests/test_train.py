"""Training: one step per backbone stays finite, the schedule is the paper's, runs repeat exactly."""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch

from bench import data
from bench.detector import build_detector
from bench.settings import TrainConfig, get_profile
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


def _batches_seen(name: str, source: data.DataSource, out: Path, seed: int) -> list[tuple[list, list]]:
    """Every (images, targets) the detector's forward received in 4 iterations of training."""
    profile = get_profile("smoke")
    cfg = dataclasses.replace(profile.train, iterations=4)
    dataset = data.CocoDetection.from_files(source.train_ann, source.train_images, train=True, hflip=0.5, seed=seed)
    torch.manual_seed(seed)
    model = build_detector(name, dataset.num_classes, profile.detector)
    torch.manual_seed(seed)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(
        ([image.clone() for image in args[0]], [{k: torch.as_tensor(v).clone() for k, v in t.items()} for t in args[1]])))
    out.mkdir(parents=True)
    train(model, lambda start: data.build_train_loader(dataset, cfg.batch_size, seed, start=start), cfg, out,
          torch.device("cpu"), progress=False)
    return seen


def _same(a: list[tuple[list, list]], b: list[tuple[list, list]]) -> bool:
    return len(a) == len(b) and all(
        len(ia) == len(ib) and all(torch.equal(x, y) for x, y in zip(ia, ib))
        and all(ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta) for ta, tb in zip(sa, sb))
        for (ia, sa), (ib, sb) in zip(a, b)
    )


def test_two_backbones_receive_identical_batches(smoke_data: data.DataSource, tmp_path: Path) -> None:
    """The paired design: same images, order and flips for every backbone within a seed, although
    DetNet-59 and ResNet-50 draw different amounts of random numbers when built and trained."""
    detnet = _batches_seen("detnet59", smoke_data, tmp_path / "d", seed=3)
    resnet = _batches_seen("resnet50", smoke_data, tmp_path / "r", seed=3)
    assert len(detnet) == 4 and _same(detnet, resnet)
    assert not _same(detnet, _batches_seen("resnet50", smoke_data, tmp_path / "r4", seed=4))


def test_flips_depend_on_seed_epoch_and_index_only(smoke_data: data.DataSource) -> None:
    dataset = data.CocoDetection.from_files(smoke_data.train_ann, smoke_data.train_images, train=True, hflip=0.5, seed=3)
    draws = [dataset.flips(epoch, index) for epoch in range(3) for index in range(len(dataset))]
    torch.manual_seed(123)  # the global RNG, which model code draws from, plays no part
    assert [dataset.flips(epoch, index) for epoch in range(3) for index in range(len(dataset))] == draws
    assert 0 < sum(draws) < len(draws)
    image, target = dataset[data.SampleKey(0, 0)]
    plain, plain_target = data.CocoDetection.from_files(smoke_data.train_ann, smoke_data.train_images, train=False)[0]
    assert torch.equal(image, plain.flip(-1) if dataset.flips(0, 0) else plain)
