"""The synthetic generator: determinism, exact and well-placed annotations, a loadable dataset."""

from __future__ import annotations

import re
import string
from collections import Counter

import cv2
import numpy as np
import pytest

from docrec.formats import load
from docrec.pages import polygon_area
from docrec.synth import degrade, fonts, make_page, render, text
from docrec.synth.generate import draw_page, generate, is_val
from docrec.synth.preview import captioned_sheet, draw
from docrec.synth.text import LOCALES, TextSource

SCALE = 0.5  # ~90 dpi pages: every feature, a quarter of the pixels


@pytest.fixture(scope="module")
def pages():
    """Two pages of each type at test scale."""
    return [make_page(seed, 0, page_type=t, scale=SCALE) for t in ("printed", "handwritten", "form", "receipt") for seed in (0, 1)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The same 4-page dataset made with one worker and with two."""
    one = tmp_path_factory.mktemp("one")
    two = tmp_path_factory.mktemp("two")
    generate(one, pages=4, seed=3, workers=1, scale=SCALE, progress=False)
    generate(two, pages=4, seed=3, workers=2, scale=SCALE, progress=False)
    return one, two


def test_same_seed_same_bytes_whatever_the_workers(dataset):
    one, two = dataset
    for name in ("train.jsonl", "val.jsonl"):
        assert (one / name).read_bytes() == (two / name).read_bytes()
    images = sorted(p.name for p in (one / "images").iterdir())
    assert images == [f"{i:05d}.jpg" for i in range(4)]
    for name in images:
        assert (one / "images" / name).read_bytes() == (two / "images" / name).read_bytes()


def test_different_seed_different_pages(dataset, tmp_path):
    one, _ = dataset
    generate(tmp_path, pages=4, seed=4, workers=1, scale=SCALE, progress=False)
    assert (tmp_path / "train.jsonl").read_bytes() != (one / "train.jsonl").read_bytes()


def test_manifests_load_back_with_images_checked(dataset):
    one, _ = dataset
    train = load("manifest", one / "train.jsonl", check_images=True).pages
    val = load("manifest", one / "val.jsonl", check_images=True).pages
    assert len(train) == 3 and len(val) == 1
    assert all(p.lines and p.regions for p in train + val)


def test_val_split_is_evenly_spread_and_stable():
    assert sum(is_val(i, 0.05) for i in range(5000)) == 250
    assert [i for i in range(100) if is_val(i, 0.05)] == [19, 39, 59, 79, 99]
    # Adding pages never moves an existing page between splits.
    assert [is_val(i, 0.05) for i in range(100)] == [is_val(i, 0.05) for i in range(1000)][:100]


def test_annotations_are_inside_the_page_and_well_formed(pages):
    for page in pages:
        h, w = page.image.shape[:2]
        regions = {r.id: r for r in page.regions}
        for ann in page.regions + page.lines:
            pts = np.asarray(ann.polygon)
            assert len(pts) >= 4
            assert pts.min() >= 0 and (pts[:, 0] <= w).all() and (pts[:, 1] <= h).all(), ann.id
            assert ann.kind in ("printed", "handwritten", "form_field")
        for ln in page.lines:
            assert ln.text and ln.text == ln.text.strip() and "  " not in ln.text
            assert ln.region in regions
            assert len(ln.baseline) >= 2
            assert cv2.pointPolygonTest(np.float32(regions[ln.region].polygon), _centre(ln.polygon), False) >= 0


def test_kinds_by_page_type(pages):
    by_type = {}
    for page in pages:
        by_type.setdefault(page.page_type, []).append(page)
    for page in by_type["printed"]:
        assert {ln.kind for ln in page.lines} <= {"printed", "handwritten"}  # a signed letter has one written line
        assert sum(ln.kind == "printed" for ln in page.lines) > 10
    for page in by_type["handwritten"]:
        assert sum(ln.kind == "handwritten" for ln in page.lines) >= 5
    for page in by_type["form"]:
        regions = {r.id: r for r in page.regions}
        fields = [r for r in page.regions if r.kind == "form_field"]
        assert fields
        for ln in page.lines:
            # A value is handwritten (or typed) inside a form_field region; labels are printed outside them.
            if regions[ln.region].kind != "form_field":
                assert ln.kind == "printed"
        assert all(any(ln.region == r.id for ln in page.lines) for r in fields)
    for page in by_type["receipt"]:
        assert {ln.kind for ln in page.lines} == {"printed"}


def test_every_line_polygon_has_ink_under_it():
    # At the generator's own scale: at the tests' half scale (~87 dpi) a fax or a pale scan can erase
    # a small printed label altogether (2 of 12 form pages lost lines there, none at full scale).
    for page in (make_page(seed, 0, page_type=t) for t in ("printed", "handwritten", "form", "receipt")
                 for seed in (0, 1)):
        grey = page.image if page.image.ndim == 2 else cv2.cvtColor(page.image, cv2.COLOR_RGB2GRAY)
        dark = 255.0 - grey.astype(np.float32)
        background = float(np.median(dark))
        for ln in page.lines:
            mask = np.zeros(grey.shape, np.uint8)
            cv2.fillPoly(mask, [np.round(np.asarray(ln.polygon)).astype(np.int32)], 1)
            # The darkest tenth of the box is ink: a thin face on a pale copy covers little of its box
            # (the box's mean can sit within a level of the paper's while its strokes are 20 darker).
            assert np.percentile(dark[mask > 0], 90) > background + 12.0, (page.page_type, ln.text)


def test_ink_hull_contains_every_ink_pixel():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = np.zeros((60, 300), np.float32)
        for _ in range(12):  # random blobs standing in for glyphs, some tall, some low
            x, y = int(rng.integers(5, 290)), int(rng.integers(10, 50))
            cv2.ellipse(mask, (x, y), (int(rng.integers(1, 6)), int(rng.integers(1, 9))), 0, 0, 360, 1.0, -1)
        poly = np.float32(render.ink_hull(mask, bin_width=int(rng.integers(5, 40)), pad=1))
        ys, xs = np.nonzero(mask > render.INK_THRESHOLD)
        for x, y in zip(xs, ys):
            assert cv2.pointPolygonTest(poly, (x + 0.5, y + 0.5), False) >= 0


def test_handwritten_polygon_hugs_the_warped_ink():
    rng = np.random.default_rng(1)
    style = render.random_hand(rng, fonts.choose_hand(rng, caps_only=False), 20)
    r = render.write_hand("Chère Madame, le 3 août", style, rng)[0]
    ink = r.mask > render.INK_THRESHOLD
    inside = np.zeros(ink.shape, np.uint8)
    cv2.fillPoly(inside, [np.round(np.asarray(r.polygon)).astype(np.int32)], 1)
    assert ink[inside == 0].sum() <= 0.01 * ink.sum()  # the ink is inside ...
    ys, xs = np.nonzero(ink)
    box = (xs.max() - xs.min() + 5) * (ys.max() - ys.min() + 5)  # the ink's bounding box, grown by the pad
    assert polygon_area(r.polygon) < box  # ... and the polygon follows it more closely than a box


def test_fit_text_keeps_transcriptions_true_to_the_font():
    humor = next(f for f in fonts.FONTS if f.path.startswith("humor-sans"))
    assert not fonts.has_glyph(humor, "é") and not fonts.has_glyph(humor, "€")
    assert fonts.fit_text(humor, "Crème brûlée, 3 €") == "CREME BRULEE, 3 EUR"
    for spec in fonts.FONTS:
        fitted = fonts.fit_text(spec, "Cœur d’été : 1 234,50 € – «oui»")
        assert fitted and not fonts.missing(spec, fitted), spec.path
    with pytest.raises(ValueError, match="cannot draw"):
        render.render_printed("€", humor, 20)


def test_preview_draws_at_the_requested_height(pages):
    assert draw(pages[0], height=300).shape[0] == 300


def _centre(polygon) -> tuple[float, float]:
    pts = np.asarray(polygon)
    return float(pts[:, 0].mean()), float(pts[:, 1].mean())


def _texts(seed: int, n: int = 600) -> list[str]:
    out = []
    for i in range(n // 20):
        ts = TextSource(LOCALES[i % len(LOCALES)], np.random.default_rng([seed, i]))
        out += [ts.sentence() for _ in range(16)] + [ts.note(), ts.item(), ts.title(), ts.subject()]
    return out


def test_text_is_diverse_and_deterministic():
    lines = _texts(0)
    assert lines == _texts(0) and lines != _texts(1)  # a pure function of the seed
    assert len(set(lines)) >= 0.95 * len(lines)
    # No stock phrase dominates: the commonest 3-word openings cover few lines, the commonest one very few.
    prefixes = Counter(" ".join(s.split()[:3]) for s in lines).most_common(15)
    assert prefixes[0][1] <= 0.02 * len(lines), prefixes[:3]
    assert sum(c for _, c in prefixes) <= 0.12 * len(lines), prefixes
    # A good share of lines hold codes, IDs or numbers (digits), and accents appear in French.
    assert sum(any(ch.isdigit() for ch in s) for s in lines) >= 0.3 * len(lines)
    assert any(ch in "éèàç" for s in lines for ch in s)


def test_text_uses_only_characters_the_fonts_can_honour():
    # Random codes draw only on punctuation every font has, caps-only fonts included.
    for spec in fonts.FONTS:
        assert not fonts.missing(spec, text.CODE_PUNCT), spec.path
    allowed = set(string.ascii_letters + string.digits + text.CODE_PUNCT + " !?;$£€°àâçèéêëîïôùûÀÂÇÉÈÊÎÔ")
    chars = {ch for s in _texts(2) for ch in s}
    assert chars <= allowed, "".join(sorted(chars - allowed))


# ---- fonts, print and scan processes, receipts, capitals

def test_font_catalogue_has_the_faces_and_their_licences():
    printed = [f for f in fonts.FONTS if f.style != "hand"]
    assert len(printed) >= 150 and len({f.family for f in printed}) >= 40
    assert {f.style for f in printed} == {"serif", "sans", "mono"}
    assert sum(f.style == "mono" for f in printed) >= 30  # typewriter, till and code faces
    assert any(f.bold for f in printed) and any(f.italic for f in printed)
    hands = [f for f in fonts.FONTS if f.style == "hand"]
    assert len(hands) >= 50 and sum(not f.caps_only for f in hands) >= 40  # print hands, scripts, cursive
    accented = [f for f in hands if not f.caps_only and not fonts.missing(f, "éèàçùôê")]
    assert len(accented) >= 30  # French letters written with their accents, not stripped
    readme = (fonts.FONT_DIR / "README.md").read_text()
    for folder in {f.path.split("/")[0] for f in fonts.FONTS}:
        assert list((fonts.FONT_DIR / folder).glob("copyright*")), f"{folder} has no licence file"
        assert f"`{folder}/`" in readme, f"{folder} is not listed in data/fonts/README.md"
    assert all((fonts.FONT_DIR / f.path).stat().st_size < 5 << 20 for f in fonts.FONTS)


def test_bold_headings_come_from_the_body_font_family():
    rng = np.random.default_rng(0)
    body = next(f for f in fonts.FONTS if f.family == "texgyretermes" and not f.bold and not f.italic)
    assert {fonts.choose(rng, "serif", bold=True, like=body).family for _ in range(20)} == {"texgyretermes"}


@pytest.mark.parametrize("process", degrade.PROCESSES)
def test_every_process_keeps_the_page_size_and_the_ink_under_each_line(process):
    # One printed page's ink through each process: same size, uint8, text still darker than the paper.
    seed = 4
    page = make_page(seed, 0, page_type="printed", scale=SCALE)
    rng = np.random.default_rng(seed)
    ink = np.ones((page.image.shape[0], page.image.shape[1], 3), np.float32)
    for ln in page.lines:
        cv2.fillPoly(ink, [np.round(np.asarray(ln.polygon)).astype(np.int32)], (0.1, 0.1, 0.1))
    still = cv2.getRotationMatrix2D((0, 0), 0.0, 1.0)
    out = degrade.scan(ink, still, rng, process, dpi=175 * SCALE)
    assert out.shape[:2] == ink.shape[:2] and out.dtype == np.uint8
    grey = out if out.ndim == 2 else cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    if process == "fax":
        assert set(np.unique(grey)) <= {0, 255}  # binarised
    for ln in page.lines:
        mask = np.zeros(grey.shape, np.uint8)
        cv2.fillPoly(mask, [np.round(np.asarray(ln.polygon)).astype(np.int32)], 1)
        assert grey[mask > 0].mean() < np.median(grey) - 40, (process, ln.text)


def test_processes_follow_their_mix_per_page_type():
    rng = np.random.default_rng(0)
    for page_type, mix in degrade.PROCESS_MIX.items():
        drawn = Counter(degrade.choose_process(page_type, rng) for _ in range(2000))
        assert set(drawn) == set(mix)
        for name, share in mix.items():
            assert abs(drawn[name] / 2000 - share) < 0.05, (page_type, name, drawn)
    with pytest.raises(ValueError, match="unknown process 'inkjet'"):
        degrade.scan(np.ones((8, 8, 3), np.float32), np.eye(2, 3), rng, "inkjet")


def test_allowed_processes_limit_the_draw_and_keep_the_page():
    rng = np.random.default_rng(0)
    drawn = Counter(degrade.choose_process("form", rng, ("scan", "fax")) for _ in range(2000))
    assert set(drawn) == {"scan", "fax"} and abs(drawn["scan"] / 2000 - 0.4 / 0.7) < 0.05  # the type's shares
    assert {degrade.choose_process("handwritten", rng, ("thermal",)) for _ in range(20)} == {"thermal"}
    for bad, message in ((("inkjet",), "unknown process 'inkjet'"), ((), "no process allowed")):
        with pytest.raises(ValueError, match=message):
            degrade.choose_process("form", rng, bad)
    # A clean set: the same seed draws the same page, only its process differs.
    full = [make_page(0, i, scale=SCALE) for i in range(6)]
    clean = [make_page(0, i, scale=SCALE, processes=("scan",)) for i in range(6)]
    assert {p.process for p in clean} == {"scan"} and {p.process for p in full} != {"scan"}
    assert [[ln.text for ln in p.lines] for p in full] == [[ln.text for ln in p.lines] for p in clean]


def test_a_drawn_page_scanned_is_the_generated_page():
    """draw_page is make_page's first half: its rng goes on to draw the process and scan the page."""
    for index in (0, 1):
        page = make_page(5, index, scale=SCALE)
        drawn = draw_page(5, index, scale=SCALE)
        process = degrade.choose_process(drawn.page_type, drawn.rng)
        image = degrade.scan(drawn.canvas.image(), drawn.matrix, drawn.rng, process, drawn.dpi)
        assert (drawn.page_type, process) == (page.page_type, page.process)
        assert np.array_equal(image, page.image)
        assert [ln.text for ln in drawn.canvas.lines] == [ln.text for ln in page.lines]
    with pytest.raises(ValueError, match="unknown page type 'poster'"):
        draw_page(5, 0, page_type="poster")


def test_font_families_limit_printed_faces_and_are_checked():
    few = ("DejaVuSerif", "DejaVuSans", "DejaVuSansMono")
    used = set()
    real_load = fonts.load

    def spy(spec, size):
        used.add(spec)
        return real_load(spec, size)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fonts, "load", spy)
        for i in range(8):
            make_page(3, i, scale=SCALE, families=few)
    printed = {f.family for f in used if f.style != "hand"}
    assert printed and printed <= set(few)
    assert fonts._FAMILIES is None  # restored after the page
    with pytest.raises(ValueError, match="unknown font family 'Comic'"):
        fonts.check_families(["Comic", "DejaVuSans"])
    with pytest.raises(ValueError, match="have no mono face"):
        fonts.check_families(["DejaVuSerif", "DejaVuSans"])


