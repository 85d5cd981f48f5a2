"""The readers on the real datasets in ../shared/realdata: counts against each folder's README.

Where a README says "about N", the exact figure measured here is asserted, and that it is near N.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from docrec.formats import load
from docrec.pages import DataError, page_stats
from docrec.realdata import REALDATA

pytestmark = pytest.mark.realdata


def dataset(name: str) -> Path:
    path = REALDATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


def test_funsd_training_split():
    root = dataset("funsd") / "dataset" / "training_data"
    pages = load("funsd", root).pages
    assert page_stats(pages) == {"pages": 149, "regions": 7411, "lines": 8341, "empty_lines": 196,
                                 "characters": 124_987}
    assert Counter(r.label for p in pages for r in p.regions) == {
        "question": 3266, "answer": 2802, "other": 902, "header": 441}
    assert Counter(r.kind for p in pages for r in p.regions) == {"printed": 3266 + 902 + 441, "form_field": 2802}
    # Every word lands in exactly one line: the 22,512 words of the README, grouped into 8,341 rows.
    words = sum(len(e["words"]) for f in sorted((root / "annotations").glob("*.json"))
                for e in json.loads(f.read_text(encoding="utf-8"))["form"])
    assert words == 22_512
    assert {p.height for p in pages} == {1000}


def test_sroie_receipts():
    pages = load("sroie", dataset("sroie")).pages
    assert page_stats(pages) == {"pages": 90, "regions": 0, "lines": 4991, "empty_lines": 0, "characters": 56_130}
    assert {ln.kind for p in pages for ln in p.lines} == {"printed"}


def test_cremma_alto():
    pages = load("alto", dataset("cremma_testaments_de_poilus"), kind="handwritten").pages
    stats = page_stats(pages)
    assert stats == {"pages": 32, "regions": 108, "lines": 533, "empty_lines": 0, "characters": 18_026}
    assert abs(stats["characters"] - 18_000) <= 0.02 * 18_000  # README: "about 18,000"
    assert Counter(r.label for p in pages for r in p.regions) == {
        "MainZone": 33, "MarginTextZone": 38, "NumberingZone": 25, "StampZone": 12}
    assert all(ln.baseline is not None and ln.kind == "handwritten" for p in pages for ln in p.lines)


BAD_HOOKER = ("JDH_2_16_40_001.xml", "JDH_2_16_40_008.xml")


def test_hooker_pagexml_strict_refuses_the_two_oversized_pages():
    root = dataset("joseph_hooker_htr")
    with pytest.raises(DataError, match=f"^{root / BAD_HOOKER[0]}: line .* lies outside the 1529x2444 page"):
        load("pagexml", root)
    with pytest.raises(DataError, match=f"^{root / BAD_HOOKER[1]}: line .* lies outside the 1524x2430 page"):
        load("pagexml", root / BAD_HOOKER[1])


def test_hooker_pagexml_lenient_keeps_seven_pages():
    root = dataset("joseph_hooker_htr")
    result = load("pagexml", root, strict=False)
    assert [Path(s).name for s, _ in result.skipped] == list(BAD_HOOKER)
    stats = page_stats(result.pages)
    assert stats == {"pages": 7, "regions": 10, "lines": 141, "empty_lines": 0, "characters": 3733}
    # README: 9 pages, 191 lines and "about 5,000 characters" in all; the two refused pages hold
    # 25 + 25 lines and 566 + 685 characters (the README's 474 and 570 leave out spaces).
    assert abs(stats["characters"] + 566 + 685 - 5000) <= 0.02 * 5000
    pages = {Path(p.source).name: p for p in result.pages}
    assert [r.id for r in pages["JDH_2_16_92_001.xml"].regions] == ["tr_2", "tr_3", "tr_1"]  # ReadingOrder
    assert pages["JDH_2_16_40_002.xml"].lines[0].text == "to have picked up the knowledge"
