"""Rendering one text line to an ink mask, with its baseline and a polygon that hugs the ink.

Printed lines are drawn as one string (kerning kept). Handwritten lines are drawn glyph by
glyph with jitter, then warped as a whole (slant, baseline wobble, elastic distortion); the
polygon is measured on the warped mask, so it follows the ink wherever the warp moved it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw

from docrec.pages import Point
from docrec.synth import fonts
from docrec.synth.fonts import FontSpec

#: Coverage above which a pixel counts as ink when measuring polygons.
INK_THRESHOLD = 0.25


@dataclass
class Rendered:
    """A rendered line in its own small image; all coordinates are in that image's pixels."""

    mask: np.ndarray  # float32 (h, w), ink coverage in [0, 1]
    origin: Point  # where the baseline starts: layouts place this point on the page
    baseline: list[Point]
    polygon: list[Point]
    text: str

    @property
    def advance(self) -> float:
        """Length of the baseline: where the next text would start."""
        return self.baseline[-1][0] - self.baseline[0][0]

    @property
    def right(self) -> float:
        """How far the ink reaches right of the origin."""
        return max(x for x, _ in self.polygon) - self.origin[0]


@dataclass(frozen=True)
class HandStyle:
    """One writer: a handwriting font, a size, and how irregular their hand is."""

    font: FontSpec
    size: int  # font size in pixels
    slant: float  # horizontal shear per pixel above the baseline (positive leans right)
    tracking: float  # extra letter spacing, fraction of the size
    word_gap: float  # space between words, fraction of the size
    jitter: float  # std of each glyph's vertical offset, fraction of the size
    scale_jitter: float  # std of each glyph's relative size
    wobble: float  # amplitude of the baseline's drift, fraction of the size
    wobble_period: float  # pixels
    elastic: float  # amplitude of the elastic distortion, pixels
    thickness: int  # extra stroke width, pixels
    pressure: float  # how much the ink fades along the line, [0, 1)


def random_hand(rng: np.random.Generator, font: FontSpec, x_px: float) -> HandStyle:
    """A random writer using ``font`` with an 'x' about ``x_px`` tall."""
    size = fonts.size_for_x(font, x_px * rng.uniform(0.9, 1.12))
    return HandStyle(
        font=font, size=size, slant=float(rng.normal(0.12, 0.12)), tracking=float(rng.uniform(-0.02, 0.06)),
        word_gap=float(rng.uniform(0.35, 0.6)), jitter=float(rng.uniform(0.01, 0.04)),
        scale_jitter=float(rng.uniform(0.02, 0.07)), wobble=float(rng.uniform(0.02, 0.1)),
        wobble_period=float(rng.uniform(8, 25) * size), elastic=float(rng.uniform(0.3, 1.0) * size / 20),
        thickness=int(rng.random() < 0.35) * max(1, round(size / 40)), pressure=float(rng.uniform(0.0, 0.4)))


@dataclass
class Glyph:
    """One character placed by the writer, relative to its word's start."""

    char: str
    x: float
    dy: float
    size: int


@dataclass
class Word:
    """A shaped word: its glyphs and its advance width."""

    text: str
    glyphs: list[Glyph]
    width: float


def shape(text: str, style: HandStyle, rng: np.random.Generator) -> list[Word]:
    """Place every glyph of ``text`` with the writer's irregularities; words split on spaces."""
    _check_glyphs(style.font, text)
    words = []
    for token in text.split():
        x, glyphs = 0.0, []
        for ch in token:
            size = max(4, round(style.size * (1.0 + rng.normal(0.0, style.scale_jitter))))
            font = fonts.load(style.font, size)
            glyphs.append(Glyph(ch, x, float(rng.normal(0.0, style.jitter * style.size)), size))
            x += font.getlength(ch) * (1.0 + rng.normal(0.0, 0.03)) + style.tracking * style.size
        words.append(Word(token, glyphs, x))
    return words


def word_gaps(count: int, style: HandStyle, rng: np.random.Generator) -> list[float]:
    """Spaces between ``count`` words, as the writer leaves them."""
    return [style.word_gap * style.size * float(rng.uniform(0.85, 1.3)) for _ in range(count - 1)]


def wrap_printed(text: str, font: FontSpec, size: int, width: float) -> list[str]:
    """Greedy word wrap of ``text`` into lines at most ``width`` pixels long (a longer word stays whole)."""
    pil = fonts.load(font, size)
    lines: list[str] = []
    for word in text.split():
        if lines and pil.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def wrap_words(words: list[Word], gaps: list[float], width: float) -> list[tuple[list[Word], list[float]]]:
    """Greedy wrap of shaped words: (words, gaps between them) per line."""
    out: list[tuple[list[Word], list[float]]] = []
    used = 0.0
    for i, word in enumerate(words):
        gap = gaps[i - 1] if i else 0.0
        if out and used + gap + word.width <= width:
            out[-1][0].append(word)
            out[-1][1].append(gap)
            used += gap + word.width
        else:
            out.append(([word], []))
            used = word.width
    return out


