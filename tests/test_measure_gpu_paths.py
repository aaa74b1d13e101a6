"""bench.measure's GPU-facing rules, checked on the CPU with fakes: compiled rows really compiled,
cuda:N synchronised, memory above its base, per-GPU training batch, out-of-memory rows, TF32 and
bf16 only where native. No inductor compilation here: a cheap dynamo backend stands in."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import nn

import bench.measure as measure_module
from bench.measure import compiled, latency_row, training_costs
from bench.measure import memory as memory_module
from bench.measure.__main__ import main
from bench.measure.compiled import compiled_timing
from bench.measure.memory import MIB, peak_memory
from bench.measure.precision import float32_label, precision, unsupported
from bench.measure.timing import Setting, throughput, time_call
from bench.settings import get_profile

CUDA1 = torch.device("cuda", 1)


def run_three_times(fn) -> list[Any]:
    return [fn() for _ in range(3)]


def call(model: nn.Module, size: int) -> torch.Tensor:
    return model(torch.ones(2, size))


@pytest.fixture()
def smoke(monkeypatch):
    """The smoke profile, timing as little as it can; rows name no CPU model (that runs collect_env)."""
    monkeypatch.setattr(measure_module, "device_name", lambda device: device.type)
    profile = get_profile("smoke")
    profile.measure = replace(profile.measure, threads=1, min_run_time=0.001, repeats=1)
    return profile


def test_settings_compiled_one_after_another_all_produce_graphs() -> None:
    """More settings than the recompile limit (8), two different models: each one is compiled."""
    models = [nn.Sequential(nn.Linear(16, 8), nn.ReLU()), nn.Sequential(nn.Linear(16, 4), nn.Tanh(), nn.Linear(4, 2))]
    for model in models:
        for size in range(1, 6):  # a new shape each time: without a reset, each would recompile the same code
            fitted = nn.Sequential(nn.Linear(size, 16), model)
            timing, fields = compiled_timing(fitted, lambda m, s=size: call(m, s), run_three_times, backend="eager")
            assert fields == {"compiled": True, "compiled_graphs": 1}, (size, fields)
            assert timing is not None


def test_a_failing_backend_is_labelled_not_compiled() -> None:
    def failing_backend(graph: Any, example_inputs: Any) -> Any:
        raise RuntimeError("no kernel for this")

    timing, fields = compiled_timing(nn.Linear(3, 3), lambda m: call(m, 3), run_three_times, backend=failing_backend)
    assert timing is None and fields["compiled"] is False and "no kernel for this" in fields["note"]


class RecompilesEveryCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * self.calls  # a new constant each call: static shapes recompile


def test_a_model_that_recompiles_is_labelled_not_compiled() -> None:
    def time_many(fn):  # more calls than the recompile limit
        return [fn() for _ in range(12)]

    timing, fields = compiled_timing(RecompilesEveryCall(), lambda m: call(m, 3), time_many, backend="eager")
    assert timing is None and fields["compiled"] is False and "not measured" in fields["note"]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_compiled_latency_row_counts_its_graphs(monkeypatch, smoke, threads: int) -> None:
    """Whatever thread count the process had: dynamo guards on it, so a compilation at another count than the
    timed one would recompile while timed (and the row would say "not compiled")."""
    monkeypatch.setattr(compiled, "BACKEND", "eager")
    setting = Setting(torch.device("cpu"), batch_size=2, dtype="float32", channels_last=False, compiled=True)
    before = torch.get_num_threads()
    torch.set_num_threads(3 - threads)  # not the count the row is timed at
    try:
        row = latency_row(nn.Linear(4, 4), torch.ones(2, 4), setting, smoke.measure, threads, backbone="m",
                          target="backbone")
    finally:
        torch.set_num_threads(before)
    assert row["compiled"] is True and row["compiled_graphs"] >= 1 and row["latency_ms_median"] > 0, row


def test_timing_synchronises_the_measured_device_by_name(monkeypatch, smoke) -> None:
    synchronised: list[Any] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synchronised.append(device))
    time_call(lambda: None, smoke.measure, 1, device=CUDA1)
    throughput(lambda: None, 2, CUDA1)
    assert synchronised and all(device == CUDA1 for device in synchronised)


class FakeCudaMemory:
    """torch.cuda's allocator statistics over a counter: `run(mb)` allocates and frees, `keep(mb)` leaves allocated."""

    def __init__(self) -> None:
        self.allocated = self.peak = 0

    def run(self, mb: int) -> None:
        self.peak = max(self.peak, self.allocated + mb * MIB)

    def keep(self, mb: int) -> None:
        self.allocated += mb * MIB

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def reset(device: Any = None) -> None:
            self.peak = self.allocated

        for name, fake in {
            "synchronize": lambda device=None: None, "empty_cache": lambda: None, "reset_peak_memory_stats": reset,
            "memory_allocated": lambda device=None: self.allocated, "max_memory_allocated": lambda device=None: self.peak,
            "memory_reserved": lambda device=None: self.allocated, "max_memory_reserved": lambda device=None: self.peak,
        }.items():
            monkeypatch.setattr(torch.cuda, name, fake)


