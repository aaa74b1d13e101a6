"""A report table: numbers in a DataFrame, how to print them, and what they mean.

Formatting is pandas': the cells are formatted once (`formatted`), then written as Markdown by
`DataFrame.to_markdown` (tabulate) and as HTML by a `Styler`, so the two outputs always show
the same text. The CSV keeps numbers as numbers, rounded as printed, with a `± spread` column
written as its own `<column> ±` column.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

MISSING = "–"
_NUMBER = re.compile(r"^[+-]?\d[\d.]*( ± [\d.]+)?( \[[+-]?[\d.]+, [+-]?[\d.]+\])?$")


@dataclass
class Table:
    """`frame`'s first column labels the rows; `spread` (same shape, optional) prints as "value ± spread"."""

    name: str  # file stem under tables/
    title: str
    frame: pd.DataFrame
    note: str = ""
    formats: dict[str, str] = field(default_factory=dict)  # column -> format spec; floats default to ".1f"
    spread: pd.DataFrame | None = None

    def _spec(self, column: str) -> str:
        return self.formats.get(column, ".1f")

    def formatted(self) -> pd.DataFrame:
        """Every cell as printed: floats with the column's format, "–" where no value exists."""
        columns = {}
        for column in self.frame:
            spec = self._spec(column)
            cells = [_cell(v, spec) for v in self.frame[column]]
            if self.spread is not None and column in self.spread:
                cells = [c if c == MISSING or _missing(s) else f"{c} ± {format(s, spec.lstrip('+'))}"
                         for c, s in zip(cells, self.spread[column])]
            columns[column] = cells
        return pd.DataFrame(columns)

    def rounded(self) -> pd.DataFrame:
        """The frame rounded as printed, for CSV: numbers stay numbers, spreads get their own column."""
        frame = self.frame.infer_objects()
        if self.spread is not None:
            for column in [c for c in self.frame if c in self.spread]:
                frame.insert(frame.columns.get_loc(column) + 1, f"{column} ±", self.spread[column].to_numpy())
        decimals = {c: int(m.group(1)) for c in frame if (m := re.search(r"\.(\d+)f$", self._spec(c.removesuffix(" ±"))))}
        return frame.round(decimals)

    def numeric(self) -> list[bool]:
        """Columns printed as numbers (including "median ± IQR"), to be right-aligned."""
        shown = self.formatted()
        return [all(_NUMBER.match(cell) or cell == MISSING for cell in shown[column]) for column in shown]

    def to_markdown(self) -> str:
        """Pipes escaped, numbers right-aligned, text left-aligned."""
        shown = self.formatted().map(lambda cell: cell.replace("|", "\\|"))
        align = ["right" if is_number else "left" for is_number in self.numeric()]
        return shown.to_markdown(index=False, disable_numparse=True, colalign=align)

    def to_html(self) -> str:
        """pandas' Styler, numeric columns right-aligned by its own table styles."""
        right = [{"selector": f"td.col{i}, th.col{i}", "props": "text-align: right"}
                 for i, is_number in enumerate(self.numeric()) if is_number]
        styler = self.formatted().style.hide(axis="index").set_table_attributes('class="data"')
        return styler.set_table_styles(right).to_html(table_uuid=self.name)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and np.isnan(value))


def _cell(value: Any, spec: str) -> str:
    if _missing(value):
        return MISSING
    if isinstance(value, (float, np.floating)):
        return format(value, spec)
    return str(value)