def write_hand(text: str, style: HandStyle, rng: np.random.Generator, width: float | None = None) -> list[Rendered]:
    """``text`` as the writer's font can draw it (:func:`fonts.fit_text`), wrapped to ``width`` (None: one line)."""
    words = shape(fonts.fit_text(style.font, text), style, rng)
    if not words:
        return []
    gaps = word_gaps(len(words), style, rng)
    # Slant pushes ascenders sideways: keep that much room at the end of each line.
    room = None if width is None else width - abs(style.slant) * style.size
    groups = [(words, gaps)] if room is None else wrap_words(words, gaps, room)
    return [render_handwritten(ws, gs, style, rng) for ws, gs in groups]


def render_printed(text: str, font: FontSpec, size: int, pad: int = 2) -> Rendered:
    """A printed line; its polygon is the ink's bounding box (printed lines are straight)."""
    _check_glyphs(font, text)
    pil = fonts.load(font, size)
    left, top, right, bottom = pil.getbbox(text, anchor="ls")
    m = pad + 2
    img = Image.new("L", (right - left + 2 * m, bottom - top + 2 * m), 0)
    origin = (float(m - left), float(m - top))
    ImageDraw.Draw(img).text(origin, text, font=pil, fill=255, anchor="ls")
    mask = np.asarray(img, dtype=np.float32) / 255.0
    baseline = [origin, (origin[0] + pil.getlength(text), origin[1])]
    return _crop(Rendered(mask, origin, baseline, ink_box(mask, pad), text), pad)


