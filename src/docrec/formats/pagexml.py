"""PAGE-XML (PRImA): reader for the 2013-07-15, 2017-07-15 and 2019-07-15 schemas, writer for 2019-07-15.

Reading:

* ``TextRegion`` (at any depth) -> :class:`Region`: ``Coords/@points``; ``@type`` kept as label.
* ``TextLine`` -> :class:`Line`: ``Coords``, optional ``Baseline``, and the text of the
  line-level ``TextEquiv/Unicode`` (directly under ``TextLine``; word and glyph levels are
  ignored; among several ``TextEquiv`` the lowest ``@index`` wins, else the first).
* Kind: ``docrec {kind:KIND;}`` in ``@custom`` (the writer puts kinds PAGE has no word for there,
  e.g. ``form_field``), else ``@production`` (``printed`` and ``typewritten`` -> printed,
  ``handwritten-*`` and ``medieval-manuscript`` -> handwritten), else a ``structure {type:...}``
  that names a docrec kind (files of docrec before 0.2), else ``opts.kind``, else ``"printed"``.
* Label: ``structure {type:LABEL;}`` in ``@custom`` (Transkribus, eScriptorium: ``heading``,
  ``MainZone``, FUNSD's ``question``), else a region's ``@type``. Values in ``@custom`` may
  escape characters as ``\\uXXXX`` (Transkribus does; the writer does for ``;{}:\\`` and spaces).
* Confidence: ``TextEquiv/@conf`` of the chosen line-level ``TextEquiv``.
* Order: regions follow ``ReadingOrder`` (nested groups flattened, indexed children sorted by
  ``@index``; text regions it does not list come after, in document order), else
  ``readingOrder {index:N;}`` in their ``@custom`` when every region has one, else document
  order. Lines within a region follow ``readingOrder {index:N;}`` when every line has one,
  else document order. When every line carries ``docrec {order:N;}`` (the writer adds it when
  the page's line order interleaves regions, which PAGE's nesting cannot hold), the page's
  lines follow it.
* ``Page/@imageFilename`` is looked up as exports lay it out (:func:`~docrec.formats.locate_image`:
  beside the XML, in its parent folder, in the folder passed, then by file name); paths leaving
  the folder passed are refused unless ``allow_outside_root``.

Writing (2019-07-15): regions and lines in the page's order with ``readingOrder`` in
``@custom``, a ``ReadingOrder`` group, coordinates rounded to whole pixels (the schema allows only
integers; a polygon thinner than a pixel is written as its 1-px box, so it reads back). Kinds
in ``@production`` where PAGE has the word (``printed``, ``handwritten`` ->
``handwritten-cursive``), others under ``docrec {kind:...}``; labels in ``structure {type:...}``
(and in a region's ``@type`` when the schema lists them). Every id is a valid ``xs:ID``, unique
in the file (:mod:`docrec.formats.ids`; renamed ids are logged). A line without a region gets a
region of its own with the line's polygon and kind (``<line id>_region``), since PAGE nests
every line in a region. ``Metadata/Creator`` names docrec and its version; a ``MetadataItem``
names the checkpoint when one is given.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from xml.etree.ElementTree import Element, SubElement

from docrec import __version__
from docrec.formats import ReadOptions, integer_polygon, iter_files, locate_image, relative_image
from docrec.formats.ids import document_ids, report
from docrec.formats.xml import (
    confidence_value,
    describe,
    integer,
    nest_lines,
    parse_points,
    parse_root,
    q,
    split_tag,
    write_xml,
    xml_value,
)
from docrec.pages import KINDS, DataError, Line, Page, Point, Region

NS_2013 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15"
NS_2017 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2017-07-15"
NS_2019 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
NAMESPACES = (NS_2013, NS_2017, NS_2019)
_XSI = "http://www.w3.org/2001/XMLSchema-instance"

#: The values of TextRegion/@type the 2019 schema allows; other labels are not written there.
REGION_TYPES = frozenset({
    "paragraph", "heading", "caption", "header", "footer", "page-number", "drop-capital", "credit",
    "floating", "signature-mark", "catch-word", "marginalia", "footnote", "footnote-continued",
    "endnote", "TOC-entry", "list-label", "other",
})

_CUSTOM = re.compile(r"([\w-]+)\s*\{([^}]*)\}")
_ESCAPED = re.compile(r"\\u([0-9a-fA-F]{4})")
_TO_ESCAPE = re.compile(r"[\s;{}:\\]")
#: PAGE's @production for docrec's kinds, and the kind each production value reads back as.
PRODUCTION = {"printed": "printed", "handwritten": "handwritten-cursive"}
KIND_OF_PRODUCTION = {"printed": "printed", "typewritten": "printed", "handwritten-cursive": "handwritten",
                      "handwritten-printscript": "handwritten", "medieval-manuscript": "handwritten"}
_GROUPS = {"OrderedGroup", "UnorderedGroup", "OrderedGroupIndexed", "UnorderedGroupIndexed",
           "RegionRef", "RegionRefIndexed"}


#: The root element of a PAGE file: in a folder, :func:`docrec.formats.load` takes the files that have it.
ROOT_ELEMENT = "PcGts"


#: METS (an OCR-D workspace's ``mets.xml``) and the MIME type of its PAGE files.
_METS, _XLINK = "http://www.loc.gov/METS/", "http://www.w3.org/1999/xlink"
PAGE_MIMETYPE = "application/vnd.prima.page+xml"


def find(path: Path) -> Iterator[Path]:
    """The .xml files under ``path``; a file that is not PAGE is refused by :func:`read`.

    An OCR-D workspace (a folder with a ``mets.xml``) holds one PAGE file group per processing
    step, the same pages each time: with more than one, the user names the group by passing its
    folder, and the workspace stays the boundary for its images (:func:`~docrec.formats.export_root`).
    """
    if path.is_dir() and (path / "mets.xml").is_file():
        groups = page_groups(path / "mets.xml")
        if len(groups) > 1:
            listed = ", ".join(f"{use} ({len(files)} files in {min(f.parent for f in files)})"
                               for use, files in groups.items())
            raise DataError(f"{path / 'mets.xml'}: an OCR-D workspace with {len(groups)} PAGE file groups: "
                            f"{listed}; pass the folder of the one to read")
    return iter_files(path, (".xml",))


def page_groups(mets: Path) -> dict[str, list[Path]]:
    """The PAGE files of a METS file by file group (``@USE``), paths resolved against its folder."""
    root, _ = parse_root(mets, "mets", (_METS,), "METS")
    groups: dict[str, list[Path]] = {}
    for grp in root.iter(f"{{{_METS}}}fileGrp"):
        files = [mets.parent / loc.get(f"{{{_XLINK}}}href", "")
                 for f in grp.findall(f"{{{_METS}}}file") if f.get("MIMETYPE") == PAGE_MIMETYPE
                 for loc in f.findall(f"{{{_METS}}}FLocat")]
        if files:
            groups[grp.get("USE") or grp.get("ID") or "?"] = files
    return groups


def read(file: Path, opts: ReadOptions | None = None) -> Iterator[Page]:
    """The page of one PAGE-XML file."""
    opts = opts or ReadOptions()
    root, ns = parse_root(file, "PcGts", NAMESPACES, "PAGE-XML")
    page_el = root.find(q(ns, "Page"))
    if page_el is None:
        raise DataError(f"{file}: PcGts has no Page element")
    where = f"{file}: Page"
    image = page_el.get("imageFilename")
    if not image:
        raise DataError(f"{where}: missing imageFilename")
    image = os.path.relpath(locate_image(file, image, opts), file.parent)
    width, height = integer(page_el, "imageWidth", where), integer(page_el, "imageHeight", where)

    default_kind = opts.kind or "printed"
    regions, lines, orders = [], [], []
    for reg_el in _region_order(page_el, ns, file):
        reg_where = f"{file}: {describe(reg_el)}"
        rid = _ident(reg_el, reg_where)
        kind, label = _kind_and_label(reg_el, custom_props(reg_el.get("custom")), default_kind)
        regions.append(Region(id=rid, polygon=_coords(reg_el, ns, reg_where), kind=kind,
                              label=label or reg_el.get("type")))
        for line_el in _ordered(reg_el.findall(q(ns, "TextLine")), file):
            line_where = f"{file}: {describe(line_el)}"
            custom = custom_props(line_el.get("custom"))
            baseline_el = line_el.find(q(ns, "Baseline"))
            baseline = (parse_points(baseline_el.get("points"), line_where, "Baseline points")
                        if baseline_el is not None else None)
            text, conf = _text(line_el, ns, line_where)
            kind, label = _kind_and_label(line_el, custom, default_kind)
            lines.append(Line(id=_ident(line_el, line_where), polygon=_coords(line_el, ns, line_where),
                              text=text, kind=kind, baseline=baseline, region=rid, label=label, confidence=conf))
            orders.append(_int_prop(custom, "docrec", "order", line_where))
    if lines and None not in orders:
        lines = [ln for _, ln in sorted(zip(orders, lines), key=lambda t: t[0])]
    yield Page(image=image, width=width, height=height, regions=regions, lines=lines,
               root=file.parent, source=str(file))


def custom_props(custom: str | None) -> dict[str, dict[str, str]]:
    """Parse ``@custom`` (``"readingOrder {index:0;} structure {type:printed;}"``); first entry per tag."""
    out: dict[str, dict[str, str]] = {}
    for tag, body in _CUSTOM.findall(custom or ""):
        props = {}
        for item in body.split(";"):
            key, sep, value = item.partition(":")
            if sep:
                props[key.strip()] = _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), value.strip())
        out.setdefault(tag, props)
    return out


def _escape(value: str) -> str:
    """A value for ``@custom``: ``;{}:\\`` and whitespace as ``\\uXXXX`` (Transkribus' escaping)."""
    return _TO_ESCAPE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)


