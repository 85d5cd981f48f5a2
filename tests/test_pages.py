"""The page data model and the JSON-lines manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from docrec.formats import ReadOptions, load
from docrec.formats.manifest import page_to_dict, read, write
from docrec.pages import DataError, Line, Page, Region, page_stats

SQUARE = [(10, 10), (50, 10), (50, 30), (10, 30)]


def make_page(**kw) -> Page:
    args = {"image": "page.png", "width": 100, "height": 80, "source": "ann.jsonl:3",
            "regions": [Region("r0", SQUARE)], "lines": [Line("l0", SQUARE, "hi", region="r0")]}
    return Page(**(args | kw))


def record(**kw) -> dict:
    rec = {"image": "page.png", "width": 100, "height": 80,
           "regions": [{"id": "r0", "type": "printed", "polygon": [[10, 10], [50, 10], [50, 30], [10, 30]]}],
           "lines": [{"id": "l0", "region": "r0", "type": "handwritten",
                      "polygon": [[10, 10], [50, 10], [50, 30], [10, 30]], "baseline": [[10, 28], [50, 28]],
                      "text": "Invoice 4711"}]}
    rec.update(kw)
    return rec


def write_manifest(tmp_path: Path, *lines: str) -> Path:
    Image.new("L", (100, 80), 255).save(tmp_path / "page.png")
    path = tmp_path / "pages.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# --- the data model ---------------------------------------------------------------------------

def test_small_overshoot_is_clipped_to_the_page():
    page = make_page(lines=[Line("l0", [(-3, 5), (104, 5), (104, 83), (-3, 83)], baseline=[(-1, 70), (108, 70)])])
    assert page.lines[0].polygon == [(0, 5), (100, 5), (100, 80), (0, 80)]
    assert page.lines[0].baseline == [(0, 70), (100, 70)]


def test_point_far_outside_names_file_and_element():
    with pytest.raises(DataError, match=r"ann\.jsonl:3: line 'l7': polygon point \(130, 5\) lies outside the 100x80"):
        make_page(lines=[Line("l7", [(10, 5), (130, 5), (130, 20)])])


@pytest.mark.parametrize("polygon, message", [
    ([(10, 10), (20, 10), (30, 10)], "zero area"),
    ([(10, 10), (20, 10)], "2 point"),
    ([], "0 point"),
    ([(10, 10), (20, "x"), (30, 30)], "not a list of"),
    ([(10, 10), (20, float("nan")), (30, 30)], "non-finite"),
])
def test_bad_polygons_are_refused(polygon, message):
    with pytest.raises(DataError, match=message):
        make_page(regions=[Region("r9", polygon)], lines=[])


def test_duplicate_ids_are_refused():
    with pytest.raises(DataError, match="region 'r0': duplicate id"):
        make_page(regions=[Region("r0", SQUARE), Region("r0", SQUARE)], lines=[])
    with pytest.raises(DataError, match="line 'l0': duplicate id"):
        make_page(lines=[Line("l0", SQUARE), Line("l0", SQUARE)])


def test_unknown_region_reference_is_refused():
    with pytest.raises(DataError, match="line 'l0': refers to unknown region 'r5'"):
        make_page(lines=[Line("l0", SQUARE, region="r5")])


def test_text_is_nfc_normalised():
    page = make_page(lines=[Line("l0", SQUARE, "Cafe\u0301")])
    assert page.lines[0].text == "Caf\u00e9"
    assert page_stats([page])["characters"] == 4


@pytest.mark.parametrize("width, height", [(0, 80), (100, -1), (100.5, 80), ("wide", 80)])
def test_invalid_page_size_is_refused(width, height):
    with pytest.raises(DataError, match="ann.jsonl:3: page"):
        make_page(width=width, height=height)


def test_page_stats_counts_empty_lines_and_characters():
    page = make_page(lines=[Line("a", SQUARE, "abc"), Line("b", SQUARE, ""), Line("c", SQUARE, "de")])
    assert page_stats([page, page]) == {"pages": 2, "regions": 2, "lines": 6, "empty_lines": 2, "characters": 10}


# --- the manifest -----------------------------------------------------------------------------

def test_manifest_round_trip(tmp_path):
    src = write_manifest(tmp_path, json.dumps(record()), "", json.dumps(record(regions=[], lines=[])))
    pages = list(read(src))
    assert [len(p.lines) for p in pages] == [1, 0]
    out = write(pages, tmp_path / "copy.jsonl")
    again = load("manifest", out).pages
    assert [page_to_dict(p) for p in again] == [page_to_dict(p) for p in pages]
    assert page_to_dict(again[0]) == record()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_written_image_paths_are_relative_to_the_manifest(tmp_path):
    src = write_manifest(tmp_path, json.dumps(record()))
    out = write(read(src), tmp_path / "sub" / "copy.jsonl")
    assert json.loads(out.read_text(encoding="utf-8"))["image"] == "../page.png"
    page = next(read(out, ReadOptions(allow_outside_root=True)))
    assert page.image_path.resolve() == (tmp_path / "page.png").resolve()


def test_malformed_json_names_file_and_line(tmp_path):
    src = write_manifest(tmp_path, json.dumps(record()), '{"image": "page.png", "width": 100,')
    with pytest.raises(DataError, match=rf"{src}:2: malformed JSON"):
        list(read(src))


def test_unknown_field_is_refused(tmp_path):
    rec = record()
    rec["lines"][0]["confidance"] = 0.9
    src = write_manifest(tmp_path, json.dumps(rec))
    with pytest.raises(DataError, match=r"pages\.jsonl:1: lines\[0\]: unknown field\(s\) confidance"):
        list(read(src))


def test_escaping_image_path_is_refused_unless_allowed(tmp_path):
    (tmp_path / "ds").mkdir()
    Image.new("L", (100, 80), 255).save(tmp_path / "outside.png")
    src = tmp_path / "ds" / "pages.jsonl"
    src.write_text(json.dumps(record(image="../outside.png")) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="escapes the dataset root"):
        load("manifest", src)
    pages = load("manifest", src, allow_outside_root=True).pages
    assert pages[0].image_path.resolve() == (tmp_path / "outside.png").resolve()


@pytest.mark.parametrize("line, message", [
    ('{"image": "page.png", "width": 1' + "0" * 30 + ', "height": 80}', "too large"),
    ('{"image": "page.png", "width": 1e999, "height": 80}', "page"),
    ('{"image": "page.png", "width": 100, "height": 80, "lines": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "malformed JSON"),
])
def test_huge_numbers_and_deep_nesting_are_refused(tmp_path, line, message):
    src = write_manifest(tmp_path, line)
    with pytest.raises(DataError, match=message):
        list(read(src))


def test_declared_size_must_match_the_image(tmp_path):
    src = write_manifest(tmp_path, json.dumps(record(width=120)))
    with pytest.raises(DataError, match="declares a 120x80 page but image .* is 100x80"):
        load("manifest", src)
