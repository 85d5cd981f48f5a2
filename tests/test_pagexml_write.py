"""PAGE-XML writing: valid ids, kinds and labels in the standard places, round trips, schema validity."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from docrec.formats import integer_polygon, load, pagexml
from docrec.formats.ids import document_ids, is_ncname
from docrec.pages import Line, Page, Region
from docrec.realdata import REALDATA
from tests.strategies import box, pages

SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "schemas"


def page2019_schema():
    if not (SCHEMAS / "page2019.xsd").exists():
        return None
    from lxml import etree

    return etree.XMLSchema(etree.parse(str(SCHEMAS / "page2019.xsd")))


SCHEMA = page2019_schema()


def assert_valid(path: Path) -> None:
    """Schema-valid when the schemas are here; the ids are always checked."""
    from lxml import etree

    doc = etree.parse(str(path))
    ids = [el.get("id") for el in doc.iter() if el.get("id") is not None]
    assert all(is_ncname(i) for i in ids) and len(set(ids)) == len(ids), ids
    if SCHEMA is not None:
        SCHEMA.assertValid(doc)


def test_document_ids_keep_valid_ones_and_map_the_rest_deterministically():
    ids = ["r1", "1", "line 1", "a:b", "r1", "a_b", "reading_order", "é"]
    new = document_ids(ids)
    assert new == ["r1", "id_1", "line_1", "a_b_2", "r1_2", "a_b", "reading_order", "_"]
    assert document_ids(ids) == new and all(is_ncname(i) for i in new) and len(set(new)) == len(new)
    assert document_ids(["x"], reserved=["x"]) == ["x_2"]


def test_invalid_and_colliding_ids_are_renamed_with_a_warning_and_the_file_validates(tmp_path, caplog):
    page = Page("p.png", 200, 100, regions=[Region("1", box(0, 0, 100, 50)), Region("reading_order", box(0, 50, 100, 100))],
                lines=[Line("1", box(2, 2, 90, 20), "a", region="1"), Line("line 1", box(2, 22, 90, 40), "b", region="1"),
                       Line("a:b", box(2, 52, 90, 70), "c", region="reading_order"),
                       Line("x", box(110, 10, 190, 30), "orphan"), Line("x_region", box(110, 40, 190, 60), "d")],
                root=tmp_path)
    with caplog.at_level(logging.WARNING, logger="docrec"):
        out = pagexml.write(page, tmp_path / "p.xml")
    assert_valid(out)
    assert "'1' -> 'id_1'" in caplog.text and "'line 1' -> 'line_1'" in caplog.text and str(out) in caplog.text
    (back,) = pagexml.read(out)
    assert [r.id for r in back.regions][:2] == ["id_1", "reading_order"]
    assert [ln.text for ln in back.lines] == ["a", "b", "c", "orphan", "d"]
    assert len({r.id for r in back.regions} | {ln.id for ln in back.lines}) == len(back.regions) + len(back.lines)


def test_labels_kinds_and_escaped_custom_values_round_trip(tmp_path):
    page = Page("p.png", 200, 100,
                regions=[Region("r", box(0, 0, 200, 100), kind="form_field", label="Main Zone;{x}:y\\z")],
                lines=[Line("l", box(2, 2, 190, 20), "t", kind="hand written", region="r", label="question")],
                root=tmp_path)
    out = pagexml.write(page, tmp_path / "p.xml")
    assert_valid(out)
    assert "structure {type:Main\\u0020Zone\\u003b\\u007bx\\u007d\\u003ay\\u005cz;}" in out.read_text()
    (back,) = pagexml.read(out)
    assert (back.regions[0].kind, back.regions[0].label) == ("form_field", "Main Zone;{x}:y\\z")
    assert (back.lines[0].kind, back.lines[0].label) == ("hand written", "question")


def test_transkribus_structure_types_are_labels_and_production_gives_the_kind(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="{pagexml.NS_2019}"><Metadata><Creator>x</Creator><Created>2024-01-01T00:00:00</Created>
<LastChange>2024-01-01T00:00:00</LastChange></Metadata>
<Page imageFilename="p.png" imageWidth="100" imageHeight="100">
<TextRegion id="r" custom="readingOrder {{index:0;}} structure {{type:heading;}}" production="typewritten">
<Coords points="0,0 99,0 99,50 0,50"/>
<TextLine id="l" custom="readingOrder {{index:0;}} structure {{type:Main\\u0020line;}}" production="handwritten-printscript">
<Coords points="1,1 98,1 98,20 1,20"/><TextEquiv conf="0.5"><Unicode>x</Unicode></TextEquiv></TextLine>
</TextRegion></Page></PcGts>""", encoding="utf-8")
    (page,) = pagexml.read(xml)
    assert (page.regions[0].kind, page.regions[0].label) == ("printed", "heading")
    assert (page.lines[0].kind, page.lines[0].label, page.lines[0].confidence) == ("handwritten", "Main line", 0.5)


