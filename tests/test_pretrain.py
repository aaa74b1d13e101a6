"""bench.pretrain: exact resume, top-1 as counted by hand, the weights handed to the detector, bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

from bench import detector, settings
from bench.layout import PretrainLayout, RunLayout
from bench.pretrain.__main__ import main as pretrain_main
from bench.pretrain.config import build
from bench.pretrain.loop import evaluate
from bench.run import audit, pretrained_file

BACKBONE = "resnet18"  # the cheapest timm ResNet; a detection backbone like resnet50


def pretrain(out: Path, cache: Path, *extra: str) -> int:
    return pretrain_main(["--profile", "smoke", "--backbones", BACKBONE, "--out", str(out), "--cache-dir", str(cache),
                          "--device", "cpu", "--no-progress", *extra])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory, smoke_cache: Path) -> Path:
    """One uninterrupted smoke pretraining run (2 epochs with mixup, label smoothing and EMA)."""
    run_dir = tmp_path_factory.mktemp("pretrain") / "whole"
    assert pretrain(run_dir, smoke_cache) == 0
    return run_dir


def test_topk_error_equals_hand_count():
    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(23, 6, generator=generator), torch.randint(0, 6, (23,), generator=generator)
    scores = evaluate(torch.nn.Identity(), DataLoader(TensorDataset(logits, labels), batch_size=5),
                      torch.device("cpu"), k=3)
    top1 = sum(int(row.argmax()) == int(label) for row, label in zip(logits, labels))
    top3 = sum(int(label) in row.argsort(descending=True)[:3].tolist() for row, label in zip(logits, labels))
    assert 0 < top1 < top3 < 23  # the fixture separates top-1 from top-3
    assert scores["top1_err"] == 100 - 100 * top1 / 23
    assert scores["topk_err"] == 100 - 100 * top3 / 23


def test_resume_is_bit_exact(pretrained: Path, smoke_cache: Path, tmp_path: Path):
    """Stopped mid-epoch (mixup, EMA and the schedule in flight), resumed: the same weights and history."""
    run_dir = tmp_path / "resumed"
    assert pretrain(run_dir, smoke_cache, "--stop-after", "5") == 130
    assert json.loads((run_dir / "status.json").read_text())["state"] == "interrupted"
    assert not (run_dir / f"{BACKBONE}.safetensors").exists()
    interrupted_log = PretrainLayout(run_dir).run_log.read_text()
    assert "interrupted: " in interrupted_log.splitlines()[-1]
    assert pretrain_main(["--resume", str(run_dir), "--no-progress"]) == 0
    resumed_log = PretrainLayout(run_dir).run_log.read_text()  # appended to, ending as the console did
    assert resumed_log.startswith(interrupted_log) and f"pretraining run: {run_dir}; use it" in resumed_log.splitlines()[-1]
    whole, resumed = load_file(pretrained / f"{BACKBONE}.safetensors"), load_file(run_dir / f"{BACKBONE}.safetensors")
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[key], resumed[key]) for key in whole)
    raw = [torch.load(folder / BACKBONE / "checkpoint.pth", weights_only=True)["model"] for folder in (pretrained, run_dir)]
    assert all(torch.equal(raw[0][key], raw[1][key]) for key in raw[0])
    columns = ["epoch", "step", "lr", "train_loss", "val_loss", "top1_err", "topk_err"]
    history = [pd.read_csv(folder / BACKBONE / "epochs.csv")[columns] for folder in (pretrained, run_dir)]
    pd.testing.assert_frame_equal(*history)
    assert len(history[0]) == 2


def test_weights_reach_the_detector(pretrained: Path, smoke_cache: Path):
    """The detector built for training (as bench.run builds it) holds exactly the pretrained backbone, and the
    audit in config.yaml names the pretraining run, its top-1 error and the file's sha256."""
    record = json.loads((pretrained / "classification.json").read_text())[BACKBONE]
    assert (pretrained / "sha256sums.txt").read_text() == f"{record['weights_sha256']}  {BACKBONE}.safetensors\n"
    cfg = settings.build("smoke", options={"backbones": [BACKBONE], "pretrained_dir": str(pretrained),
                                            "cache_dir": str(smoke_cache)})
    weights = load_file(pretrained / f"{BACKBONE}.safetensors")
    body = detector.build_detector(BACKBONE, 6, cfg.profile.detector, pretrained_file(cfg, BACKBONE)).backbone.body
    state = body.state_dict()
    assert set(state) == {key for key in weights if not key.endswith(".num_batches_tracked")}  # frozen BN has none
    assert all(torch.equal(state[key], weights[key]) for key in state)
    entry = audit(cfg, BACKBONE, 6)
    assert entry.weights_sha256 == record["weights_sha256"]
    assert (entry.pretrain_run, entry.pretrain_top1_err) == (str(pretrained), record["top1_err"])
    assert entry.pretrain_gmacs_224 == record["gmacs_224"] > 1


