"""Training targets of one page (or crop): class mask, line-core mask, line quads and token ids.

Pure functions of the (augmented) line polygons; the data pipeline calls
:func:`build_targets` once per sample, so everything here is plain NumPy/OpenCV.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from docrec.geometry import CORE_SHRINK, line_cores, line_quads
from docrec.text import IGNORE_INDEX, Charset

#: Lines whose visible polygon is smaller than this (pixels^2) are dropped (crop slivers).
MIN_LINE_AREA = 8.0

#: 4-neighbourhood: a new core keeps off the pixels touching an earlier one.
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))

#: (polygon, text, kind) or (polygon, text, kind, baseline [M,2] or None), in pixels of the sample.
Line = tuple[np.ndarray, "str | None", str] | tuple[np.ndarray, "str | None", str, "np.ndarray | None"]


def core_mask(shape: tuple[int, int], polygons: Sequence[np.ndarray],
              baselines: Sequence[np.ndarray | None] | None = None, quads: np.ndarray | None = None,
              shrink: float = CORE_SHRINK) -> np.ndarray:
    """uint8 [H, W] mask, 1 on the core of each line (:func:`docrec.geometry.line_cores`), each apart from the
    lines before it.

    A pixel of a line's core that touches (is, or is a 4-neighbour of) a pixel of an earlier
    line's core band is left out, so the cores of lines that touch or overlap stay separate
    components: each band is painted with its line's number into one label image, earlier
    lines on top, and a pixel is kept where no smaller number lies within its cross. The label
    image covers the bands' bounding box only.
    """
    mask = np.zeros(shape, np.uint8)
    bands = [np.round(b).astype(np.int32) for b in line_cores(polygons, shrink, baselines, quads) if b is not None]
    if not bands:
        return mask
    corners = np.concatenate(bands)
    x0, y0 = np.maximum(corners.min(axis=0) - 1, 0)
    x1, y1 = np.minimum(corners.max(axis=0) + 2, (shape[1], shape[0]))
    if x1 <= x0 or y1 <= y0:
        return mask
    n = len(bands)  # labels 0 .. n - 1, n where no band lies
    owner = np.full((y1 - y0, x1 - x0), n, np.uint8 if n < 255 else np.uint16 if n < 65535 else np.float32)
    for label in range(n - 1, -1, -1):
        cv2.fillPoly(owner, [bands[label] - (x0, y0)], label)
    # Kept: the smallest label within the cross (erode) is the pixel's own, and the pixel has one.
    kept = cv2.bitwise_and(cv2.compare(cv2.erode(owner, _CROSS), owner, cv2.CMP_EQ),
                           cv2.compare(owner, float(n), cv2.CMP_LT))
    mask[y0:y1, x0:x1] = cv2.bitwise_and(kept, 1)
    return mask


def build_targets(
    lines: Sequence[Line],
    height: int,
    width: int,
    kinds: Sequence[str],
    charset: Charset,
    max_len: int,
    min_area: float = MIN_LINE_AREA,
    shrink: float = CORE_SHRINK,
    regions: Sequence[tuple[np.ndarray, str]] = (),
    region_kinds: Sequence[str] = (),
    holes: np.ndarray | None = None,
    fold_case: bool = False,
) -> dict[str, Tensor]:
    """Targets of one sample from its lines ``(polygon [K,2] in pixels, text, kind[, baseline])``.

    Returns ``class_mask`` uint8[H,W] (0 background, 1 + kind index, 255 unknown kind or
    hidden), ``core_mask`` uint8[H,W] (1 core, 0 not, 255 hidden: no loss), ``region_mask``
    uint8[H,W] (0 none, 1 + index in ``region_kinds`` for the ``regions`` ``(polygon, kind)``
    of those kinds, e.g. form fields), and for the lines that have a transcription ``line_quads``
    Float[N,4,2], ``line_tokens`` Long[N,T] (BOS text EOS PAD..., cut at ``max_len``) and
    ``line_kinds`` Long[N] (255 for an unknown kind) and ``line_fold_case`` Bool[N] (``fold_case``: the
    page's labels ignore case, so its lines are read by a loss that does too). Lines smaller than ``min_area`` are
    dropped. A line whose text is ``None`` or empty (e.g. cut by a crop, so its visible
    text is unknown) is painted into the masks but not used for recognition. ``holes``
    [K, 4] (x0, y0, x1, y1) are erased patches: what they cover is ignored by the class and
    core losses, since the image no longer shows it.
    """
    kind_index = {k: i for i, k in enumerate(kinds)}
    class_mask = np.zeros((height, width), np.uint8)
    kept = []
    for polygon, text, kind, *rest in lines:
        poly = np.asarray(polygon, dtype=np.float32).reshape(-1, 2)
        if len(poly) >= 3 and abs(cv2.contourArea(poly)) >= min_area:
            kept.append((poly, text, kind, rest[0] if rest else None))
    polys = [poly for poly, *_ in kept]
    quads = line_quads(polys)  # all at once: the cores and the reader use them
    cores = core_mask((height, width), polys, [base for *_, base in kept], quads, shrink)
    read, tokens, line_kinds = [], [], []
    for (poly, text, kind, _), quad in zip(kept, quads):
        k = kind_index.get(kind)
        label = IGNORE_INDEX if k is None else k + 1
        cv2.fillPoly(class_mask, [np.round(poly).astype(np.int32)], label)
        if text:
            read.append(quad)
            tokens.append(charset.encode(text)[:max_len])
            line_kinds.append(IGNORE_INDEX if k is None else k)
    region_index = {k: i for i, k in enumerate(region_kinds)}
    region_mask = np.zeros((height, width), np.uint8)
    for polygon, kind in regions:
        if kind in region_index:
            cv2.fillPoly(region_mask, [np.round(np.asarray(polygon, np.float32)).astype(np.int32)],
                         region_index[kind] + 1)
    for x0, y0, x1, y1 in np.asarray(holes if holes is not None else [], np.float32).reshape(-1, 4):
        x0, y0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        x1, y1 = int(np.ceil(x1)), int(np.ceil(y1))
        class_mask[y0:y1, x0:x1] = IGNORE_INDEX
        cores[y0:y1, x0:x1] = IGNORE_INDEX
    t = max((len(ids) for ids in tokens), default=2)
    token_array = np.full((len(tokens), t), charset.pad_id, np.int64)
    for i, ids in enumerate(tokens):
        token_array[i, : len(ids)] = ids
    return {
        "class_mask": torch.from_numpy(class_mask),  # uint8: 8x less to ship from loader workers
        "core_mask": torch.from_numpy(cores),  # 0/1, 255 under the holes
        "region_mask": torch.from_numpy(region_mask),
        "line_quads": torch.from_numpy(np.asarray(read, np.float32).reshape(-1, 4, 2)),
        "line_tokens": torch.from_numpy(token_array),
        "line_kinds": torch.tensor(line_kinds, dtype=torch.int64),
        "line_fold_case": torch.full((len(tokens),), bool(fold_case), dtype=torch.bool),
    }
