"""bench.layout is the only code that names a run folder's files; both folder layouts give the same logical paths."""
from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path

import pytest

from bench.layout import PretrainLayout, RunLayout

ROOT = Path(__file__).resolve().parents[1]
FILE_NAMES = (
    "config.yaml", "status.json", "data_report.json", "metrics.csv", "receptive_field.csv", "measurements.csv",
    "flops_by_module.csv", "environment.json", "sources.json", "report.md", "report.html", "loss.csv", "eval.csv",
    "detections.json", "evaluation.npz", "analysis.json", "metrics.json", "diverged.json", "checkpoint.pth",
    "classification.json", "sha256sums.txt", "epochs.csv", "run.log",
)
FOLDER_NAMES = ("tables", "plots", "tensorboard")
# A path, a path's tail or a glob naming one of the files ("metrics.json", "*/checkpoint.pth", "/loss.csv"): no spaces.
NAMED_PATH = re.compile(rf"^(?:[^\s]*/)?(?:{'|'.join(map(re.escape, FILE_NAMES))})$")
SEED_FOLDER = re.compile(r"(?:^|/)seed\*?$")  # f"seed{k}" or a seed* glob


def sources() -> dict[str, str]:
    """Every tracked Python file of bench/ and scripts/ but bench/layout.py, and the notebook's code cells."""
    tracked = subprocess.run(["git", "ls-files", "bench/*.py", "scripts/*.py", "*.ipynb"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    found = {}
    for name in tracked:
        if name == "bench/layout.py":
            continue
        text = (ROOT / name).read_text()
        if name.endswith(".ipynb"):
            text = "\n".join("".join(cell["source"]) for cell in json.loads(text)["cells"]
                             if cell["cell_type"] == "code")
        found[name] = text
    return found


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants, which may name files to explain them."""
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {id(node.body[0].value) for node in ast.walk(tree) if isinstance(node, kinds) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def named_paths(text: str) -> list[str]:
    """The string constants (f-string pieces too) that build a run-folder path: a file's name, `x / "tables"`,
    `f"seed{k}"`; sentences that mention a file do not count."""
    tree = ast.parse(text)
    skip = docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if NAMED_PATH.match(node.value):
                found.append(node.value)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
            if node.right.value in FOLDER_NAMES:
                found.append(f"/ {node.right.value!r}")
        if isinstance(node, ast.JoinedStr):
            for piece, after in zip(node.values, node.values[1:] + [None]):
                if isinstance(piece, ast.Constant) and SEED_FOLDER.search(piece.value) and after is not None:
                    found.append(f"{piece.value}{{...}}")
    return found


def test_only_the_layout_names_run_folder_files():
    offenders = {name: found for name, text in sources().items() if (found := named_paths(text))}
    assert not offenders, f"run-folder names outside bench/layout.py: {offenders}"


@pytest.mark.parametrize("code", ['path / "metrics.json"', 'glob("seed*/*/checkpoint.pth")', 'f"{root}/loss.csv"',
                                  'f"seed{seed}"', 'run_dir / "tables"', 'RESULT = ("eval.csv",)'])
def test_the_check_sees_a_named_path(code):
    assert named_paths(code)


def test_the_report_templates_ask_the_layout_for_their_links():
    templates = sorted((ROOT / "bench" / "report" / "templates").glob("*.j2"))
    spelled = {path.name: hits for path in templates
               if (hits := re.findall(rf"\b(?:{'|'.join(FOLDER_NAMES)})/", path.read_text()))}
    assert templates and not spelled, f"folder names spelled in report templates: {spelled}"


@pytest.mark.parametrize("code", ['"a finished backbone\'s metrics.json"', 'def f():\n    """Writes metrics.json."""',
                                  '{"tables": tables}', 'f"seed {seed}"'])
def test_the_check_lets_sentences_pass(code):
    assert not named_paths(code)


def test_both_layouts_name_the_same_files(tmp_path):
    seeded, single = RunLayout(tmp_path), RunLayout(tmp_path, seeded=False)
    for name in ("config", "status", "metrics", "measurements", "environment", "tables", "report_md"):
        assert getattr(seeded, name) == getattr(single, name)
    assert seeded.result("detnet59", 1).folder == tmp_path / "seed1" / "detnet59"
    assert single.result("detnet59", 0).folder == tmp_path / "detnet59"
    for name in ("checkpoint", "loss", "eval", "detections", "evaluation", "analysis", "metrics", "diverged"):
        seeded_file, single_file = (getattr(layout.result("detnet59", 0), name) for layout in (seeded, single))
        assert seeded_file.name == single_file.name
        assert seeded_file.relative_to(tmp_path / "seed0") == single_file.relative_to(tmp_path)
    assert single.relative().result("resnet50", 0).metrics == Path("resnet50/metrics.json")


def test_checkpoints_are_found_with_their_backbone_and_seed(tmp_path):
    layout = RunLayout(tmp_path)
    for name, seed in (("resnet50", 2), ("detnet59", 0)):
        layout.result(name, seed).folder.mkdir(parents=True)
        layout.result(name, seed).checkpoint.touch()
    assert [(name, seed) for name, seed, _ in layout.checkpoints()] == [("detnet59", 0), ("resnet50", 2)]


def test_the_committed_runs_read_in_their_own_layout():
    old = RunLayout(ROOT / "results" / "20261125-025207-default-s0-detnet59-resnet50", seeded=False)
    new = RunLayout(ROOT / "results" / "20261126-023056-default-s0+1-detnet59-resnet50")
    for layout in (old, new):
        assert layout.config.is_file() and layout.metrics.is_file()
        assert layout.result("detnet59", 0).metrics.is_file()


def test_the_pretraining_layout(tmp_path):
    layout = PretrainLayout(tmp_path)
    assert layout.weights("detnet59") == tmp_path / "detnet59.safetensors" == layout.weights_choices("detnet59")[0]
    assert layout.checkpoint("detnet59").parent == layout.backbone_dir("detnet59")
    assert PretrainLayout(ROOT / "results" / "pretrain-cpu-detnet59-resnet50").classification.is_file()
