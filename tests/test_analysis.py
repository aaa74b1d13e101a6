"""The mechanism analyses of a run: RoI levels, proposal recall, evaluation on saved models, live curves."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bench import data
from bench.analysis.errors import STEPS
from bench.analysis.proposals import ProposalProbe, level_rows, proposal_recall
from bench.config import get_profile
from bench.detector import build_detector
from bench.evaluate import COCO_STAT_NAMES
from bench.evaluate_command import main as evaluate_main

# Hand-made RoIs and the level the FPN rule k = floor(4 + log2(sqrt(wh) / 53.76)), clamped to 2..5, gives them.
CANONICAL = 224 * 192 / 800
BOXES = [(10, 2), (26, 2), (27, 3), (53, 3), (54, 4), (107, 4), (108, 5), (190, 5)]


def fpn_level(side: float) -> int:
    return min(5, max(2, math.floor(4 + math.log2(side / CANONICAL))))


def test_roi_level_histogram_matches_the_fpn_rule() -> None:
    assert [fpn_level(side) for side, _ in BOXES] == [level for _, level in BOXES]
    model = build_detector("detnet59", 3, get_profile("default").detector).eval()
    assert model.roi_heads.box_roi_pool.map_levels.s0 == pytest.approx(CANONICAL)
    hand_made = torch.tensor([[0.0, 0.0, side, side] for side, _ in BOXES])
    # The RPN proposes exactly the hand-made boxes, for each of the two images.
    model.rpn.register_forward_hook(lambda module, args, output: ([hand_made.clone(), hand_made.clone()], {}))
    with torch.no_grad(), ProposalProbe(model) as probe:
        model([torch.rand(3, 192, 192), torch.rand(3, 192, 192)])
    expected = {level: 2 * sum(1 for _, k in BOXES if k == level) for level in range(2, 6)}
    assert dict(probe.levels) == expected
    rows = level_rows(probe.levels)
    assert [row["level"] for row in rows] == ["P2", "P3", "P4", "P5"]
    assert [row["rois"] for row in rows] == [expected[level] for level in range(2, 6)]
    assert sum(row["share"] for row in rows) == pytest.approx(1.0)


def test_proposal_recall_counts_covered_objects() -> None:
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "width": 200, "height": 200, "file_name": "a.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 120, 120], "area": 14400, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    coco.createIndex()
    # Best first: a box at IoU 0.64 with the large object, then an exact box on the small one.
    proposals = [torch.tensor([[50.0, 50.0, 146.0, 146.0]] * 150 + [[0.0, 0.0, 20.0, 20.0]])]
    rows = {(r["size"], r["proposals"], r["iou"]): r["recall"] for r in proposal_recall(proposals, [1], coco)}
    assert rows[("large", 100, 0.5)] == 1.0 and rows[("large", 100, 0.7)] == 0.0
    assert rows[("small", 100, 0.5)] == 0.0 and rows[("small", 300, 0.7)] == 1.0
    assert rows[("all", 300, 0.5)] == 1.0 and rows[("all", 300, 0.7)] == 0.5
    assert math.isnan(rows[("medium", 100, 0.5)])


def test_run_writes_the_mechanism_tables(smoke_run: Path) -> None:
    for name in ("error_breakdown", "roi_levels", "proposal_recall", "receptive_field"):
        assert (smoke_run / "tables" / f"{name}.csv").is_file(), name
    breakdown = pd.read_csv(smoke_run / "tables" / "error_breakdown.csv")
    assert breakdown["Sim"].isna().all()  # the synthetic set's categories share one supercategory
    assert (breakdown["FN"] == 100).all()
    rf = pd.read_csv(smoke_run / "receptive_field.csv")
    detnet = rf[rf["backbone"] == "detnet59"]
    assert list(detnet["stride"]) == [4, 8, 16, 16, 16] and detnet["theoretical_rf_px"].is_monotonic_increasing
    text = (smoke_run / "report.md").read_text()
    assert "## Why: the mechanism" in text and "plots/error_breakdown.png" in text


def test_mechanism_numbers_are_consistent_per_backbone_and_seed(smoke_run: Path) -> None:
    """Each step of the breakdown forgives more, so AP never falls; RoI shares are of all RoIs; recalls are
    shares of objects, NaN exactly where a size has none."""
    folders = sorted(smoke_run.glob("seed*/*/analysis.json"))
    assert len(folders) == 4  # two backbones x two seeds
    for path in folders:
        analysis = json.loads(path.read_text())
        breakdown = pd.DataFrame(analysis["error_breakdown"])
        for area, rows in breakdown.groupby("area"):
            ap = rows.set_index("step")["ap"].reindex(list(STEPS))
            assert ap.drop("Sim").notna().all() and ap["Sim"] != ap["Sim"], (path, area)  # Sim skipped: NaN
            steps = ap.dropna().to_numpy()
            assert (steps[1:] >= steps[:-1] - 1e-12).all() and 0 <= steps[0] and steps[-1] == 1, (path, area, steps)
        levels = pd.DataFrame(analysis["roi_levels"])
        assert levels["share"].sum() == pytest.approx(1.0), path
        assert levels["share"].to_numpy() == pytest.approx(levels["rois"].to_numpy() / levels["rois"].sum())
        recall = pd.DataFrame(analysis["proposal_recall"])
        empty = recall["objects"] == 0
        assert recall.loc[empty, "recall"].isna().all() and recall.loc[~empty, "recall"].between(0, 1).all(), path
        for _, same in recall.groupby(["size", "iou"]):  # more proposals never cover fewer objects
            assert same.sort_values("proposals")["recall"].dropna().is_monotonic_increasing, path


def test_eval_every_and_tensorboard(smoke_run: Path) -> None:
    folder = smoke_run / "seed0" / "detnet59"
    evals = pd.read_csv(folder / "eval.csv")
    assert list(evals["iteration"]) == [1, 2] and evals["AP"].between(0, 1).all()
    assert (smoke_run / "plots" / "ap_vs_iteration.png").is_file()
    pytest.importorskip("tensorboard")
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))


def test_trained_latency_is_measured_beside_the_random_one(smoke_run: Path) -> None:
    rows = pd.read_csv(smoke_run / "measurements.csv")
    latency = rows[rows["metric"] == "latency"]
    for target in ("detector", "detector_trained"):  # random weights, and the first seed's trained ones
        measured = latency[latency["target"] == target]
        assert sorted(measured["backbone"]) == ["detnet59", "resnet50"], target
        assert (measured["latency_ms_median"] > 0).all(), target
    assert (latency.loc[latency["target"] == "detector_trained", "num_detections"] >= 0).all()


def test_evaluate_run_reproduces_the_runs_scores(smoke_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "evaluated"
    assert evaluate_main(["--run", str(smoke_run), "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    for seed in (0, 1):
        for name in ("detnet59", "resnet50"):
            ours = json.loads((out / f"seed{seed}" / name / "metrics.json").read_text())
            theirs = json.loads((smoke_run / f"seed{seed}" / name / "metrics.json").read_text())
            assert ours["stats"] == theirs["stats"]
    assert "Re-evaluated by `bench.evaluate --run`" in (out / "report.md").read_text()


def test_evaluate_run_refuses_a_folder_without_checkpoints(tmp_path: Path, smoke_run: Path, capsys) -> None:
    (tmp_path / "config.yaml").write_text((smoke_run / "config.yaml").read_text())
    assert evaluate_main(["--run", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "has no checkpoint to evaluate" in capsys.readouterr().err


def test_evaluate_run_on_another_validation_set_matches_pycocotools(smoke_run: Path, tmp_path: Path) -> None:
    """The run's first seed, its checkpoints scored on a validation set of other images (same categories)."""
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("seed1", "tables", "plots", "report.*"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["profile"]["seeds"] = [0]
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    other = data.make_synthetic(dataclasses.replace(get_profile("smoke").synthetic, seed=7), tmp_path / "cache")
    out = tmp_path / "evaluated"
    assert evaluate_main(["--run", str(run), "--val-ann", str(other.val_ann), "--val-images", str(other.val_images),
                          "--out", str(out), "--no-progress"]) == 0
    gt = COCO(str(other.val_ann))
    for name in ("detnet59", "resnet50"):
        folder = out / "seed0" / name
        detections = json.loads((folder / "detections.json").read_text())
        assert {d["image_id"] for d in detections} <= set(gt.getImgIds()) and detections
        reference = COCOeval(gt, gt.loadRes(detections), "bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
        stats = json.loads((folder / "metrics.json").read_text())["stats"]
        np.testing.assert_allclose([stats[key] for key in COCO_STAT_NAMES], reference.stats)
        assert stats != json.loads((smoke_run / "seed0" / name / "metrics.json").read_text())["stats"]  # other images