def _ident(el: Element, where: str) -> str:
    ident = el.get("id")
    if not ident:
        raise DataError(f"{where}: missing id")
    return ident


def _coords(el: Element, ns: str, where: str) -> list[Point]:
    coords = el.find(q(ns, "Coords"))
    if coords is None:
        raise DataError(f"{where}: missing Coords")
    # PAGE 2010 wrote Coords/Point children; no supported schema does.
    return parse_points(coords.get("points"), where, "Coords points")


def _kind_and_label(el: Element, custom: dict[str, dict[str, str]], default: str) -> tuple[str, str | None]:
    """(kind, structure label) of a region or line."""
    structure = custom.get("structure", {}).get("type") or None
    kind = custom.get("docrec", {}).get("kind") or KIND_OF_PRODUCTION.get(el.get("production") or "")
    if kind:
        return kind, structure
    if structure in KINDS:  # docrec < 0.2 wrote kinds there, and no production
        return structure, None
    return default, structure


def _int_prop(custom: dict[str, dict[str, str]], tag: str, key: str, where: str) -> int | None:
    raw = custom.get(tag, {}).get(key)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise DataError(f"{where}: @custom {tag} {key} {raw!r} is not an integer") from None


def _text(line_el: Element, ns: str, where: str) -> tuple[str, float | None]:
    """The line-level text and its ``@conf`` (None when absent)."""
    equivs = line_el.findall(q(ns, "TextEquiv"))
    if not equivs:
        return "", None

    def index(te: Element) -> float:
        raw = te.get("index")
        if raw is None:
            return math.inf
        try:
            return int(raw)
        except ValueError:
            raise DataError(f"{where}: TextEquiv index={raw!r} is not an integer") from None

    best = min(equivs, key=index)  # min is stable: the first of equals wins
    unicode_el = best.find(q(ns, "Unicode"))
    conf = best.get("conf")
    if conf is not None:
        try:
            conf = float(conf)
        except ValueError:
            raise DataError(f"{where}: TextEquiv conf={conf!r} is not a number") from None
    return ((unicode_el.text or "") if unicode_el is not None else ""), conf


