"""Boxes under bf16 autocast are decoded in float32, in training as in evaluation (bench.detector)."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection._utils import BoxCoder

from bench.detector import build_detector
from bench.measure import random_batch
from bench.settings import get_profile

SIZE = 320  # bf16 spaces numbers 2 apart from 256 px on: rounding shows


@pytest.fixture(scope="module")
def detector() -> FasterRCNN:
    cfg = dataclasses.replace(get_profile("smoke").detector, min_size=SIZE, max_size=SIZE, box_score_thresh=0.0)
    torch.manual_seed(0)
    return build_detector("resnet18", 3, cfg)


def record_decoding(coder: BoxCoder, calls: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Record (deltas, reference boxes, decoded boxes) of every `coder.decode` call."""
    decode = coder.decode

    def recorded(rel_codes: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        decoded = decode(rel_codes, boxes)
        calls.append((rel_codes, torch.cat(boxes), decoded))
        return decoded

    monkeypatch.setattr(coder, "decode", recorded)


def decodings(detector: FasterRCNN, train: bool, dtype: torch.dtype | None, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The RPN's and the box head's decode calls in one forward, under autocast to `dtype` (None: float32)."""
    calls: dict[str, list] = {"rpn": [], "roi_heads": []}
    with monkeypatch.context() as patch:
        record_decoding(detector.rpn.box_coder, calls["rpn"], patch)
        record_decoding(detector.roi_heads.box_coder, calls["roi_heads"], patch)
        torch.manual_seed(1)
        images, targets = random_batch(1, SIZE, 3, torch.device("cpu"))
        detector.train(train)
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            detector(images, targets if train else None)
    return calls


@pytest.mark.parametrize("train", [True, False], ids=["training", "evaluation"])
def test_bf16_boxes_equal_float32_decoding_of_the_same_deltas(detector, train, monkeypatch) -> None:
    mixed = decodings(detector, train, torch.bfloat16, monkeypatch)
    anchors = decodings(detector, train, None, monkeypatch)["rpn"][0][1]  # float32 anchors of the same images
    (deltas, _, proposals), = mixed["rpn"]
    expected = BoxCoder.decode(detector.rpn.box_coder, deltas.float(), [anchors])
    assert torch.equal(proposals, expected)  # not rounded to bf16's grid, nor decoded from bf16 anchors
    if not train:  # the box head decodes its deltas from those proposals, in float32 too
        (deltas, reference, boxes), = mixed["roi_heads"]
        assert torch.equal(boxes, BoxCoder.decode(detector.roi_heads.box_coder, deltas.float(), [reference.float()]))
