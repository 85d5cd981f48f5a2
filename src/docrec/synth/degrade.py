"""Scan simulation: paper, bleed-through, skew, uneven light, blur, noise and JPEG artefacts.

Only the skew moves pixels; :func:`choose_skew` picks an angle that keeps every annotation
point inside the page, and the caller moves the annotations with the same matrix.
"""

from __future__ import annotations

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


def scan(ink: np.ndarray, matrix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The page as a scanner sees it: ``ink`` (float RGB, 1 = no ink) to uint8 RGB or grey (H, W)."""
    h, w = ink.shape[:2]
    if rng.random() < 0.5:  # a grey scan: work on one channel from here on (three times less to do)
        ink = cv2.cvtColor(ink, cv2.COLOR_RGB2GRAY)
    page = ink * _paper(rng, h, w, ink.ndim)
    if rng.random() < 0.3:
        # The verso's ink shows through, mirrored and soft; the page's own ink is a good stand-in.
        back = ink[:, ::-1] if ink.ndim == 2 else ink[:, ::-1].mean(axis=2)
        back = cv2.GaussianBlur(np.ascontiguousarray(back), (0, 0), float(rng.uniform(1.0, 2.5)))
        back = np.roll(back, (int(rng.integers(-40, 40)), int(rng.integers(-40, 40))), axis=(0, 1))
        page *= _expand(1.0 - float(rng.uniform(0.06, 0.2)) * (1.0 - back), page)
    # Uncovered corners show the paper's edge, or now and then the dark scanner lid.
    border = np.broadcast_to(page[0, 0], (3,)) if rng.random() < 0.8 else np.full(3, rng.uniform(0.1, 0.4))
    page = cv2.warpAffine(page, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=tuple(float(v) for v in border))
    page *= _expand(_lighting(rng, h, w), page)
    if rng.random() < 0.7:
        page = cv2.GaussianBlur(page, (0, 0), float(rng.uniform(0.3, 1.1)))
    page += _expand(rng.standard_normal((h, w), dtype=np.float32) * np.float32(rng.uniform(0.004, 0.02)), page)
    _specks(page, rng)
    out = np.clip(page * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 85))])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def _expand(factor: np.ndarray, page: np.ndarray) -> np.ndarray:
    """A per-pixel (H, W) factor shaped to multiply a grey or colour page."""
    return factor if page.ndim == 2 else factor[:, :, None]


def _paper(rng: np.random.Generator, h: int, w: int, ndim: int) -> np.ndarray:
    """Off-white paper (tinted in colour scans) with a faint blotchy texture."""
    tone = rng.uniform(0.86, 0.98)
    blotch = cv2.resize(rng.normal(0, 1, (8, 6)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    texture = np.float32(tone) * (1.0 + blotch * np.float32(rng.uniform(0.0, 0.02)))
    if ndim == 2:
        return texture
    tint = np.array([1.0, rng.uniform(0.97, 1.0), rng.uniform(0.9, 1.0)], np.float32)
    return texture[:, :, None] * tint


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


def _specks(page: np.ndarray, rng: np.random.Generator) -> None:
    """Dust and toner specks: a few small dark dots, drawn in place."""
    h, w = page.shape[:2]
    for _ in range(int(rng.poisson(15))):
        x, y, r, v = int(rng.integers(w)), int(rng.integers(h)), int(rng.integers(1, 3)), float(rng.uniform(0.2, 0.6))
        cv2.circle(page, (x, y), r, (v, v, v), -1)
