"""bench.compare: runs of other seeds merge into one report; runs that differ in a setting do not."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bench.compare import main
from bench.settings import SCHEMA_VERSION
from bench.settings.versions import PRETRAIN_PROVENANCE


def _one_seed(smoke_run: Path, seed: int, dest: Path, **profile_changes) -> Path:
    """A copy of the session's two-seed run that holds only `seed`, as if run alone."""
    shutil.copytree(smoke_run, dest, ignore=shutil.ignore_patterns("tables", "plots", "report.*", "checkpoint.pth"))
    shutil.rmtree(dest / f"seed{1 - seed}")
    config = yaml.safe_load((dest / "config.yaml").read_text())
    config["profile"]["seeds"] = [seed]
    for section, values in profile_changes.items():
        config["profile"][section].update(values)
    (dest / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def test_merging_two_seeds_gives_the_two_seed_report(smoke_run: Path, tmp_path: Path, capsys) -> None:
    a, b = _one_seed(smoke_run, 0, tmp_path / "a"), _one_seed(smoke_run, 1, tmp_path / "b")
    out = tmp_path / "merged"
    assert main([str(a), str(b), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    merged = pd.read_csv(out / "tables" / "differences.csv")
    original = pd.read_csv(smoke_run / "tables" / "differences.csv")
    pd.testing.assert_frame_equal(merged, original)  # the same seeds and images: the same intervals
    assert yaml.safe_load((out / "config.yaml").read_text())["profile"]["seeds"] == [0, 1]
    assert list(pd.read_csv(out / "metrics.csv")["source"]) == [str(a), str(a), str(b), str(b)]
    assert f"Merged by `bench.compare` from `{a}`, `{b}`" in (out / "report.md").read_text()
    _assert_same_tables(out, smoke_run)


def _assert_same_tables(merged: Path, original: Path) -> None:
    """Every table of the original run, the mechanism's too (analysis.json, receptive fields), is in the merge."""
    tables = sorted(path.name for path in (original / "tables").glob("*.csv"))
    assert {"error_breakdown.csv", "receptive_field.csv"} <= set(tables)
    assert sorted(path.name for path in (merged / "tables").glob("*.csv")) == tables
    for name in tables:
        pd.testing.assert_frame_equal(pd.read_csv(merged / "tables" / name), pd.read_csv(original / "tables" / name))


def test_a_run_with_another_setting_is_refused(smoke_run: Path, tmp_path: Path, capsys) -> None:
    a = _one_seed(smoke_run, 0, tmp_path / "a")
    b = _one_seed(smoke_run, 1, tmp_path / "b", detector={"roi_canonical_scale": 53.76})
    out = tmp_path / "merged"
    assert main([str(a), str(b), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert "profile.detector.roi_canonical_scale differs" in err and str(b) in err
    assert not out.exists()


def test_the_same_seed_twice_is_refused(smoke_run: Path, tmp_path: Path, capsys) -> None:
    a, b = _one_seed(smoke_run, 0, tmp_path / "a"), _one_seed(smoke_run, 0, tmp_path / "b")
    assert main([str(a), str(b), "--out", str(tmp_path / "merged")]) == 2
    assert "with seed 0 is in both" in capsys.readouterr().err


def test_a_run_of_an_older_version_is_compared_as_it_ran(smoke_run: Path, tmp_path: Path, capsys) -> None:
    """A version-3 config.yaml (before schema_version, measure.cpu and the audit's provenance) reads as what that
    detbench did: it merges with a current run into a current config.yaml, and a setting it recorded is compared."""
    a, b = _one_seed(smoke_run, 0, tmp_path / "a"), _one_seed(smoke_run, 1, tmp_path / "b")

    def as_version_3(config: dict) -> None:
        del config["schema_version"], config["profile"]["measure"]["cpu"]
        for entry in config["audit"].values():
            for key in PRETRAIN_PROVENANCE:
                del entry[key]

    _edit_config(b, as_version_3)
    assert main([str(a), str(b), "--out", str(tmp_path / "merged")]) == 0
    assert yaml.safe_load((tmp_path / "merged" / "config.yaml").read_text())["schema_version"] == SCHEMA_VERSION
    _edit_config(b, lambda config: config["profile"]["detector"].update(zero_init_last=False))
    assert main([str(a), str(b), "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "profile.detector.zero_init_last differs (False vs True)" in err


def _edit_config(folder: Path, edit) -> None:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    edit(config)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.mark.parametrize("setting, edit, message", [
    ("pretrained", lambda c: c.update(pretrained_dir="/weights"), "pretrained differs (True vs False)"),
    ("data", lambda c: c["data"].update(val_ann="/coco/annotations/instances_val2017.json"), "data.val_ann differs"),
])
def test_runs_that_are_not_comparable_are_refused(smoke_run: Path, tmp_path: Path, capsys, setting: str, edit,
                                                  message: str) -> None:
    a, b = _one_seed(smoke_run, 0, tmp_path / "a"), _one_seed(smoke_run, 1, tmp_path / "b")
    _edit_config(b, edit)
    assert main([str(a), str(b), "--out", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and message in err, setting
    assert not (tmp_path / "merged").exists()


def test_the_same_folder_twice_is_refused(smoke_run: Path, tmp_path: Path, capsys) -> None:
    a = _one_seed(smoke_run, 0, tmp_path / "a")
    (tmp_path / "b").mkdir()
    assert main([str(a), str(tmp_path / "b" / ".." / "a"), "--out", str(tmp_path / "merged")]) == 2
    assert "a run folder is given twice" in capsys.readouterr().err
    assert not (tmp_path / "merged").exists()


def test_folders_without_a_finished_backbone_are_refused(smoke_run: Path, tmp_path: Path, capsys) -> None:
    a, b = _one_seed(smoke_run, 0, tmp_path / "a"), _one_seed(smoke_run, 1, tmp_path / "b")
    for metrics in [*a.glob("seed*/*/metrics.json"), *b.glob("seed*/*/metrics.json")]:
        metrics.unlink()  # trained, never evaluated: nothing to compare
    assert main([str(a), str(b), "--out", str(tmp_path / "merged")]) == 2
    assert "none of the folders has a finished backbone to compare" in capsys.readouterr().err


def test_a_backbone_added_later_is_merged(smoke_run: Path, tmp_path: Path, capsys) -> None:
    """detnet59 run first, resnet50 later with the same seeds: the merge is the run of both."""
    folders = {}
    for name, other in (("detnet59", "resnet50"), ("resnet50", "detnet59")):
        folders[name] = tmp_path / name
        shutil.copytree(smoke_run, folders[name], ignore=shutil.ignore_patterns("tables", "plots", "report.*",
                                                                                 "checkpoint.pth", other))
        _edit_config(folders[name], lambda c, name=name: c.update(backbones=[name]))
        fields = pd.read_csv(folders[name] / "receptive_field.csv")
        fields[fields["backbone"] == name].to_csv(folders[name] / "receptive_field.csv", index=False)
    out = tmp_path / "merged"
    assert main([str(folders["detnet59"]), str(folders["resnet50"]), "--out", str(out)]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["backbones"] == ["detnet59", "resnet50"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "tables" / "differences.csv"),
                                  pd.read_csv(smoke_run / "tables" / "differences.csv"))
    merged = pd.read_csv(out / "metrics.csv")
    assert list(zip(merged["backbone"], merged["source"])) == [
        ("detnet59", str(folders["detnet59"])), ("resnet50", str(folders["resnet50"]))] * 2
    _assert_same_tables(out, smoke_run)
