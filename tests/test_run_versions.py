"""Run folders written by each earlier detbench format still report, compare and resume through today's code.

The fixtures in tests/data/run_versions/ are smoke runs made by the detbench of each version (its commit is in
each folder's environment.json; README.md there says how they were made), checkpoints and rendered outputs left
out. "Interrupted" below is the state a run is in when it is stopped between two backbones: one finished folder,
the next one not started; in the first format's, that one has a checkpoint in the middle of its training.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from bench import detector
from bench.compare import main as compare_main
from bench.data.synthetic import SYNTHETIC_CATEGORIES
from bench.layout import RunLayout
from bench.report.__main__ import main as report_main
from bench.run import main as run_main
from bench.run import parse_args, prepare
from bench.settings import SCHEMA_VERSION, load_run_config
from bench.train import build_scheduler, scaled_lr

FIXTURES = Path(__file__).resolve().parent / "data" / "run_versions"
VERSIONS = (1, 2, 3, 4)
BACKBONES = ("detnet59", "resnet50")


def copy_fixture(version: int, dest: Path, keep: tuple[str, ...] = BACKBONES) -> RunLayout:
    """The version's run folder, holding only the backbones in `keep` (as a run stopped before the others)."""
    shutil.copytree(FIXTURES / f"v{version}", dest)
    layout = load_run_config(dest).layout
    for name in set(BACKBONES) - set(keep):
        shutil.rmtree(layout.result(name, 0).folder)
    rows = pd.read_csv(layout.metrics)
    rows[rows["backbone"].isin(keep)].to_csv(layout.metrics, index=False)
    return layout


def ap_of(files) -> float:
    return json.loads(files.metrics.read_text())["stats"]["AP"]


def test_each_fixture_is_a_folder_of_its_version() -> None:
    assert SCHEMA_VERSION == VERSIONS[-1] + 1  # a new version needs a fixture of the one before it
    for version in VERSIONS:
        saved = load_run_config(FIXTURES / f"v{version}")
        assert (saved.version, saved.layout.seeded) == (version, version > 1)
        assert "schema_version" not in saved.layout.config.read_text()  # written before the number existed
        for name in BACKBONES:
            assert saved.layout.result(name, 0).metrics.is_file()
            assert not saved.layout.result(name, 0).checkpoint.exists()


@pytest.mark.parametrize("version", VERSIONS)
def test_an_old_folder_reports(version: int, tmp_path: Path) -> None:
    layout = copy_fixture(version, tmp_path / "run")
    assert report_main([str(layout.root)]) == 0
    accuracy = pd.read_csv(layout.table_csv("accuracy")).set_index("backbone")
    for name in BACKBONES:
        assert accuracy.loc[name, "AP"] == round(100 * ap_of(layout.result(name, 0)), 1)
    assert layout.report_md.is_file() and layout.report_html.is_file()


@pytest.mark.parametrize("version", VERSIONS)
def test_two_halves_of_an_old_run_compare_into_the_whole(version: int, tmp_path: Path, capsys) -> None:
    first, second = (copy_fixture(version, tmp_path / name, keep=(name,)) for name in BACKBONES)
    out = RunLayout(tmp_path / "merged")
    assert compare_main([str(first.root), str(second.root), "--out", str(out.root)]) == 0
    assert capsys.readouterr().out.strip() == str(out.report_md)
    merged = load_run_config(out.root)
    assert (merged.version, merged.layout.seeded, merged.config.backbones) == (SCHEMA_VERSION, True, list(BACKBONES))
    whole = load_run_config(FIXTURES / f"v{version}").layout
    for name in BACKBONES:
        assert ap_of(out.result(name, 0)) == ap_of(whole.result(name, 0))


def interrupted(version: int, dest: Path, cache: Path) -> RunLayout:
    """The version's run as if stopped after its first backbone, on this machine's cache folder."""
    layout = copy_fixture(version, dest, keep=BACKBONES[:1])
    config = yaml.safe_load(layout.config.read_text())
    config["cache_dir"] = str(cache)  # the fixture was made on another machine
    layout.config.write_text(yaml.safe_dump(config, sort_keys=False))
    return layout


@pytest.mark.parametrize("version", VERSIONS)
def test_resuming_an_old_run_takes_its_settings_and_layout(version: int, tmp_path: Path, smoke_cache: Path) -> None:
    """What differs between versions on --resume: the settings read back, the audit checked where the version
    recorded one, the layout its results go to; nothing is written."""
    layout = interrupted(version, tmp_path / "run", smoke_cache)
    before = sorted(path for path in layout.root.rglob("*"))
    cfg, resumed, _, _ = prepare(parse_args(["--resume", str(layout.root), "--no-progress"]))
    assert resumed == layout and cfg.backbones == list(BACKBONES) and cfg.profile.seeds == [0]
    assert set(cfg.audit) == set(BACKBONES)  # recomputed, and equal to the recorded one where there is one
    assert sorted(path for path in layout.root.rglob("*")) == before


def first_format_checkpoint(layout: RunLayout, name: str, iteration: int) -> Path:
    """A checkpoint as detbench's first format saved one in the middle of training (commit 8c27500): model, SGD
    over every parameter in one group, schedule, scaler, iteration; no RNG states, no settings."""
    cfg = load_run_config(layout.root).config
    model = detector.build_detector(name, len(SYNTHETIC_CATEGORIES) + 1, cfg.profile.detector)
    schedule = cfg.profile.train
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=scaled_lr(schedule),
                                momentum=schedule.momentum, weight_decay=schedule.weight_decay)
    files = layout.result(name, 0)
    files.folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": build_scheduler(optimizer, schedule).state_dict(),
                "scaler": torch.amp.GradScaler("cuda", enabled=False).state_dict(), "iteration": iteration},
               files.checkpoint)
    return files.checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("version", (1, 4))  # the layout without seeds, and the newest format before this one
def test_an_interrupted_old_run_resumes_in_its_own_format(version: int, tmp_path: Path, smoke_cache: Path) -> None:
    """Versions 2 on saved today's checkpoint, which test_resume continues bit-exactly; the first format's cannot be
    continued, so its backbone is trained again from the start, and the log says so."""
    layout = interrupted(version, tmp_path / "run", smoke_cache)
    old = first_format_checkpoint(layout, BACKBONES[1], iteration=1) if version == 1 else None
    before = {path: path.read_bytes() for path in (layout.config, layout.result(BACKBONES[0], 0).metrics)}
    assert run_main(["--resume", str(layout.root), "--no-progress"]) == 0
    assert all(path.read_bytes() == text for path, text in before.items())  # kept as written, in its version
    assert load_run_config(layout.root).version == version
    trained = layout.result(BACKBONES[1], 0)
    assert trained.metrics.is_file() and trained.checkpoint.is_file()  # where that version kept it
    iterations = load_run_config(layout.root).config.profile.train.iterations
    assert list(pd.read_csv(trained.loss)["iteration"]) == list(range(1, iterations + 1))
    log = layout.run_log.read_text()
    assert (old is not None) == (f"warning: {old} is of detbench's first checkpoint format, which cannot be "
                                 f"continued: train {BACKBONES[1]} seed 0 starts again from iteration 0" in log)
    assert list(pd.read_csv(layout.metrics)["backbone"]) == list(BACKBONES)
    assert layout.report_md.is_file()
    gone = layout.result(BACKBONES[0], 0).checkpoint  # left out of the fixture: said, not failed on
    assert f"warning: {gone} is gone: seed 0's trained weights are not measured, for any backbone" in log
    assert pd.read_csv(layout.measurements).query("target == 'detector_trained'").empty  # not one backbone's alone
