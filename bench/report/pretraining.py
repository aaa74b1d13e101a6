"""Where the ImageNet-style weights came from: the run's pretraining beside the paper's Table 1 columns.

Only for a run whose `--pretrained-dir` holds bench.pretrain output: the audit in config.yaml
then names each backbone's pretraining run, its data, its top-1 error and its GMACs at 224.
The paper's ImageNet top-1 error and FLOPs stand beside them in their own columns, labelled as
the paper's: the paper's FLOPs are the ResNet paper's older count, not this project's GMACs.
"""
from __future__ import annotations

import pandas as pd

from .load import Run, load_paper
from .table import MISSING, Table

PAPER_COLUMNS = ("ImageNet top-1 err", "FLOPs (paper's count, G)")


def pretraining_table(run: Run) -> Table | None:
    audit = run.config.audit
    if not any(entry.pretrain_run for entry in audit.values()):
        return None
    rows = [{
        "backbone": name,
        "pretraining data": entry.pretrain_data or MISSING,
        "top-1 err (%)": entry.pretrain_top1_err,
        "GMACs at 224": entry.pretrain_gmacs_224,
        "ImageNet top-1 err (paper, %)": None, "FLOPs (paper's count, G)": None,
        "weights sha256": (entry.weights_sha256 or MISSING)[:16],
        "pretraining run": entry.pretrain_run or "not a bench.pretrain run",
    } for name, entry in audit.items()]
    paper = load_paper()["table1"]
    rows += [{
        "backbone": f"{name} (paper, {paper['label']})", "pretraining data": "ImageNet-1k",
        "ImageNet top-1 err (paper, %)": values[PAPER_COLUMNS[0]], "FLOPs (paper's count, G)": values[PAPER_COLUMNS[1]],
    } for name in audit if (values := paper["rows"].get(name))]
    return Table(
        "pretraining", "Pretraining: the run's classifiers beside the paper's Table 1", pd.DataFrame(rows),
        note=("top-1 err: the bench.pretrain run's final validation error on its own data (a generated shape set is "
              "not ImageNet: compare directions, not values). GMACs: multiply-adds of one 224x224 forward of the "
              "pretrained classifier, counted by torch (bench.measure.compute). The paper's columns are its Table 1 "
              f"({paper['source']}): ImageNet-1k top-1 error and FLOPs in the paper's own count. sha256: first 16 "
              "hex digits of the weights file the detector loaded, matching the pretraining run's record."),
        formats={"GMACs at 224": ".2f"},
    )
