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


def shift_across(quads, shift: float):
    """Quads [N, 4, 2] (TL, TR, BR, BL; a NumPy array or a torch tensor) moved across their lines by
    ``shift`` x each box's height (> 0: down the page for upright lines), their length and height kept."""
    across = (quads[:, 3] - quads[:, 0] + quads[:, 2] - quads[:, 1]) / 2  # top -> bottom
    return quads + shift * across[:, None, :]


def centre_read(shifts: Sequence[float]) -> int:
    """Index of the shift nearest 0 in ``read_shifts``: the read of the box as found (the first of equals)."""
    return min(range(len(shifts)), key=lambda i: abs(shifts[i]))


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


#: The smallest long side ``max_line_height`` scales a page down to.
MIN_LONG_SIDE = 256


def median_line_height(polygons: Sequence) -> float | None:
    """Median height, across the reading direction, of line polygons (their boxes'); None without lines."""
    if len(polygons) == 0:
        return None
    quads = line_quads(polygons)
    # line_quads' boxes are rectangles: the height is the side from the top-left to the bottom-left corner.
    return float(np.median(np.linalg.norm(quads[:, 3] - quads[:, 0], axis=1)))


def reading_long_side(long_side: int, read_scale: float | None = 1.0) -> int:
    """The long side pages are read at (validation, evaluate, predict, export): ``long_side`` (the training
    scale) times ``data.read_scale``, rounded; ``long_side`` itself at 1.0 or None (a run without the key)."""
    if read_scale is None:
        return int(long_side)
    if not read_scale > 0:
        raise ValueError(f"data.read_scale must be > 0, got {read_scale}")
    return round(long_side * read_scale)


def line_scaled_long_side(long_side: int, line_height: float | None, max_line_height: float | None,
                          min_long_side: int = MIN_LONG_SIDE) -> int:
    """The long side at which a page whose median line is ``line_height`` px tall at ``long_side`` has it
    ``max_line_height`` tall; ``long_side`` when its lines are no taller (or it has none, or the option
    is off). Pages are only scaled down: at most to ``min_long_side``."""
    if max_line_height is not None and max_line_height < 0:
        raise ValueError(f"max_line_height must be a height in pixels > 0 or null, got {max_line_height}")
    if not max_line_height or line_height is None or line_height <= max_line_height:
        return long_side
    return max(min(min_long_side, long_side), round(long_side * max_line_height / line_height))