def _reading_index(el: Element, file: Path) -> int | None:
    raw = custom_props(el.get("custom")).get("readingOrder", {}).get("index")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise DataError(f"{file}: {describe(el)}: readingOrder index {raw!r} is not an integer") from None


def _ordered(els: list[Element], file: Path) -> list[Element]:
    """Elements by their @custom readingOrder index when all have one, else in document order."""
    keys = [_reading_index(el, file) for el in els]
    if None in keys:
        return els
    return [el for _, el in sorted(zip(keys, els), key=lambda t: t[0])]


def _region_order(page_el: Element, ns: str, file: Path) -> list[Element]:
    regions = page_el.findall(".//" + q(ns, "TextRegion"))
    ro = page_el.find(q(ns, "ReadingOrder"))
    if ro is None:
        return _ordered(regions, file)
    refs: list[str] = []

    def walk(group: Element) -> None:
        kids = [c for c in group if split_tag(c.tag)[1] in _GROUPS]
        if all(c.get("index") is not None for c in kids):
            try:
                kids.sort(key=lambda c: int(c.get("index")))
            except ValueError:
                raise DataError(f"{file}: ReadingOrder: an @index in {describe(group)} is not an integer") from None
        for kid in kids:
            if kid.get("regionRef"):
                refs.append(kid.get("regionRef"))
            walk(kid)

    walk(ro)
    rank = {}
    for ref in refs:
        rank.setdefault(ref, len(rank))
    # Unlisted regions keep document order after the listed ones (sorted() is stable).
    return sorted(regions, key=lambda r: rank.get(r.get("id"), len(rank)))


