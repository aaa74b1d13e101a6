"""Failures that are events, not inputs, through the CLI in subprocesses: a diverged backbone, a full disk,
an image unreadable as it loads, CUDA out of memory. Each ends with its own exit status (README's table)
and one `error:` line, no traceback, and keeps what it says it keeps."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from bad_inputs import write_coco

from bench import data
from bench.errors import ExitStatus

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # this checkout's bench, from any folder
ITERATIONS = 6
MEASURE_LITTLE = ["--set", "measure.detection_size=64", "--set", "measure.classification_size=64",
                  "--set", "measure.repeats=1"]  # what these tests are about comes before the cost measurement
ARGS = ["--backbones", "resnet50", "--profile", "smoke", "--no-progress", "--set", f"train.iterations={ITERATIONS}",
        "--set", "train.checkpoint_every=2", *MEASURE_LITTLE]
TRAIN_IMAGES = 6  # 3 batches of 2 an epoch: iterations 1-3 are epoch 0


def bench_run(*argv: str, cwd: Path, runner: tuple[str, ...] = ("-m", "bench.run"), **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *runner, *argv], cwd=cwd, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def finish(process: subprocess.Popen) -> tuple[int, list[str]]:
    """Exit status and the non-empty stderr lines."""
    _, err = process.communicate()
    return process.returncode, [line for line in err.splitlines() if line.strip()]


def one_error_line(lines: list[str]) -> str:
    """The single `error:` line, which ends stderr; anything before it is a `warning:` line."""
    assert lines and lines[-1].startswith("error: "), lines[-20:]
    assert all(line.startswith("warning: ") for line in lines[:-1]), lines
    return lines[-1]


def saved_iteration(folder: Path) -> int:
    return torch.load(folder / "checkpoint.pth", weights_only=True, mmap=True)["iteration"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def corrupt_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path, int]:
    """A tiny COCO set whose training image met at iteration 3 has a readable header but truncated data,
    so the up-front check (headers) passes and only loading it fails: (data options, that file, its id)."""
    root = tmp_path_factory.mktemp("data")
    train_ann, train_images = write_coco(root, "train", count=TRAIN_IMAGES)
    val_ann, val_images = write_coco(root, "val")
    position = data.epoch_batches([1] * TRAIN_IMAGES, 2, seed=0, epoch=0)[2][0]  # epoch 0's last batch
    image_id = position + 1
    path = train_images / f"{image_id}.jpg"
    content = path.read_bytes()
    path.write_bytes(content[:content.index(b"\xff\xda") + 20])  # up to the start of the compressed data
    argv = ["--train-ann", str(train_ann), "--train-images", str(train_images), "--val-ann", str(val_ann),
            "--val-images", str(val_images)]
    return argv, path, image_id


@pytest.fixture(scope="module")
def skipping_run(tmp_path_factory: pytest.TempPathFactory, corrupt_set, cache: Path) -> tuple[Path, list[str]]:
    """An uninterrupted run on the corrupt set, which skips the bad image: (run folder, stderr lines)."""
    folder = tmp_path_factory.mktemp("skipping")
    status, lines = finish(bench_run(*ARGS, *corrupt_set[0], "--out", str(folder / "run"), "--cache-dir", str(cache),
                                     cwd=folder))
    assert status == ExitStatus.OK, lines[-20:]
    return folder / "run", lines


@pytest.mark.slow
def test_a_diverged_backbone_leaves_everything_else_written_and_exits_3(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "run"
    process = bench_run("--profile", "smoke", "--backbones", "detnet59,resnet50", "--out", str(out), "--cache-dir",
                        str(cache), "--no-progress", "--set", "train.base_lr=1e6", "--set", "train.iterations=4",
                        "--set", "train.checkpoint_every=2", *MEASURE_LITTLE, cwd=tmp_path)
    status, lines = finish(process)
    assert status == ExitStatus.DIVERGED
    line = one_error_line(lines)
    assert "2 training(s) diverged (detnet59 seed 0, resnet50 seed 0)" in line and str(out) in line
    for name in ("detnet59", "resnet50"):  # the first diverging does not stop the second
        folder = out / "seed0" / name
        reason = json.loads((folder / "diverged.json").read_text())["reason"]
        assert "became nan at iteration" in reason and "loss_" in reason
        assert saved_iteration(folder) == 2  # the last good one
        assert any(line.startswith(f"warning: train {name} seed 0: loss_") for line in lines)
    assert "diverged (train detnet59 seed 0" in (out / "report.md").read_text()
    assert (out / "measurements.csv").is_file() and (out / "report.html").is_file()
    assert json.loads((out / "status.json").read_text()) | {"updated": None} == {
        "state": "finished", "reason": None, "diverged": ["detnet59 seed 0", "resnet50 seed 0"], "updated": None}


@pytest.mark.slow
def test_an_image_unreadable_as_it_loads_is_skipped_once_and_recorded(skipping_run, corrupt_set) -> None:
    run, lines = skipping_run
    _, path, image_id = corrupt_set
    warning = (f"warning: skipped a training image unreadable as it loaded: {path}: cannot read image id {image_id} "
               "(image file is truncated (6 bytes not processed)); replace or remove it; the next readable image "
               f"takes its place (recorded in {run / 'data_report.json'})")
    assert lines == [warning]  # met in two epochs, told once
    report = json.loads((run / "data_report.json").read_text())
    assert report["skipped"]["unreadable_image"] == {"count": 1, "example_id": image_id, "image_ids": [image_id]}
    assert report["warnings"] == [lines[0].removeprefix("warning: ").split(" (recorded in")[0]]
    assert saved_iteration(run / "seed0" / "resnet50") == ITERATIONS


def test_the_next_readable_image_takes_an_unreadable_ones_place(corrupt_set) -> None:
    argv, path, image_id = corrupt_set
    split = data.load_split(argv[1], argv[3], cache_dir=None, strict=False, keep_data=False)
    skipping = data.CocoDetection(split.index, split.image_dir, split.ann_path, train=True, skip_unreadable=True)
    position = skipping.ids.index(image_id)
    image, target = skipping[data.SampleKey(0, position)]
    follower = skipping[data.SampleKey(0, position + 1)]
    assert target["image_id"] == follower[1]["image_id"] == image_id + 1 and torch.equal(image, follower[0])
    assert [entry[0] for entry in target["unreadable"]] == [image_id] and "unreadable" not in follower[1]
    strict = data.CocoDetection(split.index, split.image_dir, split.ann_path, train=True)
    with pytest.raises(data.DataError, match=f"{path}: cannot read image id {image_id}"):
        strict[data.SampleKey(0, position)]


def test_strict_data_stops_at_an_unreadable_image_with_the_last_whole_step_saved(tmp_path: Path, corrupt_set,
                                                                                  cache: Path) -> None:
    argv, path, image_id = corrupt_set
    run = tmp_path / "run"
    status, lines = finish(bench_run(*ARGS, *argv, "--strict-data", "--set", "train.checkpoint_every=5",  # none at 2
                                     "--out", str(run), "--cache-dir", str(cache), cwd=tmp_path))
    assert status == ExitStatus.BAD_INPUT
    assert lines == [(f"error: {path}: cannot read image id {image_id} (image file is truncated (6 bytes not "
                      "processed)); replace or remove it; train resnet50 seed 0 stopped, its checkpoint after "
                      "iteration 2 is kept")]
    assert saved_iteration(run / "seed0" / "resnet50") == 2
    assert json.loads((run / "status.json").read_text())["state"] == "failed"


def ignore_file_size_signal() -> None:
    """In the child: past RLIMIT_FSIZE a write fails with EFBIG instead of the signal killing the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@pytest.mark.slow
