"""How a page came to be pixels: printing (toner spread or starved, thermal fading) and one of five
processes, drawn per page by :func:`choose_process`:

- ``scan``: a flatbed scan, grey or colour: paper, bleed-through, uneven light, blur, noise, JPEG;
- ``fax``: the scan sent by fax: 100-150 dpi, binarised with ragged strokes, dropped and streaked rows;
- ``photocopy``: high contrast, toner specks and streaks, dark edges;
- ``thermal``: a till receipt: faded, banded print on white paper;
- ``aged``: an old letter: yellowed, stained, foxed paper with the verso showing through.

Only the skew moves pixels; :func:`choose_skew` picks an angle that keeps every annotation
point inside the page, and the caller moves the annotations with the same matrix. Every process
keeps the page's size, so the annotations hold for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from docrec.pages import Point


def choose_skew(points: list[Point], width: int, height: int, rng: np.random.Generator,
                max_degrees: float = 2.5) -> np.ndarray:
    """A 2x3 rotation about the page centre that keeps all ``points`` inside the page."""
    angle = float(np.clip(rng.normal(0.0, max_degrees / 2.5), -max_degrees, max_degrees))
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    for _ in range(8):
        m = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), angle, 1.0)
        moved = transform(pts, m)
        if moved.size == 0 or (moved.min() >= 0 and (moved[:, 0] <= width).all() and (moved[:, 1] <= height).all()):
            return m
        angle /= 2.0  # content close to the edge: skew less rather than push it off the page
    return cv2.getRotationMatrix2D((width / 2.0, height / 2.0), 0.0, 1.0)


def transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (n, 2) points."""
    return points @ matrix[:, :2].T + matrix[:, 2]


#: How often each process makes a page of each type.
PROCESS_MIX: dict[str, dict[str, float]] = {
    "printed": {"scan": 0.5, "fax": 0.2, "photocopy": 0.3},
    "form": {"scan": 0.4, "fax": 0.3, "photocopy": 0.3},
    "handwritten": {"scan": 0.45, "aged": 0.35, "photocopy": 0.2},
    "receipt": {"thermal": 0.7, "scan": 0.2, "photocopy": 0.1},
}
PROCESSES = ("scan", "fax", "photocopy", "thermal", "aged")


def check_processes(allowed: Sequence[str]) -> None:
    """ValueError unless ``allowed`` names one or more of :data:`PROCESSES`."""
    unknown = sorted(set(allowed) - set(PROCESSES))
    if unknown or not allowed:
        what = f"unknown process {unknown[0]!r}" if unknown else "no process allowed"
        raise ValueError(f"{what}; choose from {', '.join(PROCESSES)}")


def choose_process(page_type: str, rng: np.random.Generator, allowed: Sequence[str] | None = None) -> str:
    """The process that makes a page of ``page_type`` (see :data:`PROCESS_MIX`).

    ``allowed`` keeps only those processes (the type's shares among them, or equal shares where the
    type uses none of them): ``("scan",)`` gives clean pages for the start of a curriculum."""
    mix = PROCESS_MIX.get(page_type, PROCESS_MIX["printed"])
    if allowed is not None:
        check_processes(allowed)
        mix = {n: mix[n] for n in allowed if n in mix} or {n: 1.0 for n in allowed}
        total = sum(mix.values())
        mix = {n: w / total for n, w in mix.items()}
    names = sorted(mix)
    return names[int(rng.choice(len(names), p=[mix[n] for n in names]))]