def test_pretraining_table_sits_beside_the_paper():
    from bench.layout import RunLayout
    from bench.report.load import Run, load_paper
    from bench.report.pretraining import pretraining_table
    from bench.settings import SCHEMA_VERSION, BackboneAudit, RunConfig, SavedRun

    def saved(audit: dict[str, BackboneAudit]) -> SavedRun:
        config = RunConfig(backbones=list(audit), pretrained_dir="runs/p", audit=audit)
        return SavedRun(config, RunLayout(Path("run")), SCHEMA_VERSION)

    audit = {"detnet59": BackboneAudit(weights_sha256="ab" * 32, pretrain_run="runs/p", pretrain_data="shapes",
                                       pretrain_top1_err=31.9, pretrain_gmacs_224=5.0),
             "resnet50": BackboneAudit()}
    frame = pretraining_table(Run(saved(audit), *[{}] * 7, None, None, None)).frame.set_index("backbone")
    assert frame.loc["detnet59", "top-1 err (%)"] == 31.9 and frame.loc["resnet50", "pretraining run"] != "runs/p"
    paper = load_paper()["table1"]
    row = frame.loc[f"detnet59 (paper, {paper['label']})"]
    assert row["ImageNet top-1 err (paper, %)"] == paper["rows"]["detnet59"]["ImageNet top-1 err"]
    assert list(frame.index[2:]) == [f"{name} (paper, {paper['label']})" for name in audit]
    assert pretraining_table(Run(saved({"resnet50": BackboneAudit()}), *[{}] * 7, None, None, None)) is None


@pytest.mark.slow
def test_pretrain_then_detect(pretrained: Path, smoke_cache: Path, tmp_path: Path):
    """bench.run on the pretraining folder as it is: its frozen stem keeps the pretrained weights, and the report
    puts the pretraining beside the paper's Table 1."""
    from bench.run import main as run_main

    run_dir = tmp_path / "detect"
    assert run_main(["--profile", "smoke", "--backbones", BACKBONE, "--pretrained-dir", str(pretrained),
                     "--set", "train.iterations=1", "--out", str(run_dir), "--cache-dir", str(smoke_cache),
                     "--no-progress"]) == 0
    weights = load_file(pretrained / f"{BACKBONE}.safetensors")
    trained = torch.load(run_dir / "seed0" / BACKBONE / "checkpoint.pth", weights_only=True)["model"]
    for key in ("conv1.weight", "bn1.weight", "bn1.running_var", "layer4.1.bn2.bias"):
        assert torch.equal(trained[f"backbone.body.{key}"], weights[key]), key
    table = pd.read_csv(run_dir / "tables" / "pretraining.csv")
    assert table["pretraining run"][0] == str(pretrained)
    assert "pretraining" in (run_dir / "report.md").read_text().lower()


def test_config_yaml_carries_its_format_version(pretrained: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    """Version 1 is written first; a file from before the number existed reads the same; a newer one is refused."""
    written = PretrainLayout(pretrained).config
    assert written.read_text().startswith("schema_version: 1\n")
    unnumbered = tmp_path / "unnumbered.yaml"
    unnumbered.write_text(written.read_text().removeprefix("schema_version: 1\n"))
    assert build(file=unnumbered) == build(file=written)
    committed = PretrainLayout(Path(__file__).resolve().parents[1] / "results" / "pretrain-cpu-detnet59-resnet50")
    assert "schema_version" not in committed.config.read_text() and build(file=committed.config).backbones
    newer = tmp_path / "newer.yaml"
    newer.write_text(written.read_text().replace("schema_version: 1", "schema_version: 2"))
    assert pretrain_main(["--config", str(newer), "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {newer}: schema_version 2 is not one this detbench reads (1 to 1); a newer detbench wrote it"]


def test_each_tool_names_the_other_tools_config_yaml(pretrained: Path, smoke_run: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture):
    """The two config.yaml formats number their versions apart: a file given to the wrong tool is named for what
    it is, not refused as a version or a setting that tool does not know."""
    from bench.run import main as run_main

    run_config, pretrain_config = RunLayout(smoke_run).config, PretrainLayout(pretrained).config
    assert pretrain_main(["--config", str(run_config), "--out", str(tmp_path / "a")]) == 2
    assert run_main(["--config", str(pretrain_config), "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {run_config} is a bench.run config.yaml, not a bench.pretrain one",
        f"error: {pretrain_config} is a bench.pretrain config.yaml, not a bench.run one"]
    assert not any(tmp_path.iterdir())


def test_bad_inputs_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    no_val = tmp_path / "no-val"
    (no_val / "train" / "cat").mkdir(parents=True)
    cases = {
        str(tmp_path / "missing"): "is not a folder",
        str(no_val): "has no val/ folder",
    }
    for folder, says in cases.items():
        assert pretrain_main(["--data", folder, "--backbones", BACKBONE, "--out", str(tmp_path / "out")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines
    assert not (tmp_path / "out").exists()  # nothing written before the inputs were found usable
    assert pretrain_main(["--backbones", BACKBONE, "--set", "recipe.epochs=0"]) == 2
    assert "recipe.epochs must be >= 1" in capsys.readouterr().err