def test_receipts_are_narrow_capital_rolls_with_prices():
    for seed in range(6):
        page = make_page(seed, 0, page_type="receipt", scale=SCALE)
        h, w = page.image.shape[:2]
        assert w * 25.4 / (175 * SCALE) < 90 and h > w  # 58 or 80 mm wide (at 150-200 dpi)
        assert all(ln.kind == "printed" for ln in page.lines) and len(page.lines) >= 8
        texts = [ln.text for ln in page.lines]
        assert sum(t == t.upper() for t in texts) >= 0.7 * len(texts), texts
        assert sum(bool(re.search(r"\d+[.,]\d\d", t)) for t in texts) >= 3, texts  # prices and totals
        assert max(y for ln in page.lines for _, y in ln.polygon) <= h  # trimmed below the last line, not through it


def test_some_forms_are_filled_in_on_a_typewriter():
    typed = hand = 0
    for seed in range(12):
        page = make_page(seed, 2, page_type="form", scale=SCALE)
        fields = {r.id for r in page.regions if r.kind == "form_field"}
        kinds = {ln.kind for ln in page.lines if ln.region in fields}
        typed += "printed" in kinds  # combs and signatures stay handwritten
        hand += "handwritten" in kinds
    assert typed >= 1 and hand >= 6, (typed, hand)


