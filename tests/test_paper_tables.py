"""The paper's Tables 3 and 4 in full, its ablations and the cost-accuracy plots, on a run of four backbones.

The four-backbone run is the smoke run (detnet59, resnet50) with resnet50's folders copied as
`resnet50[output_stride=16]` and `resnet101` and their measurement rows copied with other costs:
the report reads only files, so this is the report of such a run without training it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bench import report
from bench.report import paper_tables, plots
from bench.report.intervals import seed_values
from bench.report.load import load_paper

COPIES = {"resnet50[output_stride=16]": 1.5, "resnet101": 1.8}  # name -> compute and latency factor


@pytest.fixture(scope="module")
def four_backbones(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("four") / "run"
    shutil.copytree(smoke_run, run_dir, ignore=shutil.ignore_patterns("tables", "plots", "report.*", "checkpoint.pth"))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["backbones"] += list(COPIES)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    for seed_dir in run_dir.glob("seed*"):
        for name in COPIES:
            shutil.copytree(seed_dir / "resnet50", seed_dir / name)
    frame = pd.read_csv(run_dir / "measurements.csv")
    copies = []
    for name, factor in COPIES.items():
        rows = frame[frame["backbone"] == "resnet50"].assign(backbone=name)
        for column in ("gmacs", "gflops", "latency_ms_median"):
            if column in rows:
                rows[column] = rows[column] * factor
        copies.append(rows)
    pd.concat([frame, *copies]).to_csv(run_dir / "measurements.csv", index=False)
    return run_dir


def test_paper_tables_3_and_4_have_all_96_cells() -> None:
    cells = [value for table in ("table3", "table4") for row in load_paper()[table]["rows"].values()
             for value in row.values()]
    assert len(cells) == 96 and all(isinstance(value, float) for value in cells)
    assert load_paper()["table3"]["rows"]["detnet59"]["AP70 medium"] == 53.6
    assert load_paper()["table4"]["rows"]["resnet50"]["mean AR large"] == 67.0


def test_tables_3_and_4_show_the_run_beside_every_paper_cell(four_backbones: Path) -> None:
    run = report.load_run(four_backbones)
    for kind, table_name in (("AP", "table3"), ("AR", "table4")):
        table = paper_tables.iou_table(run, kind)
        frame = table.frame.set_index(["backbone", "size"])
        paper = load_paper()[table_name]
        for name, cells in paper["rows"].items():
            for size in ("all", "small", "medium", "large"):
                row = frame.loc[(f"{name} (paper, {paper['label']})", size)]
                expected = [cells[paper_tables.metric_name(kind, size, c)] for c in paper_tables.COLUMNS]
                assert row.tolist() == expected
        values = seed_values(run).groupby(level="backbone").mean()
        for name in run.finished:
            row = frame.loc[(name, "medium")]
            expected = [values.at[name, paper_tables.metric_name(kind, "medium", c)] for c in paper_tables.COLUMNS]
            np.testing.assert_allclose(row.to_numpy(dtype=float), expected, equal_nan=True)
        assert "resnet50[output_stride=16]" in table.to_markdown()


def test_differences_have_intervals_and_the_paper_direction(four_backbones: Path) -> None:
    run = report.load_run(four_backbones)
    table = paper_tables.iou_differences_table(run, "AP")
    frame = table.frame
    run_rows = frame[frame["source"].str.startswith("run")]
    assert len(run_rows) == 6 * 4  # every pair of 4 backbones, every size
    cell = run_rows[(run_rows["pair"] == "detnet59 − resnet50") & (run_rows["size"] == "all")]["mAP"].item()
    assert "[" in cell or cell == "–"
    copy = run_rows[(run_rows["pair"] == "resnet50 − resnet50[output_stride=16]") & (run_rows["size"] == "all")]
    assert copy["AP50"].item().startswith("+0.0 [+0.0, +0.0]")  # identical files: a zero difference, a zero interval
    paper = frame[frame["source"].str.startswith("paper")]
    assert set(paper["pair"]) == {"detnet59 − resnet50"}
    assert paper[paper["size"] == "large"]["AP85"].item() == "+5.5"  # 40.0 - 34.5


def test_ablation_lines_state_the_papers_direction_and_the_runs(four_backbones: Path, smoke_run: Path) -> None:
    lines = paper_tables.ablation_lines(report.load_run(four_backbones))
    assert len(lines) == 3 and all(line.startswith("Paper (ImageNet-pretrained):") for line in lines)
    assert "This run: not compared (it lacks detnet59_noproj)" in lines[0]
    assert "AP resnet50[output_stride=16] − resnet50 +0.0 points" in lines[1] and "not resolved" in lines[1]
    assert "AP resnet50[output_stride=16] − detnet59" in lines[2]
    assert all("not compared" in line for line in paper_tables.ablation_lines(report.load_run(smoke_run))[1:])


def test_cost_accuracy_plots_show_every_backbone(four_backbones: Path) -> None:
    run = report.load_run(four_backbones)
    for draw in (plots.plot_ap_vs_gmacs, plots.plot_ap_vs_latency):
        fig = draw(run)
        labels = {text.get_text() for text in fig.axes[0].texts}
        assert labels == set(run.backbones)
    report.write_report(run)
    body = (four_backbones / "report.md").read_text()
    assert "The paper's design ablations" in body and "Table 3 in full" in body and "Table 4 in full" in body
    assert (four_backbones / "tables" / "table3_ap_by_iou.csv").is_file()