def test_interleaved_line_order_survives_the_nesting(tmp_path):
    regions = [Region("a", box(0, 0, 100, 100)), Region("b", box(100, 0, 200, 100))]
    lines = [Line("l1", box(2, 2, 90, 20), "1", region="a"), Line("l2", box(102, 2, 190, 20), "2", region="b"),
             Line("l3", box(2, 30, 90, 50), "3", region="a")]
    out = pagexml.write(Page("p.png", 200, 100, regions=regions, lines=lines, root=tmp_path), tmp_path / "p.xml")
    assert_valid(out)
    (back,) = pagexml.read(out)
    assert [(ln.id, ln.region) for ln in back.lines] == [("l1", "a"), ("l2", "b"), ("l3", "a")]
    # Not interleaved: no docrec order key is written.
    grouped = Page("p.png", 200, 100, regions=regions, lines=[lines[0], lines[2], lines[1]], root=tmp_path)
    assert "order:" not in pagexml.write(grouped, tmp_path / "g.xml").read_text()


def test_a_polygon_thinner_than_a_pixel_is_written_so_that_it_reads_back(tmp_path):
    thin = [(10.2, 5.1), (50.3, 5.2), (50.3, 5.4), (10.2, 5.3)]
    page = Page("p.png", 100, 100, lines=[Line("l", thin, "x", baseline=[(10.2, 5.3), (50.3, 5.3)])], root=tmp_path)
    out = pagexml.write(page, tmp_path / "p.xml")
    assert_valid(out)
    (back,) = pagexml.read(out)
    assert back.lines[0].polygon == [(10, 5), (50, 5), (50, 6), (10, 6)]
    assert back.lines[0].baseline == [(10, 5), (50, 5)]


@pytest.mark.skipif(not (REALDATA / "joseph_hooker_htr").is_dir(), reason="needs ../shared/realdata")
def test_real_transkribus_pages_round_trip_and_validate(tmp_path):
    pages = load("pagexml", REALDATA / "joseph_hooker_htr", strict=False, limit=3).pages
    for page in pages:
        out = pagexml.write(page, tmp_path / Path(page.source).name, image_name=page.image_path.name)
        assert_valid(out)
        (back,) = pagexml.read(out)
        assert [(ln.id, ln.text, ln.baseline) for ln in back.lines] == [
            (ln.id, ln.text, [(round(x), round(y)) for x, y in ln.baseline] if ln.baseline else None)
            for ln in page.lines]
        assert [r.id for r in back.regions] == [r.id for r in page.regions]


# --- property: any page survives write -> validate -> read ---------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(page=pages())
def test_any_page_survives_write_validate_read(tmp_path, page):
    page.root = tmp_path
    W, H = page.width, page.height
    out = pagexml.write(page, tmp_path / "p.xml")
    assert_valid(out)
    (back,) = pagexml.read(out)
    assert len(back.lines) == len(page.lines)
    assert len(back.regions) == len(page.regions) + sum(ln.region is None for ln in page.lines)
    region_index = {r.id: i for i, r in enumerate(page.regions)}
    back_index = {r.id: i for i, r in enumerate(back.regions)}
    for r, b in zip(page.regions, back.regions):
        assert (b.kind, b.label) == (r.kind, r.label)
        assert b.polygon == [(float(x), float(y)) for x, y in integer_polygon(r.polygon, W, H)]
    for ln, b in zip(page.lines, back.lines):
        assert (b.text, b.kind, b.label) == (ln.text, ln.kind, ln.label)
        assert b.polygon == [(float(x), float(y)) for x, y in integer_polygon(ln.polygon, W, H)]
        assert b.baseline == ([(round(x), round(y)) for x, y in ln.baseline] if ln.baseline else None)
        assert (b.confidence is None) == (ln.confidence is None)
        if ln.confidence is not None:
            assert math.isclose(b.confidence, ln.confidence, rel_tol=1e-3, abs_tol=1e-4)
        if ln.region is not None:
            assert back_index[b.region] == region_index[ln.region]
        else:
            assert back_index[b.region] >= len(page.regions)
        if is_ncname(ln.id) and ln.id not in region_index:
            assert b.id == ln.id
