"""The fixed split of the real datasets (data/realdata_split.json) and the Tesseract anchor."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image, ImageDraw, ImageFont

from docrec.formats import load
from docrec.pages import Line, Page
from docrec.realdata import (
    SETS,
    SPLIT_FILE,
    _group,
    _stem,
    available,
    draw_split,
    read_set,
    split_pages,
)
from tests.conftest import REPO, load_script

pytestmark = pytest.mark.realdata


@pytest.mark.skipif(len(available()) < len(SETS), reason="../shared/realdata is absent or incomplete")
@pytest.mark.parametrize("name", list(SETS))
def test_the_split_file_is_the_drawn_split_and_keeps_every_hand_on_one_side(name):
    pages = read_set(name)
    kept = json.loads(SPLIT_FILE.read_text(encoding="utf-8"))["kept"][name]
    assert kept == draw_split(name, pages)  # fixed, and what the rule gives
    parts = split_pages(name)
    stems = {part: [_stem(p) for p in ps] for part, ps in parts.items()}
    assert sorted(stems["finetune"] + stems["kept"]) == sorted(_stem(p) for p in pages)
    assert stems["kept"] and stems["finetune"] and not set(stems["kept"]) & set(stems["finetune"])
    groups = {part: {_group(SETS[name], s) for s in ss} for part, ss in stems.items()}
    assert not groups["kept"] & groups["finetune"]
    assert 0.15 <= len(stems["kept"]) / len(pages) <= 0.45


@pytest.mark.skipif(not available(), reason="../shared/realdata is absent")
def test_the_split_manifests_read_back_with_the_pages_they_list(tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "scripts/realdata_split.py", "--out", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    name = available()[0]
    back = load("manifest", tmp_path / name / "kept.jsonl", allow_outside_root=True).pages
    assert [p.image_path.resolve() for p in back] == [p.image_path.resolve() for p in split_pages(name)["kept"]]
    assert f"{tmp_path / name / 'kept.jsonl'}: {len(back)} pages" in run.stdout


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed (a benchmark anchor only)")
def test_tesseract_reads_a_rendered_page_and_its_cut_out_lines(tmp_path):
    bench = load_script("scripts/bench_tesseract.py")
    img = Image.new("L", (900, 200), 255)
    font = ImageFont.truetype(str(REPO / "data/fonts/dejavu/DejaVuSans.ttf"), 40)
    ImageDraw.Draw(img).text((30, 30), "INVOICE 4711", font=font, fill=0)
    ImageDraw.Draw(img).text((30, 110), "Total due", font=font, fill=0)
    img.save(tmp_path / "p.png")
    page = Page(image="p.png", width=900, height=200, root=tmp_path, source="memory", lines=[
        Line("a", [(25, 25), (360, 25), (360, 85), (25, 85)], text="INVOICE 4711"),
        Line("b", [(25, 105), (260, 105), (260, 165), (25, 165)], text="Total due")])
    preds = bench.page_lines(tmp_path / "p.png", "eng")
    assert [p["text"] for p in preds] == ["INVOICE 4711", "Total due"]
    assert bench.gt_line_texts(page, "eng", tmp_path) == ["INVOICE 4711", "Total due"]
