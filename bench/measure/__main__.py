"""`python -m bench.measure`: measure backbones without training; a user mistake is one `error:` line, exit 2."""
from __future__ import annotations

from pathlib import Path

from backbones import split_backbones

from .. import settings
from ..cli import ArgumentParser, UsageError, check_backbones, check_device, entry_point, fresh_dir
from ..layout import RunLayout
from ..settings import PROFILES
from ..settings.device import resolve
from . import measure, summary_table


def _parse_args(argv: list[str] | None):
    parser = ArgumentParser(prog="python -m bench.measure", description="Measure the cost of detection backbones.")
    parser.add_argument("--backbones", required=True, help="comma-separated timm names: detnet59,resnet50,resnet101")
    parser.add_argument("--device", default="cpu", help="cpu or cuda; latency is measured on the CPU too")
    parser.add_argument("--out", type=Path, help="new or empty folder (default results/<date>-<time>-measure)")
    parser.add_argument("--profile", choices=tuple(PROFILES), default="default", help="settings from bench.settings")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile setting, e.g. measure.batch_sizes=[1,2] (repeatable)")
    parser.add_argument("--num-classes", type=int, default=81, help="detector classes with background (COCO: 80 + 1)")
    parser.add_argument("--world-size", type=int, default=1,
                        help="processes the batch is trained over: training steps are measured at batch / world size")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    backbones = split_backbones(args.backbones)
    check_backbones(backbones)
    device = check_device(args.device)
    if args.num_classes < 2:
        raise UsageError(f"--num-classes must be at least 2 (background + one class), not {args.num_classes}")
    profile = resolve(settings.build(args.profile, options={"device": args.device}, overrides=args.set), device).profile
    if args.world_size < 1 or profile.train.batch_size % args.world_size:
        raise UsageError(f"--world-size {args.world_size} does not split the batch of {profile.train.batch_size} "
                         "into equal shares per process")
    out = fresh_dir(args.out, "measure")
    frame = measure(backbones, profile, device, out, args.num_classes, progress=not args.no_progress,
                    world_size=args.world_size)
    print(summary_table(frame).to_markdown(index=False))
    layout = RunLayout(out)
    print(f"\nwrote {layout.measurements}, {layout.flops_by_module.name}, {layout.environment.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
