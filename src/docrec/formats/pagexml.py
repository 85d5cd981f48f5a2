"""PAGE-XML (PRImA): reader for the 2013-07-15, 2017-07-15 and 2019-07-15 schemas, writer for 2019-07-15.

Reading:

* ``TextRegion`` (at any depth) -> :class:`Region`: ``Coords/@points``; ``@type`` kept as label.
* ``TextLine`` -> :class:`Line`: ``Coords``, optional ``Baseline``, and the text of the
  line-level ``TextEquiv/Unicode`` (directly under ``TextLine``; word and glyph levels are
  ignored; among several ``TextEquiv`` the lowest ``@index`` wins, else the first).
* Kind: ``@custom`` ``structure {type:KIND;}`` when present (the writer puts it there, so kinds
  survive a round trip; note that Transkribus structure tags such as ``heading`` are read as
  kinds too), else ``opts.kind``, else ``"printed"``.
* Order: regions follow ``ReadingOrder`` (nested groups flattened, indexed children sorted by
  ``@index``; text regions it does not list come after, in document order), else
  ``readingOrder {index:N;}`` in their ``@custom`` when every region has one, else document
  order. Lines within a region follow ``readingOrder {index:N;}`` when every line has one,
  else document order.
* ``Page/@imageFilename`` is resolved against the XML's folder; paths escaping it are refused
  unless ``allow_outside_root``.

Writing (2019-07-15): regions and lines in the page's order with ``readingOrder`` and
``structure`` in ``@custom``, a ``ReadingOrder`` group, coordinates rounded to whole pixels
(the schema allows only integers). A line without a region gets a region of its own with the
line's polygon and kind (``<line id>_region``), since PAGE nests every line in a region.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from xml.etree.ElementTree import Element, SubElement, indent, tostring

from docrec.formats import ReadOptions, atomic_write, iter_files, relative_image
from docrec.formats.xml import describe, integer, parse_points, parse_root, q, split_tag
from docrec.pages import DataError, Line, Page, Point, Region, resolve_image

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
#: Characters XML 1.0 cannot hold at all (ElementTree would write them and break the file).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_GROUPS = {"OrderedGroup", "UnorderedGroup", "OrderedGroupIndexed", "UnorderedGroupIndexed",
           "RegionRef", "RegionRefIndexed"}


def find(path: Path) -> Iterator[Path]:
    """The .xml files under ``path``; a file that is not PAGE is refused by :func:`read`."""
    return iter_files(path, (".xml",))


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
    resolve_image(file.parent, image, str(file), opts.allow_outside_root)
    width, height = integer(page_el, "imageWidth", where), integer(page_el, "imageHeight", where)

    default_kind = opts.kind or "printed"
    regions, lines = [], []
    for reg_el in _region_order(page_el, ns, file):
        reg_where = f"{file}: {describe(reg_el)}"
        rid = _ident(reg_el, reg_where)
        regions.append(Region(id=rid, polygon=_coords(reg_el, ns, reg_where), kind=_kind(reg_el, default_kind),
                              label=reg_el.get("type")))
        for line_el in _ordered(reg_el.findall(q(ns, "TextLine")), file):
            line_where = f"{file}: {describe(line_el)}"
            baseline_el = line_el.find(q(ns, "Baseline"))
            baseline = (parse_points(baseline_el.get("points"), line_where, "Baseline points")
                        if baseline_el is not None else None)
            lines.append(Line(id=_ident(line_el, line_where), polygon=_coords(line_el, ns, line_where),
                              text=_text(line_el, ns, line_where), kind=_kind(line_el, default_kind),
                              baseline=baseline, region=rid))
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
                props[key.strip()] = value.strip()
        out.setdefault(tag, props)
    return out


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


def _kind(el: Element, default: str) -> str:
    return custom_props(el.get("custom")).get("structure", {}).get("type") or default


def _text(line_el: Element, ns: str, where: str) -> str:
    equivs = line_el.findall(q(ns, "TextEquiv"))
    if not equivs:
        return ""

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
    return (unicode_el.text or "") if unicode_el is not None else ""


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
          confidences: Mapping[str, float] | None = None) -> Path:
    """Write one page as PAGE-XML 2019-07-15, atomically; ``confidences`` maps line id -> [0, 1]."""
    out = Path(out_path)
    confidences = confidences or {}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    # Plain names with literal xmlns attributes: ElementTree cannot write a default namespace
    # once an element carries unqualified attributes, and PAGE attributes are all unqualified.
    root = Element("PcGts", {"xmlns": NS_2019, "xmlns:xsi": _XSI,
                             "xsi:schemaLocation": f"{NS_2019} {NS_2019}/pagecontent.xsd"})
    meta = SubElement(root, "Metadata")
    for tag, value in (("Creator", "docrec"), ("Created", now), ("LastChange", now)):
        SubElement(meta, tag).text = value
    page_el = SubElement(root, "Page", {
        "imageFilename": image_name or relative_image(page, out.parent),
        "imageWidth": str(page.width), "imageHeight": str(page.height)})

    groups = _regions_with_lines(page)
    if groups:
        order = SubElement(SubElement(page_el, "ReadingOrder"), "OrderedGroup",
                           {"id": "reading_order", "caption": "Regions reading order"})
        for i, (region, _) in enumerate(groups):
            SubElement(order, "RegionRefIndexed", {"index": str(i), "regionRef": region.id})
    for i, (region, lines) in enumerate(groups):
        attrs = {"id": region.id, "custom": _custom(i, region.kind, page, f"region {region.id!r}")}
        if region.label in REGION_TYPES:
            attrs["type"] = region.label
        reg_el = SubElement(page_el, "TextRegion", attrs)
        SubElement(reg_el, "Coords", {"points": _points(region.polygon)})
        for j, line in enumerate(lines):
            line_el = SubElement(reg_el, "TextLine", {
                "id": line.id, "custom": _custom(j, line.kind, page, f"line {line.id!r}")})
            SubElement(line_el, "Coords", {"points": _points(line.polygon)})
            if line.baseline is not None:
                SubElement(line_el, "Baseline", {"points": _points(line.baseline)})
            equiv = SubElement(line_el, "TextEquiv")
            if line.id in confidences:
                equiv.set("conf", _conf(confidences[line.id], page, line.id))
            SubElement(equiv, "Unicode").text = _xml_text(line.text, page, f"line {line.id!r}")
    indent(root, space="  ")
    text = tostring(root, encoding="unicode")
    with atomic_write(out) as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n")
    return out


def _regions_with_lines(page: Page) -> list[tuple[Region, list[Line]]]:
    """Regions in page order with their lines; a region-less line gets a region of its own."""
    by_region: dict[str, list[Line]] = {r.id: [] for r in page.regions}
    groups = [(r, by_region[r.id]) for r in page.regions]
    taken = set(by_region)
    for line in page.lines:
        if line.region is not None:
            by_region[line.region].append(line)
            continue
        rid = f"{line.id}_region"
        while rid in taken:
            rid += "_"
        taken.add(rid)
        groups.append((Region(id=rid, polygon=line.polygon, kind=line.kind), [line]))
    return groups


def _custom(index: int, kind: str, page: Page, element: str) -> str:
    if not kind or re.search(r"[\s;{}]", kind):
        raise DataError(f"{page.source or '<memory>'}: {element}: kind {kind!r} cannot be written to "
                        "PAGE @custom (no spaces, ';', '{' or '}')")
    return f"readingOrder {{index:{index};}} structure {{type:{kind};}}"


def _xml_text(text: str, page: Page, element: str) -> str:
    bad = _NOT_XML.search(text)
    if bad:
        raise DataError(f"{page.source or '<memory>'}: {element}: text holds {bad.group()!r}, "
                        "which XML cannot represent")
    return text


def _conf(value: float, page: Page, line_id: str) -> str:
    if not 0.0 <= value <= 1.0:
        raise DataError(f"{page.source or '<memory>'}: line {line_id!r}: confidence {value!r} is outside [0, 1]")
    return f"{value:.4g}"


def _points(pts: list[Point]) -> str:
    return " ".join(f"{round(x)},{round(y)}" for x, y in pts)
