"""The reader's pixel stem: a small CNN over the page's own pixels in each line box (model.recognition.pixel_stem)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from docrec.geometry import line_quads
from docrec.metrics import corpus_cer
from docrec.models import Charset, build_model
from tests.test_model import PAGES, TINY, batch

STEM = {**TINY, "recognition": {**TINY["recognition"], "pixel_stem": 8}}


@pytest.fixture
def charset() -> Charset:
    return Charset.build([t for spec in PAGES for t, _, _ in spec])


def _quad(x0: float, y0: float, x1: float, y1: float) -> torch.Tensor:
    return torch.tensor([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]])


def test_the_stem_samples_each_input_pixel_along_the_line_and_nothing_past_its_end(charset):
    head = build_model(STEM, charset).rec_head
    h, w = 64, 128
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    page = torch.stack([xs + 0.5, ys + 0.5, torch.ones(h, w)]).float()[None]  # each pixel's centre
    quads = [torch.cat([_quad(10, 20, 90, 36), _quad(10, 40, 50, 56)])]
    flat, owner, widths = head.lines(page, quads)
    assert widths.tolist() == [20, 10]  # reader columns: one per 4 px
    pixels = head.line_pixels(page, flat, owner, widths, 20)
    assert pixels.shape == (2, 3, 16, 80)  # 16 rows across, 4 samples a column along
    torch.testing.assert_close(pixels[0, 0, 0], torch.arange(80) + 10.5)  # one sample per input pixel
    torch.testing.assert_close(pixels[0, 1, :, 0], 20 + (torch.arange(16) + 0.5))  # rows span the box's height
    assert (pixels[1, :, :, 40:] == 0).all() and (pixels[1, 2, :, :40] == 1).all()  # the short line ends at 40


def test_the_reader_with_a_stem_reads_the_page_pixels_and_says_so_without_them(charset):
    torch.manual_seed(0)
    head = build_model(STEM, charset).rec_head.eval()
    fused = torch.randn(1, 64, 32, 64)
    page = torch.randn(1, 3, 128, 256)
    quads = [_quad(10, 20, 150, 44)]
    with torch.no_grad():
        a, _ = head.encode(fused, quads, page)
        changed = page.clone()
        changed[..., 20:44, 10:150] = -page[..., 20:44, 10:150]  # other pixels inside the line box
        b, _ = head.encode(fused, quads, changed)
        outside = page.clone()
        outside[..., 80:, :] = 0.0  # pixels far from the box
        c, _ = head.encode(fused, quads, outside)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a, c)
    with pytest.raises(ValueError, match="pixel stem"):
        head.encode(fused, quads)
    plain = build_model(TINY, charset).rec_head.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain.encode(fused, quads, page)[0], plain.encode(fused, quads, changed)[0])


def test_a_model_with_a_stem_trains_and_predicts_through_it(charset):
    torch.manual_seed(0)
    model = build_model(STEM, charset).train()
    images, targets = batch(charset)
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.rec_head.pixel_stem.parameters())
    model.eval()
    model.postprocess = {"core_threshold": 0.0, "min_score": 0.0}
    with torch.no_grad():
        out = model(images)
    # Predicting reads its lines as recognize reads their boxes: the pages reach the stem on both paths
    # (a stem without them raises), and the same pixels give the same text.
    found = [torch.from_numpy(line_quads([np.asarray(ln["polygon"]) for ln in page["lines"]])) for page in out]
    assert all(len(q) for q in found)
    reads = model.recognize(images, found)
    assert [[t for t, _ in r] for r in reads] == [[ln["text"] for ln in page["lines"]] for page in out]


@pytest.mark.slow
def test_a_stem_learns_to_read_lines_with_nothing_from_the_backbone(charset):
    """The fused map held at zero: whatever the reader learns, it learns from the page pixels alone."""
    torch.manual_seed(0)
    model = build_model({**STEM, "recognition": {**STEM["recognition"], "pixel_stem": 16}}, charset)
    head = model.rec_head.train()
    images, targets = batch(charset)
    quads = [t["line_quads"] for t in targets]
    tokens = model._pad_tokens([t["line_tokens"] for t in targets], images.device)
    fused = torch.zeros(len(images), 64, images.shape[-2] // 4, images.shape[-1] // 4)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(60):
        loss = sum(head.loss(fused, quads, tokens, images=images).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    ids, _ = head.read(fused, quads, "ctc", images=images)
    texts = [model.charset.decode(row) for row in ids]
    pairs = list(zip(texts, [t for spec in PAGES for t, _, _ in spec]))
    assert corpus_cer(pairs) < 0.2, pairs


@pytest.mark.parametrize("change, message", [
    ({"roi_column_samples": 2}, "roi_column_samples must be 1"),
    ({"pixel_stem_height": 18}, "multiple of 4"),
])
def test_stem_settings_it_cannot_read_with_are_refused(charset, change, message):
    with pytest.raises(ValueError, match=message):
        build_model({**STEM, "recognition": {**STEM["recognition"], **change}}, charset)


def test_lines_of_several_images_read_their_own_pages(charset):
    head = build_model(STEM, charset).rec_head
    pages = torch.stack([torch.full((3, 64, 128), 1.0), torch.full((3, 64, 128), -1.0)])
    quads = [_quad(10, 10, 50, 26), _quad(10, 10, 90, 26)]
    flat, owner, widths = head.lines(pages, quads)
    pixels = head.line_pixels(pages.float().split(1), flat, owner, widths, int(widths.max()))
    assert (pixels[0, :, :, :40] == 1).all() and (pixels[1, :, :, :80] == -1).all()


def test_a_line_reads_the_same_whatever_the_padding_after_it(charset):
    """Alone, or padded to a wider line of its batch (a width group, or roi_max_width in the ONNX graph)."""
    torch.manual_seed(0)
    head = build_model(STEM, charset).rec_head.eval()
    fused, page = torch.randn(1, 64, 32, 64), torch.randn(1, 3, 128, 256)
    short, wide = _quad(10, 20, 60, 40), _quad(10, 60, 240, 84)
    with torch.no_grad():
        alone, _ = head.encode(fused, [short], page)
        padded, padding = head.encode(fused, [torch.cat([short, wide])], page)
    w = alone.shape[1]
    assert padded.shape[1] > w and padding[0, w:].all()
    torch.testing.assert_close(padded[0, :w], alone[0], atol=1e-5, rtol=1e-5)
