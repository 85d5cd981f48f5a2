"""Reading a page at the scale of its lines (``max_line_height`` of evaluate and predict, and
``data.max_line_height`` of training): the first pass's line heights, the long side it chooses, the
long sides training takes from the annotations, and pages and images read at a long side of their own."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from docrec.data.dataset import PageDataset, line_scaled_sides
from docrec.data.loading import PageSplits, make_loaders
from docrec.engine.config import ConfigError
from docrec.engine.runtime import setup
from docrec.formats import load
from docrec.geometry import MIN_LONG_SIDE, line_scaled_long_side, median_line_height, reading_long_side
from docrec.inference import (
    ImageFolder,
    line_scaled_long_sides,
    reading_long_side_of,
    reading_max_line_height,
)
from docrec.models import Charset, build_model
from docrec.pages import Line, Page
from tests.conftest import compose_cfg
from tests.test_model import PAGES, TINY, batch


def box(cx: float, cy: float, length: float, height: float, deg: float = 0.0) -> np.ndarray:
    """A line's rectangle, ``length`` along its reading direction, turned by ``deg``."""
    a = np.deg2rad(deg)
    u, v = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
    return np.array([c for c in ([cx, cy] + su * length / 2 * u + sv * height / 2 * v
                                 for su, sv in [(-1, -1), (1, -1), (1, 1), (-1, 1)])], np.float32)


def test_the_median_line_height_is_taken_across_the_reading_direction():
    lines = [box(200, 100, 300, h, deg) for h, deg in [(10, 0), (20, 30), (60, -20)]]
    assert median_line_height(lines) == pytest.approx(20, abs=0.01)
    assert median_line_height([]) is None


def test_a_page_is_read_smaller_only_when_its_lines_are_taller_than_the_limit():
    assert line_scaled_long_side(1536, 60.0, 40) == 1024  # 60 px lines at 1536 -> 40 px at 1024
    assert line_scaled_long_side(1536, 40.0, 40) == 1536
    assert line_scaled_long_side(1536, 20.0, 40) == 1536  # never scaled up
    assert line_scaled_long_side(1536, None, 40) == 1536  # no lines found
    assert line_scaled_long_side(1536, 60.0, None) == 1536  # the option off
    assert line_scaled_long_side(1536, 1000.0, 40) == MIN_LONG_SIDE
    assert line_scaled_long_side(200, 100.0, 40) == 200  # already below the smallest long side
    with pytest.raises(ValueError, match="max_line_height"):
        line_scaled_long_side(1536, 60.0, -1)


def test_evaluate_and_predict_read_a_run_trained_at_the_scale_of_its_lines_alike_unless_told():
    run = {"data": {"long_side": 1536, "max_line_height": 40}}
    assert reading_max_line_height(None, run) == 40  # the run's own
    assert reading_max_line_height(28, run) == 28
    assert reading_max_line_height(0, run) == 0  # off
    assert reading_max_line_height(None, {"data": {"long_side": 1536}}) is None  # runs from before the option


def test_pages_are_read_at_the_runs_long_side_times_its_read_scale_unless_told():
    assert reading_long_side(1536, 1.08) == 1659 and reading_long_side(1536, 0.5) == 768
    assert reading_long_side(1537, 1.0) == reading_long_side(1537, None) == 1537  # 1.0 and runs without the key
    with pytest.raises(ValueError, match="read_scale"):
        reading_long_side(1536, 0.0)
    run = {"data": {"long_side": 1536, "read_scale": 1.08}}
    assert reading_long_side_of(None, run) == 1659  # the run's own reading long side
    assert reading_long_side_of(2048, run) == 2048  # evaluate / predict long_side=2048
    assert reading_long_side_of(None, {"data": {"long_side": 1536}}) == 1536  # runs from before the option


def test_validation_reads_at_the_reading_long_side_and_training_at_long_side():
    # Pages 2000 px long, lines 100 px tall there: 50 px at long side 1000, 75 px at the reading side 1500.
    pages = [_tall_page(0, 100), _tall_page(1, 100)]
    cfg = compose_cfg(["data.num_workers=0", "data.long_side=1000", "data.read_scale=1.5"])
    train, val, _ = make_loaders(PageSplits(train=pages, val=pages), Charset.build(["ab"]), cfg.data, cfg.augment,
                                 0, 0, 1)
    assert train.dataset.long_side == 1000 and val.dataset.long_side == 1500
    assert train.dataset.long_sides == val.dataset.long_sides == {}
    # max_line_height is the height pages are read at on both sides: 60 px -> train 1000 -> 1000 (50 px lines),
    # validation 1500 -> 1200 (75 px lines made 60).
    capped = compose_cfg(["data.num_workers=0", "data.long_side=1000", "data.read_scale=1.5",
                          "data.max_line_height=60"])
    train, val, _ = make_loaders(PageSplits(train=pages, val=pages), Charset.build(["ab"]), capped.data,
                                 capped.augment, 0, 0, 1)
    assert train.dataset.long_sides == {} and val.dataset.long_sides == {0: 1200, 1: 1200}


class Detector:
    """A model whose detection gives each image lines of a known height."""

    def __init__(self, heights: list[float | None]) -> None:
        self.heights, self.calls = heights, 0

    def detect(self, images):
        out = []
        for _ in range(images.shape[0]):
            h = self.heights[self.calls]
            self.calls += 1
            out.append([] if h is None else [box(100, 50 + 3 * h * i, 150, h) for i in range(3)])
        return out


