"""`python -m bench.report RUN_DIR`: re-render a run folder's tables, plots, report.md and report.html."""
from __future__ import annotations

import logging

from ..cli import ArgumentParser, entry_point
from . import write_report

log = logging.getLogger(__spec__.name)  # "bench.<tool>" under python -m too, where __name__ is "__main__"


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m bench.report",
        description="Re-render a run folder's tables, plots, report.md and report.html from its files.",
    )
    parser.add_argument("run_dir", help="a run folder written by python -m bench.run or bench.compare")
    log.info("%s", write_report(parser.parse_args(argv).run_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
