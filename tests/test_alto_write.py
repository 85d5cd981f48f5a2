"""ALTO 4.4 writing: round trips, schema validity, valid ids, tags, reading order; the reader's upgrades."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from docrec.formats import ReadOptions, alto, integer_polygon
from docrec.formats.ids import document_ids, is_ncname
from docrec.pages import DataError, Line, Page, Point, Region, polygon_area
from tests.strategies import box, pages

SHARED = Path(__file__).resolve().parents[2] / "shared"
SCHEMAS = SHARED / "schemas"
CREMMA = SHARED / "realdata" / "cremma_testaments_de_poilus" / "data"
NS = {"a": alto.NAMESPACES[0]}


def alto_schema():
    if not (SCHEMAS / "alto-4-4.xsd").exists():
        return None
    from lxml import etree

    return etree.XMLSchema(etree.parse(str(SCHEMAS / "alto-4-4.xsd")))


SCHEMA = alto_schema()


def assert_valid(path: Path):
    """Schema-valid when the schemas are here; the ids are always checked. Returns the lxml tree."""
    from lxml import etree

    doc = etree.parse(str(path))
    ids = [el.get("ID") for el in doc.iter() if el.get("ID") is not None]
    assert all(is_ncname(i) for i in ids) and len(set(ids)) == len(ids), ids
    if SCHEMA is not None:
        SCHEMA.assertValid(doc)
    return doc


def written(pts: list[Point], width: int, height: int) -> list[Point]:
    """A polygon as the writer puts it: 2 decimals, or the 1-px box when that leaves no area."""
    out = [(round(x, 2), round(y, 2)) for x, y in pts]
    if polygon_area(out) > 0:
        return out
    return [(float(x), float(y)) for x, y in integer_polygon(pts, width, height)]


def sample_page(root: Path) -> Page:
    """Two regions whose lines interleave in reading order, a region-less line, odd spacing."""
    regions = [Region("r1", box(0, 0, 100, 100), "handwritten", "MainZone"),
               Region("r2", box(100, 0, 200, 100), "printed", "MarginTextZone"),
               Region("empty", box(0, 90, 10, 100), "form_field")]
    lines = [Line("l1", box(2.126, 2, 90, 20.5), "  two  leading, one trailing ", "handwritten",
                  [(2.126, 18), (50.333, 17.5), (90, 18)], "r1", "DefaultLine", 0.875),
             Line("l2", box(102, 2, 190, 20), "margin", "printed", None, "r2", None, None),
             Line("l3", box(2, 30, 90, 50), "", "handwritten", [(2, 48), (90, 48)], "r1", "InterlinearLine", 0.5),
             Line("l4", box(110, 60, 190, 80), "a\tb", "form_field", None, None, "question", 0.123456)]
    return Page("page.png", 200, 100, regions=regions, lines=lines, root=root)


def test_write_read_keeps_lines_regions_order_and_text(tmp_path):
    page = sample_page(tmp_path)
    out = alto.write(page, tmp_path / "p.xml")
    assert_valid(out)
    (back,) = alto.read(out)
    assert (back.image, back.width, back.height) == ("page.png", 200, 100)
    assert [(r.id, r.kind, r.label, r.polygon) for r in back.regions] == [
        *((r.id, r.kind, r.label, r.polygon) for r in page.regions),
        ("l4_block", "form_field", None, page.lines[3].polygon)]  # a region-less line gets a block of its own
    assert [(ln.id, ln.region, ln.text, ln.kind, ln.label) for ln in back.lines] == [
        ("l1", "r1", "  two  leading, one trailing ", "handwritten", "DefaultLine"),
        ("l2", "r2", "margin", "printed", None), ("l3", "r1", "", "handwritten", "InterlinearLine"),
        ("l4", "l4_block", "a\tb", "form_field", "question")]
    assert back.lines[0].polygon == [(2.13, 2), (90, 2), (90, 20.5), (2.13, 20.5)]  # 2 decimals
    assert back.lines[0].baseline == [(2.13, 18), (50.33, 17.5), (90, 18)]
    assert [ln.baseline is None for ln in back.lines] == [False, True, False, True]
    assert [ln.confidence for ln in back.lines] == [0.875, None, 0.5, 0.1235]  # WC has 4 significant digits


def test_written_file_structure(tmp_path):
    page = sample_page(tmp_path)
    out = alto.write(page, tmp_path / "xml" / "p.xml", creator_version="9.9", checkpoint="runs/a/best.pt")
    doc = assert_valid(out)
    text = out.read_text(encoding="utf-8")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<alto xmlns="' + alto.NAMESPACES[0])
    assert (f'xsi:schemaLocation="{alto.NAMESPACES[0]} http://www.loc.gov/standards/alto/v4/alto-4-4.xsd"'
            in text)
    assert doc.findtext("a:Description/a:MeasurementUnit", namespaces=NS) == "pixel"
    assert doc.findtext("a:Description/a:sourceImageInformation/a:fileName", namespaces=NS) == "../page.png"
    step = doc.find("a:Description/a:Processing", namespaces=NS)
    assert step.findtext("a:processingSoftware/a:softwareName", namespaces=NS) == "docrec"
    assert step.findtext("a:processingSoftware/a:softwareVersion", namespaces=NS) == "9.9"
    assert "runs/a/best.pt" in step.findtext("a:processingStepSettings", namespaces=NS)
    page_el = doc.find("a:Layout/a:Page", namespaces=NS)
    assert (page_el.get("WIDTH"), page_el.get("HEIGHT"), page_el.get("PHYSICAL_IMG_NR")) == ("200", "100", "1")
    space = page_el.find("a:PrintSpace", namespaces=NS)
    assert [space.get(k) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT")] == ["0", "0", "200", "100"]

    tags = {t.get("ID"): (t.get("TYPE"), t.get("LABEL"), t.get("DESCRIPTION"))
            for t in doc.iterfind("a:Tags/a:OtherTag", namespaces=NS)}
    assert sorted(tags.values(), key=str) == sorted([
        ("docrec:kind", "handwritten", None), ("docrec:kind", "printed", None), ("docrec:kind", "form_field", None),
        (None, "MainZone", "block type MainZone"), (None, "MarginTextZone", "block type MarginTextZone"),
        (None, "DefaultLine", "line type DefaultLine"), (None, "InterlinearLine", "line type InterlinearLine"),
        (None, "question", "line type question")], key=str)
    l1 = doc.find(".//a:TextLine[@ID='l1']", namespaces=NS)
    assert sorted(tags[t][1] for t in l1.get("TAGREFS").split()) == ["DefaultLine", "handwritten"]
    assert [l1.get(k) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT")] == ["2.13", "2", "87.87", "18.5"]
    assert l1.get("BASELINE") == "2.13,18 50.33,17.5 90,18"
    assert l1.find("a:Shape/a:Polygon", namespaces=NS).get("POINTS") == "2.13,2 90,2 90,20.5 2.13,20.5"
    words = [(el.tag.split("}")[1], el.get("CONTENT"), el.get("WC")) for el in l1 if not el.tag.endswith("Shape")]
    assert words == [("String", "", "0.875"), ("SP", None, None), ("String", "", "0.875"), ("SP", None, None),
                     ("String", "two", "0.875"), ("SP", None, None), ("String", "", "0.875"), ("SP", None, None),
                     ("String", "leading,", "0.875"), ("SP", None, None), ("String", "one", "0.875"),
                     ("SP", None, None), ("String", "trailing", "0.875"), ("SP", None, None),
                     ("String", "", "0.875")]
    l3 = doc.find(".//a:TextLine[@ID='l3']", namespaces=NS)
    assert [(el.get("CONTENT"), el.get("WC")) for el in l3.iterfind("a:String", namespaces=NS)] == [("", "0.5")]
    refs = [r.get("REF") for r in doc.iterfind("a:ReadingOrder/a:OrderedGroup/a:ElementRef", namespaces=NS)]
    assert refs == ["l1", "l2", "l3", "l4"]
    assert [b.get("ID") for b in space.iterfind("a:TextBlock", namespaces=NS)] == ["r1", "r2", "empty", "l4_block"]


@pytest.mark.skipif(SCHEMA is None, reason=f"needs {SCHEMAS}")
def test_written_files_validate_against_the_alto_4_4_schema(tmp_path):
    empty = Page("page.png", 50, 40, root=tmp_path)  # no lines: no Tags, no ReadingOrder
    for i, page in enumerate((sample_page(tmp_path), empty)):
        SCHEMA.assertValid(assert_valid(alto.write(page, tmp_path / f"p{i}.xml")))


def test_invalid_and_colliding_ids_are_renamed_with_a_warning_and_the_file_validates(tmp_path, caplog):
    page = Page("p.png", 200, 100,
                regions=[Region("1", box(0, 0, 100, 50)), Region("same", box(0, 50, 100, 100)),
                         Region("kind_1", box(100, 0, 200, 50))],
                lines=[Line("line 1", box(2, 2, 90, 20), "a", region="1"), Line("a:b", box(2, 52, 90, 70), "b"),
                       Line("same", box(2, 60, 90, 80), "c", region="same"),
                       Line("1", box(2, 22, 90, 40), "d", region="1"), Line("ro_1", box(110, 2, 190, 20), "e")],
                root=tmp_path)
    with caplog.at_level(logging.WARNING, logger="docrec"):
        out = alto.write(page, tmp_path / "p.xml")
    assert_valid(out)
    for rename in ("'1' -> 'id_1'", "'line 1' -> 'line_1'", "'a:b' -> 'a_b'", "'same' -> 'same_2'", "'1' -> 'id_1_2'"):
        assert rename in caplog.text
    assert str(out) in caplog.text and "kind_1" not in caplog.text and "ro_1" not in caplog.text
    (back,) = alto.read(out, ReadOptions(kind="handwritten"))
    assert [r.id for r in back.regions] == ["id_1", "same", "kind_1", "a_b_block", "ro_1_block"]
    assert [(ln.id, ln.region, ln.text) for ln in back.lines] == [
        ("line_1", "id_1", "a"), ("a_b", "a_b_block", "b"), ("same_2", "same", "c"), ("id_1_2", "id_1", "d"),
        ("ro_1", "ro_1_block", "e")]
    assert [ln.kind for ln in back.lines] == ["printed"] * 5  # the kind tag, renamed, still resolves


def test_a_polygon_thinner_than_the_written_precision_still_has_an_area(tmp_path):
    thin = [(10.2, 5.101), (50.3, 5.102), (50.3, 5.104), (10.2, 5.103)]
    page = Page("p.png", 100, 100, lines=[Line("l", thin, "x", baseline=[(10.2, 5.1), (50.3, 5.1)])], root=tmp_path)
    out = alto.write(page, tmp_path / "p.xml")
    assert_valid(out)
    (back,) = alto.read(out)
    assert back.lines[0].polygon == [(10, 5), (50, 5), (50, 6), (10, 6)] == back.regions[0].polygon
    assert back.lines[0].baseline == [(10.2, 5.1), (50.3, 5.1)]


@pytest.mark.parametrize("change, message", [
    (lambda p: setattr(p.lines[1], "text", "form\x0cfeed"), r"line 'l2': text holds '\\x0c'"),
    (lambda p: setattr(p.regions[0], "label", "Main\x00Zone"), r"region 'r1': label holds '\\x00'"),
    (lambda p: setattr(p.lines[3], "kind", "hand\ufffe"), r"line 'l4': kind holds '\\ufffe'"),
    (lambda p: setattr(p.lines[0], "confidence", 1.5), r"line 'l1': confidence 1.5 is outside \[0, 1\]"),
])
def test_what_xml_cannot_hold_is_refused_naming_the_element_and_nothing_is_written(tmp_path, change, message):
    page = sample_page(tmp_path)
    page.source = "in.json"
    change(page)
    with pytest.raises(DataError, match=f"in.json: {message}"):
        alto.write(page, tmp_path / "p.xml")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_reader_takes_kinds_confidence_and_nested_reading_order(tmp_path):
    xml = tmp_path / "o.xml"
    line = ('<TextLine ID="{id}" TAGREFS="{tags}" HPOS="1" VPOS="{y}" WIDTH="50" HEIGHT="5">'
            '<String CONTENT="{id}" {wc}/></TextLine>')
    xml.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="{alto.NAMESPACES[0]}"><Description><MeasurementUnit>pixel</MeasurementUnit>
<sourceImageInformation><fileName>o.png</fileName></sourceImageInformation></Description>
<Tags><OtherTag ID="K" TYPE="docrec:kind" LABEL="handwritten"/><OtherTag ID="L" LABEL="DefaultLine"/></Tags>
<ReadingOrder><OrderedGroup ID="g"><ElementRef ID="e1" REF="c"/>
  <UnorderedGroup ID="g2"><OrderedGroup ID="g3"><ElementRef ID="e2" REF="B"/><ElementRef ID="e3" REF="a"/>
  </OrderedGroup></UnorderedGroup></OrderedGroup></ReadingOrder>
<Layout><Page ID="p" WIDTH="100" HEIGHT="100" PHYSICAL_IMG_NR="1"><PrintSpace>
<TextBlock ID="A" HPOS="0" VPOS="0" WIDTH="60" HEIGHT="50" TAGREFS="K">
{line.format(id="a", tags="K L", y=1, wc='WC="0.5"')}
{line.format(id="u", tags="L", y=10, wc="")}
{line.format(id="b", tags="K", y=20, wc="")}</TextBlock>
<TextBlock ID="B" HPOS="0" VPOS="50" WIDTH="60" HEIGHT="50">
<TextLine ID="c" HPOS="1" VPOS="51" WIDTH="50" HEIGHT="5"><String CONTENT="x" WC="0.2"/><SP/>
<String CONTENT="y"/><SP/><String CONTENT="z" WC="0.4"/></TextLine></TextBlock>
</PrintSpace></Page></Layout></alto>
""", encoding="utf-8")
    (page,) = alto.read(xml, ReadOptions(kind="printed"))
    # Listed lines first in ReadingOrder order (the block ref B names no line), the others after.
    assert [ln.id for ln in page.lines] == ["c", "a", "u", "b"]
    assert [(ln.kind, ln.label) for ln in page.lines] == [
        ("printed", None), ("handwritten", "DefaultLine"), ("printed", "DefaultLine"), ("handwritten", None)]
    assert [(r.id, r.kind, r.label) for r in page.regions] == [("A", "handwritten", None), ("B", "printed", None)]
    assert page.lines[0].text == "x y z" and page.lines[0].confidence == pytest.approx(0.3)
    assert [ln.confidence for ln in page.lines[1:]] == [0.5, None, None]


