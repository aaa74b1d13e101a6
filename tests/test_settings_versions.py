"""config.yaml's versions: each upgrade step on a saved file of its version, and old run folders read back typed."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from bench.errors import ConfigError, ReportError
from bench.settings import SCHEMA_VERSION, RunConfig, build, get_profile, load_run_config, to_yaml, upgrade
from bench.settings.versions import INTRODUCED, STEPS, recorded, version_of

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "data" / "config_versions"  # config.yaml of committed runs, one per older version


def fixture(version: int) -> dict:
    return yaml.safe_load((FIXTURES / f"v{version}.yaml").read_text())


def has(raw: dict, dotted: str) -> bool:
    for key in dotted.split("."):
        if not isinstance(raw, dict) or key not in raw:
            return False
        raw = raw[key]
    return True


def test_the_current_version_follows_the_saved_ones() -> None:
    assert SCHEMA_VERSION == max(int(path.stem[1:]) for path in FIXTURES.glob("v*.yaml")) + 1
    assert sorted(STEPS) == list(range(1, SCHEMA_VERSION))


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_a_saved_file_is_read_as_its_version(version: int) -> None:
    assert version_of(fixture(version)) == version


@pytest.mark.parametrize("version", range(2, SCHEMA_VERSION))
def test_each_step_adds_what_the_next_version_introduced(version: int) -> None:
    """The step from `version - 1`, on a file of that version, fills exactly the settings `version` introduced."""
    raw = fixture(version - 1)
    plain = [name for name in INTRODUCED[version] if "*" not in name]
    assert not any(has(raw, name) for name in plain)
    stepped = copy.deepcopy(raw)
    STEPS[version - 1](stepped)
    assert all(has(stepped, name) for name in plain)
    newer = fixture(version)
    for name in plain:
        assert has(newer, name), f"v{version}.yaml lacks {name}"


def test_version_1_becomes_one_seed_and_its_precision() -> None:
    raw = fixture(1)
    stepped = copy.deepcopy(raw)
    STEPS[1](stepped)
    assert "seed" not in stepped and "amp" not in stepped["profile"]["train"]
    assert stepped["profile"]["seeds"] == [raw["seed"]]
    assert stepped["profile"]["train"]["precision"] == "fp32"  # amp was fp16 autocast on CUDA only
    assert stepped["profile"]["train"]["norm_bias_weight_decay"] == raw["profile"]["train"]["weight_decay"]
    cuda = {**copy.deepcopy(raw), "device": "cuda"}
    STEPS[1](cuda)
    assert cuda["profile"]["train"]["precision"] == "fp16"


def test_version_3_audit_entries_gain_an_empty_provenance() -> None:
    stepped = copy.deepcopy(fixture(3))
    STEPS[3](stepped)
    assert stepped["profile"]["measure"]["cpu"] is True
    assert all(entry["pretrain_run"] is None for entry in stepped["audit"].values())


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_every_saved_version_upgrades_to_a_valid_run_config(version: int, tmp_path: Path) -> None:
    upgraded = upgrade(fixture(version))
    assert upgraded["schema_version"] == SCHEMA_VERSION
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(fixture(version), sort_keys=False))
    cfg = build(file=path)
    assert isinstance(cfg, RunConfig) and cfg.profile.name == "default"
    again = tmp_path / "again.yaml"
    again.write_text(to_yaml(cfg))  # what a new run (or bench.compare) writes: the current version
    assert yaml.safe_load(again.read_text())["schema_version"] == SCHEMA_VERSION
    assert build(file=again) == cfg


def test_upgrade_leaves_its_input_alone_and_keeps_recorded_values() -> None:
    raw = fixture(3)
    before = copy.deepcopy(raw)
    upgraded = upgrade(raw)
    assert raw == before
    assert upgraded["profile"]["detector"]["zero_init_last"] is False  # recorded, not filled in


def test_a_new_config_yaml_differs_only_by_its_version() -> None:
    cfg = get_profile("smoke")
    text = to_yaml(RunConfig(profile=cfg))
    first, rest = text.split("\n", 1)
    assert first == f"schema_version: {SCHEMA_VERSION}"
    assert rest == OmegaConf.to_yaml(OmegaConf.structured(RunConfig(profile=cfg)))  # as before versions


def test_a_newer_version_and_a_hand_written_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"schema_version: {SCHEMA_VERSION + 1}\n")
    with pytest.raises(ConfigError, match="newer detbench"):
        build(file=path)
    path.write_text("profile:\n  train:\n    iterations: 7\n")  # no version, no audit: settings by hand
    cfg = build("smoke", file=path)
    assert cfg.profile.train.iterations == 7 and cfg.profile.train.pin_memory is True


def test_recorded_names_what_an_older_file_had() -> None:
    assert not recorded(1, "profile.train.precision") and recorded(2, "profile.train.precision")
    assert not recorded(3, "profile.measure.cpu") and recorded(SCHEMA_VERSION, "profile.measure.cpu")


@pytest.mark.parametrize("folder, version, seeded", [
    ("20261125-025207-default-s0-detnet59-resnet50", 1, False),
    ("default-fp32-128rois", 2, True),
    ("default-residual-scale-1", 3, True),
    ("20261204-152033-default-s0+1+2-detnet59-resnet50", 4, True),
])
def test_committed_runs_load_typed_in_their_layout(folder: str, version: int, seeded: bool) -> None:
    saved = load_run_config(ROOT / "results" / folder)
    assert (saved.version, saved.layout.seeded) == (version, seeded)
    seed = saved.config.profile.seeds[0]
    assert saved.layout.result(saved.config.backbones[0], seed).metrics.is_file()


def test_a_folder_without_config_yaml_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not a run folder"):
        load_run_config(tmp_path)