def scan(ink: np.ndarray, matrix: np.ndarray, rng: np.random.Generator, process: str = "scan",
         dpi: float = 175.0) -> np.ndarray:
    """The page as ``process`` leaves it: ``ink`` (float RGB, 1 = no ink) to uint8 RGB or grey (H, W)."""
    if process not in PROCESSES:
        raise ValueError(f"unknown process {process!r}; choose one of {', '.join(PROCESSES)}")
    h, w = ink.shape[:2]
    grey = process in ("fax", "photocopy", "thermal") or rng.random() < 0.5
    if grey:  # work on one channel from here on (three times less to do)
        ink = cv2.cvtColor(ink, cv2.COLOR_RGB2GRAY)
    ink = _toner(ink, rng, dpi, starve=process not in ("aged", "thermal"))
    if process == "thermal":
        ink = _thermal(ink, rng)
    page = ink * _paper(rng, h, w, ink.ndim, aged=process == "aged")
    if process == "aged":
        page *= _expand(_stains(rng, h, w), page)
    if rng.random() < (0.7 if process == "aged" else 0.3):
        # The verso's ink shows through, mirrored and soft; the page's own ink is a good stand-in.
        back = ink[:, ::-1] if ink.ndim == 2 else ink[:, ::-1].mean(axis=2)
        back = cv2.GaussianBlur(np.ascontiguousarray(back), (0, 0), float(rng.uniform(1.0, 2.5)))
        back = np.roll(back, (int(rng.integers(-40, 40)), int(rng.integers(-40, 40))), axis=(0, 1))
        page *= _expand(1.0 - float(rng.uniform(0.06, 0.2)) * (1.0 - back), page)
    # Uncovered corners show the paper's edge, or now and then the dark scanner lid.
    border = np.broadcast_to(page[0, 0], (3,)) if rng.random() < 0.8 else np.full(3, rng.uniform(0.1, 0.4))
    page = cv2.warpAffine(page, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=tuple(float(v) for v in border))
    if process != "fax":  # a fax feeds the sheet past an evenly lit sensor
        page *= _expand(_lighting(rng, h, w), page)
    if rng.random() < 0.7:
        page = cv2.GaussianBlur(page, (0, 0), float(rng.uniform(0.3, 1.1)))
    page += _expand(rng.standard_normal((h, w), dtype=np.float32) * np.float32(rng.uniform(0.004, 0.02)), page)
    _specks(page, rng, 40 if process == "photocopy" else 15)
    if process == "photocopy":
        page = _photocopy(page, rng)
    if process == "fax":
        return _fax(page, rng, dpi)
    out = to_uint8(page)
    if rng.random() < 0.5:
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 85))])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def to_uint8(page: np.ndarray) -> np.ndarray:
    """A float page (1 = white) as uint8 pixels, rounded."""
    return np.clip(page * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _expand(factor: np.ndarray, page: np.ndarray) -> np.ndarray:
    """A per-pixel (H, W) factor shaped to multiply a grey or colour page."""
    return factor if page.ndim == 2 else factor[:, :, None]


def _paper(rng: np.random.Generator, h: int, w: int, ndim: int, aged: bool = False) -> np.ndarray:
    """Off-white paper (tinted in colour scans) with a faint blotchy texture; ``aged``: darker,
    yellowed and blotchier."""
    tone = rng.uniform(0.78, 0.92) if aged else rng.uniform(0.86, 0.98)
    blotch = cv2.resize(rng.normal(0, 1, (8, 6)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    texture = np.float32(tone) * (1.0 + blotch * np.float32(rng.uniform(0.03, 0.08) if aged else rng.uniform(0.0, 0.02)))
    if ndim == 2:
        return texture
    tint = (np.array([1.0, rng.uniform(0.86, 0.94), rng.uniform(0.62, 0.78)], np.float32) if aged else
            np.array([1.0, rng.uniform(0.97, 1.0), rng.uniform(0.9, 1.0)], np.float32))
    return texture[:, :, None] * tint


def _toner(ink: np.ndarray, rng: np.random.Generator, dpi: float, starve: bool = True) -> np.ndarray:
    """Strokes as printed: now and then spread (heavy toner, a typewriter's ribbon, ink bleed) or
    (``starve``) thinned."""
    r = rng.random()
    k = max(2, round(dpi / 100))
    if r < 0.2:
        return cv2.erode(ink, np.ones((k, k), np.uint8))  # light is the minimum: ink grows
    if r < 0.3 and starve:
        return np.maximum(ink, cv2.dilate(ink, np.ones((2, 2), np.uint8)) * np.float32(0.85)
                          + np.float32(0.15) * ink)  # thinner, greyer strokes
    return ink


def _thermal(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Thermal print: ink faded unevenly, in bands along the roll (the print head's elements)."""
    h, w = ink.shape[:2]
    strength = np.float32(rng.uniform(0.55, 0.95))
    bands = cv2.resize(rng.uniform(0.8, 1.0, (1, max(2, w // 12))).astype(np.float32), (w, 1),
                       interpolation=cv2.INTER_LINEAR)
    along = cv2.resize(rng.uniform(0.8, 1.0, (max(2, h // 200), 1)).astype(np.float32), (1, h),
                       interpolation=cv2.INTER_CUBIC)
    fade = np.clip(strength * bands * along, 0.2, 1.0)
    return 1.0 - (1.0 - ink) * _expand(fade, ink)


def _stains(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Foxing and water stains: soft brownish blots on old paper (a light factor)."""
    light = np.ones((h, w), np.float32)
    for _ in range(int(rng.poisson(6))):
        x, y = int(rng.integers(w)), int(rng.integers(h))
        r = int(rng.uniform(0.003, 0.03) * max(h, w))
        cv2.circle(light, (x, y), max(1, r), float(1.0 - rng.uniform(0.03, 0.1)), -1)
    return cv2.GaussianBlur(light, (0, 0), float(max(h, w) * 0.003))


def _photocopy(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copier's contrast curve (dark strokes, white ground), toner streaks and dark page edges."""
    lo, hi = np.float32(rng.uniform(0.15, 0.4)), np.float32(rng.uniform(0.7, 0.9))
    page = np.clip((page - lo) / (hi - lo), 0.0, 1.0)
    w = page.shape[1]
    for _ in range(int(rng.poisson(1.5))):  # a dirty drum leaves a line down the page
        x, width = int(rng.integers(w)), int(rng.integers(1, 4))
        page[:, x:x + width] *= np.float32(rng.uniform(0.5, 0.9))
    if rng.random() < 0.5:
        edge = int(rng.uniform(0.005, 0.02) * w)
        page[:, :edge] *= np.float32(rng.uniform(0.1, 0.5))
    return page


def _fax(page: np.ndarray, rng: np.random.Generator, dpi: float) -> np.ndarray:
    """The page through a fax: down to 100-150 dpi, thresholded (ragged strokes), a few dropped or
    streaked rows, back up to the page's size with blocky pixels; uint8 grey, black or white.
    ``page`` is grey: :func:`scan` works on one channel for every fax."""
    h, w = page.shape
    f = min(1.0, float(rng.uniform(100, 150)) / dpi)
    small = cv2.resize(page, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    small = small + rng.normal(0, rng.uniform(0.02, 0.08), small.shape).astype(np.float32)
    # The threshold sits just under the paper's level: thin strokes survive, ragged.
    level = np.float32(np.percentile(small[::4, ::4], 90))
    binary = np.where(small < level * np.float32(rng.uniform(0.65, 0.85)), 0, 255).astype(np.uint8)
    rows = binary.shape[0]
    for _ in range(int(rng.poisson(2))):  # a line lost in transmission, or smeared black
        y = int(rng.integers(rows))
        binary[y:y + int(rng.integers(1, 3))] = 255 if rng.random() < 0.6 else 0
    return cv2.resize(binary, (w, h), interpolation=cv2.INTER_NEAREST)


def _lighting(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Uneven illumination: a soft gradient, sometimes a dark shadow along one edge (a fold, a lid)."""
    angle = rng.uniform(0, 2 * np.pi)
    xs, ys = np.linspace(0, 1, w, dtype=np.float32), np.linspace(0, 1, h, dtype=np.float32)[:, None]
    ramp = np.float32(np.cos(angle)) * xs + np.float32(np.sin(angle)) * ys
    light = 1.0 - np.float32(rng.uniform(0.0, 0.08)) * (ramp - ramp.min()) / max(1e-6, float(np.ptp(ramp)))
    if rng.random() < 0.35:
        edge = int(rng.integers(4))
        dist = [xs * w, (1 - xs) * w, ys * h, (1 - ys) * h][edge]
        width = np.float32(rng.uniform(0.01, 0.06) * max(h, w))
        light = light * (1.0 - np.float32(rng.uniform(0.2, 0.6)) * np.exp(-dist / width))
    return light.astype(np.float32, copy=False)


def _specks(page: np.ndarray, rng: np.random.Generator, mean: float = 15) -> None:
    """Dust and toner specks: a few small dark dots, drawn in place."""
    h, w = page.shape[:2]
    for _ in range(int(rng.poisson(mean))):
        x, y, r, v = int(rng.integers(w)), int(rng.integers(h)), int(rng.integers(1, 3)), float(rng.uniform(0.2, 0.6))
        cv2.circle(page, (x, y), r, (v, v, v), -1)
