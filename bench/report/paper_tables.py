"""The paper's Tables 3 and 4 in full, and its design ablations, beside the run's numbers.

Tables 3 and 4: AP and AR per object size (all, small, medium, large), their mean over IoU
.50:.95 and their values at IoU .50/.60/.70/.80/.85; the run's rows (mean ± standard deviation
over seeds) beside the paper's complete rows, then every pair's differences with 95% intervals
and verdicts. The paper's rows are ImageNet-pretrained on COCO: their direction is what a run
can be compared with, not their level. The ablation sentences state what the paper found for
DetNet-59-NoProj and the dilated ResNet-50 (direction only), beside the run's difference.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from backbones import BackboneError, parse_backbone

from ..bootstrap import TABLE_IOUS, TABLE_SIZES
from .intervals import DUPLICATES, intervals, pairs, seed_values
from .load import Run, load_paper
from .table import MISSING, Table

MEAN_AP = {"all": "AP", "small": "APs", "medium": "APm", "large": "APl"}
KINDS = {"AP": "table3", "AR": "table4"}


def metric_name(kind: str, size: str, column: str) -> str:
    """("AR", "small", "mean") -> "mean AR small"; ("AP", "large", "85") -> "AP85 large"."""
    if column != "mean":
        return f"{kind}{column} {size}"
    if kind == "AP":
        return MEAN_AP[size]
    return "mean AR" if size == "all" else f"mean AR {size}"


COLUMNS = ("mean", *map(str, TABLE_IOUS))


def _header(kind: str, column: str) -> str:
    return f"m{kind}" if column == "mean" else f"{kind}{column}"


def pair_interval(run: Run, a: str, b: str, metric: str) -> tuple[float, float, str]:
    """The 95% interval of a - b for `metric` and its verdict: the one place this module reads intervals."""
    found = intervals(run).pairs.get((a, b))
    if found is None:
        return np.nan, np.nan, "no interval (no evaluation.npz)"
    result = found.result(DUPLICATES.get(metric, metric))
    return result.low, result.high, result.verdict


def iou_table(run: Run, kind: str) -> Table | None:
    """Table 3 (kind "AP") or 4 ("AR"): rows backbone x size, the run's then the paper's."""
    if not run.finished:
        return None
    values = seed_values(run).groupby(level="backbone", sort=False)
    means, spreads = values.mean(), values.std(ddof=1)
    paper = load_paper()[KINDS[kind]]
    headers = [_header(kind, c) for c in COLUMNS]
    rows, spread_rows = [], []
    for name in run.finished:
        for size in TABLE_SIZES:
            names = [metric_name(kind, size, c) for c in COLUMNS]
            rows.append({"backbone": name, "size": size, **dict(zip(headers, means.loc[name, names]))})
            spread_rows.append(dict(zip(headers, spreads.loc[name, names])))
    for name, cells in paper["rows"].items():
        for size in TABLE_SIZES:
            rows.append({"backbone": f"{name} (paper, {paper['label']})", "size": size,
                         **{h: cells[metric_name(kind, size, c)] for h, c in zip(headers, COLUMNS)}})
            spread_rows.append({})
    number = KINDS[kind][-1]
    what = "AP" if kind == "AP" else "AR (maxDets 100)"
    return Table(
        f"table{number}_{kind.lower()}_by_iou", f"Table {number} in full: {what} by IoU and object size (%)",
        pd.DataFrame(rows), spread=pd.DataFrame(spread_rows, columns=headers),
        note=(f"m{kind}: mean over IoU .50:.95; {kind}50 … {kind}85: at that IoU threshold. Sizes by COCO area "
              "(small < 32², large > 96² pixels). Run rows: mean ± standard deviation over the seeds each backbone "
              f"finished. Paper rows: {paper['source']}, all of its cells, {paper['setting']} on {paper['data']}: "
              "compare directions, not levels."),
    )


def _difference_cell(difference: float, low: float, high: float, verdict: str) -> str:
    if np.isnan(difference):
        return MISSING
    text = f"{difference:+.1f}" if np.isnan(low) else f"{difference:+.1f} [{low:+.1f}, {high:+.1f}]"
    return f"{text} {verdict}" if verdict in ("ahead", "behind") else text


def iou_differences_table(run: Run, kind: str) -> Table | None:
    """Every pair's a - b for each cell of Table 3 or 4, with its interval and verdict, and the paper's."""
    values = seed_values(run) if run.finished else None
    paper = load_paper()[KINDS[kind]]
    headers = [_header(kind, c) for c in COLUMNS]
    rows = []
    for a, b in pairs(run.finished):
        seeds = run.finished_seeds(a, b)
        if not seeds:
            continue
        for size in TABLE_SIZES:
            cells = {}
            for header, column in zip(headers, COLUMNS):
                metric = metric_name(kind, size, column)
                difference = float(np.mean([values.at[(a, s), metric] - values.at[(b, s), metric] for s in seeds]))
                cells[header] = _difference_cell(difference, *pair_interval(run, a, b, metric))
            rows.append({"pair": f"{a} − {b}", "size": size, "source": f"run, {len(seeds)} seed(s)", **cells})
            if a in paper["rows"] and b in paper["rows"]:
                rows.append({"pair": f"{a} − {b}", "size": size, "source": f"paper, {paper['label']}", **{
                    h: f"{paper['rows'][a][metric_name(kind, size, c)] - paper['rows'][b][metric_name(kind, size, c)]:+.1f}"
                    for h, c in zip(headers, COLUMNS)}})
    if not rows:
        return None
    number = KINDS[kind][-1]
    return Table(
        f"table{number}_{kind.lower()}_differences", f"Table {number}'s differences between backbones (points)",
        pd.DataFrame(rows),
        note=("Run rows: difference of the means over the seeds both backbones finished, with its 95% interval "
              "(t interval over seeds with image-bootstrap noise, as in the differences table) and its verdict: "
              "every cell is a secondary metric, Holm-adjusted with the differences table's rows; 'ahead' / "
              "'behind' need three seeds, fewer are provisional. "
              f"Paper rows: the paper's difference ({paper['source']}, {paper['setting']}), its direction "
              "the thing to compare."),
    )


def table3(run: Run) -> Table | None:
    return iou_table(run, "AP")


def table4(run: Run) -> Table | None:
    return iou_table(run, "AR")


def table3_differences(run: Run) -> Table | None:
    return iou_differences_table(run, "AP")


def table4_differences(run: Run) -> Table | None:
    return iou_differences_table(run, "AR")


def _matching(run: Run, wanted: str) -> str | None:
    """The run's backbone that builds the same model with the same arguments as `wanted`, if any."""
    key = parse_backbone(wanted).key
    for name in run.finished:
        try:
            if parse_backbone(name).key == key:
                return name
        except BackboneError:
            continue
    return None


