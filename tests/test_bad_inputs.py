"""Every bad input of `tests/bad_inputs.py` through the real CLI: one `error:` line, exit 2, nothing touched,
and the README's table row for it as the CLI prints it."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from bad_inputs import CASES, Case, prepare_case, run_bench, table_row

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def readme() -> str:
    return (ROOT / "README.md").read_text()


def snapshot(root: Path) -> dict[str, tuple[str, int] | None]:
    """Every folder (None) and file (sha256 of its bytes, mtime) under root."""
    return {str(path): None if path.is_dir() else (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
            for path in [root, *root.rglob("*")]}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_and_touches_nothing(case: Case, tmp_path: Path, cache: Path, readme: str) -> None:
    earlier = tmp_path / "results" / "earlier-run" / "metrics.csv"  # where a run without --out would go
    earlier.parent.mkdir(parents=True)
    earlier.write_text("an earlier result")
    argv, out = prepare_case(case, tmp_path, cache)
    before = snapshot(tmp_path)  # the shared --cache-dir may fill: it is a cache
    done = run_bench(argv, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert case.expect in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert snapshot(tmp_path) == before  # inputs, the earlier result, a file in the way of --out: as they were
    assert not out.exists()  # no run folder was started
    assert table_row(case, done, tmp_path) in readme  # every column of the README's row, as printed
