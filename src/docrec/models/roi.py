"""Rotated-box RoI sampling: features along each line's quad (TL, TR, BR, BL) with grid_sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def quad_size(quads: Tensor) -> tuple[Tensor, Tensor]:
    """(length along the reading direction, height) of quads [N,4,2]."""
    tl, tr, br, bl = quads.unbind(dim=1)
    length = ((tr - tl).norm(dim=-1) + (br - bl).norm(dim=-1)) / 2
    height = ((bl - tl).norm(dim=-1) + (br - tr).norm(dim=-1)) / 2
    return length, height


def roi_widths(quads: Tensor, height: int, max_width: int, min_width: int = 4) -> Tensor:
    """Samples along each line: square sampling cells (aspect x height), clamped to [min, max]."""
    length, h = quad_size(quads)
    aspect = length / h.clamp(min=1.0)
    return (aspect * height).round().clamp(min_width, max_width).long()


def quad_grid(quads: Tensor, height: int, widths: Tensor, width: int) -> Tensor:
    """Sampling points [N, height, width, 2] in pixels; column j < widths[i] lies inside quad i."""
    dev = quads.device
    v = (torch.arange(height, device=dev, dtype=torch.float32) + 0.5) / height  # [h]
    j = torch.arange(width, device=dev, dtype=torch.float32)
    u = (j[None] + 0.5) / widths[:, None].float()  # [N, w]; beyond 1 for padding columns
    u = u.clamp(max=1.0)
    tl, tr, br, bl = (q[:, None, None, :] for q in quads.float().unbind(dim=1))
    u, v = u[:, None, :, None], v[None, :, None, None]
    top = tl + u * (tr - tl)
    bottom = bl + u * (br - bl)
    return top + v * (bottom - top)  # bilinear in the quad, so skewed boxes are followed


def sample_quads(
    features: Tensor,
    quads: list[Tensor],
    stride: int,
    height: int,
    max_width: int,
) -> tuple[Tensor, Tensor]:
    """RoI features [N, C, height, W] and a validity mask [N, W] for the quads of each image.

    ``quads[b]`` holds image b's lines in input pixels; W is the widest line's sample count.
    Sampling runs in float32: in bf16 a normalised coordinate is off by up to a feature pixel.
    """
    all_quads = torch.cat([q.to(features.device, torch.float32) for q in quads])
    if all_quads.shape[0] == 0:
        c = features.shape[1]
        return features.new_zeros((0, c, height, 1)), torch.zeros((0, 1), dtype=torch.bool, device=features.device)
    widths = roi_widths(all_quads, height, max_width)
    width = int(widths.max())
    grid = quad_grid(all_quads, height, widths, width)
    size_px = torch.tensor([features.shape[-1] * stride, features.shape[-2] * stride], device=features.device)
    grid = grid / size_px * 2 - 1  # align_corners=False: pixel i covers [i, i + 1) in input pixels
    rois, start = [], 0
    c = features.shape[1]
    for b, q in enumerate(quads):
        n = q.shape[0]
        if n == 0:
            continue
        g = grid[start : start + n].reshape(1, n * height, width, 2)
        sampled = F.grid_sample(features[b : b + 1].float(), g, mode="bilinear", align_corners=False)
        rois.append(sampled.reshape(c, n, height, width).permute(1, 0, 2, 3))
        start += n
    mask = torch.arange(width, device=features.device)[None] < widths[:, None]
    rois_t = torch.cat(rois) * mask[:, None, None, :]
    return rois_t, mask


def jitter_quads(quads: Tensor, amount: float) -> Tensor:
    """Move each corner by Gaussian noise of ``amount`` x line height (clipped at 2 sigma)."""
    if amount <= 0 or quads.shape[0] == 0:
        return quads
    _, h = quad_size(quads)
    noise = torch.randn(quads.shape, device=quads.device).clamp(-2.0, 2.0) * amount * h[:, None, None]
    return quads + noise
