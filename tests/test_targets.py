"""Targets (class mask, line cores, quads, tokens) and the post-processing that inverts them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from docrec.data.targets import build_targets, core_mask
from docrec.geometry import CORE_SHRINK, line_core, line_cores, line_quad, unclip_distance
from docrec.models import Charset, lines_from_maps
from docrec.text import IGNORE_INDEX

KINDS = ("printed", "handwritten", "form_field")
CHARSET = Charset.build(["hello world", "Invoice 4711"])


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def rotated_rect(cx: float, cy: float, w: float, h: float, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    u, d = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
    c = np.array([cx, cy])
    return np.stack([c - u * w / 2 - d * h / 2, c + u * w / 2 - d * h / 2,
                     c + u * w / 2 + d * h / 2, c - u * w / 2 + d * h / 2]).astype(np.float32)


def mask_iou(a: np.ndarray, b: np.ndarray, shape: tuple[int, int]) -> float:
    ma, mb = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    cv2.fillPoly(ma, [np.round(a).astype(np.int32)], 1)
    cv2.fillPoly(mb, [np.round(b).astype(np.int32)], 1)
    return float((ma & mb).sum() / (ma | mb).sum())


# --- line_quad -------------------------------------------------------------------------


def test_line_quad_axis_aligned_starts_top_left_whatever_the_point_order():
    poly = rect(10, 20, 110, 35)
    expected = rect(10, 20, 110, 35)
    for shift in range(4):
        for order in (1, -1):
            pts = np.roll(poly[::order], shift, axis=0)
            np.testing.assert_allclose(line_quad(pts), expected, atol=1e-3)


@pytest.mark.parametrize("deg", [-30.0, -8.0, 5.0, 25.0, 44.0])
def test_line_quad_follows_skewed_lines(deg):
    poly = rotated_rect(200, 150, 120, 20, deg)
    quad = line_quad(np.roll(poly, 1, axis=0))
    np.testing.assert_allclose(quad, poly, atol=1e-2)
    tl, tr, _, bl = quad
    assert tr[0] > tl[0]  # reads left to right
    assert np.linalg.norm(tr - tl) > np.linalg.norm(bl - tl)


def test_line_quad_of_a_short_tall_line_still_reads_horizontally():
    quad = line_quad(rect(50, 10, 58, 40))  # one digit: 8 wide, 30 high
    np.testing.assert_allclose(quad, rect(50, 10, 58, 40), atol=1e-3)


def test_line_quad_of_a_polygon_is_its_min_area_box():
    wavy = np.array([[0, 10], [50, 6], [100, 10], [100, 22], [50, 18], [0, 22]], np.float32)
    quad = line_quad(wavy)
    np.testing.assert_allclose(quad, rect(0, 6, 100, 22), atol=1e-3)


# --- build_targets ---------------------------------------------------------------------


def test_class_mask_paints_kinds_and_ignores_unknown_kinds():
    lines = [
        (rect(10, 10, 60, 20), "hello", "printed"),
        (rect(10, 30, 60, 40), "world", "form_field"),
        (rect(70, 10, 90, 40), "lo", "stamp"),
    ]
    t = build_targets(lines, 50, 100, KINDS, CHARSET, max_len=16)
    cm = t["class_mask"]
    assert cm.dtype == torch.uint8 and cm.shape == (50, 100)
    assert cm[15, 30] == 1 and cm[35, 30] == 3 and cm[25, 80] == IGNORE_INDEX and cm[45, 5] == 0
    assert t["line_kinds"].tolist() == [0, 2, IGNORE_INDEX]


def test_core_mask_is_a_shrunk_line_and_separates_touching_lines():
    # Two lines that share an edge: one blob in the class mask, two cores.
    lines = [(rect(10, 10, 190, 30), "hello", "printed"), (rect(10, 30, 190, 50), "world", "printed")]
    t = build_targets(lines, 60, 200, KINDS, CHARSET, max_len=16)
    core = t["core_mask"].numpy()
    assert core.dtype == np.uint8 and set(np.unique(core)) == {0, 1}
    assert core.sum() < (t["class_mask"] > 0).sum().item()
    assert np.all(core[t["class_mask"].numpy() == 0] == 0)
    n, _ = cv2.connectedComponents(core.astype(np.uint8), connectivity=4)
    assert n - 1 == 2
    rows = np.flatnonzero(core[:, 100])
    # Half of the 20-pixel height removed: a core of about 10 rows centred in each line.
    first = rows[rows < 30]
    assert abs(len(first) - 20 * (1 - CORE_SHRINK)) <= 2
    assert abs(first.mean() - 20) <= 1


def test_tokens_quads_and_lines_without_text():
    lines = [
        (rect(10, 10, 60, 20), "hello", "printed"),
        (rect(10, 30, 60, 40), None, "printed"),  # cut by a crop: painted, not read
        (rect(10, 45, 12, 46), "tiny", "printed"),  # a sliver: dropped
        (rect(70, 10, 95, 40), "Invoice 4711 hello", "handwritten"),
    ]
    t = build_targets(lines, 50, 100, KINDS, CHARSET, max_len=8)
    assert t["class_mask"][35, 30] == 1
    assert t["class_mask"][45, 11] == 0
    assert t["line_quads"].shape == (2, 4, 2) and t["line_quads"].dtype == torch.float32
    np.testing.assert_allclose(t["line_quads"][0].numpy(), rect(10, 10, 60, 20), atol=1e-3)
    tokens = t["line_tokens"]
    assert tokens.shape == (2, 8) and tokens.dtype == torch.int64
    assert tokens[0].tolist() == CHARSET.encode("hello") + [CHARSET.pad_id]
    assert tokens[1].tolist() == CHARSET.encode("Invoice 4711 hello")[:8]  # cut: no EOS
    assert CHARSET.decode(tokens[0].tolist()) == "hello"


def test_no_lines_gives_empty_targets():
    t = build_targets([], 32, 48, KINDS, CHARSET, max_len=8)
    assert t["class_mask"].shape == (32, 48) and t["class_mask"].sum() == 0
    assert t["core_mask"].sum() == 0
    assert t["line_quads"].shape == (0, 4, 2)
    assert t["line_tokens"].shape[0] == 0 and t["line_kinds"].shape == (0,)


def test_polygons_partly_outside_are_clipped():
    t = build_targets([(rect(-20, 5, 30, 25), "hello", "printed")], 40, 40, KINDS, CHARSET, max_len=16)
    assert t["class_mask"][10, 0] == 1 and t["core_mask"][15, 5] == 1


# --- lines_from_maps -------------------------------------------------------------------


def _perfect_maps(targets: dict, num_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    cm = targets["class_mask"].numpy().copy()
    cm[cm == IGNORE_INDEX] = 0
    class_prob = np.eye(num_classes, dtype=np.float32)[cm].transpose(2, 0, 1)
    return class_prob, targets["core_mask"].numpy()


def test_touching_lines_come_out_as_two_polygons_with_their_kinds():
    gt = [(rect(10, 10, 190, 30), "hello", "printed"), (rect(12, 30, 170, 52), "world", "handwritten")]
    t = build_targets(gt, 64, 200, KINDS, CHARSET, max_len=16)
    found = lines_from_maps(*_perfect_maps(t))
    assert len(found) == 2
    found.sort(key=lambda x: x[0][:, 1].mean())
    for (poly, kind, score), (gt_poly, _, gt_kind) in zip(found, gt):
        assert poly.dtype == np.float32 and poly.ndim == 2 and poly.shape[1] == 2
        assert mask_iou(poly, gt_poly, (64, 200)) > 0.85
        assert KINDS[kind] == gt_kind
        assert score == pytest.approx(1.0)


def test_skewed_line_is_recovered_and_its_quad_reads_along_it():
    gt = rotated_rect(100, 60, 150, 16, 12.0)
    t = build_targets([(gt, "hello", "form_field")], 128, 200, KINDS, CHARSET, max_len=16)
    (poly, kind, _), = lines_from_maps(*_perfect_maps(t))
    assert KINDS[kind] == "form_field"
    assert mask_iou(poly, gt, (128, 200)) > 0.85
    quad = line_quad(poly)
    direction = (quad[1] - quad[0]) / np.linalg.norm(quad[1] - quad[0])
    assert np.degrees(np.arctan2(direction[1], direction[0])) == pytest.approx(12.0, abs=3.0)


def test_weak_and_tiny_cores_are_dropped():
    class_prob = np.zeros((4, 40, 1024), np.float32)  # a page of long side MIN_AREA_LONG_SIDE
    class_prob[0] = 1.0
    core = np.zeros((40, 1024), np.float32)
    core[5:9, 5:60] = 0.55  # above the threshold but a low mean score
    core[20:24, 5:60] = 0.95
    core[35, 70] = 0.99  # a single pixel
    found = lines_from_maps(class_prob, core, core_threshold=0.5, min_score=0.6, min_area=16)
    assert len(found) == 1
    assert found[0][0][:, 1].min() < 20 <= found[0][0][:, 1].max()


def test_min_area_scales_with_the_resolution():
    # A 3x3 speck grows to ~5x5 = 21 px^2: a line at long side 1024, a speck at 4096 (16 x 16 px^2).
    for side, kept in ((1024, 1), (4096, 0)):
        core = np.zeros((32, side), np.float32)
        core[10:13, 10:13] = 1.0
        class_prob = np.zeros((4, 32, side), np.float32)
        assert len(lines_from_maps(class_prob, core, min_area=16)) == kept


def test_growth_follows_the_band_not_its_thickest_spot():
    # A 12-px core band with a 30-px blob on it: grown by the band's half-thickness, not the blob's.
    core = np.zeros((80, 300), np.float32)
    core[34:46, 20:280] = 1.0
    core[25:55, 140:170] = 1.0
    (poly, _, _), = lines_from_maps(np.zeros((4, 80, 300), np.float32), core)
    grow = unclip_distance(6.0)
    mask = np.zeros((80, 300), np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    assert abs(np.flatnonzero(mask[:, 60]).size - (12 + 2 * grow)) <= 2


# --- line_core -----------------------------------------------------------------------


def _core_components(lines, shape) -> np.ndarray:
    """Connected components of the cores of ``lines`` (polygon, shrink[, baseline]), painted together."""
    core = core_mask(shape, [line[0] for line in lines], [line[2] if len(line) > 2 else None for line in lines],
                     shrink=lines[0][1])
    return cv2.connectedComponents(core, connectivity=4)[1]


def _hooker_like_line(x0: float, y0: float, length: float, height: float) -> np.ndarray:
    """A line polygon whose top bulges around ascenders: 30 to 116 px thick, like a Hooker letter's."""
    xs = np.linspace(x0, x0 + length, 41)
    bulge = np.where(np.isin(np.arange(41) % 8, (3, 4)), 86.0, 0.0)  # a wide loop every 8 samples
    top = np.stack([xs, y0 - bulge], axis=1)
    bottom = np.stack([xs[::-1], np.full(41, y0 + height)], axis=1)
    return np.concatenate([top, bottom]).astype(np.float32)


