"""notebooks/compare_backbones.ipynb runs top to bottom on a finished run folder."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "compare_backbones.ipynb"


def _output_text(nb: nbformat.NotebookNode) -> str:
    """Everything the cells printed or displayed, as text and HTML."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts += [str(value) for key, value in output.get("data", {}).items() if key.startswith("text/")]
    return "\n".join(parts)


def test_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_notebook_runs_on_a_run_folder(smoke_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel inherits this process's environment: the run to open, and `bench` importable from the checkout.
    monkeypatch.setenv("DETBENCH_RUN", str(smoke_run))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(new_code_cell("import sys; print('kernel python:', sys.executable)"))
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = _output_text(nb)
    assert f"kernel python: {sys.executable}" in text  # the venv's interpreter, not some other python3
    assert "Accuracy: COCO box AP (%)" in text and "resnet50 (paper, Table 2, from scratch)" in text
    assert "image/png" in {key for cell in nb.cells for out in cell.get("outputs", []) for key in out.get("data", {})}
