"""ALTO: reader for v4 (also v2 and v3), writer for ALTO 4.4; pixel coordinates only.

Reading:

* ``TextBlock`` (at any depth) -> :class:`Region`: ``Shape/Polygon/@POINTS``, else the box
  ``HPOS/VPOS/WIDTH/HEIGHT``.
* ``TextLine`` (children of a block) -> :class:`Line`: polygon as for blocks; ``@BASELINE`` as
  flat ``"x y x y"``, ALTO 4.2 ``"x,y x,y"``, or the single y of v2/v3 (drawn across the line
  box); text = its ``String/@CONTENT`` joined by single spaces (``SP`` is the separator),
  ``HYP/@CONTENT`` appended as written; confidence = the mean ``String/@WC`` of the Strings
  that have one (None when none has).
* ``@TAGREFS`` are resolved through ``Tags/*[@ID]`` (an unknown reference is an error): a tag
  with ``TYPE="docrec:kind"`` gives the kind (the writer's; ALTO has no printed/handwritten
  distinction), else ``opts.kind``, else ``"printed"``; the first other tag with a ``LABEL``
  gives the label (eScriptorium's ``MainZone``, ``DefaultLine`` ...).
* Order: blocks in document order; lines in the order of the ``ReadingOrder`` (the ``REF`` of
  its ``ElementRef`` and groups, nested groups flattened in document order) for the lines it
  lists, the others after them in document order.
* Image: ``Description/sourceImageInformation/fileName`` looked up as exports lay it out
  (:func:`~docrec.formats.locate_image`: beside the XML, in its parent folder, in the folder
  passed, then by file name; paths leaving the folder passed are refused unless
  ``allow_outside_root``); when there is none, or nothing of that name is found, an image with
  the XML's stem beside it (``page.xml`` -> ``page.jpg``).
* ``MeasurementUnit`` must be ``pixel``: mm10 and inch1200 need a resolution ALTO files rarely
  carry, and a missing unit means mm10 to the standard.
* One ``Layout/Page`` per file; ids missing from the file (ALTO makes them optional) become
  ``block_N`` / ``line_N``.

Writing (ALTO 4.4, valid against its schema for any valid page): ``Description`` with the pixel
unit, the image file name and a ``Processing`` step naming docrec, its version and the
checkpoint; one ``Page`` whose ``PrintSpace`` covers it; a ``TextBlock`` per region in the
page's order, then one per region-less line (the line's polygon and kind, id
``<line id>_block``), each with its lines in the page's order. Polygons and baselines are
``"x,y x,y"`` rounded to 2 decimals (a polygon that this leaves without area is written in
whole pixels by :func:`~docrec.formats.integer_polygon`, at worst as its 1-px box, so it reads
back); ``HPOS/VPOS/WIDTH/HEIGHT`` are their bounding box. A line's text is split on
single spaces into ``String`` elements separated by ``SP``, so that joining the ``CONTENT``
values with spaces gives the text back exactly (leading, trailing and repeated spaces become
empty Strings, which the schema allows; an empty text is one empty String, since a
``TextLine`` needs one); every String carries the line's confidence as ``WC``. Kinds are
``OtherTag TYPE="docrec:kind"``, labels eScriptorium-style ``OtherTag``s (``DESCRIPTION``
``"block type X"`` / ``"line type X"``), one tag per distinct value, referenced by ``TAGREFS``.
The page's line order, which may interleave blocks, is a ``ReadingOrder/OrderedGroup`` of
``ElementRef``s to the lines. Every id is a valid ``xs:ID``, unique in the file
(:mod:`docrec.formats.ids`; renamed input ids are logged, and ids of the page's regions and
lines take precedence over the ones the writer makes up). Refused, naming the page's source and
the element, before anything is written: characters XML cannot hold (in text, kinds, labels,
names) and a confidence outside [0, 1].
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from xml.etree.ElementTree import Element, SubElement

from docrec import __version__
from docrec.formats import ReadOptions, box_polygon, integer_polygon, iter_files, locate_image, relative_image
from docrec.formats.ids import document_ids, report
from docrec.formats.xml import (
    confidence_value,
    describe,
    integer,
    nest_lines,
    number,
    parse_points,
    parse_root,
    q,
    split_tag,
    write_xml,
    xml_value,
)
from docrec.pages import DataError, Line, Page, Point, Region, polygon_area

NAMESPACES = (
    "http://www.loc.gov/standards/alto/ns-v4#",
    "http://www.loc.gov/standards/alto/ns-v3#",
    "http://www.loc.gov/standards/alto/ns-v2#",
)
SCHEMA_LOCATION = "http://www.loc.gov/standards/alto/v4/alto-4-4.xsd"
#: ``OtherTag/@TYPE`` of the tags that carry docrec's kinds (``LABEL`` is the kind).
KIND_TAG = "docrec:kind"
#: Stem of the ids of the writer's tags, per category (kinds, block labels, line labels).
_TAG_PREFIX = {"kind": "kind", "block": "block_type", "line": "line_type"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".jp2")
_XSI = "http://www.w3.org/2001/XMLSchema-instance"


#: The root element of an ALTO file: in a folder, :func:`docrec.formats.load` takes the files that have it.
ROOT_ELEMENT = "alto"


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
    tags = {t.get("ID"): (t.get("TYPE"), t.get("LABEL")) for t in root.iterfind(q(ns, "Tags/*")) if t.get("ID")}

    default_kind = opts.kind or "printed"
    regions, lines, line_refs = [], [], []
    for block in page_el.iterfind(".//" + q(ns, "TextBlock")):
        bwhere = f"{file}: {describe(block)}"
        rid = block.get("ID") or f"block_{len(regions)}"
        kind, label = _tagged(block, tags, bwhere, default_kind)
        regions.append(Region(id=rid, polygon=_polygon(block, ns, bwhere), kind=kind, label=label))
        for line_el in block.iterfind(q(ns, "TextLine")):
            lwhere = f"{file}: {describe(line_el)}"
            kind, label = _tagged(line_el, tags, lwhere, default_kind)
            lines.append(Line(id=line_el.get("ID") or f"line_{len(lines)}", polygon=_polygon(line_el, ns, lwhere),
                              text=_text(line_el), kind=kind, baseline=_baseline(line_el, lwhere),
                              region=rid, label=label, confidence=_confidence(line_el, lwhere)))
            line_refs.append(line_el.get("ID"))
    rank = _reading_order(root, ns, set(filter(None, line_refs)))
    # Lines the ReadingOrder does not list keep document order after the listed ones (sorted() is stable).
    order = sorted(range(len(lines)), key=lambda i: rank.get(line_refs[i], len(rank)))
    yield Page(image=image, width=width, height=height, regions=regions, lines=[lines[i] for i in order],
               root=file.parent, source=str(file))


def _image(root: Element, ns: str, file: Path, opts: ReadOptions) -> str:
    name = (root.findtext(q(ns, "Description/sourceImageInformation/fileName")) or "").strip()
    if name and (path := locate_image(file, name, opts, missing_ok=True)) is not None:
        return os.path.relpath(path, file.parent)
    for suffix in IMAGE_SUFFIXES:
        for candidate in (file.with_suffix(suffix), file.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate.name
    if name:  # not found: the image check says so
        return os.path.relpath(locate_image(file, name, opts), file.parent)
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


def _confidence(line_el: Element, where: str) -> float | None:
    """The mean ``WC`` of the line's Strings that have one."""
    wcs = [number(s, "WC", f"{where}: {describe(s)}") for s in line_el
           if split_tag(s.tag)[1] == "String" and s.get("WC") is not None]
    return math.fsum(wcs) / len(wcs) if wcs else None