def render_handwritten(words: list[Word], gaps: list[float], style: HandStyle, rng: np.random.Generator,
                       pad: int = 2) -> Rendered:
    """A handwritten line from shaped words; slant, wobble and elastic warp applied to the ink."""
    base = fonts.load(style.font, style.size)
    ascent, descent = base.getmetrics()
    starts = np.concatenate([[0.0], np.cumsum([w.width + g for w, g in zip(words[:-1], gaps)])])
    width = starts[-1] + words[-1].width
    # Room for what the warp moves: slanted ascenders, the wobble, and script overhangs.
    mx = int(abs(style.slant) * (ascent + descent) * 1.4 + 3 * style.elastic + style.size + 4)
    my = int(style.wobble * style.size * 1.5 + 3 * style.elastic + 0.3 * style.size + 4)
    h = int(1.4 * (ascent + descent)) + 2 * my
    yb = my + int(1.4 * ascent)
    img = Image.new("L", (int(width) + 2 * mx, h), 0)
    draw = ImageDraw.Draw(img)
    for word, x0 in zip(words, starts):
        for g in word.glyphs:
            draw.text((mx + x0 + g.x, yb + g.dy), g.char, font=fonts.load(style.font, g.size), fill=255,
                      anchor="ls", stroke_width=style.thickness, stroke_fill=255)
    src = np.asarray(img, dtype=np.float32) / 255.0

    w_img = src.shape[1]
    xs = np.arange(w_img, dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    drift = _smooth_noise(rng, w_img, max(8.0, style.wobble_period / 2))
    wob = (style.wobble * style.size * (0.7 * np.sin(2 * np.pi * xs / style.wobble_period + phase) + 0.6 * drift))
    ex, ey = (_smooth_field(rng, h, w_img, max(6, style.size // 3)) * style.elastic for _ in range(2))
    ys = np.arange(h, dtype=np.float32)[:, None]
    # Inverse maps: each output pixel reads the source where the forward warp came from.
    map_x = (xs[None, :] - style.slant * (yb - ys) + ex).astype(np.float32)
    map_y = (ys - wob[None, :] + ey).astype(np.float32)
    mask = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    polygon = ink_hull(mask, bin_width=max(8, int(1.5 * style.size)), pad=pad)
    fade = 1.0 - style.pressure * np.clip(_smooth_noise(rng, w_img, 3.0 * style.size) * 0.5 + 0.5, 0, 1)
    mask = mask * fade[None, :].astype(np.float32)
    x_end = mx + width
    n = max(2, int(np.ceil(width / max(8.0, style.wobble_period / 4))) + 1)
    bx = np.linspace(mx, x_end, n)
    baseline = [(float(x), float(yb + np.interp(x, xs, wob))) for x in bx]
    text = " ".join(w.text for w in words)
    return _crop(Rendered(mask, (float(mx), float(yb + wob[mx])), baseline, polygon, text), pad)


def _check_glyphs(font: FontSpec, text: str) -> None:
    # A missing glyph draws a box or nothing: the transcription would no longer match the ink.
    lacking = fonts.missing(font, text)
    if lacking:
        raise ValueError(f"font {font.path} cannot draw {lacking!r} in {text!r}; pass the text through "
                         "fonts.fit_text first")


def ink_box(mask: np.ndarray, pad: int) -> list[Point]:
    """The bounding rectangle of the ink, grown by ``pad``."""
    ys, xs = np.nonzero(mask > INK_THRESHOLD)
    if xs.size == 0:
        raise ValueError("line has no ink")
    x0, x1, y0, y1 = xs.min() - pad, xs.max() + 1 + pad, ys.min() - pad, ys.max() + 1 + pad
    return [(float(x0), float(y0)), (float(x1), float(y0)), (float(x1), float(y1)), (float(x0), float(y1))]


def ink_hull(mask: np.ndarray, bin_width: int, pad: int) -> list[Point]:
    """A polygon from per-column ink extents, binned by ``bin_width`` and grown by ``pad``.

    Each bin's top (bottom) is the highest (lowest) ink of the bin and its non-empty
    neighbours, and vertices sit at bin centres: the straight edge between two centres then
    never cuts ink, since ink between them belongs to one of the two bins.
    """
    ink = mask > INK_THRESHOLD
    cols = np.flatnonzero(ink.any(axis=0))
    if cols.size == 0:
        raise ValueError("line has no ink")
    h = ink.shape[0]
    rows = np.arange(h)[:, None]
    top = np.where(ink, rows, h).min(axis=0)
    bottom = np.where(ink, rows, -1).max(axis=0)
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    centres, tops, bottoms = [], [], []
    for b0 in range(x0, x1, bin_width):
        b1 = min(b0 + bin_width, x1)
        t, b = top[b0:b1].min(), bottom[b0:b1].max()
        if b >= 0:
            centres.append((b0 + b1) / 2.0)
            tops.append(t)
            bottoms.append(b + 1)
    t_arr, b_arr = np.array(tops, float), np.array(bottoms, float)
    t_dil, b_dil = t_arr.copy(), b_arr.copy()
    t_dil[1:] = np.minimum(t_dil[1:], t_arr[:-1])
    t_dil[:-1] = np.minimum(t_dil[:-1], t_arr[1:])
    b_dil[1:] = np.maximum(b_dil[1:], b_arr[:-1])
    b_dil[:-1] = np.maximum(b_dil[:-1], b_arr[1:])
    t_dil -= pad
    b_dil += pad
    xs = [x0 - pad, *centres, x1 + pad]
    upper = _drop_flat(list(zip(xs, [t_dil[0], *t_dil, t_dil[-1]])))
    lower = _drop_flat(list(zip(xs, [b_dil[0], *b_dil, b_dil[-1]])))
    return [(float(x), float(y)) for x, y in upper + lower[::-1]]


def _drop_flat(chain: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Remove vertices in the middle of horizontal runs (they add bytes, not shape)."""
    out = [chain[0]]
    for prev, cur, nxt in zip(chain, chain[1:], chain[2:]):
        if not (prev[1] == cur[1] == nxt[1]):
            out.append(cur)
    out.append(chain[-1])
    return out


def _crop(r: Rendered, pad: int) -> Rendered:
    """Cut the line image down to its polygon; shift every coordinate accordingly."""
    xs = [x for x, _ in r.polygon]
    ys = [y for _, y in r.polygon]
    h, w = r.mask.shape
    x0, y0 = max(0, int(np.floor(min(xs))) - pad), max(0, int(np.floor(min(ys))) - pad)
    x1, y1 = min(w, int(np.ceil(max(xs))) + pad + 1), min(h, int(np.ceil(max(ys))) + pad + 1)

    def shift(pts: list[Point]) -> list[Point]:
        return [(x - x0, y - y0) for x, y in pts]

    return Rendered(r.mask[y0:y1, x0:x1].copy(), (r.origin[0] - x0, r.origin[1] - y0), shift(r.baseline),
                    shift(r.polygon), r.text)


def _smooth_noise(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """1-D noise in about [-1, 1] varying over ``scale`` samples."""
    k = max(2, int(n / scale) + 2)
    knots = rng.uniform(-1, 1, k)
    return np.interp(np.arange(n), np.linspace(0, n - 1, k), knots).astype(np.float32)


def _smooth_field(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """2-D noise in about [-1, 1] varying over ``cell`` pixels (a coarse grid upsampled)."""
    grid = rng.uniform(-1, 1, (h // cell + 2, w // cell + 2)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