def ablation_lines(run: Run) -> list[str]:
    """Per ablation of the paper: its finding (direction only), and the run's AP difference where it has both."""
    ablations = load_paper()["ablations"]
    values = seed_values(run) if run.finished else None
    lines = []
    for row in ablations["rows"]:
        paper = f"Paper ({ablations['setting']}): {row['finding']} ({row['backbone']} {row['direction']} {row['against']})."
        a, b = _matching(run, row["backbone"]), _matching(run, row["against"])
        seeds = run.finished_seeds(a, b) if a and b else []
        if not seeds:
            lines.append(f"{paper} This run: not compared (it lacks {row['backbone'] if not a else row['against']}).")
            continue
        if (a, b) not in intervals(run).pairs and (b, a) in intervals(run).pairs:
            a, b, sign = b, a, -1.0
        else:
            sign = 1.0
        low, high, verdict = pair_interval(run, a, b, "AP")
        difference = float(np.mean([values.at[(a, s), "AP"] - values.at[(b, s), "AP"] for s in seeds]))
        if sign < 0:
            low, high, difference = 0.0 - high, 0.0 - low, 0.0 - difference  # 0.0 - x: never a printed -0.0
            verdict = {"ahead": "behind", "behind": "ahead"}.get(verdict, verdict)
        agrees = "as the paper found" if verdict == row["direction"] else (
            "against the paper's direction" if verdict in ("ahead", "behind") else "not resolved either way")
        first, second = (b, a) if sign < 0 else (a, b)
        lines.append(f"{paper} This run ({len(seeds)} seed(s)): AP {first} − {second} "
                     f"{difference:+.1f} points, 95% interval [{low:+.1f}, {high:+.1f}]: {verdict}, {agrees}.")
    return lines
