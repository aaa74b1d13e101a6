"""`python -m bench.evaluate`: score COCO-format box detections with pycocotools, or re-evaluate a run.

Run standalone on saved results::

    python -m bench.evaluate --gt instances_val.json --detections results.json --format json

or on a finished run's checkpoints (`bench.evaluation.trained.reevaluate`)::

    python -m bench.evaluate --run RUN_DIR

A command module only: the library's scoring is `bench.evaluation`, which never loads the CLI.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .checks import default_device
from .cli import ArgumentParser, entry_point
from .data.coco import ground_truth, read_annotations
from .errors import UsageError
from .evaluation.coco import AREA_RANGES, EvalResult, score
from .files import read_json

log = logging.getLogger(__spec__.name)  # "bench.<tool>" under python -m too, where __name__ is "__main__"


def _format_table(result: EvalResult) -> str:
    lines = [f"COCO bbox: {result.num_images} images, {result.num_detections} detections", ""]
    lines += [f"{name:<6}{value:8.4f}" for name, value in result.stats.items()]
    lines += ["", f"{'area':<7}" + "".join(f"{name:>8}" for name in ("AP50", "AP85", "AR50", "AR85"))]
    for area in AREA_RANGES:
        ap, ar = result.ap_by_iou[area], result.ar_by_iou[area]
        row = (ap["0.50"], ap["0.85"], ar["0.50"], ar["0.85"])
        lines.append(f"{area:<7}" + "".join(f"{value:8.4f}" for value in row))
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m bench.evaluate",
        description="Score COCO-format box detections with pycocotools, or re-evaluate a run's checkpoints "
                    "(--run; --device, --out and --no-progress go with it).",
    )
    parser.add_argument("--gt", help="COCO annotation file (instances_*.json)")
    parser.add_argument("--detections", help="COCO results file: a list of detections")
    parser.add_argument("--format", choices=("json", "table"), default="table", help="json: the 12 stats only")
    parser.add_argument("--run", type=Path, help="a finished run folder: evaluate its checkpoints, no training")
    parser.add_argument("--val-ann", help="with --run: another COCO-format validation set (default: the run's)")
    parser.add_argument("--val-images", help="with --run: its image folder")
    parser.add_out(default="results/<date>-<time>-<run>-evaluated", what="new or empty folder for the evaluated run")
    parser.add_device()
    parser.add_no_progress()
    args = parser.parse_args(argv)
    if (args.run is None) == (args.gt is None and args.detections is None):
        raise UsageError("give either --run RUN_DIR or --gt and --detections")
    if args.run is None and (args.gt is None or args.detections is None):
        raise UsageError("--gt and --detections go together")
    return args


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.run is not None:
        from .evaluation.trained import reevaluate  # the training-side stack, only when re-evaluating a run

        log.info("%s", reevaluate(args.run, args.out, args.val_ann, args.val_images, args.device or default_device(),
                                  not args.no_progress))
        return 0
    coco_gt = ground_truth(read_annotations(args.gt))
    try:
        result, _ = score(coco_gt, read_json(args.detections))
    except ValueError as exc:
        raise UsageError(f"{args.detections}: {exc}") from None
    log.info("%s", json.dumps(result.stats) if args.format == "json" else _format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
