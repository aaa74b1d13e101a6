"""The command-line layer: only entry points import bench.cli, every tool shares its options and their
defaults, the console and run.log say the same thing, and a mistake is still one line."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from bench.checks import DEVICE_DEFAULT
from bench.layout import RunLayout

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("run", "compare", "evaluate", "measure.__main__", "report.__main__", "overhead", "pretrain.__main__")
WITH_DEVICE = ("run", "evaluate", "measure.__main__", "overhead", "pretrain.__main__")
GT = ROOT / "tests" / "data" / "coco-val2014-100" / "instances_val2014_100.json"
DETECTIONS = GT.with_name("fakebbox100_results.json")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """The bench modules a file imports, as absolute names, leaving out what its `__main__` guard imports."""
    tree = ast.parse(path.read_text())
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    guards = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    skipped = {id(inner) for guard in guards for inner in ast.walk(guard)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            source = ".".join(filter(None, (base, node.module)))
            names |= {source} | {f"{source}.{alias.name}" for alias in node.names}
    return {name for name in names if name == "bench" or name.startswith("bench.")}


def test_only_entry_points_import_the_cli() -> None:
    """An entry point is a `__main__` module, or a command module (with a `__main__` guard) that no other
    bench module imports; library code never reaches bench.cli, not even through a command module."""
    sources = {module_name(path): path for path in sorted((ROOT / "bench").rglob("*.py"))}
    imports = {name: imported(path) for name, path in sources.items()}
    imported_anywhere = set().union(*imports.values())
    commands = {name for name, path in sources.items()
                if path.name == "__main__.py" or 'if __name__ == "__main__"' in path.read_text()}
    entry_points = commands - imported_anywhere
    assert {"bench.run", "bench.compare", "bench.overhead", "bench.evaluate"} <= entry_points
    offenders = sorted(name for name, found in imports.items() if "bench.cli" in found and name not in entry_points)
    assert offenders == [], f"library modules importing bench.cli: {offenders}"
    reaching = sorted(f"{name} imports {target}" for name, found in imports.items() for target in found & entry_points)
    assert reaching == [], "library modules importing an entry point"
    assert "bench.run" not in imports["bench.compare"]


def test_every_logger_is_under_bench_also_under_python_m() -> None:
    """A command module's `__name__` is "__main__" under `python -m`, outside the `bench` logger and its console."""
    for path in sorted((ROOT / "bench").rglob("*.py")):
        text = path.read_text()
        command = path.name == "__main__.py" or 'if __name__ == "__main__"' in text
        for call in re.findall(r"^log = logging\.getLogger\((.*?)\)", text, re.MULTILINE):
            assert call == ("__spec__.name" if command else "__name__"), f"{path}: getLogger({call})"


@pytest.mark.parametrize("tool", WITH_DEVICE)
def test_every_tool_says_the_same_device_default(tool: str, capsys) -> None:
    main = __import__(f"bench.{tool}", fromlist=["main"]).main
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"--device DEVICE cpu, cuda or cuda:N (default: {DEVICE_DEFAULT})" in help_text
    assert "--log-level {DEBUG,INFO,WARNING,ERROR}" in help_text


@pytest.mark.parametrize("tool", sorted(set(TOOLS) - set(WITH_DEVICE)))
def test_every_tool_has_a_log_level(tool: str, capsys) -> None:
    main = __import__(f"bench.{tool}", fromlist=["main"]).main
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--log-level {DEBUG,INFO,WARNING,ERROR}" in capsys.readouterr().out


def test_log_level_warning_silences_information(capsys) -> None:
    from bench.evaluate import main

    assert main(["--gt", str(GT), "--detections", str(DETECTIONS), "--format", "json"]) == 0
    assert capsys.readouterr().out.startswith('{"AP": ')
    assert main(["--gt", str(GT), "--detections", str(DETECTIONS), "--log-level", "warning"]) == 0
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("argv, message", [
    (["--backbones", "detnet99"], "error: unknown backbone 'detnet99'; the paper's are detnet59, resnet50"),
    (["--backbones", "resnet50", "--log-level", "loud"], "error: argument --log-level: invalid choice: 'LOUD'"),
    (["--backbones", "resnet50", "--device", "mps", "--log-level", "ERROR"], "error: device must be cpu or cuda"),
])
def test_a_mistake_is_still_one_line(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    from bench.measure.__main__ import main

    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(message), err
    assert not (tmp_path / "out").exists()


def test_run_log_holds_what_the_console_said(smoke_run: Path) -> None:
    """run.log: the per-backbone lines and the summary, timestamped, never a bar's carriage-return redraw."""
    text = RunLayout(smoke_run).run_log.read_text()
    assert "\r" not in text
    lines = text.splitlines()
    stamped = [line for line in lines if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line)]
    assert any(re.search(r" resnet50 seed 1: 2 iterations in [\d.]+ min, AP [\d.]+, AP50", line) for line in stamped)
    assert re.search(r" smoke profile, 2 backbone\(s\) x 2 seed\(s\), [\d.]+ min; report: .*report\.md$", stamped[-1])


def test_a_bar_leaves_run_log_its_final_line_and_no_redraw(tmp_path: Path, capsys) -> None:
    """On a terminal tqdm redraws its bar; run.log gets one line for it, and the periodic lines of a log as they come."""
    import io

    from bench import logs
    from bench.progress import Bar, LineProgress

    with logs.console():
        logs.attach_run_log(RunLayout(tmp_path))
        with Bar(total=3, desc="train x", file=io.StringIO(), mininterval=0) as bar:
            for _ in range(3):
                bar.update()
                bar.set_postfix(loss=1.5)
        with LineProgress(total=2, desc="evaluate x", interval=0) as lines:
            lines.update(2)
    text = RunLayout(tmp_path).run_log.read_text()
    assert "\r" not in text
    shown = [line.split(" ", 2)[2] for line in text.splitlines()]
    assert shown == ["train x: 3/3 (100%), loss=1.5, 0:00 elapsed",
                     "evaluate x: 2/2 (100%), 0:00 elapsed", "evaluate x: 2/2 (100%), 0:00 elapsed"]
    assert capsys.readouterr() == ("", "evaluate x: 2/2 (100%), 0:00 elapsed\n" * 2)