@pytest.mark.realdata
@pytest.mark.skipif(not CREMMA.is_dir(), reason=f"needs {CREMMA}")
def test_real_escriptorium_files_round_trip_and_validate(tmp_path):
    files = sorted(CREMMA.rglob("*.xml"))
    assert files
    for file in files:
        (page,) = alto.read(file, ReadOptions(kind="handwritten"))
        out = alto.write(page, tmp_path / file.name, image_name=page.image)
        assert_valid(out)
        (back,) = alto.read(out)
        assert back.image == page.image and (back.width, back.height) == (page.width, page.height)
        assert [(r.id, r.kind, r.label, r.polygon) for r in back.regions] == [
            (r.id, r.kind, r.label, r.polygon) for r in page.regions]
        assert [(ln.id, ln.region, ln.text, ln.kind, ln.label, ln.polygon, ln.baseline) for ln in back.lines] == [
            (ln.id, ln.region, ln.text, ln.kind, ln.label, ln.polygon, ln.baseline) for ln in page.lines]


# --- property: any page survives write -> validate -> read ---------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(page=pages())
def test_any_page_survives_write_validate_read(tmp_path, page):
    page.root = tmp_path
    out = alto.write(page, tmp_path / "p.xml")
    assert_valid(out)
    (back,) = alto.read(out)
    w, h = page.width, page.height
    ids = document_ids([r.id for r in page.regions] + [ln.id for ln in page.lines])
    region_ids, line_ids = ids[:len(page.regions)], ids[len(page.regions):]
    orphans = [ln for ln in page.lines if ln.region is None]
    assert len(back.regions) == len(page.regions) + len(orphans)
    assert [(r.id, r.kind, r.label, r.polygon) for r in back.regions] == [
        *((i, r.kind, r.label, written(r.polygon, w, h)) for i, r in zip(region_ids, page.regions)),
        *((b.id, ln.kind, None, written(ln.polygon, w, h)) for b, ln in zip(back.regions[len(page.regions):], orphans))]
    own_block = dict(zip(map(id, orphans), (r.id for r in back.regions[len(page.regions):])))
    new_region_id = dict(zip((r.id for r in page.regions), region_ids))
    assert len(back.lines) == len(page.lines)
    for ln, new_id, b in zip(page.lines, line_ids, back.lines):
        assert (b.id, b.text, b.kind, b.label) == (new_id, ln.text, ln.kind, ln.label)
        assert b.region == (own_block[id(ln)] if ln.region is None else new_region_id[ln.region])
        assert b.polygon == written(ln.polygon, w, h)
        assert b.baseline == (None if ln.baseline is None else [(round(x, 2), round(y, 2)) for x, y in ln.baseline])
        assert (b.confidence is None) == (ln.confidence is None)
        if ln.confidence is not None:
            assert math.isclose(b.confidence, ln.confidence, rel_tol=1e-3, abs_tol=1e-300)
        if is_ncname(ln.id) and ln.id not in new_region_id:
            assert b.id == ln.id
