"""Peak memory of reading COCO-train-sized annotations: what each torchrun process pays.

    python scripts/annotation_memory.py [--images 118287 --boxes 860001]

Generates a COCO-format file the size of COCO 2017 train (images need not exist), then reads
it in fresh subprocesses and prints each one's peak resident memory (VmHWM, Linux):
pycocotools' COCO() (what every rank held before), detbench's checked parse and index build
(the first process on each node), and detbench's cached index (every other process).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PROBES = {
    "python with torch and detbench imported (baseline of every rank)": "import torch, bench.data",
    "pycocotools COCO(file), as every rank did before": (
        "import contextlib, io; from pycocotools.coco import COCO\n"
        "with contextlib.redirect_stdout(io.StringIO()): COCO(PATH)"),
    "detbench: parse, check and index (first process on a node)": (
        "from bench.data.coco import read_annotations, build_index; from pathlib import Path\n"
        "build_index(read_annotations(PATH), Path(PATH)).save(Path(PATH + '.index.npz'))"),
    "detbench: cached index (every other process)": (
        "from bench.data.coco import ImageIndex; from pathlib import Path\n"
        "index = ImageIndex.load(Path(PATH + '.index.npz')); print(len(index), len(index.boxes))"),
}


def generate(path: Path, images: int, boxes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    owners = rng.integers(1, images + 1, boxes)
    xywh = np.round(rng.uniform(0, 300, (boxes, 4)) + [0, 0, 1, 1], 2)
    data = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480} for i in range(1, images + 1)],
        "annotations": [{"id": n + 1, "image_id": int(owners[n]), "category_id": int(1 + n % 80),
                         "bbox": xywh[n].tolist(), "area": float(xywh[n, 2] * xywh[n, 3]), "iscrowd": 0,
                         "segmentation": [[float(v) for v in rng.uniform(0, 300, 16).round(2)]]}
                        for n in range(boxes)],
        "categories": [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in range(1, 81)],
    }
    path.write_text(json.dumps(data))


def peak_mb(code: str, path: Path) -> float:
    # VmHWM, the process's own peak resident set: ru_maxrss would carry this parent's peak across exec.
    script = ("import numpy\nPATH = " + repr(str(path)) + "\n" + code + "\n"
              "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 1024  # kB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=118_287)
    parser.add_argument("--boxes", type=int, default=860_001)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "instances_train.json"
        generate(path, args.images, args.boxes)
        print(f"annotation file: {args.images} images, {args.boxes} boxes, {path.stat().st_size / 2**20:.0f} MiB")
        for what, code in PROBES.items():
            print(f"{what}: peak RSS {peak_mb(code, path):.0f} MiB", flush=True)
        print(f"cached index file: {(Path(str(path) + '.index.npz')).stat().st_size / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