def write(page: Page, out_path: str | Path, image_name: str | None = None,
          checkpoint: str | None = None) -> Path:
    """Write one page as PAGE-XML 2019-07-15, atomically; ``checkpoint`` is named in the metadata."""
    out = Path(out_path)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    # Plain names with literal xmlns attributes: ElementTree cannot write a default namespace
    # once an element carries unqualified attributes, and PAGE attributes are all unqualified.
    root = Element("PcGts", {"xmlns": NS_2019, "xmlns:xsi": _XSI,
                             "xsi:schemaLocation": f"{NS_2019} {NS_2019}/pagecontent.xsd"})
    meta = SubElement(root, "Metadata")
    for tag, value in (("Creator", f"docrec {__version__}"), ("Created", now), ("LastChange", now)):
        SubElement(meta, tag).text = value
    if checkpoint:
        SubElement(meta, "MetadataItem", {"type": "processingStep", "name": "docrec checkpoint",
                                          "value": _xml_text(str(checkpoint), page, "checkpoint")})
    page_el = SubElement(root, "Page", {
        "imageFilename": image_name or relative_image(page, out.parent),
        "imageWidth": str(page.width), "imageHeight": str(page.height)})

    groups = nest_lines(page, "_region")
    # One id space for the whole file; made-up ids (own regions, the reading-order group) come
    # last, so every valid input id keeps its name.
    own = groups[len(page.regions):]
    old = ([r.id for r in page.regions] + [ln.id for _, lines in groups for ln in lines]
           + [r.id for r, _ in own] + ["reading_order"])
    new = document_ids(old)
    n_given = len(page.regions) + len(page.lines)
    report(str(out), old[:n_given], new[:n_given])
    ids = iter(new)
    region_ids = [next(ids) for _ in page.regions]
    line_ids = {id(ln): next(ids) for _, lines in groups for ln in lines}
    region_ids += [next(ids) for _ in own]
    group_id = next(ids)
    grouped = [ln for _, lines in groups for ln in lines]
    # PAGE nests lines in regions; a line order that interleaves regions is kept in @custom.
    page_order = {id(ln): i for i, ln in enumerate(page.lines)}
    interleaved = [page_order.get(id(ln)) for ln in grouped] != sorted(page_order.get(id(ln)) for ln in grouped)
    if groups:
        order = SubElement(SubElement(page_el, "ReadingOrder"), "OrderedGroup",
                           {"id": group_id, "caption": "Regions reading order"})
        for i, rid in enumerate(region_ids):
            SubElement(order, "RegionRefIndexed", {"index": str(i), "regionRef": rid})
    for i, ((region, lines), rid) in enumerate(zip(groups, region_ids)):
        where = f"region {region.id!r}"
        attrs = {"id": rid, "custom": _custom(i, region.kind, region.label, None, page, where)}
        if region.label in REGION_TYPES:
            attrs["type"] = region.label
        if region.kind in PRODUCTION:
            attrs["production"] = PRODUCTION[region.kind]
        reg_el = SubElement(page_el, "TextRegion", attrs)
        SubElement(reg_el, "Coords", {"points": _points(region.polygon, page)})
        for j, line in enumerate(lines):
            where = f"line {line.id!r}"
            order_n = page_order[id(line)] if interleaved and id(line) in page_order else None
            attrs = {"id": line_ids[id(line)], "custom": _custom(j, line.kind, line.label, order_n, page, where)}
            if line.kind in PRODUCTION:
                attrs["production"] = PRODUCTION[line.kind]
            line_el = SubElement(reg_el, "TextLine", attrs)
            SubElement(line_el, "Coords", {"points": _points(line.polygon, page)})
            if line.baseline is not None:
                SubElement(line_el, "Baseline", {"points": _points(line.baseline, page, area=False)})
            equiv = SubElement(line_el, "TextEquiv")
            if line.confidence is not None:
                equiv.set("conf", confidence_value(line.confidence, f"{page.source or '<memory>'}: line {line.id!r}"))
            SubElement(equiv, "Unicode").text = _xml_text(line.text, page, where)
    return write_xml(root, out)


def _custom(index: int, kind: str, label: str | None, order: int | None, page: Page, element: str) -> str:
    """``@custom``: reading order in the region, the label, and what PAGE has no attribute for."""
    if not kind:
        raise DataError(f"{page.source or '<memory>'}: {element}: empty kind")
    parts = [f"readingOrder {{index:{index};}}"]
    if label:
        parts.append(f"structure {{type:{_escape(label)};}}")
    docrec = ([f"kind:{_escape(kind)};"] if kind not in PRODUCTION else []) + (
        [f"order:{order};"] if order is not None else [])
    if docrec:
        parts.append(f"docrec {{{''.join(docrec)}}}")
    return " ".join(parts)


def _xml_text(text: str, page: Page, element: str) -> str:
    return xml_value(text, f"{page.source or '<memory>'}: {element}")


def _points(pts: list[Point], page: Page, area: bool = True) -> str:
    """``x,y x,y ...`` in whole pixels; a polygon (``area``) never of zero area."""
    ints = integer_polygon(pts, page.width, page.height) if area else [(round(x), round(y)) for x, y in pts]
    return " ".join(f"{x},{y}" for x, y in ints)
