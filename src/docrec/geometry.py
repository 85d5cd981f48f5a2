"""Line geometry shared by training targets, post-processing and exported inference (NumPy/OpenCV only)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

#: Fraction of a line's half-thickness removed on each side to make its core: cores of
#: lines that touch (or overlap by less than this) are separated by background. The
#: post-processing grows a predicted core back by the matching distance (see
#: :func:`unclip_distance`).
CORE_SHRINK = 0.5


def unclip_distance(core_half_thickness: float, shrink: float = CORE_SHRINK) -> float:
    """How far to grow a core of this half-thickness to recover its line (inverse of the shrink)."""
    return core_half_thickness * shrink / (1.0 - shrink)


def line_quad(polygon: np.ndarray) -> np.ndarray:
    """Rotated box of a line as 4 corners TL, TR, BR, BL, its width along the reading direction.

    The reading direction is the box side closest to horizontal, pointing to +x, whatever
    the aspect: a one-digit field is taller than wide but still read left to right.
    Vertical text is not supported (pages are upright; augmentation rotates a little).
    """
    return line_quads([polygon])[0]


def line_quads(polygons: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`line_quad` of each polygon, [N, 4, 2] float32 (the box geometry vectorised over lines)."""
    if len(polygons) == 0:
        return np.zeros((0, 4, 2), np.float32)
    # Sides from the corners rather than from the angle, whose convention changed across OpenCV versions.
    box = np.stack([cv2.boxPoints(cv2.minAreaRect(np.asarray(p, dtype=np.float32).reshape(-1, 2)))
                    for p in polygons]).astype(np.float64)
    c = box.mean(axis=1)
    e1, e2 = box[:, 1] - box[:, 0], box[:, 2] - box[:, 1]
    w, h = np.hypot(e1[:, 0], e1[:, 1]), np.hypot(e2[:, 0], e2[:, 1])
    u = np.where(w[:, None] > 0, e1 / np.where(w > 0, w, 1.0)[:, None], np.array([1.0, 0.0]))
    v = np.where(h[:, None] > 0, e2 / np.where(h > 0, h, 1.0)[:, None], np.stack([-u[:, 1], u[:, 0]], axis=1))
    swap = np.abs(v[:, 0]) > np.abs(u[:, 0])
    u, w, h = np.where(swap[:, None], v, u), np.where(swap, h, w), np.where(swap, w, h)
    flip = (u[:, 0] < -1e-6) | ((np.abs(u[:, 0]) <= 1e-6) & (u[:, 1] < 0))
    u = np.where(flip[:, None], -u, u)
    down = np.stack([-u[:, 1], u[:, 0]], axis=1)  # u rotated clockwise on screen (y points down)
    along, across = u * w[:, None], down * h[:, None]
    tl = c - along / 2 - across / 2
    quad = np.stack([tl, tl + along, tl + along + across, tl + across], axis=1)
    return quad.astype(np.float32)
