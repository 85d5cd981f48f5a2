"""A page being drawn: the ink laid so far, the printed graphics, and the annotations of both."""

from __future__ import annotations

import cv2
import numpy as np

from docrec.pages import Line, Point, Region
from docrec.synth.render import Rendered

Color = tuple[float, float, float]

#: Printing inks and pens, as RGB fractions of the light they let through.
BLACK: Color = (0.08, 0.08, 0.09)
PENS: tuple[Color, ...] = ((0.1, 0.1, 0.14), (0.12, 0.2, 0.62), (0.08, 0.14, 0.42), (0.2, 0.2, 0.22))


class Canvas:
    """One page: ``light`` is the fraction of light the ink lets through (1 = bare paper)."""

    def __init__(self, width: int, height: int, graphics_color: Color = BLACK) -> None:
        self.width, self.height = width, height
        self.light = np.ones((height, width, 3), np.float32)
        # Rules, boxes and bands in one printing ink, drawn with OpenCV and laid on at the end.
        self.graphics = np.zeros((height, width), np.uint8)
        self.graphics_color = graphics_color
        self.lines: list[Line] = []
        self.regions: list[Region] = []

    def fits(self, r: Rendered, x: float, y: float) -> bool:
        """Whether ``r`` with its baseline origin at (x, y) lies inside the page."""
        dx, dy = self._offset(r, x, y)
        h, w = r.mask.shape
        return dx >= 0 and dy >= 0 and dx + w <= self.width and dy + h <= self.height

    def put(self, r: Rendered, x: float, y: float, kind: str, color: Color = BLACK,
            darkness: float = 1.0) -> Line:
        """Lay the line's ink with its baseline origin at (x, y) and record it as an annotation."""
        if not self.fits(r, x, y):
            raise ValueError(f"line {r.text!r} at ({x:.0f}, {y:.0f}) does not fit the page")
        dx, dy = self._offset(r, x, y)
        self.ink(r.mask * darkness, dx, dy, color)
        line = Line(id=f"l{len(self.lines)}", polygon=[(px + dx, py + dy) for px, py in r.polygon], text=r.text,
                    kind=kind, baseline=[(px + dx, py + dy) for px, py in r.baseline])
        self.lines.append(line)
        return line

    def ink(self, alpha: np.ndarray, x: int, y: int, color: Color) -> None:
        """Lay ink of coverage ``alpha`` (h, w) at top-left (x, y); inks multiply like real ones."""
        h, w = alpha.shape
        absorb = 1.0 - np.asarray(color, np.float32)
        self.light[y:y + h, x:x + w] *= 1.0 - alpha[:, :, None] * absorb

    def scribble(self, points: list[Point], thickness: int, color: Color) -> None:
        """A pen stroke that is not text (a tick in a box, a crossing-out)."""
        pts = np.round(np.asarray(points)).astype(np.int32)
        m = thickness + 2
        x0, y0 = np.maximum(pts.min(axis=0) - m, 0)
        x1, y1 = np.minimum(pts.max(axis=0) + m, [self.width, self.height])
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.polylines(mask, [pts - [x0, y0]], False, 255, thickness, cv2.LINE_AA)
        self.ink(mask.astype(np.float32) / 255.0, int(x0), int(y0), color)

    def region(self, kind: str, lines: list[Line], boxes: tuple[tuple[float, float, float, float], ...] = (),
               pad: float = 4.0) -> Region | None:
        """A rectangular region around ``lines`` (and ``boxes``: x0, y0, x1, y1); None without lines."""
        if not lines:
            return None
        pts = [p for ln in lines for p in ln.polygon] + [p for b in boxes for p in ((b[0], b[1]), (b[2], b[3]))]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, y0 = max(0.0, min(xs) - pad), max(0.0, min(ys) - pad)
        x1, y1 = min(float(self.width), max(xs) + pad), min(float(self.height), max(ys) + pad)
        reg = Region(id=f"r{len(self.regions)}", polygon=[(x0, y0), (x1, y0), (x1, y1), (x0, y1)], kind=kind)
        for ln in lines:
            ln.region = reg.id
        self.regions.append(reg)
        return reg

    def trim(self, height: float) -> None:
        """Cut the page to ``height`` pixels (a receipt torn off the roll below its last line)."""
        height = int(min(self.height, max(1, round(height))))
        kept = [p for ann in self.lines + self.regions for p in ann.polygon]
        if kept and max(y for _, y in kept) > height:
            raise ValueError(f"trimming to {height} px would cut annotations off the page")
        self.height = height
        self.light = self.light[:height]
        self.graphics = self.graphics[:height]

    def image(self) -> np.ndarray:
        """The ink on white paper as float32 RGB in [0, 1]: text and graphics together."""
        g = self.graphics.astype(np.float32)[:, :, None] / 255.0
        return self.light * (1.0 - g * (1.0 - np.asarray(self.graphics_color, np.float32)))

    @staticmethod
    def _offset(r: Rendered, x: float, y: float) -> tuple[int, int]:
        return round(x - r.origin[0]), round(y - r.origin[1])
