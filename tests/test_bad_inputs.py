"""Every bad input of `tests/bad_inputs.py` through the real CLI: one `error:` line, exit 2, nothing touched."""
from __future__ import annotations

from pathlib import Path

import pytest
from bad_inputs import CASES, Case, run_case

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_and_touches_nothing(case: Case, tmp_path: Path, cache: Path) -> None:
    sentinel = tmp_path / "results" / "earlier-run" / "metrics.csv"
    sentinel.parent.mkdir(parents=True)
    sentinel.write_text("an earlier result")
    done, out = run_case(case, tmp_path, cache)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert case.expect in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert sentinel.read_text() == "an earlier result"
    assert not out.exists()  # no run folder was started


def test_readme_table_lists_every_case() -> None:
    """The README's table comes from `python scripts/bad_inputs_table.py`: one row per case."""
    readme = (ROOT / "README.md").read_text()
    for case in CASES:
        assert f"| {case.what} |" in readme, case.name
