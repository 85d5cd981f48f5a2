"""Training targets of one page (or crop): class mask, line-core mask, line quads and token ids.

Pure functions of the (augmented) line polygons; the data pipeline calls
:func:`build_targets` once per sample, so everything here is plain NumPy/OpenCV.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from torch import Tensor

from docrec.geometry import CORE_SHRINK, line_quads

if TYPE_CHECKING:  # the models package imports this module; the charset is only duck-typed here
    from docrec.models.charset import Charset

#: Label of pixels (and line kinds) that take no part in the class loss.
IGNORE_INDEX = 255
#: Lines whose visible polygon is smaller than this (pixels^2) are dropped (crop slivers).
MIN_LINE_AREA = 8.0

Line = tuple[np.ndarray, "str | None", str]


def _paint_core(core: np.ndarray, polygon: np.ndarray, shrink: float) -> None:
    """OR the shrunk core of one polygon into ``core`` (the distance transform does the offsetting)."""
    height, width = core.shape
    x0, y0 = np.floor(polygon.min(axis=0)).astype(int)
    x1, y1 = np.ceil(polygon.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1 + 1, width), min(y1 + 1, height)
    if x1 <= x0 or y1 <= y0:
        return
    # One pixel of background around the crop, so the distance is measured to the line's edge.
    local = np.zeros((y1 - y0 + 2, x1 - x0 + 2), np.uint8)
    pts = np.round(polygon - [x0 - 1, y0 - 1]).astype(np.int32)
    cv2.fillPoly(local, [pts], 1)
    # Distance of each pixel centre to the line's edge (the first pixel's centre is 0.5 inside).
    dist = cv2.distanceTransform(local, cv2.DIST_L2, 5) - 0.5
    peak = float(dist.max())
    if peak <= 0.0:
        return
    keep = dist > shrink * peak
    if not keep.any():
        keep = dist >= peak
    core[y0:y1, x0:x1] |= keep[1:-1, 1:-1]


def build_targets(
    lines: Sequence[Line],
    height: int,
    width: int,
    kinds: Sequence[str],
    charset: Charset,
    max_len: int,
    min_area: float = MIN_LINE_AREA,
    shrink: float = CORE_SHRINK,
) -> dict[str, Tensor]:
    """Targets of one sample from its lines ``(polygon [K,2] in pixels, text, kind)``.

    Returns ``class_mask`` uint8[H,W] (0 background, 1 + kind index, 255 unknown kind),
    ``core_mask`` Float[H,W], and for the lines that have a transcription ``line_quads``
    Float[N,4,2], ``line_tokens`` Long[N,T] (BOS text EOS PAD..., cut at ``max_len``) and
    ``line_kinds`` Long[N] (255 for an unknown kind). Lines smaller than ``min_area`` are
    dropped. A line whose text is ``None`` or empty (e.g. cut by a crop, so its visible
    text is unknown) is painted into the masks but not used for recognition.
    """
    kind_index = {k: i for i, k in enumerate(kinds)}
    class_mask = np.zeros((height, width), np.uint8)
    core = np.zeros((height, width), bool)
    read, tokens, line_kinds = [], [], []
    for polygon, text, kind in lines:
        poly = np.asarray(polygon, dtype=np.float32).reshape(-1, 2)
        if len(poly) < 3 or abs(cv2.contourArea(poly)) < min_area:
            continue
        k = kind_index.get(kind)
        label = IGNORE_INDEX if k is None else k + 1
        cv2.fillPoly(class_mask, [np.round(poly).astype(np.int32)], label)
        _paint_core(core, poly, shrink)
        if text:
            read.append(poly)
            tokens.append(charset.encode(text)[:max_len])
            line_kinds.append(IGNORE_INDEX if k is None else k)
    t = max((len(ids) for ids in tokens), default=2)
    token_array = np.full((len(tokens), t), charset.pad_id, np.int64)
    for i, ids in enumerate(tokens):
        token_array[i, : len(ids)] = ids
    return {
        "class_mask": torch.from_numpy(class_mask),  # uint8: 8x less to ship from loader workers
        "core_mask": torch.from_numpy(core.astype(np.float32)),
        "line_quads": torch.from_numpy(line_quads(read)),
        "line_tokens": torch.from_numpy(token_array),
        "line_kinds": torch.tensor(line_kinds, dtype=torch.int64),
    }