def test_a_bulging_line_keeps_one_core_of_its_robust_height():
    poly = _hooker_like_line(50, 150, 900, 30)
    labels = _core_components([(poly, CORE_SHRINK)], (300, 1000))
    assert labels.max() == 1
    rows = np.flatnonzero(labels[:, 500])
    assert abs(rows.size - 30 * (1 - CORE_SHRINK)) <= 2  # the median thickness, not the bulges'
    assert abs(rows.mean() - 165) <= 2  # centred on the line's body
    # The old core (inner distance > half the largest) broke it at every ascender.
    band = line_core(poly)
    assert band is not None and band.dtype == np.float32 and band.shape[1] == 2


def test_touching_bulging_lines_keep_two_cores_and_come_back_as_two_lines():
    upper, lower = _hooker_like_line(50, 150, 900, 30), _hooker_like_line(60, 180, 880, 30)
    labels = _core_components([(upper, CORE_SHRINK), (lower, CORE_SHRINK)], (300, 1000))
    assert labels.max() == 2
    t = build_targets([(upper, "hello", "handwritten"), (lower, "world", "handwritten")],
                      300, 1000, KINDS, CHARSET, max_len=16)
    found = lines_from_maps(*_perfect_maps(t))
    assert len(found) == 2


def test_overlapping_lines_keep_their_cores_apart():
    # Polygons overlapping by more than the shrink would merge their bands: the later core gives way.
    a, b = rect(10, 10, 290, 40), rect(10, 28, 290, 58)
    labels = _core_components([(a, CORE_SHRINK), (b, CORE_SHRINK)], (70, 300))
    assert labels.max() == 2


