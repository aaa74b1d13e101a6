"""bench.settings: one loader for profiles, config files and --set, with every value checked; config.yaml versions."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench import settings
from bench.errors import ConfigError
from bench.settings import get_profile


def test_set_overrides_profile_sections_and_run_settings() -> None:
    cfg = settings.build("smoke", overrides=["detector.roi_canonical_scale=53.8", "train.iterations=400",
                                              "seeds=[0,1]", "train.lr_steps=[0.5,0.75]"])
    assert cfg.profile.detector.roi_canonical_scale == 53.8
    assert cfg.profile.train.iterations == 400
    assert cfg.profile.seeds == [0, 1]
    assert cfg.profile.train.lr_steps == (0.5, 0.75)
    assert cfg.profile.name == "smoke" and cfg.profile.train.batch_size == get_profile("smoke").train.batch_size


@pytest.mark.parametrize("override, message", [
    ("train.bogus=1", "Key 'bogus' not in 'TrainConfig'"),
    ("train.base_lr=fast", "could not be converted to Float"),
    ("train.iterations=2.5", "could not be converted to Integer"),
    ("train.batch_size=0", "profile.train.batch_size must be >= 1, got 0"),
    ("train.base_lr=0", "profile.train.base_lr must be > 0"),
    ("train.hflip=1.5", "profile.train.hflip must be <= 1"),
    ("detector.norm=group", "profile.detector.norm must be one of auto, frozen, batch"),
    ("detector.anchor_sizes=[8,16]", "needs 5 values, got 2"),
    ("train.lr_steps=[0.9,0.5]", "lr_steps must increase"),
    ("seeds=[]", "profile.seeds must not be empty"),
    ("seeds=[1,1]", "profile.seeds must differ"),
    ("train.iterations", "expected section.key=value"),
])
def test_bad_override_is_one_clear_error(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")) as caught:
        settings.build("smoke", overrides=[override])
    assert "\n" not in str(caught.value)


def test_config_yaml_round_trips(tmp_path: Path) -> None:
    cfg = settings.build("default", options={"profile.seeds": [3, 4], "backbones": ["resnet50"]},
                          overrides=["train.iterations=7", "detector.zero_init_last=false"])
    assert cfg.profile.detector.zero_init_last is False
    path = tmp_path / "config.yaml"
    path.write_text(settings.to_yaml(cfg))
    assert settings.build(file=path) == cfg
    assert settings.build(file=path, overrides=["train.iterations=9"]).profile.train.iterations == 9


def test_yaml_and_type_errors_in_a_file_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("backbones: [resnet50\nseeds: 1")
    with pytest.raises(ConfigError, match=r"invalid YAML at line 2"):
        settings.build(file=path)
    path.write_text("profile:\n  train:\n    batch_size: many\n")
    with pytest.raises(ConfigError, match="batch_size") as caught:
        settings.build(file=path)
    assert "\n" not in str(caught.value)


def test_first_difference_names_the_setting() -> None:
    a = settings.to_dict(settings.build("smoke"))
    b = settings.to_dict(settings.build("smoke", overrides=["train.momentum=0.8"]))
    assert settings.first_difference(a, a) is None
    assert settings.first_difference(a, b) == "profile.train.momentum"
