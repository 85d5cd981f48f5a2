"""Small previews of synthetic pages with their annotations drawn on, to look at by eye."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from docrec.synth.generate import PAGE_TYPES, SynthPage, make_page

#: Outline colours (RGB) by kind; regions are drawn thinner than lines.
KIND_COLORS = {"printed": (220, 30, 30), "handwritten": (20, 140, 20), "form_field": (30, 60, 230)}


def draw(page: SynthPage, height: int = 600) -> np.ndarray:
    """The page scaled to ``height`` pixels with region and line polygons drawn, coloured by kind."""
    img = page.image if page.image.ndim == 3 else cv2.cvtColor(page.image, cv2.COLOR_GRAY2RGB)
    # Draw at twice the preview size, then shrink: thin outlines stay visible without hiding the text.
    s = 2 * height / img.shape[0]
    big = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    for ann, thick in [(r, 1) for r in page.regions] + [(ln, 2) for ln in page.lines]:
        pts = np.round(np.asarray(ann.polygon) * s).astype(np.int32)
        color = KIND_COLORS.get(ann.kind, (200, 0, 200))
        if thick == 1:
            color = tuple(c // 2 + 110 for c in color)
        cv2.polylines(big, [pts], True, color, thick, cv2.LINE_AA)
    return cv2.resize(big, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)


def write_previews(out_dir: str | Path, seed: int = 0, height: int = 600) -> list[Path]:
    """One preview PNG per page type (page 0 of ``seed`` forced to that type)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for page_type in PAGE_TYPES:
        path = out_dir / f"preview_{page_type}.png"
        rgb = draw(make_page(seed, 0, page_type=page_type), height)
        # A 64-colour palette keeps the file ~25-80 kB and the outlines' colours intact.
        palette = Image.fromarray(rgb).quantize(64, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        palette.save(path, optimize=True)
        paths.append(path)
    return paths
