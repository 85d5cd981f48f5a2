"""Rotated-box RoI sampling: features along each line's quad (TL, TR, BR, BL) with grid_sample."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def quad_size(quads: Tensor) -> tuple[Tensor, Tensor]:
    """(length along the reading direction, height) of quads [N,4,2]."""
    tl, tr, br, bl = quads.unbind(dim=1)
    length = ((tr - tl).norm(dim=-1) + (br - bl).norm(dim=-1)) / 2
    height = ((bl - tl).norm(dim=-1) + (br - tr).norm(dim=-1)) / 2
    return length, height


def roi_widths(quads: Tensor, stride: int, max_width: int, min_width: int = 4, per_column: int = 1,
               stretch: float = 0.0) -> Tensor:
    """Samples along each line: ``per_column`` per feature column (length / stride), clamped to [min, max].

    ``stretch`` (training): each line's count scaled by a factor uniform in [1 - stretch, 1 + stretch], so
    the reader sees its writing wider or narrower than it is (the letter widths of another hand).

    Tied to the map's resolution, not to the line's height: a tall handwritten line is read
    as densely as a small printed one (square cells skipped most columns of tall lines).
    Two samples per column give CTC room for a blank between characters that are only two
    or three columns wide (small print at the training scale).
    """
    length, _ = quad_size(quads)
    if stretch > 0:
        length = length * (1 + (torch.rand(length.shape, device=length.device) * 2 - 1) * stretch)
    return torch.ceil(length * (per_column / stride)).clamp(min_width, max_width).long()


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


def sample_rois(features: Tensor, quads: Tensor, widths: Tensor, width: int, stride: int, height: int,
                oversample: int = 1) -> Tensor:
    """RoI features [N, C, height, width] of one image's quads [N,4,2] (input pixels).

    Each of the ``height`` rows is the mean of ``oversample`` sub-rows, so a tall line's
    features are averaged across its height rather than read at a few points.
    Sampling runs in float32: in bf16 a normalised coordinate is off by up to a feature pixel.
    """
    n, c = quads.shape[0], features.shape[1]
    rows = height * oversample
    grid = quad_grid(quads, rows, widths, width)
    # align_corners=False: pixel i of the input covers [i, i + 1) in input pixels.
    gx = grid[..., 0] * (2.0 / (features.shape[-1] * stride)) - 1.0
    gy = grid[..., 1] * (2.0 / (features.shape[-2] * stride)) - 1.0
    grid = torch.stack([gx, gy], dim=-1).reshape(1, n * rows, width, 2)
    sampled = F.grid_sample(features.float(), grid, mode="bilinear", align_corners=False)
    sampled = sampled.reshape(c, n, height, oversample, width).mean(dim=3)
    return sampled.permute(1, 0, 2, 3)


def sample_lines(features: Tensor | Sequence[Tensor], quads: Tensor, images: Sequence[int], widths: Tensor,
                 stride: int, height: int, oversample: int = 1, *, width: int | None = None) -> tuple[Tensor, Tensor]:
    """RoI features [N, C, height, W] and a validity mask [N, W] of lines ``quads`` [N, 4, 2] (input
    pixels) of images ``images`` (each line's index in the batch ``features``, a host sequence: no
    device-to-host transfer), with ``widths`` [N] samples each.

    ``features`` is the batch [B, C, H, W] or its images ``features.float().split(1)``: a caller
    that samples several groups of lines splits once. (Slicing the batch per image instead costs a
    zero-filled gradient of the whole batch per slice in backward: 14 % of a CPU training step.)

    W is the widest of these lines (``width`` when the caller knows it): a caller that groups
    lines of similar width pads little. Each run of lines of one image is sampled in one call, so
    lines ordered by image (as :func:`flatten_quads` gives them) take one call per image.
    """
    per_image = features.float().split(1) if isinstance(features, Tensor) else features
    n, c, device = quads.shape[0], per_image[0].shape[1], per_image[0].device
    if n == 0:
        return per_image[0].new_zeros((0, c, height, 1)), torch.zeros((0, 1), dtype=torch.bool, device=device)
    width = int(widths.max()) if width is None else width
    quads = quads.to(device, torch.float32)
    parts, start = [], 0
    for i in range(1, n + 1):
        if i == n or images[i] != images[start]:
            b = images[start]
            parts.append(sample_rois(per_image[b], quads[start:i], widths[start:i], width, stride, height,
                                     oversample))
            start = i
    rois = parts[0] if len(parts) == 1 else torch.cat(parts)
    mask = torch.arange(width, device=device)[None] < widths[:, None]
    return rois * mask[:, None, None, :], mask


def flatten_quads(quads: list[Tensor], device: torch.device) -> tuple[Tensor, list[int]]:
    """Per-image quads -> all quads [N, 4, 2] (float32 on ``device``) and each one's image index, a host list
    (from the shapes alone: what :func:`sample_lines` takes without a device-to-host transfer)."""
    flat = torch.cat([q.to(device, torch.float32) for q in quads]) if quads else torch.zeros((0, 4, 2), device=device)
    return flat, [b for b, q in enumerate(quads) for _ in range(q.shape[0])]


def width_buckets(widths: Tensor | list[int], ratio: float = 1.5) -> list[list[int]]:
    """Indices of lines grouped by RoI width, each group's widest at most ``ratio`` x its narrowest.

    Reading a group pads its lines to the group's widest, not the batch's: the head's cost
    follows the sum of the line widths (within ``ratio``) rather than lines x widest line.
    The groups are host lists (one transfer of ``widths``, none when given a list), so callers look
    up per-line host values without a device sync per group.
    """
    w = widths.tolist() if isinstance(widths, Tensor) else list(widths)
    order = sorted(range(len(w)), key=w.__getitem__)  # stable, as argsort(stable=True)
    groups, start = [], 0
    for i in range(1, len(order) + 1):
        if i == len(order) or w[order[i]] > ratio * w[order[start]]:
            groups.append(order[start:i])
            start = i
    return groups


def jitter_quads(quads: Tensor, amount: float, grow: tuple[float, float] = (0.0, 0.0), shear: float = 0.0) -> Tensor:
    """Training noise on line quads: corners moved by Gaussian noise of ``amount`` x line height
    (clipped at 2 sigma), and the box scaled about its centre by a uniform factor in
    ``1 + grow`` across and ``1 + grow / 2`` along, so training sees the looser boxes that
    post-processing returns at inference.

    ``shear``: each box made a parallelogram, its top edge moved along the line by ``t * height / 2`` and
    its bottom edge by ``-t * height / 2``, t uniform in [-shear, shear]: the reader, which samples the box
    bilinearly, sees the line's writing slanted by atan(t) more or less (the same for the fused map and the
    pixels: the slant of another hand).
    """
    if quads.shape[0] == 0 or (amount <= 0 and grow[1] <= 0 and shear <= 0):
        return quads
    length, h = quad_size(quads)
    tl, tr, br, bl = quads.unbind(dim=1)
    along = ((tr - tl) + (br - bl)) / 2  # left -> right; the shear moves top and bottom along it, so keeps it
    if shear > 0:
        t = (torch.rand(quads.shape[0], 1, device=quads.device) * 2 - 1) * shear
        d = along * (t * h[:, None] / (2 * length.clamp(min=1e-6)[:, None]))
        tl, tr, br, bl = tl + d, tr + d, br - d, bl - d
        quads = torch.stack([tl, tr, br, bl], dim=1)
    if grow[1] > 0:
        lo, hi = grow
        g = lo + (hi - lo) * torch.rand(quads.shape[0], 1, device=quads.device)
        centre = quads.mean(dim=1)
        across = ((bl - tl) + (br - tr)) / 2  # top -> bottom
        d_across, d_along = across * g / 2, along * g / 4
        quads = torch.stack([centre - along / 2 - across / 2 - d_along - d_across,
                             centre + along / 2 - across / 2 + d_along - d_across,
                             centre + along / 2 + across / 2 + d_along + d_across,
                             centre - along / 2 + across / 2 - d_along + d_across], dim=1)
    if amount > 0:
        noise = torch.randn(quads.shape, device=quads.device).clamp(-2.0, 2.0) * amount * h[:, None, None]
        quads = quads + noise
    return quads
