"""Tables and plots -> report.md and report.html, through one Jinja2 template per format.

`body.j2` holds the document once: its sections, prose and which table or plot goes where.
`report.md.j2` and `report.html.j2` wrap it, and `markdown.j2` / `html.j2` say how a heading,
paragraph, list, table or plot is written in each format. Adding a table or a plot is one
function in `tables`/`plots` (`TABLES`, `PLOTS` in `__init__`) and one line in `body.j2`.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from ..files import write_bytes, write_text
from ..layout import RunLayout
from .table import Table


@dataclass(frozen=True)
class Figure:
    """A rendered plot: PNG bytes, or None with what it would have needed."""

    name: str  # file stem under plots/
    caption: str
    needs: str
    png: bytes | None

    @property
    def base64(self) -> str:
        return base64.b64encode(self.png or b"").decode("ascii")


def _inline_html(text: str) -> Markup:
    """Escape for HTML, turning Markdown's `code` spans into <code>."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def _environment(html: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bench.report", "templates"),
        autoescape=html, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals["layout"] = RunLayout(Path())  # the report names its files relative to the run folder
    env.filters["inline"] = _inline_html if html else str
    env.filters["posix"] = lambda path: path.as_posix()
    env.filters["html_table"] = lambda table: Markup(table.to_html())
    return env


def render(context: dict[str, Any], html: bool) -> str:
    """The whole document in one format; Markdown keeps one blank line between blocks."""
    template = _environment(html).get_template("report.html.j2" if html else "report.md.j2")
    text = template.render(**context, fmt="html" if html else "markdown")
    return text if html else re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def table_markdown(table: Table) -> str:
    """A table as its .md file and as it appears in report.md."""
    return _environment(False).get_template("markdown.j2").module.table(table).strip() + "\n"


def write_outputs(layout: RunLayout, context: dict[str, Any], tables: dict[str, Table],
                  figures: dict[str, Figure]) -> Path:
    """tables/*.csv and *.md, plots/*.png, report.html and report.md (written last: a report.md means done)."""
    layout.tables.mkdir(exist_ok=True)
    for table in tables.values():
        write_text(layout.table_csv(table.name), table.rounded().to_csv(index=False))
        write_text(layout.table_md(table.name), table_markdown(table))
    layout.plots.mkdir(exist_ok=True)
    for figure in figures.values():
        if figure.png is not None:
            write_bytes(layout.plot_png(figure.name), figure.png)
    write_text(layout.report_html, render(context, html=True))
    write_text(layout.report_md, render(context, html=False))
    return layout.report_md
