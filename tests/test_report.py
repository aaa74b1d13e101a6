"""bench.report: a run folder's files alone -> the same tables, plots and report every time."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bench import report
from bench.report import accuracy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OUTPUTS = ("tables", "plots", "report.md", "report.html")
# `smoke_run` (conftest.py): a finished smoke run whose report bench.run wrote; tests change only copies of it.


def _copy_inputs(run_dir: Path, dest: Path) -> Path:
    """The run folder without anything the report wrote, nor what it never reads (checkpoints, detections)."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns(*OUTPUTS, "checkpoint.pth", "detections.json"))
    return dest


def _outputs(run_dir: Path) -> dict[str, bytes]:
    paths = [run_dir / "report.md", run_dir / "report.html", *(run_dir / "tables").iterdir(),
             *(run_dir / "plots").iterdir()]
    return {str(path.relative_to(run_dir)): path.read_bytes() for path in paths}


def test_report_regenerates_byte_identical(smoke_run: Path, tmp_path: Path) -> None:
    copy = _copy_inputs(smoke_run, tmp_path / smoke_run.name)
    assert report.write_report(copy) == copy / "report.md"
    assert _outputs(copy) == _outputs(smoke_run)


def test_every_plot_is_a_png(smoke_run: Path) -> None:
    for spec in report.PLOTS:
        data = (smoke_run / "plots" / f"{spec.name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, spec.name


def test_html_is_self_contained(smoke_run: Path) -> None:
    page = (smoke_run / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == len(report.PLOTS)
    assert "<table" in page and "http" not in page  # nothing fetched from elsewhere


def test_accuracy_table_labels_paper_rows(smoke_run: Path) -> None:
    table = pd.read_csv(smoke_run / "tables" / "accuracy.csv")
    config = yaml.safe_load((smoke_run / "config.yaml").read_text())
    ours = table[table["backbone"].isin(config["backbones"])]
    paper = table[~table["backbone"].isin(config["backbones"])]
    assert sorted(ours["backbone"]) == sorted(config["backbones"])
    assert len(paper) and paper["backbone"].str.contains(r"\(paper, ").all()
    assert "resnet50 (paper, Table 2, from scratch)" in set(paper["backbone"])
    assert paper.set_index("backbone").at["detnet59 (paper, Table 2, from scratch)", "AP"] == 36.3
    text = (smoke_run / "report.md").read_text()
    assert "like-for-like paper rows are DetNet paper, arXiv:1804.06215, Table 2" in text


def test_pretrained_run_compares_with_table_1(smoke_run: Path, tmp_path: Path) -> None:
    copy = _copy_inputs(smoke_run, tmp_path / "run")
    config = yaml.safe_load((copy / "config.yaml").read_text())
    (copy / "config.yaml").write_text(yaml.safe_dump({**config, "pretrained_dir": "weights"}))
    labels = list(accuracy.accuracy_table(report.load_run(copy)).frame["backbone"])
    n = len(config["backbones"])
    assert all("Table 1, ImageNet-pretrained" in label for label in labels[n : 2 * n])


def test_paper_data_matches_the_paper() -> None:
    assert accuracy.paper_values("table1").at["detnet59", "AP"] == 40.2
    assert accuracy.paper_values("table2").at["resnet50", "APl"] == 44.5
    assert accuracy.paper_values("table3").at["resnet50", "AP85 large"] == 34.5
    assert accuracy.paper_values("table4").at["detnet59", "AR50 small"] == 66.4
    assert accuracy.paper_values("test_dev").at["resnet101", "AP"] == 37.3
    assert all(table["source"].startswith("DetNet paper, arXiv:1804.06215") for table in report.load_paper().values())


def test_missing_inputs_are_reported(smoke_run: Path, tmp_path: Path) -> None:
    copy = _copy_inputs(smoke_run, tmp_path / "run")
    for name in ("measurements.csv", "flops_by_module.csv", "environment.json"):
        (copy / name).unlink()
    for evaluation in copy.glob("seed*/*/evaluation.npz"):
        evaluation.unlink()
    text = report.write_report(copy).read_text()
    assert "`measurements.csv`: measurement is missing" in text
    assert "Plot `ap_vs_latency` skipped" in text and "Plot `ap_vs_gmacs` skipped" in text
    assert "without it there are no confidence intervals" in text
    assert "no interval (no evaluation.npz)" in (copy / "tables" / "differences.csv").read_text()
    assert not (copy / "plots" / "ap_vs_latency.png").exists() and not (copy / "tables" / "cost.csv").exists()
    assert (copy / "plots" / "ap_by_size.png").exists() and (copy / "tables" / "accuracy.csv").exists()


def test_unfinished_backbone_is_reported(smoke_run: Path, tmp_path: Path) -> None:
    copy = _copy_inputs(smoke_run, tmp_path / "run")
    config = yaml.safe_load((copy / "config.yaml").read_text())
    (copy / "config.yaml").write_text(yaml.safe_dump({**config, "backbones": [*config["backbones"], "resnet101"]}))
    text = report.write_report(copy).read_text()
    assert "`seed0/resnet101/metrics.json`: resnet101 (seed 0) did not finish" in text


def _check_verdicts(table: pd.DataFrame) -> None:
    """Each row's verdict follows from its own difference, interval, p and seed count (the report's rules)."""
    assert len(table) and "AP50 all" not in set(table["metric"])  # AP50 again: not a second test
    for _, row in table.iterrows():
        difference, low, high, p, seeds = (row[c] for c in ("difference (points)", "CI low", "CI high", "p", "seeds"))
        assert row["role"] == ("primary" if row["metric"] == "AP" else "secondary")
        if np.isnan(difference):
            expected = "undefined"
        elif seeds < 3:
            expected = f"provisional ({seeds} seed{'s' if seeds > 1 else ''}; 3 needed)"
        elif p < 0.05:
            expected = "ahead" if difference > 0 else "behind"
            assert low > 0 if difference > 0 else high < 0  # rejected (even after Holm): the interval excludes 0
        else:
            expected = "not resolved at 95%"
            if row["role"] == "primary":  # unadjusted: not rejected means the interval holds 0
                assert low <= 0 <= high
        assert row["verdict"] == expected, row.to_dict()
        if not np.isnan(difference):
            assert low <= difference <= high
        if row["verdict"] not in ("ahead", "behind"):
            assert row["same direction as paper"] == "–"


def test_two_seeds_are_provisional(smoke_run: Path) -> None:
    """Two seeds: an interval with training and image noise, but a provisional verdict on every row."""
    table = accuracy.differences_table(report.load_run(smoke_run)).frame
    _check_verdicts(table)
    ap = table[table["metric"] == "AP"].iloc[0]
    assert ap["seeds"] == 2 and ap["verdict"] == "provisional (2 seeds; 3 needed)"
    text = (smoke_run / "report.md").read_text()
    assert "## Verdict" in text and "detnet59 − resnet50: AP" in text and "training and image noise" in text
    assert "Seeds to resolve a true AP difference at 95% with 80% power" in text
    assert set(pd.read_csv(smoke_run / "tables" / "differences.csv").columns) >= {"role", "p", "CI low", "verdict"}


def test_three_seeds_give_verdicts_from_each_rows_interval(smoke_run: Path, tmp_path: Path) -> None:
    """A third seed (a copy of seed 1's results): verdicts are given, each matching its own row."""
    copy = _copy_inputs(smoke_run, tmp_path / "run")
    shutil.copytree(copy / "seed1", copy / "seed2")
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["profile"]["seeds"] = [0, 1, 2]
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    table = accuracy.differences_table(report.load_run(copy)).frame
    assert set(table["seeds"]) == {3}
    _check_verdicts(table)
    assert not any(v.startswith("provisional") for v in table["verdict"])


def test_one_seed_holds_image_noise_only(smoke_run: Path, tmp_path: Path) -> None:
    copy = _copy_inputs(smoke_run, tmp_path / "run")
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["profile"]["seeds"] = [0]
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    text = report.write_report(copy).read_text()
    table = pd.read_csv(copy / "tables" / "differences.csv")
    assert set(table["verdict"]) <= {"provisional (1 seed; 3 needed)", "undefined"}
    assert "image noise only: one seed cannot show training noise" in text


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.report", *args], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1])


def test_cli_renders_a_run_folder(smoke_run: Path, tmp_path: Path) -> None:
    copy = _copy_inputs(smoke_run, tmp_path / "run")
    done = _cli(str(copy))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(copy / "report.md")


def test_cli_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    done = _cli(str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith("error:") and len(done.stderr.strip().splitlines()) == 1
    assert "not a run folder" in done.stderr