def _tagged(el: Element, tags: dict[str, tuple[str | None, str | None]], where: str,
            default_kind: str) -> tuple[str, str | None]:
    """(kind, label) from ``@TAGREFS``: the first kind tag's label, the first other tag's label."""
    refs = (el.get("TAGREFS") or "").split()
    for ref in refs:
        if ref not in tags:
            raise DataError(f"{where}: TAGREFS names {ref!r}, which no element of Tags declares")
    kind = next((label for type_, label in map(tags.get, refs) if type_ == KIND_TAG and label), default_kind)
    label = next((label for type_, label in map(tags.get, refs) if type_ != KIND_TAG and label), None)
    return kind, label


def _reading_order(root: Element, ns: str, line_ids: set[str]) -> dict[str, int]:
    """Rank of every TextLine id the ``ReadingOrder`` lists, nested groups in document order."""
    rank: dict[str, int] = {}
    ro = root.find(q(ns, "ReadingOrder"))
    for el in ro.iter() if ro is not None else ():
        for ref in (el.get("REF") or "").split():
            if ref in line_ids:
                rank.setdefault(ref, len(rank))
    return rank


def write(page: Page, out_path: str | Path, image_name: str | None = None,
          creator_version: str | None = None, checkpoint: str | None = None) -> Path:
    """Write one page as ALTO 4.4, atomically; returns the path written.

    ``image_name`` defaults to the page's image relative to the output folder;
    ``creator_version`` (default: docrec's version) and ``checkpoint`` go into ``Processing``.
    """
    out = Path(out_path)
    src = page.source or "<memory>"

    def xml(value: str, element: str, what: str) -> str:
        return xml_value(value, f"{src}: {element}", what)

    blocks = nest_lines(page, "_block")
    own_blocks = blocks[len(page.regions):]
    tagged = [(f"region {r.id!r}", "block", r) for r in page.regions]
    tagged += [(f"line {ln.id!r}", "line", ln) for _, lines in blocks for ln in lines]
    tag_keys: dict[tuple[str, str], None] = {}  # (category, value), in order of first use
    for element, category, item in tagged:
        for cat, value in _tag_keys(category, item.kind, item.label):
            tag_keys[(cat, value)] = None
            xml(value, element, "kind" if cat == "kind" else "label")

    # One id space for the whole file. The page's own ids come first, so they keep theirs when
    # valid; the ids the writer makes up (region-less lines' blocks, tags, reading order) yield.
    own = [r.id for r in page.regions] + [ln.id for ln in page.lines]
    made = ([r.id for r, _ in own_blocks]
            + [f"{_TAG_PREFIX[cat]}_{n}" for cat, n in _numbered(tag_keys)]
            + ["page_1", "docrec_processing", "reading_order"] + [f"ro_{i + 1}" for i in range(len(page.lines))])
    new = document_ids(own + made)
    report(str(out), own, new[:len(own)])
    ids = iter(new)
    block_ids = [next(ids) for _ in page.regions]
    line_ids = {id(ln): next(ids) for ln in page.lines}
    block_ids += [next(ids) for _ in own_blocks]
    tag_ids = {key: next(ids) for key in tag_keys}
    page_id, processing_id, group_id = next(ids), next(ids), next(ids)
    ref_ids = list(ids)

    root = Element("alto", {"xmlns": NAMESPACES[0], "xmlns:xsi": _XSI,
                            "xsi:schemaLocation": f"{NAMESPACES[0]} {SCHEMA_LOCATION}", "SCHEMAVERSION": "4.4"})
    desc = SubElement(root, "Description")
    SubElement(desc, "MeasurementUnit").text = "pixel"
    SubElement(SubElement(desc, "sourceImageInformation"), "fileName").text = xml(
        image_name or relative_image(page, out.parent), "image", "file name")
    step = SubElement(desc, "Processing", {"ID": processing_id})
    SubElement(step, "processingCategory").text = "contentGeneration"
    SubElement(step, "processingDateTime").text = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if checkpoint is not None:
        SubElement(step, "processingStepSettings").text = xml(f"checkpoint: {checkpoint}", "checkpoint", "path")
    software = SubElement(step, "processingSoftware")
    SubElement(software, "softwareName").text = "docrec"
    SubElement(software, "softwareVersion").text = xml(creator_version or __version__, "creator", "version")

    if tag_keys:
        tags_el = SubElement(root, "Tags")
        for (cat, value), tag_id in tag_ids.items():
            attrs = ({"ID": tag_id, "TYPE": KIND_TAG, "LABEL": value} if cat == "kind"
                     else {"ID": tag_id, "LABEL": value, "DESCRIPTION": f"{cat} type {value}"})
            SubElement(tags_el, "OtherTag", attrs)
    if page.lines:
        group = SubElement(SubElement(root, "ReadingOrder"), "OrderedGroup", {"ID": group_id})
        for line, ref_id in zip(page.lines, ref_ids):
            SubElement(group, "ElementRef", {"ID": ref_id, "REF": line_ids[id(line)]})

    page_el = SubElement(SubElement(root, "Layout"), "Page", {
        "ID": page_id, "WIDTH": str(page.width), "HEIGHT": str(page.height), "PHYSICAL_IMG_NR": "1"})
    space = SubElement(page_el, "PrintSpace", {"HPOS": "0", "VPOS": "0", "WIDTH": str(page.width),
                                                "HEIGHT": str(page.height)})
    for (region, lines), block_id in zip(blocks, block_ids):
        polygon = _rounded(region.polygon, page)
        block_el = SubElement(space, "TextBlock", {"ID": block_id, **_box(polygon),
                                                   **_tagrefs(tag_ids, "block", region.kind, region.label)})
        SubElement(SubElement(block_el, "Shape"), "Polygon", {"POINTS": _points(polygon)})
        for line in lines:
            element = f"line {line.id!r}"
            polygon = _rounded(line.polygon, page)
            attrs = {"ID": line_ids[id(line)], **_box(polygon), **_tagrefs(tag_ids, "line", line.kind, line.label)}
            if line.baseline is not None:
                attrs["BASELINE"] = _points(line.baseline)
            line_el = SubElement(block_el, "TextLine", attrs)
            SubElement(SubElement(line_el, "Shape"), "Polygon", {"POINTS": _points(polygon)})
            wc = {} if line.confidence is None else {"WC": confidence_value(line.confidence, f"{src}: {element}")}
            for i, word in enumerate(xml(line.text, element, "text").split(" ")):
                if i:
                    SubElement(line_el, "SP")
                SubElement(line_el, "String", {"CONTENT": word, **wc})
    return write_xml(root, out)