def test_memory_rows_do_not_depend_on_the_order_of_backbones(monkeypatch) -> None:
    """Each backbone's call needs `work` MiB and (as a trained detector kept on the GPU would) leaves `kept`."""
    work, kept = {"detnet59": 300, "resnet50": 200}, {"detnet59": 70, "resnet50": 100}
    monkeypatch.setattr(memory_module, "release_free_memory", lambda device: None)  # a gc pass per call is slow
    rows = {}
    for order in (["detnet59", "resnet50"], ["resnet50", "detnet59"]):
        fake = FakeCudaMemory()
        fake.install(monkeypatch)
        for name in order:
            memory = peak_memory(lambda n=name, f=fake: f.run(work[n]), torch.device("cuda"))
            rows.setdefault(name, []).append((memory["peak_mem_mb"], memory["reserved_mem_mb"]))
            fake.keep(kept[name])
    assert rows == {name: [(mb, mb)] * 2 for name, mb in work.items()}


def fake_gpu(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int]) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")


def test_training_rows_use_the_batch_per_gpu_and_survive_out_of_memory(monkeypatch, smoke) -> None:
    """Under a world size of 8 the step is measured at 16 / 8 = 2 images; out of memory becomes a marked row."""
    profile = replace(smoke, train=replace(smoke.train, batch_size=16, precision="fp32"))
    batches: list[int] = []

    def out_of_memory(batch_size: int, *args: Any) -> Any:
        batches.append(batch_size)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(measure_module, "random_batch", out_of_memory)
    rows: list[dict] = []
    training_costs("resnet18", profile, torch.device("cpu"), 3, 1, rows.append, world_size=8)
    assert batches == [2] and [row["metric"] for row in rows] == ["memory", "throughput"]
    for row in rows:
        assert row["batch_size"] == 2 and row["global_batch_size"] == 16
        assert row["note"] == "batch per GPU: 2 of a global 16 over 8 processes; out of memory"
        assert "images_per_s" not in row and "rss_peak_mb" not in row
    measure_module.measurements_frame(rows)  # every field is a column


def test_an_out_of_memory_latency_row_is_marked(smoke) -> None:
    class OutOfMemory(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    setting = Setting(torch.device("cpu"), batch_size=1, dtype="float32", channels_last=False)
    row = latency_row(OutOfMemory(), torch.ones(1), setting, smoke.measure, 1, backbone="m", target="backbone")
    assert row["note"] == "out of memory" and "latency_ms_median" not in row


def test_bf16_and_tf32_rows_say_why_a_gpu_without_them_is_not_measured(monkeypatch, smoke) -> None:
    fake_gpu(monkeypatch, (7, 0))  # a V100
    setting = Setting(torch.device("cuda"), batch_size=1, dtype="bfloat16", channels_last=False)
    row = latency_row(nn.Linear(2, 2), None, setting, smoke.measure, 1, backbone="m", target="backbone")
    assert "not measured" in row["note"] and "7.0" in row["note"] and "latency_ms_median" not in row
    assert "not measured" in unsupported(torch.device("cuda"), "tf32")
    assert unsupported(torch.device("cuda"), "float32") is None
    fake_gpu(monkeypatch, (8, 0))  # an A100
    assert unsupported(torch.device("cuda"), "bfloat16") is None and unsupported(torch.device("cuda"), "tf32") is None
    assert "CUDA" in unsupported(torch.device("cpu"), "tf32")


def tf32_on() -> tuple[bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


@pytest.fixture()
def tf32_defaults():
    """PyTorch's defaults, TF32 on for cuDNN and off for matmuls; the process's flags restored after."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
    yield
    torch.backends.cudnn.allow_tf32 = cudnn
    torch.set_float32_matmul_precision(matmul)


def test_float32_means_float32_and_the_flags_are_restored(monkeypatch, tf32_defaults) -> None:
    for dtype, inside in [("float32", (False, False)), ("bfloat16", (False, False)), ("tf32", (True, True))]:
        with precision("cpu", dtype):
            assert tf32_on() == inside, dtype
        assert tf32_on() == (True, False), dtype
    fake_gpu(monkeypatch, (9, 0))
    assert float32_label(torch.device("cuda")) == "tf32"  # cuDNN's default: a float32 step runs in TF32
    assert float32_label(torch.device("cpu")) == "float32"
    with precision("cuda", "float32"):
        assert float32_label(torch.device("cuda")) == "float32"


def test_cli_world_size_must_split_the_batch(tmp_path, capsys) -> None:
    assert main(["--backbones", "resnet50", "--profile", "smoke", "--world-size", "3", "--out", str(tmp_path / "o")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--world-size 3" in lines[0]


class TinyDetector(nn.Module):
    """What `trained_detector_costs` needs of a detector; records where it is moved."""

    def __init__(self) -> None:
        super().__init__()
        self.roi_heads = nn.Module()
        self.roi_heads.box_head = nn.Linear(2, 2)
        self.moves: list[torch.device] = []

    def to(self, device: torch.device) -> TinyDetector:
        self.moves.append(torch.device(device))
        return self

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.roi_heads.box_head(torch.ones(3, 2))
        return [{"boxes": torch.zeros(1, 4)}]


def test_a_trained_detector_goes_back_where_it_was(smoke) -> None:
    detector, rows = TinyDetector(), []
    trained = measure_module.TrainedDetector(detector, 2, [torch.ones(3, 4, 4)])
    measure_module.trained_detector_costs("m", trained, smoke.measure, torch.device("cpu"), 1, rows.append)
    assert rows[0]["num_rois"] == 3 and rows[0]["num_detections"] == 1
    assert rows[0]["note"] == "seed 2's checkpoint"  # the report says which seed it timed from this
    assert detector.moves == [torch.device("cpu")] * 2  # to the measured device, then home
