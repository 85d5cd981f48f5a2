"""Necks: the backbone's C2..C5 -> one stride-4 map of ``channels`` channels for both heads.

``light`` (the default) is DBNet's neck (Liao et al. 2020): 1x1 laterals, a top-down pass, one
3x3 convolution per level down to ``channels / 4`` (depthwise separable at stride 4), each
upsampled to stride 4 and concatenated. ``fpn`` is the first neck (an FPN over C3..C5 merged
with C2 by a full 3x3 at stride 4): about five times the FLOPs, kept so that checkpoints
trained with it still load.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork

#: Stride of the fused map: a 12-pixel text line spans 3 rows here, 1.5 at stride 8.
FUSED_STRIDE = 4
#: ``model.neck`` values.
NECKS = ("light", "fpn")
#: The neck of a model config without ``model.neck``: checkpoints written before the option used it.
LEGACY_NECK = "fpn"
LEVELS = ("c2", "c3", "c4", "c5")


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


class LightFPN(nn.Module):
    """DBNet's neck: laterals to ``channels``, top-down sums, per-level 3x3 to ``channels/4``, concat at stride 4.

    The coarser levels' 3x3s run at their own resolution and the stride-4 one is depthwise
    separable, so the neck costs about a fifth of ``FusedFPN`` while keeping its output: one
    stride-4 map of ``channels`` channels in which every level, C5's page context included,
    has its own quarter of the channels.
    """

    def __init__(self, in_channels: dict[str, int], channels: int = 256) -> None:
        super().__init__()
        if channels % 4:
            raise ValueError(f"the light neck concatenates 4 levels: fpn_channels must be a multiple of 4, got {channels}")
        self.lateral = nn.ModuleDict({k: nn.Conv2d(in_channels[k], channels, 1, bias=False) for k in LEVELS})
        # At stride 4 the 3x3 is depthwise then 1x1 (a full 3x3 there cost as much as the rest of the
        # neck); the coarser levels, 4-64x fewer pixels, keep a full 3x3.
        self.smooth = nn.ModuleDict({
            k: nn.Sequential(*([nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                                nn.Conv2d(channels, channels // 4, 1, bias=False)] if k == "c2" else
                               [nn.Conv2d(channels, channels // 4, 3, padding=1, bias=False)]),
                             nn.BatchNorm2d(channels // 4), nn.ReLU(inplace=True))
            for k in LEVELS
        })
        self.out_channels = channels

    def forward(self, feats: dict[str, Tensor]) -> Tensor:
        """The fused stride-4 map [B, channels, H/4, W/4]: the four smoothed levels, concatenated."""
        top: Tensor | None = None
        outs = []
        for k in reversed(LEVELS):  # c5 first
            lat = self.lateral[k](feats[k])
            top = lat if top is None else lat + F.interpolate(top, size=lat.shape[-2:], mode="nearest")
            outs.append(self.smooth[k](top))
        size = outs[-1].shape[-2:]
        return torch.cat([F.interpolate(o, size=size, mode="nearest") if o.shape[-2:] != size else o
                          for o in reversed(outs)], dim=1)


def build_neck(kind: str, in_channels: dict[str, int], channels: int) -> nn.Module:
    """The ``model.neck`` named ``kind`` over a backbone with ``in_channels`` per level."""
    if kind not in NECKS:
        raise ValueError(f"model.neck must be one of {NECKS}, got {kind!r}")
    return (LightFPN if kind == "light" else FusedFPN)(in_channels, channels)
