"""The page data model: plain dataclasses that every reader produces and every consumer reads.

Coordinates are pixels of the referenced image, origin top-left, x right, y down.
Objects validate themselves on construction; a problem raises :class:`DataError` naming
the annotation file (``source``) and the element.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

Point = tuple[float, float]

#: Kinds the synthetic data uses and the default configs train on. Readers may produce
#: other kinds (a dataset's own vocabulary); the charset of kinds is built from the data.
KINDS: tuple[str, ...] = ("printed", "handwritten", "form_field")

#: Real exports overshoot the page edge by a pixel or two; such points are clipped.
#: Anything further out is an annotation error (e.g. polygons drawn on a larger scan).
OVERSHOOT_TOLERANCE_PX = 8.0


class DataError(ValueError):
    """Invalid input data; the message names the file and the element."""


def _where(source: str, element: str) -> str:
    return f"{source or '<memory>'}: {element}"


def _points(raw, source: str, element: str, min_points: int, what: str) -> list[Point]:
    try:
        pts = [(float(x), float(y)) for x, y in raw]
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{_where(source, element)}: {what} is not a list of [x, y] pairs ({exc})") from None
    if len(pts) < min_points:
        raise DataError(f"{_where(source, element)}: {what} has {len(pts)} point(s), needs at least {min_points}")
    for x, y in pts:
        if not (math.isfinite(x) and math.isfinite(y)):
            raise DataError(f"{_where(source, element)}: {what} has a non-finite coordinate ({x}, {y})")
    return pts


def _fit(pts: list[Point], width: int, height: int, source: str, element: str, what: str) -> list[Point]:
    """Clip points within the overshoot tolerance to the page; refuse points further out."""
    tol = OVERSHOOT_TOLERANCE_PX
    out = []
    for x, y in pts:
        if x < -tol or y < -tol or x > width + tol or y > height + tol:
            raise DataError(
                f"{_where(source, element)}: {what} point ({x:g}, {y:g}) lies outside the "
                f"{width}x{height} page (more than {tol:g} px beyond its edge)"
            )
        out.append((min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))))
    return out


def polygon_area(pts: list[Point]) -> float:
    """Absolute shoelace area of a polygon."""
    s = 0.0
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        s += x0 * y1 - x1 * y0
    return abs(s) / 2.0


@dataclass
class Region:
    """A text region (block, zone, form field) and its kind."""

    id: str
    polygon: list[Point]
    kind: str = "printed"
    label: str | None = None  # the dataset's own name for it (SegmOnto zone, FUNSD label ...)


@dataclass
class Line:
    """One text line: its polygon, optional baseline, transcription and kind."""

    id: str
    polygon: list[Point]
    text: str = ""
    kind: str = "printed"
    baseline: list[Point] | None = None
    region: str | None = None  # id of the enclosing region
    label: str | None = None  # field label (FUNSD question/answer ...), kept from the source
    confidence: float | None = None  # a reader's confidence in ``text``, in [0, 1] (predictions)


@dataclass
class Page:
    """A page image and its regions and lines, validated on construction.

    ``image`` is the path as written in the annotation, relative to ``root`` (the folder
    of the annotation file) unless absolute. ``source`` is the annotation file, used in
    error messages. ``fold_case``: the transcriptions do not keep the case of the print
    (SROIE's are all upper case), so texts are scored ignoring case (:mod:`docrec.metrics`).
    """

    image: str
    width: int
    height: int
    regions: list[Region] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    root: Path | None = None
    source: str = ""
    fold_case: bool = False

    def __post_init__(self) -> None:
        src = self.source
        if not isinstance(self.image, str) or not self.image:
            raise DataError(f"{_where(src, 'page')}: missing image path")
        try:
            w, h = int(self.width), int(self.height)
        except (TypeError, ValueError, OverflowError):
            raise DataError(f"{_where(src, 'page')}: width/height must be integers, got "
                            f"{self.width!r}x{self.height!r}") from None
        if w <= 0 or h <= 0 or w != self.width or h != self.height:
            raise DataError(f"{_where(src, 'page')}: invalid page size {self.width!r}x{self.height!r}")
        self.width, self.height = w, h
        region_ids: set[str] = set()
        for r in self.regions:
            el = f"region {r.id!r}"
            self._check_id(r.id, region_ids, el)
            self._check_kind(r.kind, el)
            r.polygon = self._polygon(r.polygon, el)
        line_ids: set[str] = set()
        for ln in self.lines:
            el = f"line {ln.id!r}"
            self._check_id(ln.id, line_ids, el)
            self._check_kind(ln.kind, el)
            if not isinstance(ln.text, str):
                raise DataError(f"{_where(src, el)}: text must be a string, got {type(ln.text).__name__}")
            ln.text = unicodedata.normalize("NFC", ln.text)
            ln.polygon = self._polygon(ln.polygon, el)
            if ln.baseline is not None:
                ln.baseline = _fit(_points(ln.baseline, src, el, 2, "baseline"), w, h, src, el, "baseline")
            if ln.confidence is not None:
                try:
                    ln.confidence = float(ln.confidence)
                except (TypeError, ValueError):
                    ln.confidence = math.nan
                if not 0.0 <= ln.confidence <= 1.0:
                    raise DataError(f"{_where(src, el)}: confidence must be a number in [0, 1], got {ln.confidence!r}")
            if ln.region is not None and ln.region not in region_ids:
                raise DataError(f"{_where(src, el)}: refers to unknown region {ln.region!r}")

    def _check_id(self, ident: str, seen: set[str], el: str) -> None:
        if not isinstance(ident, str) or not ident:
            raise DataError(f"{_where(self.source, el)}: missing id")
        if ident in seen:
            raise DataError(f"{_where(self.source, el)}: duplicate id")
        seen.add(ident)

    def _check_kind(self, kind: str, el: str) -> None:
        if not isinstance(kind, str) or not kind:
            raise DataError(f"{_where(self.source, el)}: kind/type must be a non-empty string, got {kind!r}")

    def _polygon(self, raw, el: str) -> list[Point]:
        pts = _fit(_points(raw, self.source, el, 3, "polygon"), self.width, self.height, self.source, el, "polygon")
        if polygon_area(pts) <= 0.0:
            raise DataError(f"{_where(self.source, el)}: polygon is empty (zero area)")
        return pts

    @property
    def image_path(self) -> Path:
        """The image file, resolved against ``root``."""
        p = Path(self.image)
        return p if p.is_absolute() or self.root is None else self.root / p

    def region_by_id(self) -> dict[str, Region]:
        return {r.id: r for r in self.regions}


def resolve_image(root: Path, image: str, source: str, allow_outside_root: bool = False) -> Path:
    """Resolve an annotation's image path; refuse paths that escape the dataset root."""
    path = (root / image).resolve()
    if not allow_outside_root:
        base = root.resolve()
        if path != base and base not in path.parents:
            raise DataError(
                f"{_where(source, 'image')}: path {image!r} escapes the dataset root {base} "
                "(pass allow_outside_root=True / --allow-outside-root to permit it)"
            )
    return path


def page_stats(pages: list[Page]) -> dict[str, int]:
    """Counts a converter or a data summary prints."""
    lines = [ln for p in pages for ln in p.lines]
    return {
        "pages": len(pages),
        "regions": sum(len(p.regions) for p in pages),
        "lines": len(lines),
        "empty_lines": sum(1 for ln in lines if not ln.text),
        "characters": sum(len(ln.text) for ln in lines),
    }