def test_a_full_disk_keeps_the_last_checkpoint_and_resume_finishes_the_same(tmp_path: Path, corrupt_set, cache: Path,
                                                                            skipping_run) -> None:
    """The disk fills (a 1 MB file-size limit, set once the first checkpoint is saved) before the second
    checkpoint: exit 5, that checkpoint and the log intact; --resume, with space again, ends as the run that
    never stopped, the unreadable image skipped the same way."""
    run = tmp_path / "run"
    folder = run / "seed0" / "resnet50"
    process = bench_run(*ARGS, *corrupt_set[0], "--out", str(run), "--cache-dir", str(cache), cwd=tmp_path,
                        preexec_fn=ignore_file_size_signal)
    deadline = time.monotonic() + 300
    while not (folder / "checkpoint.pth").is_file():  # appears whole, by rename, after iteration 2
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.02)
    resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
    status, lines = finish(process)
    assert status == ExitStatus.DISK_FULL
    assert lines[-1] == (f"error: no space left writing {folder / 'checkpoint.pth'} (File too large); it and every "
                         f"earlier file are intact: free space, then `python -m bench.run --resume {run}`")
    one_error_line(lines)
    assert saved_iteration(folder) == 2 and not list(folder.glob(".*.tmp"))
    assert json.loads((run / "status.json").read_text())["state"] == "failed"

    status, lines = finish(bench_run("--resume", str(run), "--no-progress", cwd=tmp_path))
    assert status == ExitStatus.OK, lines[-20:]
    reference = skipping_run[0] / "seed0" / "resnet50"
    ours, theirs = (torch.load(f / "checkpoint.pth", weights_only=True)["model"] for f in (folder, reference))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours)
    stats = [json.loads((f / "metrics.json").read_text())["stats"] for f in (folder, reference)]
    assert stats[0] == stats[1]
    assert json.loads((run / "data_report.json").read_text()) == json.loads(
        (skipping_run[0] / "data_report.json").read_text())


def test_cuda_out_of_memory_names_the_batch_keeps_the_checkpoint_and_exits_4(tmp_path: Path, cache: Path) -> None:
    run = tmp_path / "run"
    process = bench_run(*ARGS, "--out", str(run), "--cache-dir", str(cache), cwd=tmp_path,
                        runner=(str(ROOT / "tests" / "oom_runner.py"),))
    status, lines = finish(process)
    assert status == ExitStatus.OUT_OF_MEMORY
    precision = yaml.safe_load((run / "config.yaml").read_text())["profile"]["train"]["precision"]
    folder = run / "seed0" / "resnet50"
    assert lines == [(f"error: train resnet50 seed 0: CUDA out of memory at iteration 3 with a batch of 2 (2 per GPU) "
                      f"at input size 128-128 px in {precision}; the last checkpoint {folder / 'checkpoint.pth'} is "
                      f"kept; `python -m bench.run --resume {run}` retries as it was, a new run with `--config "
                      f"{run / 'config.yaml'} --set train.batch_size=1` needs less memory")]
    assert saved_iteration(folder) == 2
    assert json.loads((run / "status.json").read_text())["state"] == "failed"
