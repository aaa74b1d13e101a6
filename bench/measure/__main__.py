"""`python -m bench.measure`: measure backbones without training; a user mistake is one `error:` line, exit 2."""
from __future__ import annotations

import argparse
import logging

from backbones import split_backbones

from .. import settings
from ..checks import check_backbones, check_batch_split, check_device, default_device, fresh_dir
from ..cli import ArgumentParser, entry_point
from ..errors import UsageError
from ..layout import RunLayout
from ..settings import PROFILES
from ..settings.device import resolve
from . import measure, summary_table

log = logging.getLogger(__spec__.name)  # "bench.<tool>" under python -m too, where __name__ is "__main__"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m bench.measure",
                            description="Measure the cost of detection backbones (on a GPU, latency on the CPU too).")
    parser.add_backbones()
    parser.add_device()
    parser.add_out(default="results/<date>-<time>-measure")
    parser.add_profile(PROFILES, default="default", what="settings from bench.settings")
    parser.add_set(example="measure.batch_sizes=[1,2]")
    parser.add_argument("--num-classes", type=int, default=81, help="detector classes with background (COCO: 80 + 1)")
    parser.add_argument("--world-size", type=int, default=1,
                        help="processes the batch is trained over: training steps are measured at batch / world size")
    parser.add_no_progress()
    return parser.parse_args(argv)


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    backbones = split_backbones(args.backbones)
    check_backbones(backbones)
    device_name = args.device or default_device()
    device = check_device(device_name)
    if args.num_classes < 2:
        raise UsageError(f"--num-classes must be at least 2 (background + one class), not {args.num_classes}")
    profile = resolve(settings.build(args.profile, options={"device": device_name}, overrides=args.set), device).profile
    check_batch_split(profile.train.batch_size, args.world_size, "--world-size")
    out = fresh_dir(args.out, "measure")
    frame = measure(backbones, profile, device, out, args.num_classes, progress=not args.no_progress,
                    world_size=args.world_size)
    log.info("%s", summary_table(frame).to_markdown(index=False))
    layout = RunLayout(out)
    log.info("\nwrote %s, %s, %s", layout.measurements, layout.flops_by_module.name, layout.environment.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
