"""Readers and writers of annotation formats; every reader yields :class:`docrec.pages.Page`.

``load(fmt, path)`` is the one entry point: it finds the annotation files under ``path``
(a file or a folder searched recursively), reads each, checks its image header, and in
lenient mode skips bad pages, reporting every skip.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TextIO

from docrec.images import MAX_PIXELS, image_size
from docrec.pages import DataError, Page, Point, polygon_area

#: format name -> module under docrec.formats exposing ``find(path)`` and ``read(file, **opts)``.
FORMATS = ("manifest", "pagexml", "alto", "funsd", "sroie")


@dataclass
class LoadResult:
    """Pages read, and (source, message) for every page skipped in lenient mode."""

    pages: list[Page] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class ReadOptions:
    """Options every reader accepts."""

    kind: str | None = None  # kind for lines/regions the format cannot classify (None: reader default)
    allow_outside_root: bool = False  # allow image paths that escape the annotation's folder
    check_images: bool = True  # open each image header: exists, readable, size matches
    max_pixels: int = MAX_PIXELS
    # Lenient mode: a reader of many pages per file (the manifest) reports a bad record here and goes on.
    on_error: Callable[[str, str], None] | None = None


def _module(fmt: str):
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return importlib.import_module(f"docrec.formats.{fmt}")


def check_image(page: Page, max_pixels: int = MAX_PIXELS) -> None:
    """The page's image exists, decodes its header, and has the declared size."""
    w, h = image_size(page.image_path, max_pixels)
    if (w, h) != (page.width, page.height):
        raise DataError(f"{page.source}: declares a {page.width}x{page.height} page but image "
                        f"{page.image_path} is {w}x{h}")


def load(fmt: str, path: str | Path, strict: bool = True, on_skip: Callable[[str, str], None] | None = None,
         limit: int | None = None, **options) -> LoadResult:
    """Read every page of ``fmt`` under ``path`` (the first ``limit`` good ones); strict raises on a bad page."""
    mod = _module(fmt)
    result = LoadResult()

    def skip(source: str, exc: DataError | str) -> None:
        result.skipped.append((source, str(exc)))
        if on_skip is not None:
            on_skip(source, str(exc))

    opts = ReadOptions(**options, on_error=None if strict else skip)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    for source in mod.find(path):
        if limit is not None and len(result.pages) >= limit:
            break
        try:
            pages = list(islice(mod.read(source, opts), None if limit is None else limit - len(result.pages)))
        except DataError as exc:
            if strict:
                raise
            skip(str(source), exc)
            continue
        for page in pages:
            try:
                if opts.check_images:
                    check_image(page, opts.max_pixels)
            except DataError as exc:
                if strict:
                    raise
                skip(page.source, exc)
                continue
            result.pages.append(page)
    return result


def iter_files(path: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """``path`` itself, or the files under it with one of ``suffixes``, sorted."""
    if path.is_file():
        yield path
        return
    yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def header_size(image: Path, source: Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Page size from an image header, for formats whose annotation has none; errors name ``source``."""
    try:
        return image_size(image, max_pixels)
    except DataError as exc:
        raise DataError(f"{source}: page size needs the image: {exc}") from None


def box_polygon(x0: float, y0: float, x1: float, y1: float) -> list[Point]:
    """The axis-aligned rectangle with corners (x0, y0) and (x1, y1), clockwise from top-left."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def widen_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int
              ) -> tuple[tuple[float, float, float, float], bool]:
    """Order a box's corners and grow a zero width or height to 1 px inside the page; True if grown.

    Word-level annotations hold a few zero-area boxes (a mark of one pixel); they still locate
    text, so they are kept with the smallest non-empty extent rather than refused.
    """
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    grown = False
    if x1 == x0:
        x0, x1 = (x0, x0 + 1) if x0 + 1 <= width else (x0 - 1, x0)
        grown = True
    if y1 == y0:
        y0, y1 = (y0, y0 + 1) if y0 + 1 <= height else (y0 - 1, y0)
        grown = True
    return (x0, y0, x1, y1), grown


def integer_polygon(pts: list[Point], width: int, height: int) -> list[tuple[int, int]]:
    """Points rounded to whole pixels (what PAGE allows), never a polygon of zero area.

    A polygon thinner than a pixel can round to a line, which no reader accepts back; it is
    then written as its bounding box, grown to 1 px inside the page (:func:`widen_box`).
    """
    out = [(round(x), round(y)) for x, y in pts]
    if polygon_area([(float(x), float(y)) for x, y in out]) > 0:
        return out
    xs, ys = [x for x, _ in out], [y for _, y in out]
    (x0, y0, x1, y1), _ = widen_box(min(xs), min(ys), max(xs), max(ys), width, height)
    return [(int(x), int(y)) for x, y in box_polygon(x0, y0, x1, y1)]


def mirrored_names(files: list[Path], base: Path) -> list[Path]:
    """Per file, the name its outputs take (a suffix is appended): its path under ``base``, stem only.

    Files of one folder that share a stem (``x.png`` and ``x.tif``) keep their suffix
    (``x.png``), so their outputs cannot collide; ``page.v1.jpg`` stays ``page.v1``.
    """
    rel = [Path(os.path.relpath(f, base)) for f in files]
    stems = Counter((r.parent, r.stem) for r in rel)
    return [r if stems[(r.parent, r.stem)] > 1 else r.with_name(r.stem) for r in rel]


def relative_image(page: Page, out_dir: Path) -> str:
    """The page's image path relative to ``out_dir`` (where a written annotation will live)."""
    return os.path.relpath(page.image_path.resolve(), out_dir.resolve())


@contextmanager
def atomic_write(out: Path) -> Iterator[TextIO]:
    """A UTF-8 text handle whose content replaces ``out`` only once the block completes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
