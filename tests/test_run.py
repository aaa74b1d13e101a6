"""`python -m bench.run` end to end on the smoke profile, and its answers to user mistakes."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
import yaml

from bench import settings, train
from bench.bootstrap import ImageEval
from bench.errors import UsageError
from bench.evaluation.coco import COCO_STAT_NAMES
from bench.layout import RunLayout
from bench.run import main
from bench.settings import get_profile

ROOT = Path(__file__).resolve().parents[1]


def test_run_folder_contents(smoke_run: Path) -> None:
    metrics = pd.read_csv(smoke_run / "metrics.csv")
    assert list(zip(metrics["seed"], metrics["backbone"])) == [
        (0, "detnet59"), (0, "resnet50"), (1, "detnet59"), (1, "resnet50")]
    assert set(COCO_STAT_NAMES) <= set(metrics.columns)
    for seed in (0, 1):
        for name in ("detnet59", "resnet50"):
            folder = smoke_run / f"seed{seed}" / name
            result = json.loads((folder / "metrics.json").read_text())
            assert set(result["stats"]) == set(COCO_STAT_NAMES) and result["seed"] == seed
            assert set(result["ap_by_iou"]) == {"all", "small", "medium", "large"}
            assert result["train"]["iterations"] == get_profile("smoke").train.iterations
            assert (folder / "checkpoint.pth").is_file() and (folder / "loss.csv").is_file()
            assert isinstance(json.loads((folder / "detections.json").read_text()), list)
            assert ImageEval.load(folder / "evaluation.npz").image_ids.size == get_profile("smoke").synthetic.num_val
    for name in ("config.yaml", "measurements.csv", "environment.json", "report.md", "report.html"):
        assert (smoke_run / name).is_file(), name
    assert json.loads((smoke_run / "status.json").read_text())["state"] == "finished"


def test_config_yaml_repeats_the_run(smoke_run: Path) -> None:
    saved = settings.build(file=smoke_run / "config.yaml")
    assert saved.backbones == ["detnet59", "resnet50"]
    expected = get_profile("smoke")
    expected.seeds = [0, 1]
    expected.train.eval_every = 1  # the fixture's --set
    expected.train.precision = train.resolve_precision("auto", torch.device("cpu"))  # recorded resolved
    assert saved.profile == expected
    assert saved.data.synthetic
    audit = saved.audit["resnet50"]
    assert audit.norm == "batch" and audit.weights_sha256 is None and audit.decayed_tensors > 0


@pytest.mark.parametrize("argv, message", [
    (["--backbones", "detnet99"], "unknown backbone 'detnet99'"),
    (["--backbones", "resnet50,resnet50"], "listed twice"),
    (["--device", "mps"], "device must be cpu or cuda"),
    (["--data", "/nonexistent/coco"], "/nonexistent/coco"),
    (["--train-ann", "a.json"], "go together"),
    (["--pretrained-dir", "/nonexistent"], "is not a folder"),
    (["--config", "/nonexistent/config.yaml"], "cannot read"),
])
def test_user_mistakes_are_one_line(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    assert main([*argv, "--profile", "smoke", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_existing_results_are_never_overwritten(tmp_path: Path, capsys) -> None:
    earlier = tmp_path / "run" / "metrics.csv"
    earlier.parent.mkdir()
    earlier.write_text("earlier results")
    assert main(["--profile", "smoke", "--out", str(earlier.parent)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert earlier.read_text() == "earlier results"


def test_missing_weights_in_pretrained_dir(tmp_path: Path, capsys) -> None:
    assert main(["--profile", "smoke", "--pretrained-dir", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "no detnet59.safetensors or detnet59.pth" in capsys.readouterr().err


def test_cli_error_has_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--backbones", "nope", "--out", str(tmp_path / "r")],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip().startswith("error:")


def test_weights_that_do_not_fit_fail_before_training(tmp_path: Path, capsys) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save(timm.create_model("resnet18").state_dict(), weights / "resnet50.pth")
    assert main(["--profile", "smoke", "--backbones", "resnet50", "--pretrained-dir", str(weights),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "resnet50.pth" in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_hand_edited_config_is_one_line(tmp_path: Path, smoke_run: Path, capsys) -> None:
    config = yaml.safe_load((smoke_run / "config.yaml").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**config, "profile": "default"}))
    assert main(["--config", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "str is not a subclass of Profile" in err and err.count("\n") == 1


def test_resume_finishes_an_interrupted_run(tmp_path: Path, smoke_run: Path, smoke_cache: Path, capsys) -> None:
    """A run stopped after training its last backbone, before evaluating it, goes on from there, and its run.log
    goes on with what the console shows."""
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("tables", "plots", "report.*", "measurements.csv"))
    (run / "seed1" / "resnet50" / "metrics.json").unlink()
    finished = (run / "seed0" / "detnet59" / "metrics.json").read_text()
    losses = (run / "seed1" / "resnet50" / "loss.csv").read_text()
    log_before = RunLayout(run).run_log.read_text()

    assert main(["--resume", str(run), "--no-progress"]) == 0
    log_after, console = RunLayout(run).run_log.read_text(), capsys.readouterr().out
    assert log_after.startswith(log_before) and len(log_after) > len(log_before)
    assert console.strip().splitlines()[-1] in log_after
    assert (run / "seed0" / "detnet59" / "metrics.json").read_text() == finished  # done before: kept as it was
    assert (run / "seed1" / "resnet50" / "loss.csv").read_text() == losses  # nothing trained twice
    assert torch.load(run / "seed1" / "resnet50" / "checkpoint.pth", weights_only=True)["iteration"] == 2
    assert len(pd.read_csv(run / "metrics.csv")) == 4
    assert (run / "report.md").is_file()


def test_resume_refuses_a_changed_config(tmp_path: Path, smoke_run: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["profile"]["train"]["iterations"] = 3
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "profile.train.iterations changed" in err and err.count("\n") == 1
    assert main(["--resume", str(run), "--set", "train.iterations=4"]) == 2
    assert "--set would change it" in capsys.readouterr().err


def test_resume_reads_checkpoints_in_their_run_s_version(tmp_path: Path, smoke_run: Path) -> None:
    """A run a version-3 detbench wrote: its config.yaml and checkpoints lack measure.cpu and the audit's provenance
    alike, and read as what that detbench did, so nothing changed; a setting that did change is named."""
    from bench.run import check_resume
    from bench.settings.versions import PRETRAIN_PROVENANCE

    def as_version_3(config: dict) -> None:
        config.pop("schema_version", None)
        del config["profile"]["measure"]["cpu"]
        for entry in config["audit"].values():
            for key in PRETRAIN_PROVENANCE:
                del entry[key]

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("tables", "plots", "report.*"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    as_version_3(config)
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    path = run / "seed0" / "detnet59" / "checkpoint.pth"
    state = torch.load(path, weights_only=True)
    as_version_3(state["config"])
    torch.save(state, path)
    saved = settings.load_run_config(run)
    assert saved.version == 3
    check_resume(saved.config, saved)  # accepted: nothing changed
    state["config"]["profile"]["train"]["momentum"] = 0.5
    torch.save(state, path)
    with pytest.raises(UsageError, match="setting profile.train.momentum changed since"):
        check_resume(saved.config, saved)


def test_trained_rows_time_one_seed_that_every_backbone_kept(smoke_run: Path, tmp_path: Path) -> None:
    """The trained detector's latency and effective RF pair the backbones as everything else is paired: a seed in
    which one backbone's checkpoint is gone is measured for none, and the rows and the report say which seed."""
    from bench.data.synthetic import SYNTHETIC_CATEGORIES
    from bench.report import cost, load_run
    from bench.run import trained_models

    measured = pd.read_csv(RunLayout(smoke_run).measurements).query("target == 'detector_trained'")
    cfg = settings.load_run_config(smoke_run).config
    assert sorted(measured["backbone"]) == sorted(cfg.backbones) and set(measured["note"]) == {"seed 0's checkpoint"}
    assert "trained weights (seed 0's checkpoint," in RunLayout(smoke_run).report_md.read_text()
    layout = RunLayout(tmp_path / "run")
    shutil.copytree(smoke_run, layout.root, ignore=shutil.ignore_patterns("tables", "plots", "report.*"))
    layout.result(cfg.backbones[1], 0).checkpoint.unlink()
    seeds, trained = trained_models(cfg, layout, len(SYNTHETIC_CATEGORIES) + 1)
    assert seeds == [1] and {name: len(models) for name, models in trained.items()} == dict.fromkeys(cfg.backbones, 1)
    rows = pd.read_csv(layout.measurements)
    rows.loc[rows["target"] == "detector_trained", "note"] = "seed 1's checkpoint"
    rows.to_csv(layout.measurements, index=False)
    assert "trained weights (seed 1's checkpoint," in cost.speed_table(load_run(layout.root)).note