def test_a_share_of_printed_lines_is_set_in_capitals():
    lines = [ln.text for seed in range(8) for ln in make_page(seed, 1, page_type="printed", scale=SCALE).lines]
    lines = [t for t in lines if sum(ch.isalpha() for ch in t) >= 3]
    caps = sum(t == t.upper() for t in lines) / len(lines)
    assert 0.1 < caps < 0.6, caps


def test_canvas_trim_refuses_to_cut_annotations():
    from docrec.synth.canvas import Canvas
    from docrec.synth.render import render_printed

    c = Canvas(200, 300)
    r = render_printed("TOTAL 12.50", fonts.FONTS[0], 20)
    c.put(r, 10, 100, "printed")
    c.trim(150)
    assert c.image().shape[:2] == (150, 200)
    with pytest.raises(ValueError, match="cut annotations"):
        c.trim(90)


def test_captioned_sheet_scales_each_tile_and_pads_rows_to_one_width():
    grey = np.zeros((100, 50), np.uint8)  # a black page, grey
    rgb = np.zeros((200, 300, 3), np.uint8)  # a black page, colour, twice as tall
    sheet = captioned_sheet([[(grey, "a"), (grey, "b")], [(rgb, "c")]], height=40)
    band, gap = 22, 8  # caption band above a tile, white gap after each tile and row
    # Row 1: two 20x40 tiles; row 2: one 60x40 tile (scaled to the same height), padded to the wider row.
    assert sheet.shape == (2 * (band + 40 + gap), max(2 * (20 + gap), 60 + gap), 3)
    assert (sheet[band:band + 40, :20] == 0).all() and (sheet[band:band + 40, 20:28] == 255).all()
    second = band + 40 + gap
    assert (sheet[second + band:second + band + 40, :60] == 0).all()
    assert (sheet[second:second + band, 2:60] < 255).any()  # its caption is written
