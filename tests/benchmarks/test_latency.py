"""Backbone and detector latency on small inputs, the backbones side by side (pytest-benchmark).

`pytest tests/benchmarks --benchmark-enable --benchmark-json=out.json` times every backbone
in the groups "backbone-128" and "detector-128". Under pyproject's `--benchmark-disable`
each runs once, as a check of its output. The detector runs as `bench.measure` times it:
eval mode, exactly `NUM_PROPOSALS` RoIs per image.
"""
from __future__ import annotations

import pytest
import torch

from backbones import SUPPORTED_BACKBONES, create_backbone
from bench.measure import infer, inference_detector
from bench.measure.compute import count_rois
from bench.settings import get_profile

SIZE = 128
NUM_PROPOSALS = 50
NUM_CLASSES = 81


@pytest.fixture(scope="module")
def feature_extractors():
    torch.manual_seed(0)
    return {name: create_backbone(name).eval() for name in SUPPORTED_BACKBONES}


@pytest.fixture(scope="module")
def detectors():
    torch.manual_seed(0)
    cfg = get_profile("smoke").detector
    return {name: inference_detector(name, NUM_CLASSES, cfg, SIZE, NUM_PROPOSALS) for name in SUPPORTED_BACKBONES}


@pytest.mark.parametrize("name", SUPPORTED_BACKBONES)
def test_backbone_forward(benchmark, feature_extractors, name):
    model = feature_extractors[name]
    benchmark.group = f"backbone-{SIZE}"
    benchmark.extra_info["threads"] = torch.get_num_threads()
    features = benchmark(infer, model, torch.randn(1, 3, SIZE, SIZE), "cpu", "float32")
    expected = [(1, channels, SIZE // stride, SIZE // stride) for channels, stride in
                zip(model.feature_info.channels(), model.feature_info.reduction())]
    assert [tuple(f.shape) for f in features] == expected


@pytest.mark.parametrize("name", SUPPORTED_BACKBONES)
def test_detector_inference(benchmark, detectors, name):
    benchmark.group = f"detector-{SIZE}"
    benchmark.extra_info["threads"] = torch.get_num_threads()
    with count_rois(detectors[name]) as rois:
        detections = benchmark(infer, detectors[name], [torch.rand(3, SIZE, SIZE)], "cpu", "float32")
    assert rois and set(rois) == {NUM_PROPOSALS}  # every timed call: exactly NUM_PROPOSALS RoIs
    assert len(detections) == 1
    assert set(detections[0]) == {"boxes", "labels", "scores"}
    assert detections[0]["boxes"].shape[1:] == (4,)
