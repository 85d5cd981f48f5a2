"""Neck: an FPN over C3..C5 whose finest output is merged with C2 into one stride-4 map."""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork

#: Stride of the fused map: a 12-pixel text line spans 3 rows here, 1.5 at stride 8.
FUSED_STRIDE = 4


class FusedFPN(nn.Module):
    """FPN (torchvision) over C3, C4, C5; P3 upsampled and added to a lateral of C2, then smoothed."""

    def __init__(self, in_channels: dict[str, int], channels: int = 256) -> None:
        super().__init__()
        # C3..C5 rather than C2..C4: layer4 carries the page-level context that separates
        # region kinds, and C2 still enters the fused map for resolution.
        self.fpn = FeaturePyramidNetwork([in_channels[k] for k in ("c3", "c4", "c5")], channels)
        self.lateral2 = nn.Conv2d(in_channels["c2"], channels, 1)
        self.fuse = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.out_channels = channels

    def forward(self, feats: dict[str, Tensor]) -> Tensor:
        """The fused stride-4 map [B, channels, H/4, W/4]."""
        pyramid = self.fpn(OrderedDict((k, feats[k]) for k in ("c3", "c4", "c5")))
        c2 = feats["c2"]
        p3 = F.interpolate(pyramid["c3"], size=c2.shape[-2:], mode="nearest")
        return self.fuse(self.lateral2(c2) + p3)
