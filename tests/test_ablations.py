"""The paper's design ablations as backbones: DetNet-59-NoProj, and timm arguments in a backbone name
(`resnet50[output_stride=16]`, the dilated ResNet-50), with detbench's own `init_seed`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml

import backbones
from bench.checks import check_backbones
from bench.detector import build_detector
from bench.errors import UsageError
from bench.settings import get_profile

ROOT = Path(__file__).resolve().parents[1]
DILATED = "resnet50[output_stride=16]"


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_noproj_stage_6_starts_with_an_identity_block() -> None:
    detnet, noproj = timm.create_model("detnet59"), timm.create_model("detnet59_noproj")
    assert noproj.layer5[0].downsample is None and detnet.layer5[0].downsample is not None
    assert noproj.layer4[0].downsample is not None  # stage 5 keeps its B block
    assert [b.downsample for b in noproj.layer5[1:]] == [None, None]
    assert [i["reduction"] for i in noproj.feature_info] == [i["reduction"] for i in detnet.feature_info]


def test_noproj_differs_from_detnet59_by_exactly_the_stage_6_projection() -> None:
    detnet, noproj = timm.create_model("detnet59"), timm.create_model("detnet59_noproj")
    projection = detnet.layer5[0].downsample
    assert isinstance(projection[0], torch.nn.Conv2d) and projection[0].kernel_size == (1, 1)
    assert (projection[0].in_channels, projection[0].out_channels) == (1024, 1024)
    assert _params(projection) == 1024 * 1024 + 2 * 1024 == 1_050_624  # conv 1x1, no bias; BatchNorm weight and bias
    assert _params(detnet) - _params(noproj) == _params(projection)
    names = set(detnet.state_dict()) - set(noproj.state_dict())
    assert names and all(name.startswith("layer5.0.downsample.") for name in names)
    assert set(noproj.state_dict()) < set(detnet.state_dict())


def test_names_split_and_parse() -> None:
    names = backbones.split_backbones("detnet59, resnet50[output_stride=16, init_seed=1],resnet50")
    assert names == ["detnet59", "resnet50[output_stride=16, init_seed=1]", "resnet50"]
    parsed = backbones.parse_backbone(names[1])
    assert (parsed.text, parsed.model, parsed.kwargs, parsed.init_seed) == (names[1], "resnet50", {"output_stride": 16}, 1)
    assert backbones.parse_backbone("resnet50[drop_rate=0.1, act_layer='silu']").kwargs == {
        "drop_rate": 0.1, "act_layer": "silu"}


def test_dilated_resnet50_builds_with_timm_arguments() -> None:
    model = backbones.create_backbone(DILATED)
    assert model.feature_info.reduction() == [4, 8, 16, 16]
    assert model.layer4[0].conv2.stride == (1, 1)  # stage 5 no longer halves the resolution...
    assert [block.conv2.dilation for block in model.layer4[1:]] == [(2, 2), (2, 2)]  # ...its 3x3 convs dilate
    assert _params(model) == _params(backbones.create_backbone("resnet50"))


@pytest.mark.parametrize(("name", "message"), [
    ("resnet50[no_such_option=1]", "resnet50 has no argument 'no_such_option'"),
    ("resnet50[output_stride=7]", "resnet50 refuses output_stride=7"),
    ("resnet50[output_stride=sixteen]", "output_stride=sixteen is not a Python literal"),
    ("resnet50[16]", "write its arguments as key=value"),
    ("resnet50[output_stride=16", "write MODEL or MODEL[key=value,...]"),
    ("resnet50[init_seed=-1]", "init_seed must be a non-negative integer"),
    ("resnet50[init_seed=1.5]", "init_seed must be a non-negative integer"),
])
def test_bad_arguments_are_refused_with_one_line(name: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("(", r"\(")):
        check_backbones(["resnet50", name])


def test_the_same_backbone_twice_is_refused_however_spaced() -> None:
    with pytest.raises(UsageError, match="listed twice"):
        check_backbones(["resnet50[output_stride=16]", "resnet50[ output_stride = 16 ]"])
    check_backbones(["resnet50", "resnet50[init_seed=1]"])  # differ in init: allowed


def test_init_seed_changes_only_the_initialisation_seed() -> None:
    assert backbones.init_seed("resnet50", 3) == 3  # a plain name: the training seed, as before
    a, b = backbones.init_seed("resnet50[init_seed=1]", 3), backbones.init_seed("resnet50[init_seed=1]", 4)
    assert len({3, a, b, backbones.init_seed("resnet50[init_seed=2]", 3)}) == 4
    assert a == backbones.init_seed("resnet50[init_seed=1]", 3)
    assert backbones.create_model("resnet50[init_seed=1]").default_cfg["architecture"] == "resnet50"


def test_dilated_resnet50_detector_has_detnet_pyramid_and_pools_large_rois_from_p5() -> None:
    cfg = get_profile("smoke").detector
    dilated = build_detector(DILATED, 3, cfg).eval()
    detnet = build_detector("detnet59", 3, cfg).eval()
    assert list(dilated.backbone.strides.values()) == [4, 8, 16, 16, 16] == list(detnet.backbone.strides.values())
    pool = dilated.roi_heads.box_roi_pool
    assert pool.scales == detnet.roi_heads.box_roi_pool.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 16]
    big = torch.tensor([[0.0, 0.0, 500.0, 500.0]])  # k = floor(4 + log2(500 / 224)) = 5: P5
    assert pool.map_levels([big]).tolist() == [3]  # index 3 of (p2, p3, p4, p5)
    with torch.no_grad():
        maps = dilated.backbone(torch.randn(1, 3, 128, 128))
    assert [tuple(m.shape[-2:]) for m in maps.values()] == [(32, 32), (16, 16), (8, 8), (8, 8), (8, 8)]
    torch.testing.assert_close(maps["p6"], maps["p5"])  # P6 stays at stride 16: P5 itself
    side = 512  # an image the box fits in; each map filled with its level index
    features = {name: torch.full((1, 1, side // stride, side // stride), float(level))
                for level, (name, stride) in enumerate(dilated.backbone.strides.items())}
    pooled = pool(features, [big], [(side, side)])
    assert torch.all(pooled == 3)  # pooled from P5's map, not P4's, though both are at 1/16
    assert dilated.rpn.anchor_generator.num_anchors_per_location() == [3] * 5


def test_cli_refuses_a_bad_argument_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "bench.run", "--backbones", "resnet50,resnet50[outptu_stride=16]",
                           "--profile", "smoke", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: backbone 'resnet50[outptu_stride=16]': resnet50 has no argument 'outptu_stride'"]
    assert not out.exists()


@pytest.mark.slow
def test_smoke_run_with_arguments_and_init_seed(tmp_path: Path, smoke_cache: Path) -> None:
    """Names with brackets, commas and equals signs as folders, in config.yaml and in the report, as typed."""
    from bench.run import main

    names = [DILATED, "resnet50[output_stride=16,init_seed=1]"]
    run_dir = tmp_path / "run"
    argv = ["--profile", "smoke", "--backbones", ",".join(names), "--out", str(run_dir),
            "--cache-dir", str(smoke_cache), "--no-progress", "--set", "measure.dtypes=[float32]",
            "--set", "measure.channels_last=[false]", "--set", "measure.repeats=1", "--set", "measure.min_run_time=0.01"]
    assert main(argv) == 0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["backbones"] == names
    for name in names:
        assert (run_dir / "seed0" / name / "metrics.json").is_file()
    first, second = (torch.load(run_dir / "seed0" / name / "checkpoint.pth", weights_only=True) for name in names)
    loss = [(run_dir / "seed0" / name / "loss.csv").read_text() for name in names]
    assert loss[0] != loss[1]  # another init: other losses
    assert first["model"].keys() == second["model"].keys()
    assert not any(torch.equal(first["model"][key], second["model"][key]) for key in first["model"]
                   if key.endswith("conv1.weight"))
    report = (run_dir / "report.md").read_text()
    assert all(f"| {name}" in report for name in names)