def _tag_keys(category: str, kind: str, label: str | None) -> list[tuple[str, str]]:
    """The tags an element refers to: its kind, and its label (an empty label is none)."""
    return [("kind", kind)] + ([(category, label)] if label else [])


def _numbered(keys: dict[tuple[str, str], None]) -> Iterator[tuple[str, int]]:
    """(category, n) for each tag key: the n-th tag of its category."""
    counts: dict[str, int] = {}
    for cat, _ in keys:
        counts[cat] = counts.get(cat, 0) + 1
        yield cat, counts[cat]


def _tagrefs(tag_ids: dict[tuple[str, str], str], category: str, kind: str, label: str | None) -> dict[str, str]:
    return {"TAGREFS": " ".join(tag_ids[key] for key in _tag_keys(category, kind, label))}


def _rounded(pts: list[Point], page: Page) -> list[Point]:
    """Polygon points as written (2 decimals); if that leaves no area, the 1-px box of :func:`integer_polygon`."""
    out = [(float(_number(x)), float(_number(y))) for x, y in pts]
    if polygon_area(out) > 0:
        return out
    return [(float(x), float(y)) for x, y in integer_polygon(pts, page.width, page.height)]


def _number(v: float) -> str:
    """A coordinate as written: at most 2 decimals, no trailing zeros."""
    return f"{round(v, 2) + 0.0:.2f}".rstrip("0").rstrip(".")  # + 0.0: never "-0"


def _points(pts: list[Point]) -> str:
    return " ".join(f"{_number(x)},{_number(y)}" for x, y in pts)


def _box(pts: list[Point]) -> dict[str, str]:
    """HPOS/VPOS/WIDTH/HEIGHT: the bounding box of ``pts``."""
    xs, ys = [x for x, _ in pts], [y for _, y in pts]
    return {"HPOS": _number(min(xs)), "VPOS": _number(min(ys)),
            "WIDTH": _number(max(xs) - min(xs)), "HEIGHT": _number(max(ys) - min(ys))}