def test_the_core_follows_a_curved_baseline():
    xs = np.linspace(20, 580, 57)
    base_y = 200 + 60 * np.sin((xs - 20) / 560 * np.pi)  # an arc 60 px high
    baseline = np.stack([xs, base_y], axis=1).astype(np.float32)
    # The polygon: 24 px above the baseline, 8 below, plus a bulge that the core ignores.
    top = np.stack([xs, base_y - 24 - np.where(np.arange(57) == 20, 40, 0)], axis=1)
    poly = np.concatenate([top, np.stack([xs, base_y + 8], axis=1)[::-1]]).astype(np.float32)
    labels = _core_components([(poly, CORE_SHRINK, baseline)], (320, 600))
    assert labels.max() == 1
    for x in (60, 200, 300, 450):
        rows = np.flatnonzero(labels[:, x])
        y = np.interp(x, xs, base_y)
        assert abs(rows.mean() - (y - 8)) <= 2  # the line's centre: 8 px above its baseline
        assert abs(rows.size - 32 * (1 - CORE_SHRINK)) <= 3


def test_a_lone_digit_taller_than_wide_keeps_a_core():
    t = build_targets([(rect(50, 10, 58, 40), "4", "printed")], 50, 100, KINDS, CHARSET, max_len=16)
    (poly, _, _), = lines_from_maps(*_perfect_maps(t))
    assert mask_iou(poly, rect(50, 10, 58, 40), (50, 100)) > 0.7


