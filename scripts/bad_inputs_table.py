"""Print the README's table of bad inputs: each case of tests/bad_inputs.py, run through the real CLI.

    python scripts/bad_inputs_table.py > table.md

Each row is a mistake, the exit code and the one line `python -m bench.run` printed (paths shortened).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bad_inputs import CASES, run_case, table_row  # noqa: E402


def main() -> int:
    print("| mistake | exit | what the user sees |")
    print("|---|---:|---|")
    with tempfile.TemporaryDirectory() as cache:
        for case in CASES:
            with tempfile.TemporaryDirectory() as tmp:
                done, _ = run_case(case, Path(tmp), Path(cache))
                print(table_row(case, done, Path(tmp)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
