"""Detection backbones registered with timm: DetNet-59 here, ResNet-50/101 from timm itself.

Importing this package registers `detnet59` with timm, so `timm.create_model("detnet59")`
works; `create_backbone` gives any registered model as a multi-scale feature extractor.
"""
from .detnet import DetNet, detnet59
from .factory import SUPPORTED_BACKBONES, BackboneError, WeightsError, create_backbone, load_weights_file, read_weights_file

__all__ = [
    "DetNet", "detnet59", "SUPPORTED_BACKBONES", "BackboneError", "WeightsError", "create_backbone", "load_weights_file", "read_weights_file",
]
