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


def _median(values: np.ndarray) -> float:
    """``np.median`` of a 1-D float array without its generic overhead (line_core calls it twice a line)."""
    n = values.size
    k = n // 2
    if n % 2:
        return float(np.partition(values, k)[k])
    part = np.partition(values, (k - 1, k))
    return float((part[k - 1] + part[k]) / 2.0)


def _running_median(values: np.ndarray, window: int) -> np.ndarray:
    """Median of each value's centred window (edges repeated), so bulges a window wide do not move it."""
    half = max(int(window) // 2, 0)
    if half == 0 or len(values) < 3:
        return values.astype(np.float64)
    padded = np.pad(values.astype(np.float64), half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)


def line_core(polygon: np.ndarray, shrink: float = CORE_SHRINK,
              baseline: np.ndarray | None = None, quad: np.ndarray | None = None) -> np.ndarray | None:
    """Core of a line as a polygon [K,2] float32: a band of the line's robust height, shrunk; None if none.

    Real annotations bulge (ascenders, a neighbour's descender) and pinch along a line, so
    the core is not a shrunk polygon but a band that keeps the line in one piece. In the
    line's reading frame (:func:`line_quad`) each column of the polygon has a thickness and a
    centre; the robust half-height ``H`` is half the median thickness. The band follows the
    ``baseline`` (same pixel coordinates) moved by its median offset to the column centres,
    or without one the running median of the centres (a window of 16 H); it is ``2 (1 -
    shrink) H`` thick and ``shrink H`` shorter at each end, so growing it by
    :func:`unclip_distance` of its half-thickness gives back a region of the robust height.
    A line shorter than it is tall (a lone digit) has no reading direction worth following:
    its core is the polygon eroded by ``shrink`` times its largest inner distance.
    ``quad``: the polygon's :func:`line_quad`, when the caller has it (:func:`line_quads` of a
    page's lines at once costs about what one line's does).
    """
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(poly) < 3:
        return None
    quad = (line_quad(poly) if quad is None else np.asarray(quad)).astype(np.float64)
    origin, along, across = quad[0], quad[1] - quad[0], quad[3] - quad[0]
    length, height = float(np.hypot(*along)), float(np.hypot(*across))
    if length < 1.0 or height < 1.0:
        return None
    u, v = along / length, across / height
    # The polygon in its reading frame: s along the line, t across it (down), 1 px margin.
    to_frame = np.array([[u[0], v[0]], [u[1], v[1]]])
    frame = (poly - origin) @ to_frame
    cols, rows = int(np.ceil(length)) + 3, int(np.ceil(height)) + 3
    local = np.zeros((rows, cols), np.uint8)
    cv2.fillPoly(local, [np.round(frame + 1.0).astype(np.int32)], 1)
    # One transposed copy: argmax along axis 0 would copy the raster for each of the two reads below.
    by_column = np.ascontiguousarray(local.T)
    xs = np.flatnonzero(by_column.any(axis=1))
    if xs.size == 0:
        return None
    by_column = by_column[xs]
    top = by_column.argmax(axis=1)  # first and last filled row of each filled column
    bottom = rows - 1 - by_column[:, ::-1].argmax(axis=1)
    thickness, centre = (bottom - top).astype(np.float64), (top + bottom) / 2.0 - 1.0
    half = 0.5 * _median(thickness)
    s = xs.astype(np.float64) - 1.0
    trim = shrink * half
    if s[-1] - s[0] < 2.0 * half or half <= 0.0:
        return _eroded_core(poly, shrink)
    if baseline is not None and len(baseline) >= 2:
        base = (np.asarray(baseline, dtype=np.float64).reshape(-1, 2) - origin) @ to_frame
        order = np.argsort(base[:, 0], kind="stable")
        base_t = np.interp(s, base[order, 0], base[order, 1])
        mid = base_t + _median(centre - base_t)
    else:
        mid = _running_median(centre, 16.0 * half)
        k = max(int(half), 1) | 1  # smooth the median's steps a little
        mid = np.convolve(np.pad(mid, k // 2, mode="edge"), np.ones(k) / k, mode="valid")
    keep = (s >= s[0] + trim) & (s <= s[-1] - trim)
    step = max(int(half / 2), 1)
    idx = np.flatnonzero(keep)
    if idx.size and (idx.size - 1) % step:  # every step-th column and the last one
        idx = np.concatenate([idx[::step], idx[-1:]])
    else:
        idx = idx[::step]
    core_half = (1.0 - shrink) * half
    n, along_s, centre_t = idx.size, s[idx], mid[idx]
    band = np.empty((2 * n, 2))  # the upper edge left to right, then the lower edge back
    band[:n, 0], band[:n, 1] = along_s, centre_t - core_half
    band[n:, 0], band[n:, 1] = along_s[::-1], centre_t[::-1] + core_half
    return (origin + band[:, :1] * u + band[:, 1:] * v).astype(np.float32)


def _eroded_core(poly: np.ndarray, shrink: float) -> np.ndarray | None:
    """The polygon eroded by ``shrink`` times its largest inner distance, as a polygon (compact lines)."""
    x0, y0 = np.floor(poly.min(axis=0)).astype(int) - 1
    local = np.zeros((int(np.ceil(poly[:, 1].max())) - y0 + 2, int(np.ceil(poly[:, 0].max())) - x0 + 2), np.uint8)
    cv2.fillPoly(local, [np.round(poly - [x0, y0]).astype(np.int32)], 1)
    dist = cv2.distanceTransform(local, cv2.DIST_L2, 5) - 0.5
    peak = float(dist.max())
    if peak <= 0.0:
        return None
    keep = (dist > shrink * peak).astype(np.uint8)
    if not keep.any():
        keep = (dist >= peak).astype(np.uint8)
    contours, _ = cv2.findContours(keep, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=cv2.contourArea).reshape(-1, 2)
    return (contour + [x0, y0]).astype(np.float32)
