"""Segmentation head: per-pixel line classes and a line-core map, with their losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from docrec.text import IGNORE_INDEX


class SegmentationHead(nn.Module):
    """Class logits (background + one per kind), a line-core logit and region logits from the fused map.

    Regions (e.g. form fields) are independent sigmoid maps, one per region kind: a form
    field holds printed or handwritten lines, so it cannot be one more line class.

    The logits are upsampled bilinearly to the input resolution, where the losses are
    computed: at stride 4 the core of a 12-pixel line (6 pixels) and the gap to its
    neighbour would be one or two rows.
    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 64, stride: int = 4,
                 num_regions: int = 0) -> None:
        super().__init__()
        self.num_classes, self.num_regions = num_classes, num_regions
        self.stride = stride
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(hidden, num_classes + 1 + num_regions, 1)

    def forward(self, fused: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(class logits [B, C, H, W], core logits [B, H, W], region logits [B, R, H, W]) at ``stride`` x the map."""
        logits = self.out(self.trunk(fused))
        logits = F.interpolate(logits, scale_factor=self.stride, mode="bilinear", align_corners=False)
        # One split, not three slices: each slice's backward zero-fills a gradient of the full-resolution logits.
        classes, core, regions = logits.split([self.num_classes, 1, self.num_regions], dim=1)
        return classes, core.squeeze(1), regions


def dice_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None, eps: float = 1.0) -> Tensor:
    """1 - soft Dice over the whole batch (balances the thin cores against the background); ``weight`` 0 = ignored."""
    prob = logits.sigmoid()
    if weight is not None:
        prob, target = prob * weight, target * weight
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + eps) / (prob.sum() + target.sum() + eps)


def _bce_dice(logits: Tensor, mask: Tensor) -> Tensor:
    """BCE + Dice of a uint8 mask (1 positive, 0 negative, IGNORE_INDEX no loss)."""
    weight = (mask != IGNORE_INDEX).float()
    target = (mask == 1).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")
    return bce / weight.sum().clamp(min=1.0) + dice_loss(logits, target, weight)


def segmentation_losses(
    class_logits: Tensor, core_logits: Tensor, class_mask: Tensor, core_mask: Tensor,
    region_logits: Tensor | None = None, region_mask: Tensor | None = None,
) -> dict[str, Tensor]:
    """Unweighted ``seg`` (cross-entropy, 255 ignored), ``core`` (BCE + Dice, 255 ignored) and,
    with region channels, ``region`` (BCE + Dice per region kind; ``region_mask`` holds 1 + kind index)."""
    class_logits, core_logits = class_logits.float(), core_logits.float()
    # Background is never ignored, so the mean over non-ignored pixels is well defined.
    seg = F.cross_entropy(class_logits, class_mask, ignore_index=IGNORE_INDEX)
    out = {"seg": seg, "core": _bce_dice(core_logits, core_mask)}
    if region_logits is not None and region_logits.shape[1] and region_mask is not None:
        out["region"] = sum(_bce_dice(region_logits[:, r].float(), (region_mask == r + 1).to(torch.uint8))
                            for r in range(region_logits.shape[1])) / region_logits.shape[1]
    return out


def class_and_core_probs(class_logits: Tensor, core_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax over classes and sigmoid of the core map, in float32."""
    return torch.softmax(class_logits.float(), dim=1), core_logits.float().sigmoid()
