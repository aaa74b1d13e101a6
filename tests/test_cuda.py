"""The CUDA code paths: mixed precision, channels-last, memory statistics (skipped without a GPU).

scripts/gpu_figures.sh runs this file on a GPU machine; nothing here needs pycocotools.
"""
from __future__ import annotations

import pytest
import torch

from bench.detector import build_detector
from bench.measure import random_batch
from bench.measure.memory import peak_memory
from bench.settings import get_profile
from bench.train import build_optimizer, resolve_precision, train_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICE = torch.device("cuda")


@pytest.mark.parametrize("precision, channels_last", [("fp32", False), ("bf16", True), ("fp16", False)])
def test_training_step_on_cuda(precision: str, channels_last: bool) -> None:
    profile = get_profile("smoke")
    model = build_detector("detnet59", 4, profile.detector).to(DEVICE).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, profile.train)
    # a small initial scale, so that a random detector's first fp16 step does not overflow and get skipped
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**8, enabled=precision == "fp16")
    images, targets = random_batch(2, 128, 4, DEVICE)
    before = model.rpn.head.conv[0][0].weight.detach().clone()
    loss, losses = train_step(model, optimizer, scaler, images, targets, precision)
    assert torch.isfinite(loss) and set(losses) >= {"loss_classifier", "loss_objectness"}
    assert not torch.equal(before, model.rpn.head.conv[0][0].weight)  # the step updated the weights


def test_auto_precision_is_bf16_from_ampere_on() -> None:
    """bf16 tensor cores arrived with compute capability 8.0 (A100); before that, auto means fp32."""
    expected = "bf16" if torch.cuda.get_device_capability(DEVICE)[0] >= 8 else "fp32"
    assert resolve_precision("auto", DEVICE) == expected


def test_cuda_peak_memory_is_measured() -> None:
    model = build_detector("resnet50", 4, get_profile("smoke").detector).to(DEVICE).eval()
    with torch.inference_mode():
        memory = peak_memory(lambda: model([torch.rand(3, 128, 128, device=DEVICE)]), DEVICE)
    # a 128 px ResNet-50 detector's weights, allocated before the call, are about 160 MB in float32
    assert 100 < memory["base_mem_mb"] < 8000 and 0 < memory["peak_mem_mb"] < 8000


def test_flags_reduce_under_nccl(monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-process NCCL group: the per-step flag reduction must run (a CPU flag cannot under NCCL)."""
    import socket

    import torch.distributed

    from bench import comm

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    torch.cuda.set_device(0)
    torch.distributed.init_process_group("nccl", init_method=f"tcp://localhost:{port}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(comm, "world_size", lambda: 2)  # reduce as a job of several processes would
        assert comm.flag_device() == torch.device("cuda", 0)
        assert comm.agree(stop=True, failure=4) == (True, {0: 4})
    finally:
        torch.distributed.destroy_process_group()
