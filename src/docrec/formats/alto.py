"""ALTO reader (v4, also v2 and v3), pixel coordinates only.

* ``TextBlock`` (at any depth) -> :class:`Region`: ``Shape/Polygon/@POINTS``, else the box
  ``HPOS/VPOS/WIDTH/HEIGHT``; ``@TAGREFS`` resolved through ``Tags/*[@ID]/@LABEL`` into the label
  (the first reference that resolves to a tag with a label; an unknown reference is an error).
* ``TextLine`` (children of a block) -> :class:`Line`: polygon as for blocks; ``@BASELINE`` as
  flat ``"x y x y"``, ALTO 4.2 ``"x,y x,y"``, or the single y of v2/v3 (drawn across the line
  box); text = its ``String/@CONTENT`` joined by single spaces (``SP`` is the separator),
  ``HYP/@CONTENT`` appended as written.
* Kinds: ``opts.kind`` or ``"printed"`` (ALTO has no printed/handwritten distinction).
* Image: ``Description/sourceImageInformation/fileName`` relative to the XML's folder (escaping
  paths refused unless ``allow_outside_root``); when it is a bare file name that is absent, or
  there is none, an image with the XML's stem beside it (``page.xml`` -> ``page.jpg``).
* ``MeasurementUnit`` must be ``pixel``: mm10 and inch1200 need a resolution ALTO files rarely
  carry, and a missing unit means mm10 to the standard.
* One ``Layout/Page`` per file; ids missing from the file (ALTO makes them optional) become
  ``block_N`` / ``line_N``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from xml.etree.ElementTree import Element

from docrec.formats import ReadOptions, box_polygon, iter_files
from docrec.formats.xml import describe, integer, number, parse_points, parse_root, q, split_tag
from docrec.pages import DataError, Line, Page, Point, Region, resolve_image

NAMESPACES = (
    "http://www.loc.gov/standards/alto/ns-v4#",
    "http://www.loc.gov/standards/alto/ns-v3#",
    "http://www.loc.gov/standards/alto/ns-v2#",
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".jp2")


def find(path: Path) -> Iterator[Path]:
    """The .xml files under ``path``; a file that is not ALTO is refused by :func:`read`."""
    return iter_files(path, (".xml",))


def read(file: Path, opts: ReadOptions | None = None) -> Iterator[Page]:
    """The page of one ALTO file."""
    opts = opts or ReadOptions()
    root, ns = parse_root(file, "alto", NAMESPACES, "ALTO")
    unit = (root.findtext(q(ns, "Description/MeasurementUnit")) or "").strip()
    if unit != "pixel":
        raise DataError(f"{file}: Description/MeasurementUnit is {unit or 'missing'!r}; only 'pixel' is supported")
    pages = root.findall(q(ns, "Layout/Page"))
    if len(pages) != 1:
        raise DataError(f"{file}: Layout has {len(pages)} Page elements; one page per file is supported")
    page_el = pages[0]
    where = f"{file}: {describe(page_el)}"
    width, height = integer(page_el, "WIDTH", where), integer(page_el, "HEIGHT", where)
    image = _image(root, ns, file, opts)
    tags = {t.get("ID"): t.get("LABEL") for t in root.iterfind(q(ns, "Tags/*")) if t.get("ID")}

    kind = opts.kind or "printed"
    regions, lines = [], []
    for block in page_el.iterfind(".//" + q(ns, "TextBlock")):
        bwhere = f"{file}: {describe(block)}"
        rid = block.get("ID") or f"block_{len(regions)}"
        regions.append(Region(id=rid, polygon=_polygon(block, ns, bwhere), kind=kind,
                              label=_label(block, tags, bwhere)))
        for line_el in block.iterfind(q(ns, "TextLine")):
            lwhere = f"{file}: {describe(line_el)}"
            lines.append(Line(id=line_el.get("ID") or f"line_{len(lines)}", polygon=_polygon(line_el, ns, lwhere),
                              text=_text(line_el), kind=kind, baseline=_baseline(line_el, lwhere),
                              region=rid, label=_label(line_el, tags, lwhere)))
    yield Page(image=image, width=width, height=height, regions=regions, lines=lines,
               root=file.parent, source=str(file))


def _image(root: Element, ns: str, file: Path, opts: ReadOptions) -> str:
    name = (root.findtext(q(ns, "Description/sourceImageInformation/fileName")) or "").strip()
    if name:
        path = resolve_image(file.parent, name, str(file), opts.allow_outside_root)
        if path.exists() or Path(name).name != name:
            return name
    for suffix in IMAGE_SUFFIXES:
        for candidate in (file.with_suffix(suffix), file.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate.name
    if name:
        return name  # the image check reports it missing, under the name the file gives
    raise DataError(f"{file}: no Description/sourceImageInformation/fileName and no image "
                    f"{file.stem}.* beside it")


def _polygon(el: Element, ns: str, where: str) -> list[Point]:
    poly = el.find(q(ns, "Shape/Polygon"))
    if poly is not None:
        return parse_points(poly.get("POINTS"), where, "Shape/Polygon POINTS")
    if el.get("HPOS") is None:
        raise DataError(f"{where}: neither Shape/Polygon nor HPOS/VPOS/WIDTH/HEIGHT")
    x, y = number(el, "HPOS", where), number(el, "VPOS", where)
    return box_polygon(x, y, x + number(el, "WIDTH", where), y + number(el, "HEIGHT", where))


def _baseline(el: Element, where: str) -> list[Point] | None:
    raw = el.get("BASELINE")
    if raw is None or not raw.strip():
        return None
    if len(raw.split()) == 1 and "," not in raw:
        # ALTO v2/v3: BASELINE is only the y of a horizontal baseline across the line box.
        y = number(el, "BASELINE", where)
        x = number(el, "HPOS", where)
        return [(x, y), (x + number(el, "WIDTH", where), y)]
    return parse_points(raw, where, "BASELINE")


def _text(line_el: Element) -> str:
    words, hyphen = [], ""
    for child in line_el:
        local = split_tag(child.tag)[1]
        if local == "String":
            words.append(child.get("CONTENT") or "")
        elif local == "HYP":
            hyphen = child.get("CONTENT") or ""
    return " ".join(words) + hyphen


def _label(el: Element, tags: dict[str, str | None], where: str) -> str | None:
    refs = (el.get("TAGREFS") or "").split()
    for ref in refs:
        if ref not in tags:
            raise DataError(f"{where}: TAGREFS names {ref!r}, which no element of Tags declares")
    return next((tags[ref] for ref in refs if tags[ref]), None)
