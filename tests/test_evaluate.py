"""bench.evaluate against pycocotools' numbers on a real 100-image COCO subset."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO

from bench.evaluate import (
    COCO_STAT_NAMES,
    EvalResult,
    detections_to_coco,
    evaluate_detections,
    predict,
)
from bench.evaluate_command import main

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "coco-val2014-100"
GT_FILE = DATA / "instances_val2014_100.json"
DT_FILE = DATA / "fakebbox100_results.json"

# From tests/data/coco-val2014-100/README.md: COCOeval(gt, gt.loadRes(dt), "bbox").stats
EXPECTED_STATS = dict(zip(COCO_STAT_NAMES, (
    0.5045806987249628, 0.6969727247299577, 0.5729816669904824,
    0.5856257209410443, 0.5193996948036719, 0.5013978986347466,
    0.38681277964578054, 0.5936795762842003, 0.595352982877607,
    0.6398109626113442, 0.5664205978994309, 0.5642905982905982,
)))
IOU_KEYS = [f"{0.5 + 0.05 * i:.2f}" for i in range(10)]


def assert_stats_equal(stats: dict[str, float]) -> None:
    assert list(stats) == list(COCO_STAT_NAMES)
    for name, expected in EXPECTED_STATS.items():
        assert stats[name] == pytest.approx(expected, abs=1e-12), name


@pytest.fixture(scope="module")
def coco_gt() -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(GT_FILE))


@pytest.fixture(scope="module")
def detections() -> list[dict]:
    return json.loads(DT_FILE.read_text())


@pytest.fixture(scope="module")
def result(coco_gt: COCO, detections: list[dict]) -> EvalResult:
    return evaluate_detections(coco_gt, detections)


def test_stats_match_pycocotools(result: EvalResult) -> None:
    assert_stats_equal(result.stats)
    assert result.num_images == 100
    assert result.num_detections == 734


def test_input_detections_not_mutated(coco_gt: COCO, detections: list[dict]) -> None:
    evaluate_detections(coco_gt, detections[:5])
    assert set(detections[0]) == {"image_id", "category_id", "bbox", "score"}


def test_per_iou_arrays_agree_with_summary(result: EvalResult) -> None:
    for table in (result.ap_by_iou, result.ar_by_iou):
        assert list(table) == ["all", "small", "medium", "large"]
        assert all(list(row) == IOU_KEYS for row in table.values())
    ap_all, ar_all = result.ap_by_iou["all"], result.ar_by_iou["all"]
    assert ap_all["0.50"] == pytest.approx(result.stats["AP50"], abs=1e-12)
    assert ap_all["0.75"] == pytest.approx(result.stats["AP75"], abs=1e-12)
    assert sum(ap_all.values()) / 10 == pytest.approx(result.stats["AP"], abs=1e-12)
    assert sum(ar_all.values()) / 10 == pytest.approx(result.stats["AR100"], abs=1e-12)
    assert sum(result.ap_by_iou["small"].values()) / 10 == pytest.approx(result.stats["APs"], abs=1e-12)
    assert sum(result.ar_by_iou["large"].values()) / 10 == pytest.approx(result.stats["ARl"], abs=1e-12)


def test_per_category_and_to_dict(coco_gt: COCO, result: EvalResult) -> None:
    assert set(result.per_category) == {cat["name"] for cat in coco_gt.loadCats(coco_gt.getCatIds())}
    valid = [ap for ap in result.per_category.values() if ap > -1]
    assert sum(valid) / len(valid) == pytest.approx(result.stats["AP"], abs=1e-12)
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()


def test_ground_truth_as_detections_is_perfect(coco_gt: COCO) -> None:
    perfect = [
        {"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"], "score": 1.0}
        for ann in coco_gt.dataset["annotations"]
        if not ann["iscrowd"]
    ]
    assert evaluate_detections(coco_gt, perfect).stats["AP"] == 1.0


def test_empty_detections_score_zero(coco_gt: COCO, result: EvalResult) -> None:
    empty = evaluate_detections(coco_gt, [])
    assert empty.num_detections == 0
    for name, value in empty.stats.items():
        # -1 stays where the fixture has no GT in that range, as COCOeval reports it.
        assert value == (-1.0 if result.stats[name] == -1.0 else 0.0), name


def test_unknown_image_id_rejected(coco_gt: COCO) -> None:
    bad = [{"image_id": -7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]
    with pytest.raises(ValueError, match="image_id -7"):
        evaluate_detections(coco_gt, bad)


def test_detections_to_coco_xyxy_to_xywh_and_category_ids() -> None:
    outputs = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0], [0.0, 0.0, 5.5, 2.5]]),
            "scores": torch.tensor([0.75, 0.25]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    label_maps = ({1: 7, 2: 90}, [0, 7, 90])  # dict, or a sequence indexed by label
    for label_to_category_id in label_maps:
        results = detections_to_coco(outputs, [42, 43], label_to_category_id)
        assert results == [
            {"image_id": 42, "category_id": 7, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.75},
            {"image_id": 42, "category_id": 90, "bbox": [0.0, 0.0, 5.5, 2.5], "score": 0.25},
        ]
        assert all(type(v) in (int, float) for det in results for v in (det["image_id"], det["category_id"], det["score"], *det["bbox"]))


class FixedBoxDetector(torch.nn.Module):
    """Returns the same single box for every image, as torchvision detectors do in eval mode."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        assert not self.training
        return [
            {"boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([3])}
            for _ in images
        ]


def test_predict_returns_coco_results() -> None:
    image = torch.rand(3, 32, 32)
    loader = [([image, image], [{"image_id": 5}, {"image_id": 6}]), ([image], [{"image_id": 9}])]
    results = predict(FixedBoxDetector().train(), loader, {3: 17}, "cpu", progress=False)
    assert results == [
        {"image_id": i, "category_id": 17, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.5} for i in (5, 6, 9)
    ]


def test_cli_json_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--gt", str(GT_FILE), "--detections", str(DT_FILE), "--format", "json"]) == 0
    assert_stats_equal(json.loads(capsys.readouterr().out))


def test_cli_json_subprocess() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.evaluate", "--gt", str(GT_FILE), "--detections", str(DT_FILE), "--format", "json"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )
    assert_stats_equal(json.loads(proc.stdout))


def test_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--gt", str(GT_FILE), "--detections", str(DT_FILE)]) == 0
    out = capsys.readouterr().out
    assert "AP85" in out and "AR85" in out and "0.5046" in out


@pytest.mark.parametrize(
    ("detections_text", "message"),
    [
        (None, "No such file"),
        ("[{", "invalid JSON"),
        ('{"image_id": 1}', "must be a list"),
        ('[{"image_id": -7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]', "image_id -7"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], detections_text: str | None, message: str
) -> None:
    path = tmp_path / "detections.json"
    if detections_text is not None:
        path.write_text(detections_text)
    assert main(["--gt", str(GT_FILE), "--detections", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
