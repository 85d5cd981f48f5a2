"""Segmentation head: per-pixel line classes and a line-core map, with their losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from docrec.data.targets import IGNORE_INDEX


class SegmentationHead(nn.Module):
    """Class logits (background + one per kind) and a line-core logit from the fused map.

    The logits are upsampled bilinearly to the input resolution, where the losses are
    computed: at stride 4 the core of a 12-pixel line (6 pixels) and the gap to its
    neighbour would be one or two rows.
    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 64, stride: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stride = stride
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(hidden, num_classes + 1, 1)

    def forward(self, fused: Tensor) -> tuple[Tensor, Tensor]:
        """(class logits [B, C, H, W], core logits [B, H, W]) at ``stride`` x the fused map's size."""
        logits = self.out(self.trunk(fused))
        logits = F.interpolate(logits, scale_factor=self.stride, mode="bilinear", align_corners=False)
        return logits[:, : self.num_classes], logits[:, self.num_classes]


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """1 - soft Dice over the whole batch (balances the thin cores against the background)."""
    prob = logits.sigmoid()
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + eps) / (prob.sum() + target.sum() + eps)


def segmentation_losses(
    class_logits: Tensor, core_logits: Tensor, class_mask: Tensor, core_mask: Tensor
) -> dict[str, Tensor]:
    """Unweighted ``seg`` (cross-entropy, 255 ignored) and ``core`` (BCE + Dice) losses."""
    class_logits, core_logits = class_logits.float(), core_logits.float()
    # Background is never ignored, so the mean over non-ignored pixels is well defined.
    seg = F.cross_entropy(class_logits, class_mask, ignore_index=IGNORE_INDEX)
    core = F.binary_cross_entropy_with_logits(core_logits, core_mask) + dice_loss(core_logits, core_mask)
    return {"seg": seg, "core": core}


def class_and_core_probs(class_logits: Tensor, core_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax over classes and sigmoid of the core map, in float32."""
    return torch.softmax(class_logits.float(), dim=1), core_logits.float().sigmoid()
