"""Safe XML parsing and the small helpers the XML readers (PAGE, ALTO) share.

Annotation files come from outside, so no DTD is processed: a ``<!DOCTYPE>`` (the carrier of
entity definitions, external entities and "billion laughs") is refused outright, as are
entity references and external fetches. Nothing is expanded and nothing is fetched.
"""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError, indent, tostring

import defusedxml.ElementTree as safe_et
from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

from docrec.formats import atomic_write
from docrec.pages import DataError, Line, Page, Point, Region

#: Characters XML 1.0 cannot hold at all (ElementTree would write them and break the file).
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_POSITION = re.compile(r":\s*line \d+, column \d+$")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PAIR = re.compile(rf"^({_NUMBER}),({_NUMBER})$")


def parse(file: Path) -> Element:
    """The root element of an XML file, parsed without DTDs, entities or network access."""
    try:
        tree = safe_et.parse(str(file), forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DTDForbidden:
        raise DataError(f"{file}: refused: the XML declares a DTD (<!DOCTYPE ...>), which can define "
                        "entities or fetch external files; remove the DOCTYPE to read it") from None
    except EntitiesForbidden as exc:
        raise DataError(f"{file}: refused: the XML declares entity {exc.name!r}; entities are not expanded") from None
    except ExternalReferenceForbidden as exc:
        raise DataError(f"{file}: refused: the XML references an external resource "
                        f"({exc.sysid or exc.pubid}); nothing is fetched") from None
    except ParseError as exc:
        line, col = exc.position
        reason = _POSITION.sub("", str(exc))
        raise DataError(f"{file}: malformed XML at line {line}, column {col + 1}: {reason}") from None
    except OSError as exc:
        raise DataError(f"{file}: cannot read ({exc.strerror or exc})") from None
    except (LookupError, UnicodeError, ValueError) as exc:  # e.g. encoding="UTF-9" in the declaration
        raise DataError(f"{file}: cannot decode the XML ({exc})") from None
    return tree.getroot()


def split_tag(tag: str) -> tuple[str, str]:
    """``{namespace}local`` -> (namespace, local); no namespace gives ''."""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def q(ns: str, path: str) -> str:
    """Qualify every step of an ElementPath (``A/B``) with namespace ``ns``."""
    return "/".join(step if step in (".", "..", "") else f"{{{ns}}}{step}" for step in path.split("/"))


def describe(el: Element) -> str:
    """An element as error messages name it: ``TextLine id=l3`` (PAGE ``id``, ALTO ``ID``)."""
    name = split_tag(el.tag)[1]
    ident = el.get("id") or el.get("ID")
    return f"{name} id={ident}" if ident else name


def parse_points(text: str | None, where: str, what: str = "points") -> list[Point]:
    """Points from ``"x,y x,y ..."`` (PAGE, ALTO 4.2) or the flat ``"x y x y ..."`` (ALTO)."""
    if text is None or not text.strip():
        raise DataError(f"{where}: {what} is missing or empty")
    tokens = text.split()
    try:
        if "," in text:
            pairs = [_PAIR.match(t) for t in tokens]
            if not all(pairs):
                raise ValueError("expected x,y pairs separated by spaces")
            return [(float(m.group(1)), float(m.group(2))) for m in pairs]
        if len(tokens) % 2:
            raise ValueError(f"odd number of coordinates ({len(tokens)})")
        values = [float(t) for t in tokens]
    except ValueError as exc:
        raise DataError(f"{where}: {what} {_clip(text)!r} cannot be read ({exc})") from None
    return list(zip(values[0::2], values[1::2]))


def number(el: Element, name: str, where: str) -> float:
    """A required numeric attribute."""
    raw = el.get(name)
    if raw is None:
        raise DataError(f"{where}: missing attribute {name}")
    try:
        return float(raw)
    except ValueError:
        raise DataError(f"{where}: attribute {name}={_clip(raw)!r} is not a number") from None


def integer(el: Element, name: str, where: str) -> int:
    """A required attribute holding a whole number (``"2114"`` or ``"2114.0"``)."""
    value = number(el, name, where)
    if not value.is_integer():
        raise DataError(f"{where}: attribute {name}={el.get(name)!r} is not a whole number")
    return int(value)


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n] + "..."


def parse_root(file: Path, name: str, namespaces: tuple[str, ...], label: str):
    """Parse ``file`` and check its root element and namespace; returns (root, namespace).

    ``label`` names the format in errors: "PAGE-XML" gives "not PAGE-XML" and "unsupported PAGE namespace".
    """
    root = parse(file)
    ns, tag = split_tag(root.tag)
    if tag != name:
        raise DataError(f"{file}: not {label}: root element is <{tag}>, expected <{name}>")
    if ns not in namespaces:
        raise DataError(f"{file}: unsupported {label.split('-')[0]} namespace {ns or '(none)'!r}; "
                        f"supported: {', '.join(namespaces)}")
    return root, ns


def xml_value(value: str, where: str, what: str = "text") -> str:
    """``value`` unchanged, or DataError naming ``where`` when it holds a character XML cannot."""
    bad = NOT_XML.search(value)
    if bad:
        raise DataError(f"{where}: {what} holds {bad.group()!r}, which XML cannot represent")
    return value


def confidence_value(value: float, where: str) -> str:
    """A confidence as written (4 significant digits); DataError naming ``where`` outside [0, 1] or NaN
    (a Page checks it, but pages can be changed after)."""
    if not 0.0 <= value <= 1.0:
        raise DataError(f"{where}: confidence {value!r} is outside [0, 1]")
    return f"{value:.4g}"


def nest_lines(page: Page, suffix: str) -> list[tuple[Region, list[Line]]]:
    """Regions in page order with their lines, then for each region-less line a region of its own
    (id ``<line id><suffix>``, the line's polygon and kind): PAGE and ALTO nest every line in one."""
    by_region: dict[str, list[Line]] = {r.id: [] for r in page.regions}
    groups = [(r, by_region[r.id]) for r in page.regions]
    for line in page.lines:
        if line.region is not None:
            by_region[line.region].append(line)
        else:
            groups.append((Region(id=f"{line.id}{suffix}", polygon=line.polygon, kind=line.kind), [line]))
    return groups


def write_xml(root: Element, out: Path) -> Path:
    """Write ``root`` indented, UTF-8 with an XML declaration, atomically."""
    indent(root, space="  ")
    text = tostring(root, encoding="unicode")
    with atomic_write(out) as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n")
    return out
