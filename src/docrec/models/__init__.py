"""The network: stochastic-depth ResNet backbone, light FPN (or the first fused FPN), segmentation and recognition heads."""

from docrec.models.docrec_model import DocRecModel
from docrec.models.factory import build_model
from docrec.models.stochastic_depth import StochasticDepthResNet, build_backbone, keep_probs
from docrec.postprocess import lines_from_maps
from docrec.text import Charset

__all__ = [
    "Charset",
    "DocRecModel",
    "StochasticDepthResNet",
    "build_backbone",
    "build_model",
    "keep_probs",
    "lines_from_maps",
]
