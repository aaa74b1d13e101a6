"""bench.measure: compute against published numbers and ratios, file contents, the CLI's errors."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch

from bench.measure import (
    count_flops,
    detector_compute,
    inference_detector,
    measure,
    measurements_frame,
    num_proposals,
    summary_table,
)
from bench.measure.__main__ import main
from bench.measure.rows import MeasurementRow, ModuleRow, column_names
from bench.measure.timing import latency_settings
from bench.settings import get_profile

REPO_ROOT = Path(__file__).resolve().parents[1]
RESNET50_GMACS = 4.09  # timm / torchvision model cards, 224 x 224
RESNET50_PARAMS = 25_557_032


@pytest.fixture(scope="module")
def smoke():
    """The smoke profile on one thread: its numbers only need to exist, and OpenMP
    oversubscribed on a busy 2-core machine runs ten times slower."""
    profile = get_profile("smoke")
    profile.measure = replace(profile.measure, threads=1)
    return profile


@pytest.fixture(scope="module")
def run(smoke, tmp_path_factory):
    out = tmp_path_factory.mktemp("measure")
    frame = measure(["resnet50"], smoke, torch.device("cpu"), out, num_classes=81, progress=False)
    return frame, out


def row(frame: pd.DataFrame, target: str, metric: str) -> pd.Series:
    rows = frame[(frame.target == target) & (frame.metric == metric)]
    assert len(rows) == 1, f"{target}/{metric}: {len(rows)} rows"
    return rows.iloc[0]


def test_resnet50_classifier_macs_match_the_published_count(run):
    compute = row(run[0], "classifier", "compute")
    assert compute.input_size == 224 and compute.batch_size == 1
    assert compute.gmacs == pytest.approx(RESNET50_GMACS, rel=0.01)
    assert compute.gflops == pytest.approx(2 * compute.gmacs)


def test_columns_are_documented_and_name_their_unit(run):
    frame, _ = run
    for schema in (MeasurementRow, ModuleRow):
        undocumented = [f.name for f in fields(schema) if not f.metadata.get("doc", "").strip()]
        assert not undocumented, f"{schema.__name__}: {undocumented}"
    assert column_names(MeasurementRow) == list(frame.columns)
    with_units = {"gmacs", "gflops", "latency_ms_median", "latency_ms_iqr", "peak_mem_mb", "rss_peak_mb", "images_per_s"}
    assert with_units <= set(frame.columns)
    assert {"gmacs", "gflops"} <= set(column_names(ModuleRow))
    unitless = {"flops", "macs", "latency", "memory"}
    assert not unitless & (set(frame.columns) | set(column_names(ModuleRow)))


def test_detnet59_costs_a_fifth_more_than_resnet50_as_a_classifier():
    image = torch.randn(1, 3, 224, 224)
    macs = {name: count_flops(timm.create_model(name).eval(), image).gmacs for name in ("detnet59", "resnet50")}
    assert macs["detnet59"] == pytest.approx(5.00, rel=0.005)  # GMACs; 4.78 with one dilated block fewer
    assert macs["resnet50"] == pytest.approx(4.09, rel=0.01)


def test_detector_backbone_macs_grow_with_the_image_area(smoke):
    counts = {}
    for size in (128, 256):
        detector = inference_detector("resnet50", 81, smoke.detector, size, num_proposals=20)
        counts[size], rois = detector_compute(detector, size)
        assert rois == 20  # the box head sees exactly the proposals asked for
    assert 3.6 < counts[256].by_module["backbone"] / counts[128].by_module["backbone"] < 4.4


def test_detector_row_names_the_ops_flops_are_not_counted_for(run, smoke):
    compute = row(run[0], "detector", "compute")
    assert "torchvision::roi_align" in compute.uncounted_ops.split(";")
    assert compute.num_rois == num_proposals(smoke) == smoke.detector.rpn_post_nms_top_n_test
    assert compute.gflops == pytest.approx(2 * compute.gmacs)


def test_params(run):
    frame, _ = run
    assert row(frame, "classifier", "params").params == RESNET50_PARAMS
    assert row(frame, "detector", "params").params > row(frame, "backbone", "params").params


def test_measure_writes_the_documented_files(run, smoke):
    frame, out = run
    written = pd.read_csv(out / "measurements.csv")
    assert list(written.columns) == column_names(MeasurementRow) and len(written) == len(frame)
    modules = pd.read_csv(out / "flops_by_module.csv")
    assert list(modules.columns) == column_names(ModuleRow)
    detector_modules = set(modules[modules.target == "detector"].module)
    assert {"backbone", "backbone.body", "backbone.fpn", "rpn", "roi_heads", "roi_heads.box_head"} <= detector_modules
    environment = json.loads((out / "environment.json").read_text())
    assert environment["torch"] == torch.__version__ and environment["cuda"] is None
    assert environment["logical_cores"] >= 1 and environment["cpu"]


def test_integer_columns_are_written_without_a_decimal_point(run):
    written = pd.read_csv(run[1] / "measurements.csv", dtype=str)
    for name in ("batch_size", "input_size", "threads", "params", "num_rois", "latency_blocks"):
        assert written[name].dropna().str.fullmatch(r"\d+").all(), name


def test_a_value_in_no_column_is_refused_not_dropped():
    with pytest.raises(ValueError, match="latency_ms"):
        measurements_frame([dict(backbone="resnet50", target="backbone", metric="latency", latency_ms=1.0)])


def test_timed_rows_are_positive(run, smoke):
    frame, _ = run
    latency = frame[frame.metric == "latency"]
    assert set(latency.target) == {"backbone", "detector"}
    assert (latency.latency_ms_median > 0).all() and (latency.latency_ms_iqr >= 0).all()
    assert (latency.latency_blocks >= smoke.measure.repeats).all() and (latency.threads == 1).all()
    assert row(frame, "train_step", "throughput").images_per_s > 0
    assert (frame[frame.metric == "memory"].rss_peak_mb >= 0).all()
    assert row(frame, "train_step", "memory").rss_peak_mb > 0  # a training step allocates activations


def test_summary_puts_backbones_side_by_side(run):
    table = summary_table(run[0])
    assert "resnet50" in table.columns and len(table) == len(run[0])
    assert "4.09 GMACs" in set(table.resnet50)


def test_cli_unknown_backbone_is_one_error_line(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "bench.measure", "--backbones", "resnet50,nosuchnet", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "nosuchnet" in lines[0]
    assert not out.exists()


def test_cli_never_overwrites_earlier_results(tmp_path, capsys):
    (tmp_path / "measurements.csv").write_text("earlier\n")
    assert main(["--backbones", "resnet50", "--out", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert (tmp_path / "measurements.csv").read_text() == "earlier\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_a_gpu_is_an_error(tmp_path, capsys):
    assert main(["--backbones", "resnet50", "--device", "cuda", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error:")


@pytest.mark.parametrize("device, cpu, devices", [
    ("cpu", True, {"cpu"}), ("cuda", True, {"cpu", "cuda"}), ("cuda", False, {"cuda"}),
])
def test_latency_settings_time_the_cpu_unless_told_not_to_on_a_gpu(device: str, cpu: bool, devices: set[str]) -> None:
    cfg = replace(get_profile("smoke").measure, batch_sizes=(1, 2), dtypes=("float32",), channels_last=(False, True), cpu=cpu)
    settings = latency_settings(cfg, torch.device(device))
    assert {s.device.type for s in settings} == devices
    assert len(settings) == 4 * len(devices)
