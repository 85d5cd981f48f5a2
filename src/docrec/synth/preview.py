"""Small previews of synthetic pages with their annotations drawn on, to look at by eye."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from docrec.images import read_image
from docrec.synth.degrade import PROCESS_MIX
from docrec.synth.generate import PAGE_TYPES, SynthPage, make_page

#: Outline colours (RGB) by kind; regions are drawn thinner than lines.
KIND_COLORS = {"printed": (220, 30, 30), "handwritten": (20, 140, 20), "form_field": (30, 60, 230)}


def draw(page: SynthPage, height: int = 600) -> np.ndarray:
    """The page scaled to ``height`` pixels with region and line polygons drawn, coloured by kind."""
    img = _rgb(page.image)
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


def contact_sheet(seed: int = 0, height: int = 360, real: dict[str, str | Path] | None = None,
                  annotations: bool = False) -> np.ndarray:
    """Every page type through each of its processes, a row per type (RGB); ``real`` adds at the end
    of a type's row a real page of that kind (``{page_type: image path}``), scaled the same, to set
    beside it. The first page of ``seed`` that each (type, process) pair draws is shown."""
    rows = []
    for page_type in PAGE_TYPES:
        wanted, tiles = list(PROCESS_MIX[page_type]), {}
        for index in range(64):
            page = make_page(seed, index, page_type=page_type)
            if page.process in wanted and page.process not in tiles:
                tiles[page.process] = (draw(page, height) if annotations else page.image, f"{page_type} / {page.process}")
            if len(tiles) == len(wanted):
                break
        row = [tiles[p] for p in wanted if p in tiles]
        if real and page_type in real:
            row.append((read_image(Path(real[page_type]), long_side=4 * height), f"real: {Path(real[page_type]).name}"))
        rows.append(row)
    return captioned_sheet(rows, height)


def captioned_sheet(rows: list[list[tuple[np.ndarray, str]]], height: int = 360) -> np.ndarray:
    """Images (grey or RGB) with their captions, each scaled to ``height``, a row per list, side by side and
    rows one under the other, padded white to one width (RGB)."""
    lines = [np.hstack([np.pad(_tile(image, height, caption), ((0, 0), (0, 8), (0, 0)), constant_values=255)
                        for image, caption in row]) for row in rows]
    width = max(r.shape[1] for r in lines)
    return np.vstack([np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in lines])


def _rgb(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)


def _tile(rgb: np.ndarray, height: int, caption: str) -> np.ndarray:
    """The image scaled to ``height`` with a caption band above it."""
    rgb = _rgb(rgb)
    s = height / rgb.shape[0]
    img = cv2.resize(rgb, (max(1, round(rgb.shape[1] * s)), height), interpolation=cv2.INTER_AREA)
    band = np.full((22, img.shape[1], 3), 255, np.uint8)
    cv2.putText(band, caption, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([band, img])


def write_contact_sheet(path: str | Path, seed: int = 0, height: int = 360,
                        real: dict[str, str | Path] | None = None) -> Path:
    """:func:`contact_sheet` as a PNG (64-colour palette: small, text still crisp)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet = Image.fromarray(contact_sheet(seed, height, real))
    sheet.quantize(64, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(path, optimize=True)
    return path