def _running_median(values: np.ndarray, window: int) -> np.ndarray:
    """Median of each value's centred window (edges repeated), so bulges a window wide do not move it."""
    half = max(int(window) // 2, 0)
    if half == 0 or len(values) < 3:
        return values.astype(np.float64)
    padded = np.pad(values.astype(np.float64), half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)


def _starts(counts: np.ndarray) -> np.ndarray:
    """Where each run of ``counts`` elements begins when the runs are laid one after the other."""
    return np.cumsum(counts) - counts


def _in_frames(points: np.ndarray, who: np.ndarray, origin: np.ndarray, u: np.ndarray, v: np.ndarray):
    """(s, t) of each point [P, 2] in the reading frame of its line ``who``: ``s`` along ``u``, ``t`` across."""
    rel = points - origin[who]
    return (rel * u[who]).sum(1), (rel * v[who]).sum(1)


def _ragged_medians(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``np.median`` of each run of ``values`` (runs of ``counts`` > 0 elements, one after the other), at once,
    the values rounded to 1e-6 (pixels here: far below what a mask shows).

    One argsort of the values lifted by their run's number times more than their range: the runs stay in
    order and each is sorted (several times cheaper than ``np.lexsort``). Rounded first, so that no two
    values are too close for the lifted keys to order them: a line's median is the same whatever other
    lines share the call."""
    values = np.round(values, 6)
    groups = np.repeat(np.arange(counts.size, dtype=np.float64), counts)
    low = float(values.min())
    ordered = values[np.argsort(groups * (float(values.max()) - low + 1.0) + (values - low))]
    starts, k = _starts(counts), counts // 2
    return (ordered[starts + k - (counts % 2 == 0)] + ordered[starts + k]) / 2.0


def _ragged_moving_average(values: np.ndarray, counts: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Mean of each value's window of ``2 radius + 1`` values of its run, the run's ends repeated past them
    (``np.convolve(np.pad(run, r, mode="edge"), np.ones(2 r + 1) / (2 r + 1), mode="valid")`` of each run)."""
    starts = _starts(counts)
    prefix = np.concatenate(([0.0], np.cumsum(values)))
    run = np.repeat(np.arange(counts.size), counts)
    pos, r, n, at = _ragged_arange(counts), radius[run], counts[run], starts[run]
    lo, hi = pos - r, pos + r
    inside = prefix[at + np.minimum(hi, n - 1) + 1] - prefix[at + np.maximum(lo, 0)]
    before, after = np.maximum(-lo, 0), np.maximum(hi - (n - 1), 0)
    return (inside + before * values[at] + after * values[at + n - 1]) / (2 * r + 1)


def _ragged_arange(counts: np.ndarray) -> np.ndarray:
    """0..n-1 for each n of ``counts``, concatenated."""
    return np.arange(int(counts.sum())) - np.repeat(_starts(counts), counts)


def _columns(frame: np.ndarray, owner: np.ndarray, nxt: np.ndarray, vstart: np.ndarray) -> tuple[np.ndarray, ...]:
    """Where each integer column ``s`` of each polygon meets its outline: the line, ``s``, and the polygon's first
    and last ``t`` there (the top and bottom of that column). ``frame`` [V, 2] holds every polygon's vertices
    in its line's reading frame, ``owner`` [V] their line (0, 1, ...), ``nxt`` [V] the next vertex of the same
    polygon, ``vstart`` each line's first vertex.
    Columns come sorted by line, then ``s``. A vertical edge adds nothing: its ends lie on the edges beside it."""
    s0, t0, s1, t1 = frame[:, 0], frame[:, 1], frame[nxt, 0], frame[nxt, 1]
    lo, hi = np.ceil(np.minimum(s0, s1)), np.floor(np.maximum(s0, s1))
    n = np.where(s1 != s0, np.maximum(hi - lo + 1, 0), 0).astype(np.int64)
    edge = np.repeat(np.arange(len(s0)), n)
    s = lo[edge] + _ragged_arange(n)
    f = np.clip((s - s0[edge]) / (s1[edge] - s0[edge]), 0.0, 1.0)
    t = t0[edge] + f * (t1[edge] - t0[edge])
    # Each line's columns, first to last, in one array: the outline's crossings reduced into their column.
    first = np.ceil(np.minimum.reduceat(s0, vstart))
    width = np.floor(np.maximum.reduceat(s0, vstart)) - first + 1
    base = _starts(width) - first
    at = (base[owner[edge]] + s).astype(np.int64)
    top, bottom = np.full(int(width.sum()), np.inf), np.full(int(width.sum()), -np.inf)
    np.minimum.at(top, at, t)
    np.maximum.at(bottom, at, t)
    hit = np.flatnonzero(top <= bottom)
    line = np.repeat(np.arange(len(vstart)), width.astype(np.int64))[hit]
    return line, (hit - base[line]), top[hit], bottom[hit]


def line_cores(polygons: Sequence[np.ndarray], shrink: float = CORE_SHRINK,
               baselines: Sequence[np.ndarray | None] | None = None,
               quads: np.ndarray | None = None) -> list[np.ndarray | None]:
    """Core of each line as a polygon [K,2] float32: a band of the line's robust height, shrunk; None if none.

    Real annotations bulge (ascenders, a neighbour's descender) and pinch along a line, so
    the core is not a shrunk polygon but a band that keeps the line in one piece. In the
    line's reading frame (:func:`line_quad`) each integer column ``s`` of the polygon has a
    thickness and a centre (the first and last points where the column meets the outline);
    the robust half-height ``H`` is half the median thickness. The band follows the
    ``baseline`` (same pixel coordinates) moved by its median offset to the column centres,
    or without one the running median of the centres (a window of 16 H); it is ``2 (1 -
    shrink) H`` thick and ``shrink H`` shorter at each end, so growing it by
    :func:`unclip_distance` of its half-thickness gives back a region of the robust height.
    A line shorter than it is tall (a lone digit) has no reading direction worth following:
    its core is the polygon eroded by ``shrink`` times its largest inner distance.

    All lines are computed together (a page's lines cost a few NumPy calls, not a few per
    line), apart from those two per-line cases: a line with no baseline whose centres go up and
    down (its running median; a monotone run is its own), and a compact one (the erosion).
    ``quads``: the polygons' :func:`line_quads`, when the caller has them.
    """
    n_lines = len(polygons)
    out: list[np.ndarray | None] = [None] * n_lines
    if n_lines == 0:
        return out
    polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons]
    baselines = [None] * n_lines if baselines is None else list(baselines)
    if quads is None:
        quads = np.zeros((n_lines, 4, 2))
        some = [i for i, p in enumerate(polys) if len(p) >= 3]
        quads[some] = line_quads([polys[i] for i in some])
    quads = np.asarray(quads, dtype=np.float64).reshape(-1, 4, 2)
    origin, along, across = quads[:, 0], quads[:, 1] - quads[:, 0], quads[:, 3] - quads[:, 0]
    length, height = np.hypot(along[:, 0], along[:, 1]), np.hypot(across[:, 0], across[:, 1])
    valid = np.flatnonzero((length >= 1.0) & (height >= 1.0) & np.array([len(p) >= 3 for p in polys]))
    if valid.size == 0:
        return out
    u = along[valid] / length[valid, None]
    v = across[valid] / height[valid, None]
    origin = origin[valid]
    # Every vertex in its line's reading frame: s along the line, t across it (down).
    sizes = np.array([len(polys[i]) for i in valid])
    owner = np.repeat(np.arange(valid.size), sizes)
    frame = np.stack(_in_frames(np.concatenate([polys[i] for i in valid]), owner, origin, u, v), axis=1)
    vstart = _starts(sizes)
    nxt = np.arange(len(frame)) + 1
    nxt[vstart + sizes - 1] = vstart  # each polygon closes on its first vertex
    line, s, top, bottom = _columns(frame, owner, nxt, vstart)
    if len(s) == 0:
        return out
    counts = np.bincount(line, minlength=valid.size)
    thickness, centre = bottom - top, (top + bottom) / 2.0
    half = np.zeros(valid.size)
    has = counts > 0
    half[has] = 0.5 * _ragged_medians(thickness, counts[has])
    starts = _starts(counts)
    last = starts + np.maximum(counts, 1) - 1
    s_first, s_last = s[np.minimum(starts, len(s) - 1)], s[np.minimum(last, len(s) - 1)]  # of lines that have columns
    compact = has & ((s_last - s_first < 2.0 * half) | (half <= 0.0))
    band_lines = has & ~compact
    for j in np.flatnonzero(compact):
        out[valid[j]] = _eroded_core(polys[valid[j]], shrink)
    if not band_lines.any():
        return out
    # The band's centre line, column by column.
    mid = centre.copy()
    with_base = np.array([baselines[i] is not None and len(baselines[i]) >= 2 for i in valid])
    col_base = with_base[line] & band_lines[line]
    if col_base.any():
        mid[col_base] = _follow_baselines(baselines, valid, with_base & band_lines, origin, u, v,
                                          line[col_base], s[col_base], centre[col_base])
    # Without a baseline: the running median of the centres, then a moving average of about H columns to smooth
    # its steps. A monotone run (a straight line, a trapezoid's centres) is its own running median (the window
    # holds as many values on each side, edges repeated), so only the others take the per-line median.
    free = band_lines & ~with_base
    if free.any():
        rise = np.append(np.diff(centre), 0.0)
        rise[(starts + counts - 1)[has]] = 0.0  # none from one line's last column to the next line's first
        monotone = np.ones(valid.size, bool)
        monotone[has] = ((np.minimum.reduceat(rise, starts[has]) >= -1e-9)
                         | (np.maximum.reduceat(rise, starts[has]) <= 1e-9))
        for j in np.flatnonzero(free & ~monotone):
            mid[starts[j]:starts[j] + counts[j]] = _running_median(centre[starts[j]:starts[j] + counts[j]],
                                                                   16.0 * half[j])
        cols = free[line]
        mid[cols] = _ragged_moving_average(mid[cols], counts[free], np.maximum(half[free].astype(np.int64), 1) // 2)
    # Shorter by shrink H at each end; every step-th column (about H / 2 apart) and the last one.
    trim = shrink * half
    keep = band_lines[line] & (s >= (s_first + trim)[line]) & (s <= (s_last - trim)[line])
    kept_line = line[keep]
    kept = np.bincount(kept_line, minlength=valid.size)
    pos = _ragged_arange(kept[kept > 0])
    step = np.maximum((half / 2).astype(np.int64), 1)
    pick = (pos % step[kept_line] == 0) | (pos == kept[kept_line] - 1)
    band_line, band_s, band_mid = kept_line[pick], s[keep][pick], mid[keep][pick]
    m = np.bincount(band_line, minlength=valid.size)
    core_half = ((1.0 - shrink) * half)[band_line]
    # The upper edge left to right, then the lower edge back: per line, 2 m points.
    first = _starts(m)
    at = _ragged_arange(m[m > 0])
    upper = 2 * first[band_line] + at
    lower = 2 * first[band_line] + 2 * m[band_line] - 1 - at
    edge_s, edge_t = np.empty(2 * len(band_s)), np.empty(2 * len(band_s))
    edge_s[upper], edge_t[upper] = band_s, band_mid - core_half
    edge_s[lower], edge_t[lower] = band_s, band_mid + core_half
    who = np.repeat(np.arange(valid.size), 2 * m)
    points = (origin[who] + edge_s[:, None] * u[who] + edge_t[:, None] * v[who]).astype(np.float32)
    for j, band in zip(np.flatnonzero(m), np.split(points, np.cumsum(2 * m[m > 0])[:-1])):
        out[valid[j]] = band
    return out


def _follow_baselines(baselines: Sequence[np.ndarray | None], valid: np.ndarray, with_base: np.ndarray,
                      origin: np.ndarray, u: np.ndarray, v: np.ndarray, line: np.ndarray, s: np.ndarray,
                      centre: np.ndarray) -> np.ndarray:
    """Centre of each column ``(line, s)`` of the lines with a baseline: the baseline (``np.interp`` of its
    points in the line's frame, ends held) moved by the line's median offset to its column centres."""
    rows = np.flatnonzero(with_base)
    pts = [np.asarray(baselines[valid[j]], dtype=np.float64).reshape(-1, 2) for j in rows]
    sizes = np.array([len(p) for p in pts])
    who = np.repeat(rows, sizes)
    bs, bt = _in_frames(np.concatenate(pts), who, origin, u, v)
    lo = min(float(bs.min()), float(s.min()))
    span = max(float(bs.max()), float(s.max())) - lo + 1.0
    # One key per point and per column: lines apart by more than any span, ``s`` in order within a line.
    bkey = who * span + (bs - lo)
    order = np.argsort(bkey, kind="stable")  # each line's baseline by s, as np.interp wants it
    bs, bt, bkey = bs[order], bt[order], bkey[order]
    first = np.zeros(valid.size, np.int64)
    count = np.zeros(valid.size, np.int64)
    first[rows], count[rows] = _starts(sizes), sizes
    at = np.searchsorted(bkey, line * span + (s - lo), side="right")
    left = np.clip(at - 1, first[line], first[line] + count[line] - 1)
    right = np.clip(at, first[line], first[line] + count[line] - 1)
    gap = bs[right] - bs[left]
    f = np.where(gap > 0, (s - bs[left]) / np.where(gap > 0, gap, 1.0), 1.0)
    base_t = bt[left] + f * (bt[right] - bt[left])
    offset = np.zeros(valid.size)
    per_line = np.bincount(line, minlength=valid.size)
    offset[per_line > 0] = _ragged_medians(centre - base_t, per_line[per_line > 0])
    return base_t + offset[line]


def line_core(polygon: np.ndarray, shrink: float = CORE_SHRINK,
              baseline: np.ndarray | None = None, quad: np.ndarray | None = None) -> np.ndarray | None:
    """:func:`line_cores` of one line."""
    return line_cores([polygon], shrink, [baseline], None if quad is None else np.asarray(quad)[None])[0]


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
