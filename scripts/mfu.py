"""Model FLOP utilisation of GPU backbone inference, from a `bench.measure` folder.

    python scripts/mfu.py MEASURE_DIR

MFU = the backbone's FLOPs per image (FlopCounterMode, 2 per multiply-add, from
flops_by_module.csv's `backbone.body` at the detector's input size) x batch / median latency /
the card's dense bfloat16 peak (the vendor's figure, below; sparsity not counted). Only the
bfloat16 rows: a float32 row against the bf16 peak would understate its card.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

from bench.layout import RunLayout

# Dense bf16 tensor-core peaks, FLOP/s, from NVIDIA's data sheets.
PEAK_BF16 = {"H200": 989e12, "H200 NVL": 835e12, "H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 PCIe": 756e12,
             "H100 NVL": 835e12, "A100": 312e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12}


def peak(device_name: str) -> float | None:
    """The peak of the longest card name found as whole words in `device_name` ("NVIDIA L40" is not an L4)."""
    for key in sorted(PEAK_BF16, key=len, reverse=True):
        if re.search(rf"(?<!\w){re.escape(key)}(?!\w)", device_name):
            return PEAK_BF16[key]
    return None


def main(folder: str) -> int:
    layout = RunLayout(Path(folder))
    rows = pd.read_csv(layout.measurements)
    flops = pd.read_csv(layout.flops_by_module)
    body = flops[(flops["target"] == "detector") & (flops["module"] == "backbone.body")].set_index("backbone")["gflops"]
    timed = rows[(rows["target"] == "backbone") & (rows["metric"] == "latency") & (rows["device"] == "cuda")
                 & (rows["dtype"] == "bfloat16")]
    print("| backbone | dtype | channels_last | compiled | batch | latency ms | TFLOP/s | MFU (bf16 peak) |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for row in timed.itertuples():
        achieved = body[row.backbone] * 1e9 * row.batch_size / (row.latency_ms_median / 1e3)
        card = peak(str(row.device_name))
        mfu = f"{achieved / card:.1%}" if card else "unknown card"
        print(f"| {row.backbone} | {row.dtype} | {row.channels_last} | {getattr(row, 'compiled', False)} | "
              f"{row.batch_size} | {row.latency_ms_median:.2f} | {achieved / 1e12:.1f} | {mfu} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