def test_the_first_pass_gives_each_page_with_tall_lines_its_long_side():
    rt = setup("cpu", "fp32", False)
    images = torch.zeros((2, 3, 64, 64), dtype=torch.uint8)
    loader = [(images, [{"index": 0}, {"index": 1}]), (images, [{"index": 2}, {"index": 3}])]
    model = Detector([30.0, 80.0, None, 120.0])
    assert line_scaled_long_sides(model, loader, rt, 1536, 40) == {1: 768, 3: 512}
    assert model.calls == 4
    assert line_scaled_long_sides(Detector([]), loader, rt, 1536, None) == {}  # off: no pass at all
    with pytest.raises(ConfigError, match="max_line_height"):
        line_scaled_long_sides(Detector([80.0] * 4), loader, rt, 1536, -3)


def test_pages_and_images_are_read_at_their_own_long_side(toy_data):
    page = load("manifest", toy_data / "train.jsonl").pages[0]  # 320 x 240
    charset = Charset.build([ln.text for ln in page.lines])
    ds = PageDataset([page, page], charset, ["printed", "handwritten"], 320, train=False, long_sides={1: 160})
    (full, _, meta_full), (half, _, meta_half) = ds[0], ds[1]
    assert max(full.shape[1:]) == 320 and max(half.shape[1:]) == 160
    assert meta_full["scale"] == pytest.approx(1.0) and meta_half["scale"] == pytest.approx(0.5)
    for a, b in zip(meta_full["gt_lines"], meta_half["gt_lines"]):
        np.testing.assert_allclose(np.array(b["polygon"]), np.array(a["polygon"]) * 0.5, atol=1e-3)

    folder = ImageFolder([page.image_path, page.image_path], 320, long_sides={1: 160})
    (img0, m0), (img1, m1) = folder[0], folder[1]
    assert max(img0.shape[1:]) == 320 and max(img1.shape[1:]) == 160
    assert (m0["index"], m0["scale"], m1["index"], m1["scale"]) == (0, 1.0, 1, 0.5)
    assert (m1["width"], m1["height"]) == (320, 240)  # the original image's size, for the page's coordinates


def test_detection_alone_finds_the_lines_a_prediction_reads():
    charset = Charset.build([t for spec in PAGES for t, _, _ in spec])
    torch.manual_seed(0)
    # Loose thresholds: an untrained model's cores are near 0.5 everywhere.
    model = build_model({**TINY, "postprocess": {"core_threshold": 0.45, "min_score": 0.0, "min_area": 1.0}},
                        charset).eval()
    images, _ = batch(charset)
    preds = model(images)
    found = model.detect(images)
    assert sum(len(p["lines"]) for p in preds) > 0
    for pred, polys in zip(preds, found):
        assert [ln["polygon"] for ln in pred["lines"]] == [p.tolist() for p in polys]


def _tall_page(i: int, line_height: float, size: tuple[int, int] = (1000, 2000)) -> Page:
    w, h = size
    lines = [Line(id=f"l{j}", polygon=[(50, y), (900, y), (900, y + line_height), (50, y + line_height)],
                  text="ab", kind="handwritten") for j, y in enumerate(range(100, 1500, 200))]
    return Page(image=f"{i}.png", width=w, height=h, lines=lines, source=f"p{i}.json")


def test_training_takes_each_pages_long_side_from_its_annotated_lines(caplog):
    # Long side 1000 of 2000-px pages: lines of 40, 100 and 160 px are 20, 50 and 80 px tall there.
    pages = [_tall_page(0, 40), _tall_page(1, 100), _tall_page(2, 160), Page(image="3.png", width=800,
                                                                                  height=1000, source="p3.json")]
    assert line_scaled_sides(pages, 1000, 40) == {1: 800, 2: 500}  # the page without lines keeps its side
    assert line_scaled_sides(pages, 1000, None) == {} and line_scaled_sides(pages, 1000, 0) == {}
    cfg = compose_cfg(["data.num_workers=0", "data.long_side=1000", "data.max_line_height=40"])
    with caplog.at_level(logging.INFO, logger="docrec.data.loading"):
        train, val, _ = make_loaders(PageSplits(train=pages, val=pages[1:2]), Charset.build(["ab"]), cfg.data,
                                     cfg.augment, 0, 0, 1)
    assert "2 of 4 training and 1 of 1 validation pages read smaller" in caplog.text
    assert train.dataset.long_sides == {1: 800, 2: 500} and val.dataset.long_sides == {0: 800}
    off = compose_cfg(["data.num_workers=0", "data.long_side=1000"])  # the default: null, every page at 1000
    assert make_loaders(PageSplits(train=pages, val=[]), Charset.build(["ab"]), off.data, off.augment,
                        0, 0, 1)[0].dataset.long_sides == {}


def test_a_training_page_is_cropped_and_augmented_at_its_own_long_side(toy_data):
    page = load("manifest", toy_data / "train.jsonl").pages[0]  # 320 x 240
    charset = Charset.build([ln.text for ln in page.lines])
    aug = {"enabled": True, "affine": {"p": 1.0, "rotate": 0.0, "shear": 0.0, "scale": [1.0, 1.0], "translate": 0.0}}
    ds = PageDataset([page, page], charset, ["printed", "handwritten"], 320, augment=aug, crop=(64, 320), train=True,
                     long_sides={1: 160})
    (full, _, m_full), (half, _, m_half) = ds[0], ds[1]
    assert full.shape[1:] == (64, 320) and half.shape[1:] == (64, 320)  # one crop size: the smaller page padded
    assert m_full["scale"] == pytest.approx(1.0) and m_half["scale"] == pytest.approx(0.5)
    # A weighted sampler's repeat pass (index + k * len) is the same page at the same long side.
    assert ds[1 + 2][2]["scale"] == pytest.approx(0.5) and ds[0 + 4][2]["scale"] == pytest.approx(1.0)
    assert ds._transform(160) is ds._transform(160) is not ds.aug  # one pipeline per long side, built once