def test_maps_of_different_sizes_are_refused():
    with pytest.raises(ValueError):
        lines_from_maps(np.zeros((4, 10, 10), np.float32), np.zeros((10, 12), np.float32))


def test_a_given_quad_gives_the_core_computed_without_it():
    lines = [_hooker_like_line(50, 150, 900, 30), rotated_rect(300, 80, 400, 24, 4.0), rect(10, 10, 22, 60)]
    for poly in lines:
        np.testing.assert_array_equal(line_core(poly, quad=line_quad(poly)), line_core(poly))
    # build_targets computes every quad once, for the cores and the reader alike.
    t = build_targets([(p, "hello", "printed") for p in lines], 300, 1000, KINDS, CHARSET, 16)
    np.testing.assert_array_equal(t["line_quads"].numpy(), np.stack([line_quad(p) for p in lines]))


def test_the_medians_of_line_cores_are_numpys():
    from docrec.geometry import _ragged_medians

    rng = np.random.default_rng(0)
    counts = np.array([1, 2, 3, 10, 11, 257])
    for values in (rng.normal(size=counts.sum()) * 30, np.round(rng.normal(size=counts.sum()) * 30)):  # ties too
        runs = np.split(values, np.cumsum(counts)[:-1])
        np.testing.assert_array_equal(_ragged_medians(values, counts), [np.median(np.round(r, 6)) for r in runs])


def test_the_moving_averages_of_line_cores_are_numpys():
    from docrec.geometry import _ragged_moving_average

    rng = np.random.default_rng(1)
    counts, radius = np.array([1, 2, 5, 40, 7]), np.array([0, 3, 1, 4, 9])
    values = rng.normal(size=counts.sum())
    runs = np.split(values, np.cumsum(counts)[:-1])
    expected = np.concatenate([np.convolve(np.pad(run, r, mode="edge"), np.ones(2 * r + 1) / (2 * r + 1), mode="valid")
                               for run, r in zip(runs, radius)])
    np.testing.assert_allclose(_ragged_moving_average(values, counts, radius), expected, rtol=0, atol=1e-12)


def test_a_monotone_run_is_its_own_running_median():
    from docrec.geometry import _running_median

    rng = np.random.default_rng(2)
    run = np.cumsum(rng.integers(0, 3, 60)).astype(np.float64)  # with ties
    for window in (3, 16, 200):
        np.testing.assert_array_equal(_running_median(run, window), run)
        np.testing.assert_array_equal(_running_median(run[::-1], window), run[::-1])


def test_the_cores_of_a_page_at_once_are_those_of_each_line_alone():
    xs = np.linspace(20, 580, 57)
    base_y = 200 + 60 * np.sin((xs - 20) / 560 * np.pi)
    curved = np.concatenate([np.stack([xs, base_y - 24], axis=1), np.stack([xs, base_y + 8], axis=1)[::-1]])
    wavy_top = np.stack([xs, 100 - 6 * np.sin(xs / 25)], axis=1)  # centres up and down: the per-line median
    wavy = np.concatenate([wavy_top, np.stack([xs, 130 + 6 * np.sin(xs / 40)], axis=1)[::-1]])
    trapezoid = np.array([[50, 400], [550, 390], [550, 440], [50, 420]], np.float64)
    lines = [(rect(10, 10, 190, 30), None), (rotated_rect(300, 80, 400, 24, 4.0), None),
             (_hooker_like_line(50, 150, 900, 30), None), (curved, np.stack([xs, base_y], axis=1)),
             (rect(50, 10, 58, 40), None), (wavy, None), (trapezoid, None), (np.zeros((2, 2)), None),
             (rect(5, 5, 5.5, 5.5), None), (curved, np.array([[300.0, 250.0]]))]  # one baseline point: none
    together = line_cores([p for p, _ in lines], CORE_SHRINK, [b for _, b in lines])
    for (poly, base), band in zip(lines, together):
        alone = line_core(poly, CORE_SHRINK, base)
        assert (alone is None) == (band is None)
        if band is not None:
            np.testing.assert_allclose(band, alone, atol=1e-4)
    assert [b is None for b in together] == [False] * 7 + [True, True, False]


def test_a_page_of_more_than_255_lines_keeps_every_core_apart():
    # 20 columns x 16 rows of short lines, each touching the line below: 320 labels need 16 bits.
    lines = [rect(10 + 60 * c, 10 + 12 * r, 60 + 60 * c, 22 + 12 * r) for c in range(20) for r in range(16)]
    core = core_mask((220, 1220), lines)
    n, labels = cv2.connectedComponents(core, connectivity=4)
    assert n - 1 == 320
    assert len({labels[int(p[:, 1].mean()), int(p[:, 0].mean())] for p in lines}) == 320  # one core per line
