"""Line instances from the segmentation maps: threshold the cores, grow each back, read its kind.

NumPy and OpenCV only, so exported models run without torch (examples/onnx_predict.py).
"""

from __future__ import annotations

import cv2
import numpy as np

from docrec.geometry import CORE_SHRINK, unclip_distance

DetectedLine = tuple[np.ndarray, int, float]


def lines_from_maps(
    class_prob: np.ndarray,
    core_prob: np.ndarray,
    core_threshold: float = 0.5,
    min_score: float = 0.6,
    min_area: float = 16.0,
    shrink: float = CORE_SHRINK,
    max_lines: int = 1000,
) -> list[DetectedLine]:
    """Lines as ``(polygon [K,2] float32, kind index, score)`` from class [C,H,W] and core [H,W] maps.

    Each connected component of ``core_prob > core_threshold`` is one line; it is grown by
    the inverse of the target shrink (a distance transform, so curved lines stay curved),
    its score is the mean core probability over the component, its kind the class
    (background excluded) with the largest mean probability inside the grown region.
    """
    if class_prob.ndim != 3 or core_prob.shape != class_prob.shape[1:]:
        raise ValueError(f"maps disagree: class {class_prob.shape}, core {core_prob.shape}")
    height, width = core_prob.shape
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
        # Distances from pixel centres to the core's edge, as the targets measure them.
        half_thickness = float(cv2.distanceTransform(np.pad(comp, 1), cv2.DIST_L2, 5).max()) - 0.5
        grow = unclip_distance(half_thickness, shrink)
        pad = int(np.ceil(grow)) + 1
        x0, y0, x1, y1 = max(x - pad, 0), max(y - pad, 0), min(x + w + pad, width), min(y + h + pad, height)
        local = np.zeros((y1 - y0, x1 - x0), np.uint8)
        local[y - y0 : y - y0 + h, x - x0 : x - x0 + w] = comp
        outside = cv2.distanceTransform(1 - local, cv2.DIST_L2, 5) - 0.5
        region = (outside <= grow).astype(np.uint8)
        if region.sum() < min_area:
            continue
        contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contour = max(contours, key=cv2.contourArea)
        poly = cv2.approxPolyDP(contour, 1.0, True).reshape(-1, 2)
        if len(poly) < 4:
            poly = cv2.boxPoints(cv2.minAreaRect(contour))
        kind_prob = class_prob[1:, y0:y1, x0:x1][:, region > 0].mean(axis=1)
        lines.append(((poly + [x0, y0]).astype(np.float32), int(kind_prob.argmax()), score))
    return lines
