"""SROIE (ICDAR 2019 receipts) reader: ``box/<stem>.csv`` annotates ``img/<stem>.jpg``.

Each CSV row ``x1,y1,x2,y2,x3,y3,x4,y4,transcript`` is one printed text line: the quadrilateral
(clockwise from top-left) and the text after the eighth comma, which may hold commas itself.
Line ids are ``row<N>``, N the CSV row, so that errors point at it. Lines carry no region
(SROIE has none); kind is ``opts.kind`` or ``"printed"``. The page size comes from the JPEG
header, as the CSV has none.

A quadrilateral of zero area (corners on one line; none occur in the 90 receipts of
``shared/realdata``) is replaced by its bounding box widened to 1 px and counted in a warning,
as FUNSD's words are: the text is real, only its box is too thin.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from docrec.formats import ReadOptions, box_polygon, header_size, widen_box
from docrec.pages import DataError, Line, Page, polygon_area

log = logging.getLogger(__name__)


def find(path: Path) -> Iterator[Path]:
    """``path`` if a file, else ``box/*.csv`` in ``path`` or in ``path/data``."""
    if path.is_file():
        yield path
        return
    for box_dir in (path / "box", path / "data" / "box"):
        if box_dir.is_dir():
            yield from sorted(p for p in box_dir.glob("*.csv") if p.is_file())
            return
    raise DataError(f"{path}: not a SROIE folder: no box/ or data/box/ in it")


def read(file: Path, opts: ReadOptions | None = None) -> Iterator[Page]:
    """The page of one SROIE box file."""
    opts = opts or ReadOptions()
    root = file.parent.parent
    image = f"img/{file.stem}.jpg"
    width, height = header_size(root / image, file, opts.max_pixels)
    try:
        content = file.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise DataError(f"{file}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: not UTF-8 ({exc})") from None
    lines, widened = [], 0
    for rowno, row in enumerate(content.split("\n"), 1):
        row = row.rstrip("\r")
        if not row.strip():
            continue
        parts = row.split(",", 8)
        if len(parts) != 9:
            raise DataError(f"{file}: row {rowno}: expected x1,y1,...,x4,y4,transcript, got {len(parts)} field(s)")
        try:
            coords = [float(v) for v in parts[:8]]
        except ValueError:
            raise DataError(f"{file}: row {rowno}: corner coordinates {','.join(parts[:8])!r} are not numbers") from None
        polygon = list(zip(coords[0::2], coords[1::2]))
        if polygon_area(polygon) == 0.0:
            xs, ys = coords[0::2], coords[1::2]
            bounds, _ = widen_box(min(xs), min(ys), max(xs), max(ys), width, height)
            polygon = box_polygon(*bounds)
            widened += 1
        lines.append(Line(id=f"row{rowno}", polygon=polygon, text=parts[8], kind=opts.kind or "printed"))
    if widened:
        log.warning("%s: widened %d zero-area box(es) to 1 px", file, widened)
    # SROIE's transcripts are upper case whatever the print's case ("Jalan Ria" is "JALAN RIA").
    yield Page(image=image, width=width, height=height, lines=lines, root=root, source=str(file), fold_case=True)
