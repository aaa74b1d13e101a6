"""Every bad input of `tests/bad_inputs.py` through the real CLI: one `error:` line, exit 2, nothing touched,
and the README's table row for it as the CLI prints it."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from bad_inputs import CASES, Case, prepare_case, run_cases, table_row

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def readme() -> str:
    return (ROOT / "README.md").read_text()


def snapshot(root: Path) -> dict[str, tuple[str, int] | None]:
    """Every folder (None) and file (sha256 of its bytes, mtime) under root."""
    return {str(path): None if path.is_dir() else (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
            for path in [root, *root.rglob("*")]}


@dataclass(frozen=True)
class Outcome:
    folder: Path  # the case's working folder, with an earlier result in it
    out: Path  # the --out it named
    before: dict  # snapshot of the folder before the run
    done: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case prepared in a folder of its own, then all run at once (`run_cases`)."""
    cache = tmp_path_factory.mktemp("cache")  # shared: the cases may fill it, it is a cache
    prepared = {}
    for case in CASES:
        folder = tmp_path_factory.mktemp(case.name)
        earlier = folder / "results" / "earlier-run" / "metrics.csv"  # where a run without --out would go
        earlier.parent.mkdir(parents=True)
        earlier.write_text("an earlier result")
        argv, out = prepare_case(case, folder, cache)
        prepared[case.name] = (folder, out, snapshot(folder), argv)
    done = run_cases([(argv, folder) for folder, _, _, argv in prepared.values()])
    return {name: Outcome(folder, out, before, result)
            for (name, (folder, out, before, _)), result in zip(prepared.items(), done, strict=True)}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_and_touches_nothing(case: Case, outcomes: dict[str, Outcome], readme: str) -> None:
    outcome = outcomes[case.name]
    done = outcome.done
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert case.expect in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert snapshot(outcome.folder) == outcome.before  # inputs, the earlier result, a file in the way of --out: as they were
    assert not outcome.out.exists()  # no run folder was started
    assert table_row(case, done, outcome.folder) in readme  # every column of the README's row, as printed


def test_the_runner_reports_what_a_process_would(tmp_path: Path) -> None:
    """A case runner that lost the exit code, the output or a traceback would pass bad CLIs."""
    ok, usage = run_cases([(["--help"], tmp_path), (["--no-such-flag"], tmp_path)])
    assert ok.returncode == 0 and "python -m bench.run" in ok.stdout and ok.stderr == ""
    assert usage.returncode == 2 and "unrecognized arguments: --no-such-flag" in usage.stderr
    (tmp_path / "crashes.py").write_text(
        'import sys\nprint("printed first")\nif sys.argv[1:] == ["raise"]:\n    raise RuntimeError("not caught")\n'
        'raise SystemExit("a message, exit 1")\n')
    jobs = [(["raise"], tmp_path), ([], tmp_path)]
    for forked, (argv, cwd) in zip(run_cases(jobs, module="crashes"), jobs, strict=True):
        real = subprocess.run([sys.executable, "-m", "crashes", *argv], cwd=cwd, capture_output=True, text=True)
        assert (forked.returncode, forked.stdout) == (real.returncode, real.stdout) == (1, "printed first\n")
        assert forked.stderr.splitlines()[-1] == real.stderr.splitlines()[-1], (forked.stderr, real.stderr)
        assert ("Traceback (most recent call last):" in forked.stderr) == (argv == ["raise"])
