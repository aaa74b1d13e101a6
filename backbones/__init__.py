"""Detection backbones registered with timm: DetNet-59 here, ResNet-50/101 from timm itself.

Importing this package registers `detnet59` and `detnet59_noproj` with timm, so `timm.create_model("detnet59")`
works; `create_backbone` gives any registered model as a multi-scale feature extractor.
"""
from .detnet import DetNet, detnet59, detnet59_noproj
from .factory import WeightsError, create_backbone, load_weights_file, read_weights_file
from .names import (
    SUPPORTED_BACKBONES,
    BackboneError,
    BackboneName,
    check_backbone,
    create_model,
    init_seed,
    parse_backbone,
    split_backbones,
)

__all__ = [
    "DetNet", "detnet59", "detnet59_noproj", "SUPPORTED_BACKBONES", "BackboneError", "WeightsError", "create_backbone",
    "load_weights_file", "read_weights_file",
    "BackboneName", "check_backbone", "create_model", "init_seed", "parse_backbone", "split_backbones",
]
