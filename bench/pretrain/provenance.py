"""The handover to detection: the exported weights file, and what bench.run records about where it came from.

A pretraining run folder holds `<backbone>.safetensors` (what `bench.run --pretrained-dir` loads
as it is: the backbone in timm's layout, without its classifier, which
`backbones.read_weights_file` accepts as a headless checkpoint) and `classification.json`,
which names each file's sha256. bench.run reads that file back, and only trusts it for a
weights file whose sha256 still matches.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save
from torch import nn

from ..files import sha256, write_bytes
from ..layout import PretrainLayout


def export_weights(model: nn.Module, path: Path) -> str:
    """Write `model`'s state dict without its classifier as safetensors; return the file's sha256."""
    head = model.pretrained_cfg.get("classifier") or "fc"
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in model.state_dict().items()
               if not key.startswith(f"{head}.")}
    write_bytes(path, save(tensors))
    return sha256(path)


def read_provenance(weights_file: Path, backbone: str) -> dict[str, Any] | None:
    """The pretraining run that made `weights_file` (`BackboneAudit`'s pretrain_* fields), if its folder is one
    and the file is unchanged since."""
    record = PretrainLayout(weights_file.parent).classification
    if not record.is_file():
        return None
    try:
        entry = json.loads(record.read_text()).get(backbone)
    except (json.JSONDecodeError, AttributeError):
        return None
    if not isinstance(entry, dict) or entry.get("weights_sha256") != sha256(weights_file):
        return None
    return {"pretrain_run": str(weights_file.parent), "pretrain_data": entry["data"],
            "pretrain_top1_err": entry["top1_err"], "pretrain_gmacs_224": entry["gmacs_224"]}

