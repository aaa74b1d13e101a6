"""bench/comm.py is the one door to torch.distributed: flags on the backend's device, one reduction per
step, a lost peer as one line; checkpoints keep every rank's RNG states."""
from __future__ import annotations

import ast
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench import checkpoint, comm, train

ROOT = Path(__file__).resolve().parents[1]


def distributed_uses(path: Path) -> list[int]:
    """Lines of `path` that import torch.distributed or reach it as torch.distributed."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name.startswith("torch.distributed") for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and (
                (node.module or "").startswith("torch.distributed")
                or (node.module == "torch" and any(a.name == "distributed" for a in node.names))):
            lines.append(node.lineno)
        elif (isinstance(node, ast.Attribute) and node.attr == "distributed"
              and isinstance(node.value, ast.Name) and node.value.id == "torch"):
            lines.append(node.lineno)
    return lines


def test_only_the_comm_module_touches_torch_distributed() -> None:
    sources = [*(ROOT / "bench").rglob("*.py"), *(ROOT / "backbones").rglob("*.py")]
    found = {str(p.relative_to(ROOT)): distributed_uses(p) for p in sources if p.name != "comm.py" or
             p.parent.name != "bench"}
    assert {path: lines for path, lines in found.items() if lines} == {}
    assert distributed_uses(ROOT / "bench" / "comm.py")  # the scan does see an import


@pytest.fixture
def fake_world(monkeypatch: pytest.MonkeyPatch) -> list:
    """A pretended 2-process group where this process is rank 1; all_reduce is recorded, not run."""
    calls: list = []
    monkeypatch.setattr(comm.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(comm.dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(comm.dist, "get_rank", lambda group=None: 1)
    monkeypatch.setattr(comm.dist, "all_reduce", lambda tensor, op=None: calls.append(("all_reduce", op)))
    real_tensor = torch.tensor

    def tensor_on_cpu(data, device=None, **kwargs):  # record where the flags were asked for, keep them on the CPU
        calls.append(("device", torch.device(device) if device is not None else torch.device("cpu")))
        return real_tensor(data, **kwargs)

    monkeypatch.setattr(torch, "tensor", tensor_on_cpu)
    return calls


@pytest.mark.parametrize("backend, device", [("nccl", torch.device("cuda", 3)), ("gloo", torch.device("cpu"))])
def test_flags_are_reduced_on_the_backends_device(fake_world: list, monkeypatch: pytest.MonkeyPatch,
                                                  backend: str, device: torch.device) -> None:
    """NCCL has no CPU tensors: a CPU flag stopped every NCCL run at iteration 1."""
    monkeypatch.setattr(comm.dist, "get_backend", lambda group=None: backend)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    stop, failures = comm.agree(stop=True, failure=5)
    assert fake_world == [("device", device), ("all_reduce", comm.dist.ReduceOp.MAX)]  # one reduction
    assert (stop, failures) == (True, {1: 5})


def test_one_process_reduces_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(comm.dist, "all_reduce", lambda *a, **k: pytest.fail("a collective without a group"))
    assert comm.agree(stop=False, failure=0) == (False, {})
    assert comm.agree(stop=False, failure=4) == (False, {0: 4})


def test_a_failed_collective_is_a_lost_rank(fake_world: list, monkeypatch: pytest.MonkeyPatch) -> None:
    def peer_gone(tensor, op=None):
        raise RuntimeError("[gloo/transport/tcp/pair.cc:534] Read error [127.0.0.1]:4242: Connection reset by peer")

    monkeypatch.setattr(comm.dist, "get_backend", lambda group=None: "gloo")
    monkeypatch.setattr(comm.dist, "all_reduce", peer_gone)
    with pytest.raises(comm.RankLost) as caught:
        comm.agree(stop=False, failure=0)
    assert str(caught.value) == "rank 1 of 2 lost rank 0 of the job (Read error [127.0.0.1]:4242: Connection reset by peer)"


def test_a_lost_rank_is_one_line_and_exit_status_75(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    smoke_cache: Path, capsys: pytest.CaptureFixture) -> None:
    from bench import run

    def lost(*args, **kwargs):
        raise comm.RankLost("rank 0 of 2 lost rank 1 of the job (Connection reset by peer)")

    monkeypatch.setattr(run, "execute", lost)
    code = run.main(["--profile", "smoke", "--backbones", "resnet50", "--cache-dir", str(smoke_cache),
                     "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 75
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: rank 0 of 2 lost rank 1 of the job (Connection reset by peer); ")
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "failed"


def test_compile_with_syncbatchnorm_is_refused_before_any_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """From scratch on 2 GPUs BatchNorm becomes SyncBatchNorm, which torch.compile does not handle."""
    from bench import run

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(run, "check_device", torch.device)  # pretend the machine has GPUs
    argv = ["--profile", "smoke", "--backbones", "resnet50", "--device", "cuda", "--out", str(tmp_path / "run"),
            "--set", "train.compile_backbone=true", "--no-progress"]
    assert run.main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: train.compile_backbone with resnet50's BatchNorm trained on 2 GPUs (SyncBatchNorm) is not supported "
        "by torch.compile; set train.compile_backbone=false, or detector.norm=frozen"]
    assert not (tmp_path / "run").exists()
    class PastTheCheck(Exception):
        pass

    def started(*args):
        raise PastTheCheck

    monkeypatch.setattr(run.comm, "init", started)  # frozen norm: allowed, on to the process group
    with pytest.raises(PastTheCheck):
        run.main([*argv, "--set", "detector.norm=frozen"])


def test_every_rank_names_the_same_diverged_rank_and_term() -> None:
    losses = {"loss_classifier": torch.tensor(1.0), "loss_box_reg": torch.tensor(float("nan"))}
    code = train.failure_code(torch.tensor(float("nan")), losses)
    assert train.failure_code(torch.tensor(2.0), losses) == 0
    message = str(train._diverged("train resnet50 seed 0", 3, list(losses), {1: code}, world=2))
    assert message.startswith("train resnet50 seed 0: loss_box_reg became nan at iteration 3 on rank 1 ")
    alone = str(train._diverged("train", 3, ["loss_a"], {0: train.failure_code(torch.tensor(float("-inf")),
                                                                             {"loss_a": torch.tensor(float("-inf"))})},
                                world=1))
    assert alone == "train: loss_a became -inf at iteration 3"


def test_checkpoints_keep_every_ranks_rng_and_each_rank_resumes_from_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    torch.manual_seed(0)
    rank0 = checkpoint.rng_state()
    torch.manual_seed(1)
    rank1 = checkpoint.rng_state()
    monkeypatch.setattr(comm, "gather_object", lambda item: [rank0, rank1])  # what rank 0 gathers
    path = tmp_path / "checkpoint.pth"
    checkpoint.save(path, 7, model, optimizer, scheduler, scaler, {}, {})
    state = checkpoint.load(path)
    monkeypatch.setattr(comm, "rank", lambda: 1)
    torch.manual_seed(2)
    assert checkpoint.restore(state, model, optimizer, scheduler, scaler) == 7
    assert torch.equal(torch.get_rng_state(), rank1["torch"])
    state["rng"] = rank0  # a checkpoint of an older detbench: one state, rank 0's, for every process
    checkpoint.restore(state, model, optimizer, scheduler, scaler)
    assert torch.equal(torch.get_rng_state(), rank0["torch"])


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).relu()


def test_each_compiled_backbone_gets_its_own_graph() -> None:
    """Models of one class share forward's code object, and dynamo's recompile limit counts per code
    object: without a reset the second model (another input size) would run eager, silently."""
    from torch._dynamo.testing import CompileCounter

    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"  # torch < 2.7
    counter = CompileCounter()
    # config.patch, not monkeypatch: undoing a setattr on dynamo's config module can drop the setting
    with torch._dynamo.config.patch(**{limit: 1, "automatic_dynamic_shapes": False}):
        for side in (16, 24):
            model = SimpleNamespace(backbone=SimpleNamespace(body=Tiny()))
            train.compile_backbone(model, backend=counter)
            model.backbone.body(torch.rand(1, 3, side, side))
    assert counter.frame_count == 2
    torch.compiler.reset()
