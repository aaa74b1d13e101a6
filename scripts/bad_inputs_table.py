"""Print the README's table of bad inputs: each case of tests/bad_inputs.py, run through the real CLI.

    python scripts/bad_inputs_table.py > table.md

Each row is a mistake, the exit code and the one line `python -m bench.run` printed (paths shortened).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bad_inputs import CASES, prepare_case, run_cases, table_row  # noqa: E402


def main() -> int:
    print("| mistake | exit | what the user sees |")
    print("|---|---:|---|")
    with tempfile.TemporaryDirectory() as scratch:
        folders = [Path(scratch) / case.name for case in CASES]
        jobs = []
        for case, folder in zip(CASES, folders):
            folder.mkdir()
            jobs.append((prepare_case(case, folder, Path(scratch) / "cache")[0], folder))
        for case, folder, done in zip(CASES, folders, run_cases(jobs)):
            print(table_row(case, done, folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
