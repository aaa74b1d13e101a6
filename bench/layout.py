"""Where everything lies in a run folder, and in a pretraining run folder: the only module that knows the names.

Every tool that writes or reads a run (bench.run, --resume, bench.compare, bench.evaluate --run,
bench.report, the scripts and the notebook) asks a `RunLayout` for its paths, so a file is named
once. A detection run keeps one folder per backbone and seed, `seed<k>/<backbone>/`; folders
written before seeds existed keep one seed's `<backbone>/` at the top (`seeded=False`), and which
of the two a folder has is decided by its config.yaml's schema version (`bench.settings`).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "config.yaml"
STATUS_NAME = "status.json"
RUN_LOG_NAME = "run.log"  # what the console showed, with timestamps (bench.logs)
CHECKPOINT_NAME = "checkpoint.pth"


@dataclass(frozen=True)
class ResultFiles:
    """What training one backbone with one seed, and evaluating it, writes into its folder."""

    folder: Path

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINT_NAME

    @property
    def loss(self) -> Path:
        return self.folder / "loss.csv"

    @property
    def eval(self) -> Path:  # validation AP during training (train.eval_every)
        return self.folder / "eval.csv"

    @property
    def tensorboard(self) -> Path:
        return self.folder / "tensorboard"

    @property
    def detections(self) -> Path:
        return self.folder / "detections.json"

    @property
    def evaluation(self) -> Path:  # per-image matches, for the bootstrap
        return self.folder / "evaluation.npz"

    @property
    def analysis(self) -> Path:
        return self.folder / "analysis.json"

    @property
    def metrics(self) -> Path:  # written last: a folder with it is finished
        return self.folder / "metrics.json"

    @property
    def diverged(self) -> Path:
        return self.folder / "diverged.json"

    def kept(self) -> tuple[Path, ...]:
        """What a merged run (bench.compare) copies: everything but the checkpoint, validation AP during training and
        the TensorBoard log."""
        return self.metrics, self.analysis, self.loss, self.detections, self.evaluation, self.diverged


@dataclass(frozen=True)
class RunLayout:
    """A detection run folder. `seeded`: `seed<k>/<backbone>/` (every run since seeds existed), else `<backbone>/`."""

    root: Path
    seeded: bool = True

    @property
    def config(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def status(self) -> Path:
        return self.root / STATUS_NAME

    @property
    def data_report(self) -> Path:
        return self.root / "data_report.json"

    @property
    def metrics(self) -> Path:  # one row per finished backbone-seed
        return self.root / "metrics.csv"

    @property
    def receptive_field(self) -> Path:
        return self.root / "receptive_field.csv"

    @property
    def measurements(self) -> Path:
        return self.root / "measurements.csv"

    @property
    def flops_by_module(self) -> Path:
        return self.root / "flops_by_module.csv"

    @property
    def environment(self) -> Path:
        return self.root / "environment.json"

    @property
    def run_log(self) -> Path:
        return self.root / RUN_LOG_NAME

    @property
    def sources(self) -> Path:  # the folders a merged or re-evaluated run came from
        return self.root / "sources.json"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def table_csv(self, name: str) -> Path:
        return self.tables / f"{name}.csv"

    def table_md(self, name: str) -> Path:
        return self.tables / f"{name}.md"

    def plot_png(self, name: str) -> Path:
        return self.plots / f"{name}.png"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    def measured(self) -> tuple[Path, ...]:
        """What measurement wrote, which does not depend on the weights: a re-evaluated run keeps it."""
        return self.measurements, self.flops_by_module, self.environment, self.receptive_field

    def result(self, backbone: str, seed: int) -> ResultFiles:
        """One backbone-seed's folder."""
        return ResultFiles(self.root / f"seed{seed}" / backbone if self.seeded else self.root / backbone)

    def relative(self) -> RunLayout:
        """The same layout from the run folder itself, for paths named in a report or a message."""
        return RunLayout(Path(), self.seeded)

    def checkpoints(self) -> Iterator[tuple[str, int, Path]]:
        """(backbone, seed, checkpoint) of every saved checkpoint, whatever the config says, in path order."""
        for path in sorted(self.root.glob(f"seed*/*/{CHECKPOINT_NAME}")):
            yield path.parent.name, int(path.parent.parent.name.removeprefix("seed")), path


def run_folders(parent: Path) -> list[Path]:
    """The run folders directly under `parent` (those with a config.yaml), oldest config.yaml first."""
    return [path.parent for path in sorted(parent.glob(f"*/{CONFIG_NAME}"), key=lambda path: path.stat().st_mtime)]


@dataclass(frozen=True)
class PretrainLayout:
    """A `bench.pretrain` run folder, which is also what `bench.run --pretrained-dir` reads weights from."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def status(self) -> Path:
        return self.root / STATUS_NAME

    @property
    def run_log(self) -> Path:
        return self.root / RUN_LOG_NAME

    @property
    def classification(self) -> Path:  # errors, cost and sha256 of each backbone's exported weights
        return self.root / "classification.json"

    @property
    def sha256sums(self) -> Path:
        return self.root / "sha256sums.txt"

    def weights(self, backbone: str) -> Path:
        """The exported backbone, as `bench.run --pretrained-dir` loads it."""
        return self.root / f"{backbone}.safetensors"

    def weights_choices(self, backbone: str) -> tuple[Path, Path]:
        """The files --pretrained-dir may hold for `backbone`, preferred first: safetensors, then a torch file."""
        return self.weights(backbone), self.root / f"{backbone}.pth"

    def backbone_dir(self, backbone: str) -> Path:
        return self.root / backbone

    def checkpoint(self, backbone: str) -> Path:
        return self.backbone_dir(backbone) / CHECKPOINT_NAME

    def epochs(self, backbone: str) -> Path:
        return self.backbone_dir(backbone) / "epochs.csv"

    def checkpoints(self) -> list[Path]:
        return sorted(self.root.glob(f"*/{CHECKPOINT_NAME}"))
