"""Readers (PAGE-XML, ALTO, FUNSD, SROIE), the PAGE writer, safe XML and the convert CLI."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from docrec.formats import ReadOptions, alto, funsd, load, pagexml, sroie
from docrec.formats.manifest import page_to_dict
from docrec.formats.manifest import write as write_manifest
from docrec.formats.xml import parse_points
from docrec.pages import DataError, Line, Page, Region, page_stats

REPO = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures" / "formats"
NS19 = pagexml.NS_2019
ALTO4 = alto.NAMESPACES[0]


def image(path: Path, size: tuple[int, int] = (200, 100)) -> Path:
    Image.new("L", size, 255).save(path)
    return path


def page_xml(lines: str, ns: str = NS19, image_name: str = "page.png", root: str = "PcGts") -> str:
    return (f'<?xml version="1.0"?>\n<{root} xmlns="{ns}">\n'
            f'<Page imageFilename="{image_name}" imageWidth="200" imageHeight="100">\n'
            f'<TextRegion id="r1"><Coords points="0,0 200,0 200,100 0,100"/>\n{lines}\n</TextRegion>\n'
            f"</Page>\n</{root}>\n")


def alto_xml(body: str = "", ns: str = ALTO4, unit: str = "<MeasurementUnit>pixel</MeasurementUnit>",
             source: str = "<sourceImageInformation><fileName>page.jpg</fileName></sourceImageInformation>",
             tags: str = '<Tags><OtherTag ID="T1" LABEL="MainZone"/></Tags>', pages: int = 1) -> str:
    page = f'<Page ID="p" WIDTH="200" HEIGHT="100"><PrintSpace>{body}</PrintSpace></Page>'
    return (f'<?xml version="1.0"?>\n<alto xmlns="{ns}"><Description>{unit}{source}</Description>{tags}'
            f"<Layout>{page * pages}</Layout></alto>\n")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- shared helpers ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1,2 3,4 5.5,6", [(1, 2), (3, 4), (5.5, 6)]),
    ("1 2 3 4  5.5 6", [(1, 2), (3, 4), (5.5, 6)]),
    ("  -1,2e1\n3,4 ", [(-1, 20), (3, 4)]),
])
def test_parse_points_reads_pairs_and_flat_lists(text, expected):
    assert parse_points(text, "f.xml: X") == expected


@pytest.mark.parametrize("text, message", [
    ("1 2 3", "odd number"), ("1,2 3", "x,y pairs"), ("1,2,3 4,5", "x,y pairs"), ("a b c d", "cannot be read"),
    ("", "missing or empty"), (None, "missing or empty"),
])
def test_parse_points_refuses_bad_input(text, message):
    with pytest.raises(DataError, match=f"f.xml: X: .*{message}"):
        parse_points(text, "f.xml: X")


# --- PAGE-XML ---------------------------------------------------------------------------------

def test_pagexml_2013_order_text_and_geometry():
    (page,) = load("pagexml", FIX / "pagexml" / "page2013.xml").pages
    assert (page.image, page.width, page.height) == ("page.png", 200, 100)
    # ReadingOrder puts r2 first although r1 comes first in the file; the ImageRegion is no text.
    assert [(r.id, r.kind, r.label) for r in page.regions] == [("r2", "printed", None), ("r1", "printed", "paragraph")]
    # Lines follow readingOrder in @custom; the line-level TextEquiv with the lowest index wins.
    assert [(ln.id, ln.region, ln.text) for ln in page.lines] == [
        ("l3", "r2", "Caf\u00e9 & co"), ("l1", "r1", "Hello world"), ("l2", "r1", "Second line")]
    l1 = page.lines[1]
    assert l1.polygon == [(12, 12), (200, 12), (200, 28), (12, 28)]  # x=201 clipped to the page edge
    assert l1.baseline == [(12, 25), (100, 26), (188, 25)]
    assert page.lines[2].baseline is None
    assert page.image_path == FIX / "pagexml" / "page.png"


def test_pagexml_2019_kinds_from_custom_win_over_the_option():
    (page,) = load("pagexml", FIX / "pagexml" / "page2019.xml", kind="handwritten").pages
    assert [(r.id, r.kind, r.label) for r in page.regions] == [
        ("head", "handwritten", "heading"), ("form", "form_field", None)]
    assert [(ln.id, ln.kind, ln.text) for ln in page.lines] == [
        ("h1", "handwritten", "Title"), ("h2", "handwritten", ""), ("f1", "handwritten", "42")]
    (default,) = load("pagexml", FIX / "pagexml" / "page2019.xml").pages
    assert [ln.kind for ln in default.lines] == ["printed", "printed", "handwritten"]


def test_pagexml_folder_yields_every_page_sorted():
    result = load("pagexml", FIX / "pagexml")
    assert [Path(p.source).name for p in result.pages] == ["page2013.xml", "page2019.xml"]
    assert page_stats(result.pages) == {"pages": 2, "regions": 4, "lines": 6, "empty_lines": 1,
                                        "characters": 9 + 11 + 11 + 5 + 2}


@pytest.mark.parametrize("text, message", [
    (page_xml("", ns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2010-03-19"),
     "unsupported PAGE namespace '.*2010-03-19'"),
    (page_xml("", root="Document"), r"not PAGE-XML: root element is <Document>"),
    (page_xml('<TextLine id="x1"><TextEquiv><Unicode>a</Unicode></TextEquiv></TextLine>'),
     "TextLine id=x1: missing Coords"),
    (page_xml('<TextLine id="x2"><Coords points="1,1 5,1 5;5"/></TextLine>'), "TextLine id=x2: Coords points"),
    (page_xml('<TextLine id="x3"><Coords points="1,1 5,1 5,5"/><Baseline points="1,1"/></TextLine>'),
     "line 'x3': baseline has 1 point"),
    (page_xml('<TextLine><Coords points="1,1 5,1 5,5"/></TextLine>'), "TextLine: missing id"),
    (page_xml('<TextLine id="x4" custom="readingOrder {index:one;}"><Coords points="1,1 5,1 5,5"/></TextLine>'),
     "TextLine id=x4: readingOrder index 'one'"),
])
def test_pagexml_errors_name_file_and_element(tmp_path, text, message):
    image(tmp_path / "page.png")
    src = write(tmp_path / "bad.xml", text)
    with pytest.raises(DataError, match=f"{src}: .*{message}"):
        load("pagexml", src)


def test_pagexml_escaping_image_path_is_refused_unless_allowed(tmp_path):
    (tmp_path / "ann").mkdir()
    image(tmp_path / "page.png")
    src = write(tmp_path / "ann" / "p.xml", page_xml("", image_name="../page.png"))
    with pytest.raises(DataError, match=f"{src}: image: path '../page.png' escapes"):
        load("pagexml", src)
    (page,) = load("pagexml", src, allow_outside_root=True).pages
    assert page.image_path.resolve() == (tmp_path / "page.png").resolve()


def round_trip_page(tmp_path: Path) -> Page:
    image(tmp_path / "page.png")
    return Page(image="page.png", width=200, height=100, root=tmp_path, source="memory", regions=[
        Region("r1", [(10, 10), (190, 10), (190, 48), (10, 48)], kind="printed", label="heading"),
        Region("r2", [(10, 52), (120, 50), (125, 95), (10, 95)], kind="form_field"),
    ], lines=[
        Line("l1", [(12, 12), (188, 12), (188, 30), (12, 30)], "Tom & Jerry <b> \"quoted\"", "printed",
             [(12, 28), (100, 29), (188, 28)], "r1"),
        Line("l2", [(12, 32), (188, 32), (188, 46), (12, 46)], "", "printed", None, "r1"),
        Line("l3", [(12, 55), (118, 54), (120, 90), (12, 92)], "Zo\u00eb  \u00e9t\u00e9 \u20ac5", "handwritten",
             [(12, 85), (118, 84)], "r2"),
    ])


def test_manifest_to_pagexml_2019_to_manifest_keeps_everything(tmp_path):
    original = round_trip_page(tmp_path)
    manifest = write_manifest([original], tmp_path / "in.jsonl")
    (from_manifest,) = load("manifest", manifest).pages
    pagexml.write(from_manifest, tmp_path / "page.xml")
    (from_xml,) = load("pagexml", tmp_path / "page.xml").pages
    back = write_manifest([from_xml], tmp_path / "out.jsonl")
    assert back.read_text(encoding="utf-8") == manifest.read_text(encoding="utf-8")
    assert page_to_dict(from_xml)["regions"][0]["label"] == "heading"
    assert [ln.kind for ln in from_xml.lines] == ["printed", "printed", "handwritten"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_pagexml_writer_output(tmp_path):
    page = round_trip_page(tmp_path)
    page.regions[1].label = "MainZone"  # not a PAGE region type: a structure label, not @type
    page.lines.append(Line("l4", [(130, 60), (190, 60), (190, 80), (130, 80)], "orphan", "handwritten"))
    page.lines[0].confidence = 0.25
    page = Page(image=page.image, width=200, height=100, regions=page.regions, lines=page.lines, root=tmp_path)
    out = pagexml.write(page, tmp_path / "xml" / "p.xml", image_name="../page.png", checkpoint="runs/a/best.pt")
    text = out.read_text(encoding="utf-8")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<PcGts xmlns="' + NS19)
    assert 'conf="0.25"' in text and text.count("conf=") == 1
    assert 'type="heading"' in text and 'type="MainZone"' not in text and "structure {type:MainZone;}" in text
    # Kinds in the standard attribute where PAGE has the word, under docrec's key otherwise.
    assert 'production="printed"' in text and 'production="handwritten-cursive"' in text
    assert "docrec {kind:form_field;}" in text and "structure {type:printed" not in text
    assert "<Creator>docrec " in text and 'value="runs/a/best.pt"' in text
    (back,) = load("pagexml", out, allow_outside_root=True).pages
    assert back.lines[0].confidence == 0.25 and back.regions[1].label == "MainZone"
    # A region-less line gets a region of its own, so that PAGE can hold it.
    assert [(r.id, r.kind) for r in back.regions] == [("r1", "printed"), ("r2", "form_field"),
                                                      ("l4_region", "handwritten")]
    assert (back.lines[-1].region, back.lines[-1].text, back.regions[-1].polygon) == (
        "l4_region", "orphan", page.lines[-1].polygon)


def test_pagexml_writer_rounds_to_whole_pixels_and_refuses_bad_values(tmp_path):
    page = round_trip_page(tmp_path)
    page.lines[0].polygon = [(12.4, 12.6), (188.5, 12), (188, 30), (12, 30)]
    (back,) = pagexml.read(pagexml.write(page, tmp_path / "p.xml"))
    assert back.lines[0].polygon[:2] == [(12, 13), (188, 12)]  # round half to even
    page.lines[0].confidence = 1.5
    with pytest.raises(DataError, match="line 'l1': confidence 1.5 is outside"):
        pagexml.write(page, tmp_path / "q.xml")
    page.lines[0].confidence = None
    page.lines[2].text = "form\x0cfeed"
    with pytest.raises(DataError, match=r"line 'l3': text holds '\\x0c', which XML cannot represent"):
        pagexml.write(page, tmp_path / "q.xml")
    assert not (tmp_path / "q.xml").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --- ALTO -------------------------------------------------------------------------------------

def test_alto_v4_blocks_lines_tags_and_baselines():
    (page,) = load("alto", FIX / "alto").pages
    assert (page.image, page.width, page.height) == ("page.jpg", 200, 100)
    assert [(r.id, r.label, r.polygon) for r in page.regions] == [
        ("b1", "MainZone", [(10, 10), (190, 10), (190, 90), (10, 90)]),
        ("b2", None, [(150, 0), (200, 0), (200, 9), (150, 9)]),  # no Shape: HPOS/VPOS/WIDTH/HEIGHT box
    ]
    tl1, tl2 = page.lines
    assert (tl1.id, tl1.region, tl1.label, tl1.text, tl1.kind) == ("tl1", "b1", "DefaultLine", "Hello world", "printed")
    assert tl1.baseline == [(12, 40), (180, 40)]  # flat "x y x y"
    assert tl2.baseline == [(12, 80), (180, 80)]  # ALTO 4.2 "x,y x,y"
    assert tl2.polygon == [(12, 50), (182, 50), (182, 85), (12, 85)]
    assert tl2.text == "Zweite-"
    (hand,) = load("alto", FIX / "alto", kind="handwritten").pages
    assert {ln.kind for ln in hand.lines} | {r.kind for r in hand.regions} == {"handwritten"}


BLOCK = ('<TextBlock ID="b" HPOS="0" VPOS="0" WIDTH="100" HEIGHT="50" TAGREFS="T1">'
         '<TextLine ID="t" HPOS="10" VPOS="10" WIDTH="80" HEIGHT="20" BASELINE="{baseline}">'
         '<String CONTENT="a"/><SP/><String CONTENT="b"/></TextLine></TextBlock>')


def test_alto_v3_single_value_baseline_spans_the_line_box(tmp_path):
    image(tmp_path / "page.jpg")
    src = write(tmp_path / "p.xml", alto_xml(BLOCK.format(baseline="25"), ns=alto.NAMESPACES[1]))
    (page,) = load("alto", src).pages
    assert page.lines[0].baseline == [(10, 25), (90, 25)]
    assert page.lines[0].text == "a b"
    assert page.regions[0].label == "MainZone"


def test_alto_image_falls_back_to_the_xml_stem(tmp_path):
    image(tmp_path / "scan7.png")
    for name, source in (("absent", ""), ("bare", ("<sourceImageInformation><fileName>x.tif</fileName>"
                                                  "</sourceImageInformation>"))):
        shutil.copy(tmp_path / "scan7.png", tmp_path / f"{name}.png")
        src = write(tmp_path / f"{name}.xml", alto_xml(BLOCK.format(baseline="1 30 90 30"), source=source))
        (page,) = load("alto", src).pages
        assert page.image == f"{name}.png"
    src = write(tmp_path / "lost.xml", alto_xml(source=""))
    with pytest.raises(DataError, match=f"{src}: no Description/sourceImageInformation/fileName and no image lost"):
        load("alto", src)


@pytest.mark.parametrize("kwargs, message", [
    ({"unit": "<MeasurementUnit>mm10</MeasurementUnit>"}, "MeasurementUnit is 'mm10'; only 'pixel'"),
    ({"unit": ""}, "MeasurementUnit is 'missing'"),
    ({"ns": "http://www.loc.gov/standards/alto/ns-v5#"}, "unsupported ALTO namespace"),
    ({"pages": 2}, "Layout has 2 Page elements"),
    ({"body": BLOCK.format(baseline="1 30 90 30"), "tags": ""}, "TextBlock id=b: TAGREFS names 'T1'"),
    ({"body": BLOCK.format(baseline="1 30 90")}, "TextLine id=t: BASELINE '1 30 90' cannot be read"),
    ({"body": '<TextBlock ID="nb"/>'}, "TextBlock id=nb: neither Shape/Polygon nor HPOS"),
    ({"body": '<TextBlock ID="w" HPOS="0" VPOS="0" WIDTH="wide" HEIGHT="5"/>'},
     "TextBlock id=w: attribute WIDTH='wide' is not a number"),
    ({"source": "<sourceImageInformation><fileName>../../etc/page.jpg</fileName></sourceImageInformation>"},
     "path '../../etc/page.jpg' escapes"),
])
def test_alto_errors_name_file_and_element(tmp_path, kwargs, message):
    image(tmp_path / "page.jpg")
    src = write(tmp_path / "p.xml", alto_xml(**kwargs))
    with pytest.raises(DataError, match=f"{src}: .*{message}"):
        load("alto", src)


# --- FUNSD ------------------------------------------------------------------------------------

def test_funsd_entities_become_regions_and_rows_become_lines(caplog):
    with caplog.at_level(logging.WARNING, logger="docrec.formats.funsd"):
        (page,) = load("funsd", FIX / "funsd").pages
    assert (page.image, page.width, page.height) == ("images/form1.png", 200, 100)
    assert page.image_path == FIX / "funsd" / "training_data" / "images" / "form1.png"
    assert [(r.id, r.kind, r.label) for r in page.regions] == [
        ("e0", "printed", "question"), ("e1", "form_field", "answer"), ("e2", "printed", "other"),
        ("e3", "printed", "header"), ("e4", "printed", "question"), ("e5", "printed", "other")]
    assert [(ln.id, ln.text, ln.region, ln.label) for ln in page.lines] == [
        ("e0_l0", "Name:", "e0", "question"),
        ("e1_l0", "John Smith", "e1", "answer"),  # words sorted left to right within the row
        ("e1_l1", "Jr.", "e1", "answer"),  # the empty word still widens the line's box
        ("e2_l0", "|", "e2", "other"),
        ("e3_l0", "", "e3", "header"),  # all words empty: kept, with empty text
        ("e4_l0", "Date", "e4", "question"),  # no words: the entity itself
        ("e5_l0", "x", "e5", "other"),
    ]
    assert page.lines[1].polygon == [(50, 10), (120, 10), (120, 21), (50, 21)]
    assert page.lines[2].polygon == [(50, 25), (90, 25), (90, 35), (50, 35)]
    # Zero-width boxes grow by 1 px inside the page: entity and word of e2 and of e5 (at the edge).
    assert page.regions[2].polygon == [(10, 50), (11, 50), (11, 60), (10, 60)]
    assert page.lines[-1].polygon == [(199, 70), (200, 70), (200, 80), (199, 80)]
    assert [r.getMessage() for r in caplog.records] == [
        f"{FIX / 'funsd/training_data/annotations/form1.json'}: widened 4 zero-area box(es) to 1 px"]
    assert page_stats([page]) == {"pages": 1, "regions": 6, "lines": 7, "empty_lines": 1, "characters": 24}


def test_funsd_kind_option_applies_to_lines_and_unmapped_regions():
    (page,) = load("funsd", FIX / "funsd", kind="handwritten").pages
    assert {ln.kind for ln in page.lines} == {"handwritten"}
    assert [r.kind for r in page.regions][:2] == ["handwritten", "form_field"]


@pytest.mark.parametrize("sub", ["", "training_data", "training_data/annotations",
                                 "training_data/annotations/form1.json"])
def test_funsd_find_accepts_root_split_annotations_or_file(sub):
    assert list(funsd.find(FIX / "funsd" / sub)) == [FIX / "funsd/training_data/annotations/form1.json"]


@pytest.mark.parametrize("text, message", [
    ('{"form": [\n  {"id": 0, "box": [1, 2, 3]\n', ":3:1: malformed JSON"),
    ('{"forms": []}', "not a FUNSD annotation"),
    ('{"form": [{"id": 7, "box": [1, 2, 3], "label": "other"}]}', r"entity id=7: box must be \[x0, y0, x1, y1\]"),
    ('{"form": [{"id": 7, "box": [1, 2, 3, 4], "label": "other", "words": [{"box": [1, 2, "3", 4], "text": "a"}]}]}',
     "entity id=7 word #0: box must be"),
    ('{"form": [{"id": 7, "box": [1, 2, 3, 4]}]}', "entity #0: missing 'label'"),
    ('{"form": [{"id": 7, "box": [1, 2, 1e400, 4], "label": "other"}]}',
     "entity id=7: box coordinates must be finite numbers"),
    # Found by the fuzzer at 4x its make-test examples: a 400-digit coordinate overflowed a float.
    ('{"form": [{"id": 7, "box": [1, 2, 1' + "0" * 400 + ', 4], "label": "other"}]}',
     r"malformed JSON \(ValueError: number 1000.*is too large"),
])
def test_funsd_errors_name_file_and_entity(tmp_path, text, message):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    image(tmp_path / "images" / "form1.png")
    src = write(tmp_path / "annotations" / "form1.json", text)
    with pytest.raises(DataError, match=f"{src}.*{message}"):
        load("funsd", tmp_path)


# --- SROIE ------------------------------------------------------------------------------------

def test_sroie_rows_become_lines_sized_from_the_image():
    (page,) = load("sroie", FIX / "sroie").pages
    assert (page.image, page.width, page.height, page.regions) == ("img/000.jpg", 160, 80, [])
    assert page.image_path == FIX / "sroie" / "data" / "img" / "000.jpg"
    assert [(ln.id, ln.text, ln.kind, ln.region) for ln in page.lines] == [
        ("row1", "TOTAL: 1,234.00", "printed", None), ("row3", "THANK YOU", "printed", None)]
    assert page.lines[0].polygon == [(10, 10), (100, 10), (100, 30), (10, 30)]
    assert page.fold_case  # its transcripts are upper case whatever the print: scored ignoring case


@pytest.mark.parametrize("sub", ["", "data", "data/box/000.csv"])
def test_sroie_find_accepts_parent_data_or_file(sub):
    assert list(sroie.find(FIX / "sroie" / sub)) == [FIX / "sroie/data/box/000.csv"]


def test_sroie_find_refuses_other_folders(tmp_path):
    with pytest.raises(DataError, match="not a SROIE folder"):
        load("sroie", tmp_path)


def make_sroie(tmp_path: Path, rows: str) -> Path:
    for sub in ("box", "img"):
        (tmp_path / sub).mkdir()
    image(tmp_path / "img" / "001.jpg", (160, 80))
    return write(tmp_path / "box" / "001.csv", rows)


@pytest.mark.parametrize("rows, message", [
    ("1,1,9,1,9,9,1,9,OK\n1,1,9,1,9,9,1,NINE\n", "row 2: expected x1,y1,...,x4,y4,transcript, got 8"),
    ("1,1,9,1,9,9,1,9,OK\n\n1,1,9,1,9,x,1,9,NINE\n", "row 3: corner coordinates '1,1,9,1,9,x,1,9' are not numbers"),
    ("1,1,9,1,9,9,1,9,OK\n1,1,900,1,900,9,1,9,WIDE\n", "line 'row2': polygon point"),
])
def test_sroie_bad_rows_name_file_and_row(tmp_path, rows, message):
    src = make_sroie(tmp_path, rows)
    with pytest.raises(DataError, match=f"{src}: {message}"):
        load("sroie", tmp_path)


def test_sroie_zero_area_quad_is_widened_and_counted(tmp_path, caplog):
    make_sroie(tmp_path, "5,10,50,10,50,10,5,10,FLAT\n160,10,160,10,160,20,160,20,EDGE\n")
    with caplog.at_level(logging.WARNING, logger="docrec.formats.sroie"):
        (page,) = load("sroie", tmp_path).pages
    assert [ln.polygon for ln in page.lines] == [[(5, 10), (50, 10), (50, 11), (5, 11)],
                                                 [(159, 10), (160, 10), (160, 20), (159, 20)]]
    assert "widened 2 zero-area box(es)" in caplog.text


def test_sroie_missing_image_names_the_csv(tmp_path):
    src = make_sroie(tmp_path, "1,1,9,1,9,9,1,9,OK\n")
    (tmp_path / "img" / "001.jpg").unlink()
    with pytest.raises(DataError, match=f"{src}: page size needs the image: .*001.jpg: image file not found"):
        load("sroie", tmp_path)


# --- safe XML ---------------------------------------------------------------------------------

@pytest.mark.parametrize("reader", [pagexml, alto])
@pytest.mark.parametrize("name", ["xxe.xml", "external_dtd.xml", "billion_laughs.xml"])
def test_dtds_and_entities_are_refused_without_expansion(reader, name):
    src = FIX / "xml" / name
    with pytest.raises(DataError) as err:
        list(reader.read(src, ReadOptions()))
    message = str(err.value)
    assert message.startswith(f"{src}: refused: the XML declares a DTD")
    assert "lol" not in message and "root:" not in message


def test_undeclared_entity_is_malformed_not_expanded(tmp_path):
    src = write(tmp_path / "p.xml", page_xml('<TextLine id="a"><Coords points="&xxe;"/></TextLine>'))
    with pytest.raises(DataError, match=f"{src}: malformed XML at line 5, column .*undefined entity"):
        load("pagexml", src)


def test_malformed_xml_names_file_line_and_column():
    src = FIX / "xml" / "malformed.xml"
    with pytest.raises(DataError, match=f"^{src}: malformed XML at line 4, column 27: mismatched tag$"):
        load("pagexml", src)


# --- lenient loading --------------------------------------------------------------------------

def mixed_folder(tmp_path: Path) -> Path:
    shutil.copy(FIX / "pagexml" / "page2013.xml", tmp_path / "a_good.xml")
    image(tmp_path / "page.png")
    write(tmp_path / "b_outside.xml", page_xml('<TextLine id="far"><Coords points="1,1 500,1 500,50"/></TextLine>'))
    write(tmp_path / "c_alto.xml", alto_xml())
    return tmp_path


def test_strict_stops_at_the_first_bad_page(tmp_path):
    with pytest.raises(DataError, match=r"b_outside\.xml: line 'far': polygon point \(500, 1\) lies outside"):
        load("pagexml", mixed_folder(tmp_path))


def test_lenient_skips_bad_pages_and_reports_each(tmp_path):
    seen = []
    result = load("pagexml", mixed_folder(tmp_path), strict=False, on_skip=lambda s, m: seen.append(s))
    assert [Path(p.source).name for p in result.pages] == ["a_good.xml"]
    assert [(Path(s).name, m.split(": ", 1)[1]) for s, m in result.skipped] == [
        ("b_outside.xml", ("line 'far': polygon point (500, 1) lies outside the 200x100 page "
                          "(more than 8 px beyond its edge)")),
    ]
    assert seen == [s for s, _ in result.skipped]
    # The ALTO file is not a bad PAGE page: it is another format's, left and counted.
    assert result.left == [(tmp_path / "c_alto.xml", "alto")]


# --- convert.py -------------------------------------------------------------------------------

def convert(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/convert.py", *map(str, args)], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_convert_writes_a_manifest_and_a_summary(tmp_path):
    out = tmp_path / "sroie.jsonl"
    run = convert("--format", "sroie", FIX / "sroie", "--out", out)
    assert run.returncode == 0, run.stderr
    summary, note = run.stdout.splitlines()
    assert summary == f"wrote {out}: 1 pages, 0 regions, 2 lines (0 with empty text), 24 characters"
    assert note.startswith(f"note: image paths in {out} lead outside its folder")
    (page,) = load("manifest", out, allow_outside_root=True).pages
    assert page.image_path.resolve() == (FIX / "sroie/data/img/000.jpg").resolve()
    assert [ln.text for ln in page.lines] == ["TOTAL: 1,234.00", "THANK YOU"]


def test_convert_kind_option(tmp_path):
    out = tmp_path / "alto.jsonl"
    assert convert("--format", "alto", FIX / "alto", "--out", out, "--kind", "handwritten").returncode == 0
    rec = json.loads(out.read_text(encoding="utf-8"))
    assert {x["type"] for x in rec["regions"] + rec["lines"]} == {"handwritten"}


def test_convert_strict_error_is_one_line_exit_2(tmp_path):
    run = convert("--format", "pagexml", mixed_folder(tmp_path), "--out", tmp_path / "o.jsonl")
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1
    assert run.stderr.startswith(f"error: {tmp_path / 'b_outside.xml'}: line 'far'")
    assert not (tmp_path / "o.jsonl").exists()


def test_convert_lenient_lists_skipped_pages(tmp_path):
    out = tmp_path / "sub" / "o.jsonl"
    run = convert("--format", "pagexml", mixed_folder(tmp_path), "--out", out, "--lenient")
    assert run.returncode == 0, run.stderr
    lines = [ln for ln in run.stdout.splitlines() if not ln.startswith("note: image paths")]
    assert lines[0] == f"wrote {out}: 1 pages, 2 regions, 3 lines (0 with empty text), 31 characters"
    assert lines[1] == f"left 1 file(s) that are not pagexml (1 <alto>), e.g. {tmp_path / 'c_alto.xml'}"
    assert lines[2] == "skipped 1 page(s):"
    assert lines[3].startswith(f"  {tmp_path / 'b_outside.xml'}: line 'far'")
    assert json.loads(out.read_text(encoding="utf-8"))["image"] == "../page.png"


def test_convert_empty_input_is_an_error(tmp_path):
    run = convert("--format", "funsd", tmp_path, "--out", tmp_path / "o.jsonl")
    assert (run.returncode, run.stderr) == (2, f"error: {tmp_path}: no funsd annotation files found\n")


def test_convert_any_format_to_any_other(tmp_path):
    """FUNSD -> PAGE-XML -> ALTO -> manifest keeps every line's text, label and order."""
    (funsd_page,) = load("funsd", FIX / "funsd").pages
    assert convert("--format", "funsd", FIX / "funsd", "--to", "page", "--out", tmp_path / "page").returncode == 0
    (xml,) = sorted((tmp_path / "page").rglob("*.xml"))
    run = convert("--format", "pagexml", tmp_path / "page", "--to", "alto", "--out", tmp_path / "alto",
                  "--allow-outside-root")
    assert run.returncode == 0, run.stderr
    (alto_xml,) = sorted((tmp_path / "alto").rglob("*.alto.xml"))
    assert alto_xml.name == xml.name.replace(".xml", ".alto.xml")
    run = convert("--format", "alto", tmp_path / "alto", "--out", tmp_path / "back.jsonl", "--allow-outside-root")
    assert run.returncode == 0, run.stderr
    (back,) = load("manifest", tmp_path / "back.jsonl", allow_outside_root=True).pages
    assert back.image_path.resolve() == funsd_page.image_path.resolve()
    assert [(ln.text, ln.label) for ln in back.lines] == [(ln.text, ln.label) for ln in funsd_page.lines]
    assert [r.label for r in back.regions] == [r.label for r in funsd_page.regions]


def test_convert_refuses_to_overwrite_its_input(tmp_path):
    src = tmp_path / "pages"
    src.mkdir()
    (src / "page.png").write_bytes((FIX / "pagexml" / "page.png").read_bytes())
    (src / "page.xml").write_bytes((FIX / "pagexml" / "page2019.xml").read_bytes())
    run = convert("--format", "pagexml", src, "--to", "page", "--out", src)
    assert run.returncode == 2 and "would overwrite an input file" in run.stderr
    assert (src / "page.xml").read_bytes() == (FIX / "pagexml" / "page2019.xml").read_bytes()
