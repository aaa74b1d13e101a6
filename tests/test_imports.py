"""bench/ and backbones/ import each other without a cycle: every module can be read, tested and
changed from its imports down (a cycle, such as bench.evaluate <-> bench.evaluate_run once, makes
two modules one)."""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "backbones")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The known modules that `path` (module `name`) imports anywhere: top level, in functions, relatively."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from package import module` imports the module; `from module import name` the module itself
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import bench.data.coco` without a file of that name
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
    found.discard(name)
    return found


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of `packages` it imports, for every .py file under them."""
    files = {module_name(path, root): path for package in packages for path in (root / package).rglob("*.py")}
    return {name: imported_modules(path, name, set(files)) for name, path in files.items()}


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        return err.args[1]
    return None


def test_bench_has_no_import_cycle() -> None:
    graph = import_graph(ROOT)
    assert "bench.comm" in graph["bench.run"]  # the scan sees the modules and their imports
    assert import_cycle(graph) is None


@pytest.mark.parametrize("back_import", [
    "from . import evaluate",  # relative, at the top
    "def later():\n    from .evaluate import main\n",  # relative, inside a function
    "import bench.evaluate\n",  # absolute
])
def test_a_cycle_is_found_however_it_is_imported(tmp_path: Path, back_import: str) -> None:
    package = tmp_path / "bench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "evaluate.py").write_text("def main():\n    from .evaluate_run import reevaluate\n")
    (package / "evaluate_run.py").write_text(back_import + "\n")
    cycle = import_cycle(import_graph(tmp_path, ("bench",)))
    assert cycle is not None and set(cycle) == {"bench.evaluate", "bench.evaluate_run"}
