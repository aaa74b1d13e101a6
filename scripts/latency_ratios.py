"""DetNet-59 / ResNet-50 / ResNet-101 latency and MACs, and their ratios to ResNet-50.

Latency ratios only mean something when taken together: one process, one thread setting,
one machine. Each backbone is timed as a feature extractor at --size and inside the
Faster R-CNN + FPN detector at --detector-size (exactly --num-proposals RoIs per image),
float32, batch 1, on the CPU, with `bench.measure`'s own functions: torch.utils.benchmark
medians and FlopCounterMode MACs.

    python scripts/latency_ratios.py --size 224 --detector-size 512 --threads 2
"""
from __future__ import annotations

import argparse
from functools import partial

import pandas as pd
import torch

from backbones import SUPPORTED_BACKBONES, create_backbone
from bench.measure import (
    Setting,
    backbone_input,
    count_flops,
    cpu_model,
    detector_compute,
    detector_input,
    infer,
    inference_detector,
    pinned_threads,
    time_call,
)
from bench.settings import DetectorConfig, MeasureConfig

REFERENCE = "resnet50"
NUM_CLASSES = 81  # COCO's 80 + background
CPU_FLOAT32 = Setting(torch.device("cpu"), batch_size=1, dtype="float32", channels_last=False)


def median_ms(model: torch.nn.Module, inputs: object, cfg: MeasureConfig, threads: int) -> float:
    return time_call(partial(infer, model, inputs, "cpu", "float32"), cfg, threads).median * 1e3


def measure_one(name: str, args: argparse.Namespace, cfg: MeasureConfig, threads: int) -> dict[str, float]:
    body = create_backbone(name).eval()
    image = backbone_input(CPU_FLOAT32, args.size)
    detector = inference_detector(name, NUM_CLASSES, DetectorConfig(), args.detector_size, args.num_proposals)
    detector_flops, _ = detector_compute(detector, args.detector_size)
    return {
        "backbone_gmacs": count_flops(body, image).gmacs,
        "backbone_ms": median_ms(body, image, cfg, threads),
        "detector_gmacs": detector_flops.gmacs,
        "detector_ms": median_ms(detector, detector_input(CPU_FLOAT32, args.detector_size), cfg, threads),
    }


def with_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """Each column followed by its ratio to the reference backbone's value."""
    ratios = (table / table.loc[REFERENCE]).add_suffix(f"/{REFERENCE}")
    return pd.concat([table, ratios], axis=1)[[c for pair in zip(table, ratios) for c in pair]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python scripts/latency_ratios.py", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="backbone input side (default 224, as ImageNet)")
    parser.add_argument("--detector-size", type=int, default=512, help="detector input side (default 512)")
    parser.add_argument("--num-proposals", type=int, default=1000, help="RoIs per image in the detector (default 1000)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: all torch sees)")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per torch.utils.benchmark run")
    parser.add_argument("--repeats", type=int, default=5, help="blocks at least, for the median")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = MeasureConfig(min_run_time=args.min_run_time, repeats=args.repeats, threads=args.threads)
    torch.manual_seed(0)
    with pinned_threads(cfg.threads) as threads:
        rows = {name: measure_one(name, args, cfg, threads) for name in SUPPORTED_BACKBONES}
    print(
        f"{cpu_model()}, {threads} torch threads, torch {torch.__version__}; float32, batch 1; "
        f"backbone {args.size}x{args.size}, detector {args.detector_size}x{args.detector_size} "
        f"with {args.num_proposals} RoIs; latency: median of >= {args.repeats} blocks\n"
    )
    print(with_ratios(pd.DataFrame.from_dict(rows, orient="index")).to_markdown(floatfmt=".3g"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
