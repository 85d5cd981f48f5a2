"""docrec.analysis.resolution (scripts/measure_resolution.py): line heights, scaling, the criterion and the report, on hand-made pages."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from docrec.analysis import resolution as mr
from docrec.formats import manifest
from docrec.geometry import line_quad
from docrec.pages import Line, Page
from docrec.realdata import REALDATA

REPO = Path(__file__).resolve().parents[1]




def rect(cx: float, cy: float, length: float, height: float, angle_deg: float = 0.0) -> list[tuple[float, float]]:
    """Corners of a length x height rectangle centred at (cx, cy), its long axis at ``angle_deg``."""
    a = math.radians(angle_deg)
    u = np.array([math.cos(a), math.sin(a)])
    v = np.array([-math.sin(a), math.cos(a)])
    c = np.array([cx, cy])
    pts = [c - u * length / 2 - v * height / 2, c + u * length / 2 - v * height / 2,
           c + u * length / 2 + v * height / 2, c - u * length / 2 + v * height / 2]
    return [(float(x), float(y)) for x, y in pts]


def page(width: int, height: int, polygons: list, image: str = "p.png", root: Path | None = None) -> Page:
    lines = [Line(id=f"l{i}", polygon=poly, text="x") for i, poly in enumerate(polygons)]
    return Page(image=image, width=width, height=height, lines=lines, root=root)


# ---------------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("angle", [0.0, 7.0, -12.5, 30.0])
def test_rotated_rectangle_height_is_its_short_side(angle):
    poly = rect(300, 200, 240, 18, angle)
    assert mr.line_height(poly) == pytest.approx(18, abs=0.05)
    assert mr.short_side(poly) == pytest.approx(18, abs=0.05)
    assert mr.line_box(poly)[0] == pytest.approx(240, abs=0.05)


def test_irregular_polygon_uses_its_min_area_rectangle():
    # A line mask with a bump: the rotated box is the bounding box of the bump too.
    poly = [(10, 50), (200, 50), (200, 70), (120, 70), (110, 80), (100, 70), (10, 70)]
    assert mr.line_height(poly) == pytest.approx(30, abs=0.05)


def test_box_taller_than_wide_is_measured_across_the_reading_direction():
    poly = rect(50, 50, 10, 30, 0)  # a single digit: 10 wide, 30 tall, read left to right
    assert mr.short_side(poly) == pytest.approx(10, abs=0.05)
    assert mr.line_height(poly) == pytest.approx(30, abs=0.05)
    assert mr.line_box(poly)[0] == pytest.approx(10, abs=0.05)


def test_rotated_box_corners_and_size():
    quad = line_quad(rect(300, 200, 240, 18, 10))
    length, height = mr.box_size(quad)
    assert (length, height) == pytest.approx((240, 18), abs=0.05)
    tl, tr, _, bl = quad
    assert tr[0] > tl[0] and bl[1] > tl[1]  # reading direction +x, height downwards


def test_scale_factor_uses_the_long_side():
    assert mr.scale_factor(1024, 762, 1000) == pytest.approx(1.024)
    assert mr.scale_factor(2048, 3000, 2000) == pytest.approx(2048 / 3000)
    assert mr.scale_factor(1024, 2048, 2048) == pytest.approx(0.5)


def test_line_heights_per_line_with_their_page_long_side():
    pages = [page(1000, 2000, [rect(500, 100, 400, 20), rect(500, 300, 400, 40, 5)]),
             page(3000, 1500, [rect(1000, 700, 800, 30)])]
    heights, sides = mr.line_heights(pages)
    np.testing.assert_allclose(heights, [20, 40, 30], atol=0.05)
    np.testing.assert_array_equal(sides, [2000, 2000, 3000])


def test_summarize_scales_heights_to_each_long_side():
    heights = np.array([10.0, 20.0, 30.0, 40.0])
    sides = np.array([1000.0, 1000.0, 2000.0, 2000.0])
    s = mr.summarize(heights, sides, [1000, 2000])
    assert s["lines"] == 4
    assert s["median_px"] == pytest.approx(25)
    at1, at2 = s["at"][1000], s["at"][2000]
    # Scaled to 1000: 10, 20, 15, 20 -> median 17.5; to 2000: twice that.
    assert at1["median_px"] == pytest.approx(17.5)
    assert at1["median_rows"] == pytest.approx(17.5 / 4)
    assert at1["below_min"] == pytest.approx(0.5)  # 10 and 15 are below 16 px
    assert at1["above_roi"] == 0.0
    assert at2["median_px"] == pytest.approx(35)
    assert at2["below_min"] == 0.0
    assert at2["above_roi"] == pytest.approx(0.5)  # 20, 40, 30, 40: two of four above 32 px
    assert math.isnan(at1["core_median_px"]) and math.isnan(s["core_median_px"])


def test_summarize_cores_and_roi_rows():
    heights = np.array([20.0, 100.0])
    sides = np.array([1000.0, 1000.0])
    cores = np.array([8.0, 20.0])
    s = mr.summarize(heights, sides, [2000], cores)
    at = s["at"][2000]
    assert s["core_lines"] == 2
    assert at["core_median_px"] == pytest.approx(28)  # 16 and 40 input px
    # Line 1: 40 px line, core 16 px -> 4 feature rows, RoI 8 x 8/20 = 3.2 rows -> 3.2.
    # Line 2: 200 px line, core 40 px -> 10 feature rows, RoI 8 x 0.2 = 1.6 rows -> 1.6.
    assert at["roi_core_rows"] == pytest.approx((3.2 + 1.6) / 2)


def test_summarize_ignores_missing_cores_and_checks_shapes():
    s = mr.summarize(np.array([20.0, 30.0]), np.array([1000.0, 1000.0]), [1000], np.array([np.nan, 12.0]))
    assert s["core_lines"] == 1 and s["core_median_px"] == 12
    with pytest.raises(ValueError):
        mr.summarize(np.array([1.0, 2.0]), np.array([1.0]), [1024])


def test_needed_long_side_is_the_continuous_criterion():
    heights = np.full(100, 12.0)  # every line 12 px on a 1000 px page
    sides = np.full(100, 1000.0)
    assert mr.needed_long_side(heights, sides) == pytest.approx(1000 * 24 / 12)
    # With a core of 3 px the core (10 px) decides: 10 / 0.003.
    assert mr.needed_long_side(heights, sides, np.full(100, 3.0)) == pytest.approx(10 / 0.003)
    # A long side just at the continuous value meets the discrete criterion; below it, not.
    s = mr.summarize(heights, sides, [1999, 2000])
    assert not s["at"][1999]["meets"] and s["at"][2000]["meets"]
    assert mr.pick_long_side(s) == 2000


def test_small_share_blocks_the_criterion():
    # Median 30 px at 1024 but 10 % of lines at 10 px.
    heights = np.array([10.0] * 10 + [30.0] * 90)
    sides = np.full(100, 1024.0)
    s = mr.summarize(heights, sides, [1024, 2048])
    assert s["at"][1024]["below_min"] == pytest.approx(0.10)
    assert mr.pick_long_side(s) == 2048
    assert mr.pick_long_side(mr.summarize(heights, sides, [1024])) is None


# ---------------------------------------------------------------------------------------------- x-height proxy


def test_core_height_is_the_band_around_the_peak():
    assert mr.core_height([0, 1, 1, 5, 6, 6, 5, 1, 0]) == 4
    assert mr.core_height([9, 0, 0, 2, 10, 10, 2]) == 2  # a separate dense row does not join the band
    assert mr.core_height([0, 0, 0]) == 0
    assert mr.core_height([]) == 0


def draw_line(img: np.ndarray, x0: int, top: int, xh: int, asc: int, n: int = 12) -> None:
    """Fake printed text: n letters with an x-height body of ``xh`` rows and a few ascenders."""
    for i in range(n):
        x = x0 + i * 14
        cv2.rectangle(img, (x, top + asc), (x + 9, top + asc + xh - 1), 0, -1)
        if i % 3 == 0:
            cv2.rectangle(img, (x, top), (x + 2, top + asc), 0, -1)


def test_ink_profile_finds_the_x_height_and_drops_underlines():
    img = np.full((200, 400), 255, np.uint8)
    draw_line(img, 20, 50, xh=10, asc=6)
    cv2.line(img, (10, 70), (380, 70), 0, 1)  # an underline through the box
    quad = line_quad(rect(200, 61, 380, 26))
    prof = mr.ink_profile(img, quad)
    assert prof is not None
    assert mr.core_height(prof) == pytest.approx(10, abs=1)
    assert mr.ink_profile(np.full((200, 400), 255, np.uint8), quad) is None  # blank
    assert mr.ink_profile(img, line_quad(rect(200, 61, 380, 3))) is None  # too thin


def test_core_heights_reads_images(tmp_path):
    img = np.full((300, 400), 255, np.uint8)
    draw_line(img, 20, 50, xh=12, asc=8)
    cv2.imwrite(str(tmp_path / "p.png"), img)
    p = page(400, 300, [rect(200, 63, 380, 30)], root=tmp_path)
    missing = page(400, 300, [rect(200, 63, 380, 30)], image="absent.png", root=tmp_path)
    cores = mr.core_heights([p, missing])
    assert cores[0] == pytest.approx(12, abs=1)
    assert math.isnan(cores[1])


# ---------------------------------------------------------------------------------------------- report


def _rows():
    a = mr.summarize(np.full(50, 30.0), np.full(50, 1000.0), [1024, 1536, 2048], np.full(50, 12.0))
    b = mr.summarize(np.full(50, 12.0), np.full(50, 1000.0), [1024, 1536, 2048], np.full(50, 5.0))
    return [("Big (print)", 3, 1000.0, a), ("Small (print)", 4, 1000.0, b)]


def test_tables_and_markdown():
    h1, r1, h2, r2 = mr.tables(_rows(), [1024, 1536, 2048])
    assert len(r1) == 2 and len(r2) == 6
    assert all(len(r) == len(h1) for r in r1) and all(len(r) == len(h2) for r in r2)
    assert r2[0][-1] == "yes (smallest)" and r2[1][-1] == "yes"
    assert [r[-1] for r in r2[3:]] == ["no", "no", "yes (smallest)"]
    md = mr.render(h2, r2, markdown=True).splitlines()
    assert md[0].startswith("| dataset | long_side") and md[1].startswith("|---|---:")
    assert len(md) == 2 + 6
    plain = mr.render(h1, r1, markdown=False).splitlines()
    assert len(plain) == 2 + 2 and "Big (print)" in plain[2]


def test_recommendation_follows_the_numbers():
    text = mr.recommendation(_rows(), [1024, 1536, 2048])
    assert "Big is fine at 1024" in text and "Small needs 2048" in text
    assert "use long_side 2048" in text
    assert mr.recommendation([], [1024]).startswith("No dataset")


def test_recommendation_when_no_candidate_suffices():
    tiny = mr.summarize(np.full(10, 4.0), np.full(10, 1000.0), [1024, 2048])
    text = mr.recommendation([("Tiny (x)", 1, 1000.0, tiny)], [1024, 2048])
    assert "Tiny needs more than 2048" in text


def test_main_on_a_manifest(tmp_path, capsys):
    img = np.full((1000, 800), 255, np.uint8)
    polys = []
    for k in range(10):
        draw_line(img, 40, 60 + 60 * k, xh=12, asc=8, n=40)
        polys.append(rect(400, 60 + 60 * k + 10, 720, 30))
    cv2.imwrite(str(tmp_path / "p.png"), img)
    manifest.write([page(800, 1000, polys, root=tmp_path)], tmp_path / "m.jsonl")
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "measure_resolution.py"), "--realdata",
                          str(tmp_path / "nowhere"), "--synthetic", str(tmp_path / "none.jsonl"),
                          "--pages", "manifest", str(tmp_path / "m.jsonl"), "--markdown"],
                         capture_output=True, text=True, timeout=300, check=False)
    out = run.stdout
    assert run.returncode == 0, run.stderr
    assert "| m.jsonl (manifest) | 1 | 10 | 1,000 |" in out
    assert "FUNSD (forms, print): " in out and "is absent, skipped" in out
    assert "Criterion:" in out and "Recommendation:" in out


# ---------------------------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_hooker_lenient_skips_the_two_bad_pages():
    root = REALDATA / "joseph_hooker_htr"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    result = mr.load_dataset("pagexml", root)
    assert len(result.pages) == 7 and len(result.skipped) == 2
    heights, sides = mr.line_heights(result.pages)
    assert heights.size == 141
    assert 40 < float(np.median(heights)) < 250  # handwritten line masks on ~2400 px scans
    assert 2100 <= sides.min() and sides.max() <= 2500  # README: about 2200-2450 px high
