"""Training images found unreadable as they load: one warning each per run, counted in data_report.json.

The dataset replaces such an image in its batch (bench.data.dataset) and says so in the
target; this takes those notes out of the batches before the model sees them. The images
already recorded in data_report.json are not warned about again: not by the next backbone,
seed or a resumed run, which meet the same image at the same place.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..files import write_json

KIND = "unreadable_image"
log = logging.getLogger(__name__)


class UnreadableImages:
    """Warns about and records (when `record`, on the process that writes) each unreadable image once."""

    def __init__(self, report_path: Path, record: bool) -> None:
        self.path, self.record = report_path, record
        self.report = json.loads(report_path.read_text()) if report_path.is_file() else {"skipped": {}, "warnings": []}
        self.seen = set(self.report["skipped"].get(KIND, {}).get("image_ids", []))

    def watch(self, batches: Iterable[tuple[list, list[dict[str, Any]]]]) -> Iterator[tuple[list, list[dict]]]:
        """The batches, each target without its "unreadable" note, once the images it names are warned about."""
        for images, targets in batches:
            for target in targets:
                for image_id, reason in target.pop("unreadable", ()):
                    self._add(int(image_id), reason)
            yield images, targets

    def _add(self, image_id: int, reason: str) -> None:
        if image_id in self.seen:
            return
        self.seen.add(image_id)
        line = f"skipped a training image unreadable as it loaded: {reason}; the next readable image takes its place"
        log.warning("warning: %s (recorded in %s)", line, self.path)
        if self.record:
            self.report["skipped"][KIND] = {"count": len(self.seen), "example_id": min(self.seen),
                                            "image_ids": sorted(self.seen)}
            self.report["warnings"].append(line)
            write_json(self.path, self.report)
