"""Line instances from the segmentation maps: threshold the cores, grow each back, read its kind.

NumPy and OpenCV only, so exported models run without torch (examples/onnx_predict.py).
"""

from __future__ import annotations

import cv2
import numpy as np

from docrec.geometry import CORE_SHRINK, line_quad, unclip_distance

DetectedLine = tuple[np.ndarray, int, float]

#: ``min_area`` is given in pixels^2 of a page of this long side; maps of another size scale it.
MIN_AREA_LONG_SIDE = 1024


def core_half_thickness(comp: np.ndarray) -> float:
    """Robust half-thickness of a core component (uint8 mask): the median inner distance along its ridge.

    The ridge (pixels whose distance to the edge is a local maximum) runs along the middle
    of a band, so a few thick spots (two cores that brush, a blob) do not set the growth.
    """
    dist = cv2.distanceTransform(np.pad(comp, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    ridge = (dist >= cv2.dilate(dist, np.ones((3, 3), np.uint8))) & (comp > 0)
    values = dist[ridge] if ridge.any() else dist[comp > 0]
    # Distances from pixel centres to the core's edge, as the targets measure them.
    return float(np.median(values)) - 0.5


def lines_from_maps(
    class_prob: np.ndarray,
    core_prob: np.ndarray,
    core_threshold: float = 0.6,
    min_score: float = 0.8,
    min_area: float = 16.0,
    shrink: float = CORE_SHRINK,
    max_lines: int = 1000,
) -> list[DetectedLine]:
    """Lines as ``(polygon [K,2] float32, kind index, score)`` from class [C,H,W] and core [H,W] maps.

    Each connected component of ``core_prob > core_threshold`` is one line; it is grown by
    the inverse of the target shrink applied to its robust half-thickness
    (:func:`core_half_thickness`; a distance transform, so curved lines stay curved), its
    score is the mean core probability over the component, its kind the class (background
    excluded) with the largest mean probability inside the grown region.
    Regions smaller than ``min_area`` pixels^2 on a page of long side ``MIN_AREA_LONG_SIDE``
    (scaled with the square of the maps' long side) are dropped as specks.
    """
    if class_prob.ndim != 3 or core_prob.shape != class_prob.shape[1:]:
        raise ValueError(f"maps disagree: class {class_prob.shape}, core {core_prob.shape}")
    height, width = core_prob.shape
    min_area_px = min_area * (max(height, width) / MIN_AREA_LONG_SIDE) ** 2
    binary = (core_prob > core_threshold).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=4)
    order = np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1  # largest first, so max_lines keeps the big ones
    lines: list[DetectedLine] = []
    for label in order[:max_lines]:
        x, y, w, h, _ = stats[label]
        comp = (labels[y : y + h, x : x + w] == label).astype(np.uint8)
        score = float(core_prob[y : y + h, x : x + w][comp > 0].mean())
        if score < min_score:
            continue
        grow = unclip_distance(core_half_thickness(comp), shrink)
        pad = int(np.ceil(grow)) + 1
        x0, y0, x1, y1 = max(x - pad, 0), max(y - pad, 0), min(x + w + pad, width), min(y + h + pad, height)
        local = np.zeros((y1 - y0, x1 - x0), np.uint8)
        local[y - y0 : y - y0 + h, x - x0 : x - x0 + w] = comp
        outside = cv2.distanceTransform(1 - local, cv2.DIST_L2, 5) - 0.5
        region = (outside <= grow).astype(np.uint8)
        if region.sum() < min_area_px:
            continue
        contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contour = max(contours, key=cv2.contourArea)
        poly = cv2.approxPolyDP(contour, 1.0, True).reshape(-1, 2)
        if len(poly) < 4:
            poly = cv2.boxPoints(cv2.minAreaRect(contour))
        kind_prob = class_prob[1:, y0:y1, x0:x1][:, region > 0].mean(axis=1)
        lines.append(((poly + [x0, y0]).astype(np.float32), int(kind_prob.argmax()), score))
    return lines


def line_regions(polygons: list[np.ndarray], region_prob: np.ndarray, threshold: float = 0.5) -> list[int | None]:
    """Per line, the region kind (index into region_prob [R,H,W]) that covers it on average, or None.

    A line belongs to region kind r when the mean probability of r over the line's polygon
    exceeds ``threshold`` (the largest such r when several do).
    """
    out: list[int | None] = []
    n_regions, height, width = region_prob.shape
    for poly in polygons:
        if n_regions == 0:
            out.append(None)
            continue
        pts = np.round(np.asarray(poly, np.float32)).astype(np.int32)
        x0, y0 = np.clip(pts.min(axis=0), 0, [width - 1, height - 1])
        x1, y1 = np.clip(pts.max(axis=0) + 1, 1, [width, height])
        local = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(local, [pts - [x0, y0]], 1)
        if not local.any():
            out.append(None)
            continue
        mean = region_prob[:, y0:y1, x0:x1][:, local > 0].mean(axis=1)
        best = int(mean.argmax())
        out.append(best if mean[best] > threshold else None)
    return out


#: Where a line's baseline is taken when its box shows no ink to measure: this share of the
#: box height from its top (printed and handwritten lines in the real sets: 0.72-0.85).
DEFAULT_BASELINE_AT = 0.8


def estimate_baseline(gray: np.ndarray, polygon, min_contrast: float = 8.0) -> list[tuple[float, float]]:
    """A line's baseline [(x, y), (x, y)] in ``gray``'s pixels, from the ink inside its box.

    The line's rotated box (:func:`docrec.geometry.line_quad`) is straightened into a strip;
    ink is what Otsu's threshold calls dark; the densest rows are the body of the script (the
    x-height band), and the baseline is the lower edge of the band of rows holding at least
    half the peak's ink (descenders, thin and sparse, fall below it). The baseline runs along
    the box's length at that height. Without contrast in the box, it lies at
    ``DEFAULT_BASELINE_AT`` of the box's height.
    """
    quad = line_quad(np.asarray(polygon, dtype=np.float32).reshape(-1, 2)).astype(np.float32)
    tl, tr, _, bl = quad.astype(np.float64)
    length, height = float(np.hypot(*(tr - tl))), float(np.hypot(*(bl - tl)))
    cols, rows = max(round(length), 1), max(round(height), 2)
    row = DEFAULT_BASELINE_AT * rows
    if length >= 1.0 and height >= 2.0:
        dst = np.float32([[0, 0], [cols, 0], [cols, rows], [0, rows]])
        strip = cv2.warpPerspective(gray, cv2.getPerspectiveTransform(quad, dst), (cols, rows),
                                    flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if float(strip.std()) >= min_contrast:
            _, ink = cv2.threshold(strip, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
            profile = ink.mean(axis=1)
            peak = int(profile.argmax())
            dense = profile >= 0.5 * profile[peak]
            below = np.flatnonzero(~dense[peak:])
            row = float(peak + (below[0] if below.size else rows - peak))
    v = (bl - tl) / max(height, 1e-9)
    start, end = tl + v * row * height / rows, tr + v * row * height / rows
    return [(float(start[0]), float(start[1])), (float(end[0]), float(end[1]))]
