"""bench.overhead runs and prints its ratios in the documented form (the ratios themselves are not tested:
timing on a shared machine is noise; the benchmark's own output is what the README quotes)."""
from __future__ import annotations

import re

from bench.overhead import main


def test_overhead_prints_one_ratio_per_comparison(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the synthetic set is cached under ./.cache
    assert main(["--profile", "smoke", "--rounds", "1", "--iterations", "2", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ratios = {m.group(1): float(m.group(2)) for line in lines if (m := re.match(r"^(.+?) ratio: ([\d.]+)", line))}
    assert {"train step", "training loop", "inference"} <= set(ratios)
    assert all(value > 0 for value in ratios.values())
    assert any("images/s" in line for line in lines if line.startswith("training loop ratio"))


def test_too_few_iterations_is_one_error_line(capsys) -> None:
    assert main(["--iterations", "1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --rounds must be >= 1 and --iterations >= 2"
