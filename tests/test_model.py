"""The composite model: charset, RoI sampling, losses, predictions, bf16/channels_last, overfitting."""

from __future__ import annotations

import copy
import math

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from docrec.data.dataset import normalize, to_model_input
from docrec.data.targets import build_targets
from docrec.engine.config import ConfigError, check_config
from docrec.metrics import corpus_cer
from docrec.models import Charset, DocRecModel, build_model
from docrec.models.fpn import FusedFPN, LightFPN
from docrec.models.roi import (
    flatten_quads,
    jitter_quads,
    quad_grid,
    quad_size,
    roi_widths,
    sample_lines,
    sample_rois,
)
from tests.conftest import compose_cfg

KINDS = ["printed", "handwritten", "form_field"]


def default_model_cfg() -> dict:
    """configs/model/default.yaml as train.py composes it (kinds and seed interpolated from data and seed)."""
    return OmegaConf.to_container(compose_cfg().model, resolve=True)
TINY = {
    "backbone": {"name": "resnet18", "p_min": 0.8, "seed": 0},
    "fpn_channels": 64,
    "kinds": KINDS,
    "segmentation": {"hidden": 32},
    "recognition": {
        "d_model": 64, "nhead": 4, "encoder_layers": 1, "decoder_layers": 1, "dim_feedforward": 128,
        "dropout": 0.0, "roi_height": 8, "roi_max_width": 64, "max_len": 16, "quad_jitter": 0.0,
    },
    "label_smoothing": 0.0,
}
# Two tiny pages: (text, baseline origin, kind) per line; the first page's lines nearly touch.
PAGES = [
    [("hi 42", (8, 30), "printed"), ("cat", (8, 70), "handwritten"), ("Ok go", (120, 110), "form_field")],
    [("box 7", (20, 40), "printed"), ("zap", (140, 76), "handwritten")],
]


def render(spec: list, height: int = 128, width: int = 256) -> tuple[np.ndarray, list]:
    """A white page with each text drawn by cv2.putText; the line polygon is its padded text box."""
    img = np.full((height, width, 3), 255, np.uint8)
    lines = []
    for text, (x, y), kind in spec:
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.8, 2)
        cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2, cv2.LINE_AA)
        poly = np.array([[x - 3, y - th - 4], [x + tw + 3, y - th - 4],
                         [x + tw + 3, y + base + 2], [x - 3, y + base + 2]], np.float32)
        lines.append((poly, text, kind))
    return img, lines


def batch(charset: Charset) -> tuple[torch.Tensor, list[dict]]:
    images, targets = [], []
    for spec in PAGES:
        img, lines = render(spec)
        images.append(torch.from_numpy(img).permute(2, 0, 1))
        targets.append(build_targets(lines, img.shape[0], img.shape[1], KINDS, charset, max_len=16))
    return normalize(torch.stack(images)), targets


@pytest.fixture
def charset() -> Charset:
    return Charset.build([t for spec in PAGES for t, _, _ in spec])


@pytest.fixture
def tiny_model(charset) -> DocRecModel:
    torch.manual_seed(0)
    return build_model(TINY, charset)


# --- charset ---------------------------------------------------------------------------


def test_charset_encode_decode_roundtrip_and_specials():
    cs = Charset.build(["abc", "cab d"])
    assert (cs.pad_id, cs.bos_id, cs.eos_id, cs.unk_id) == (0, 1, 2, 3)
    assert len(cs) == 4 + 5 and cs.chars == [" ", "a", "b", "c", "d"]
    ids = cs.encode("bad a")
    assert ids[0] == cs.bos_id and ids[-1] == cs.eos_id and len(ids) == 7
    assert cs.decode(ids) == "bad a"
    assert cs.decode([cs.bos_id, *ids[1:3], cs.eos_id, *ids[3:]]) == "ba"  # stops at EOS
    assert cs.decode(cs.encode("axb")) == "a\ufffdb"
    assert cs.count_unknown("axyb") == 2


def test_charset_pairs_each_letter_with_its_other_case():
    cs = Charset.build(["aAbß7 é", "ÉS"])
    partner = cs.case_partners()
    assert len(partner) == len(cs)
    pairs = {cs.decode([i]): cs.decode([p]) for i, p in enumerate(partner) if i >= 4}
    assert pairs == {"a": "A", "A": "a", "é": "É", "É": "é", "b": "b", "ß": "ß", "7": "7", " ": " ", "S": "S"}
    assert partner[:4] == [0, 1, 2, 3]  # the special tokens have no case


def test_charset_is_nfc_and_survives_a_checkpoint():
    decomposed = "Cafe\u0301"  # e + combining acute
    cs = Charset.build([decomposed])
    assert "\u00e9" in cs.chars and "\u0301" not in cs.chars
    assert cs.encode(decomposed) == cs.encode("Caf\u00e9")
    assert cs.count_unknown("caf\u00e9") == 1  # lower-case c
    restored = Charset.from_dict(copy.deepcopy(cs.to_dict()))
    assert restored == cs and restored.encode("Caf\u00e9") == cs.encode("Caf\u00e9")


# --- RoI sampling and neck -------------------------------------------------------------


def _coordinate_map(height: int, width: int, stride: int) -> torch.Tensor:
    """A feature map whose two channels are the input-pixel x and y of each cell's centre."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([xs * stride + stride / 2, ys * stride + stride / 2]).float()[None]


def _sample(feats: torch.Tensor, quads: list[torch.Tensor], max_width: int, oversample: int = 1):
    """RoIs of image b's ``quads[b]`` (stride 4, 8 rows), padded to the widest, as the recognition head reads them."""
    flat, images = flatten_quads(quads, feats.device)
    return sample_lines(feats, flat, images, roi_widths(flat, 4, max_width), 4, 8, oversample)


@pytest.mark.parametrize("deg", [0.0, 15.0, -30.0])
def test_quad_sampler_reads_along_the_rotated_box(deg):
    feats = _coordinate_map(64, 64, 4)  # a 256 x 256 page
    a = np.deg2rad(deg)
    u, d = torch.tensor([np.cos(a), np.sin(a)]), torch.tensor([-np.sin(a), np.cos(a)])
    tl = torch.tensor([60.0, 90.0])
    quad = torch.stack([tl, tl + 120 * u, tl + 120 * u + 16 * d, tl + 16 * d]).float()
    rois, mask = _sample(feats, [quad[None]], max_width=64)
    width = int(roi_widths(quad[None], 4, 64)[0])
    assert width == 30 and rois.shape == (1, 2, 8, 30) and mask.all()  # one sample per 4-px feature column
    # A bilinear sample of a linear map is exact: the RoI holds the sampling points themselves.
    expected = quad_grid(quad[None], 8, torch.tensor([width]), width)[0].permute(2, 0, 1)
    torch.testing.assert_close(rois[0], expected, atol=1e-3, rtol=0)
    # Row 0 runs along the top edge, column 0 down the left edge, at half-cell offsets.
    step_u, step_v = 120 / width, 16 / 8
    torch.testing.assert_close(rois[0, :, 0, 0], (tl + u * step_u / 2 + d * step_v / 2).float(), atol=1e-3, rtol=0)


def test_quad_sampler_pads_short_lines_and_groups_by_image():
    feats = torch.cat([_coordinate_map(16, 16, 4), _coordinate_map(16, 16, 4) + 1000])
    long = torch.tensor([[[4.0, 4.0], [60.0, 4.0], [60.0, 12.0], [4.0, 12.0]]])
    short = torch.tensor([[[4.0, 20.0], [20.0, 20.0], [20.0, 28.0], [4.0, 28.0]]])
    rois, mask = _sample(feats, [long, short], max_width=32)
    assert rois.shape == (2, 2, 8, 14)  # 56 px / 4 px per column
    assert mask[0].all() and mask[1].sum() == 4
    assert rois[1, :, :, 4:].abs().max() == 0  # padding is zero and masked
    assert rois[1, 0, 0, 0] > 1000  # the second line was read from the second image


def test_lines_in_any_image_order_are_read_from_their_own_image_with_or_without_a_given_width():
    feats = torch.cat([_coordinate_map(16, 16, 4), _coordinate_map(16, 16, 4) + 1000])
    quads = torch.tensor([[[4.0, 4.0], [60.0, 4.0], [60.0, 12.0], [4.0, 12.0]],
                          [[4.0, 20.0], [20.0, 20.0], [20.0, 28.0], [4.0, 28.0]],
                          [[8.0, 36.0], [40.0, 36.0], [40.0, 44.0], [8.0, 44.0]]])
    images, widths = [0, 1, 0], roi_widths(quads, 4, 32)
    rois, mask = sample_lines(feats, quads, images, widths, 4, 8)
    assert [bool(rois[i, 0, 0, 0] > 1000) for i in range(3)] == [False, True, False]
    for i in range(3):  # each line as it reads alone
        alone, _ = sample_lines(feats, quads[i : i + 1], images[i : i + 1], widths[i : i + 1], 4, 8)
        torch.testing.assert_close(rois[i, :, :, : widths[i]], alone[0])
    given, given_mask = sample_lines(feats, quads, images, widths, 4, 8, width=int(widths.max()))
    assert torch.equal(given, rois) and torch.equal(given_mask, mask)


def test_lines_sampled_from_the_split_batch_read_and_backpropagate_as_from_the_batch():
    feats = torch.cat([_coordinate_map(16, 16, 4), _coordinate_map(16, 16, 4) + 1000]).requires_grad_()
    quads = torch.tensor([[[4.0, 4.0], [60.0, 4.0], [60.0, 12.0], [4.0, 12.0]],
                          [[4.0, 20.0], [20.0, 20.0], [20.0, 28.0], [4.0, 28.0]]])
    images, widths = [0, 1], roi_widths(quads, 4, 32)
    width = int(widths.max())
    weights = torch.randn(2, 2, 8, width)
    # The reference, independent of sample_lines' split: each line read alone from its own image's slice.
    ref = torch.cat([sample_rois(feats[b : b + 1], quads[i : i + 1], widths[i : i + 1], width, 4, 8)
                     for i, b in enumerate(images)])
    ref = ref * (torch.arange(width)[None] < widths[:, None])[:, None, None, :]
    (ref_grad,) = torch.autograd.grad((ref * weights).sum(), feats)
    rois, mask = sample_lines(feats, quads, images, widths, 4, 8)
    (grad,) = torch.autograd.grad((rois * weights).sum(), feats)
    per_image = feats.split(1)
    split_rois, split_mask = sample_lines(per_image, quads, images, widths, 4, 8)
    (split_grad,) = torch.autograd.grad((split_rois * weights).sum(), feats)
    torch.testing.assert_close(rois, ref)
    torch.testing.assert_close(grad, ref_grad)
    assert torch.equal(split_rois, rois) and torch.equal(split_mask, mask)
    torch.testing.assert_close(split_grad, grad)
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0  # each image gets its own line's gradient


def test_tall_lines_are_read_at_every_column_and_averaged_across_their_height():
    feats = _coordinate_map(64, 64, 4)
    # A tall handwritten line: 200 px long, 96 px high. Square cells gave 8 x 16 samples (one per
    # 12 px); now one column per 4 px, and each of the 8 rows is the mean of its 3 sub-rows.
    quad = torch.tensor([[[20.0, 40.0], [220.0, 40.0], [220.0, 136.0], [20.0, 136.0]]])
    rois, mask = _sample(feats, [quad], max_width=128, oversample=3)
    assert rois.shape == (1, 2, 8, 50) and mask.all()
    # The mean of a linear map over the sub-rows is its value at the row centre.
    centres_y = 40.0 + (torch.arange(8) + 0.5) * 12.0
    torch.testing.assert_close(rois[0, 1, :, 0], centres_y, atol=1e-3, rtol=0)
    torch.testing.assert_close(rois[0, 0, 0, :3], torch.tensor([22.0, 26.0, 30.0]), atol=1e-3, rtol=0)


def test_quad_growth_makes_boxes_looser_about_their_centre():
    quad = torch.tensor([[[10.0, 10.0], [110.0, 10.0], [110.0, 30.0], [10.0, 30.0]]])
    grown = jitter_quads(quad, 0.0, (0.1, 0.1))
    length, height = quad_size(grown)
    torch.testing.assert_close(height, torch.tensor([22.0]))
    torch.testing.assert_close(length, torch.tensor([105.0]))
    torch.testing.assert_close(grown.mean(dim=1), quad.mean(dim=1))


@pytest.mark.parametrize("deg", [0.0, 25.0])
def test_quad_shear_slants_the_writing_the_reader_samples(deg):
    a = np.deg2rad(deg)
    u, d = torch.tensor([np.cos(a), np.sin(a)]), torch.tensor([-np.sin(a), np.cos(a)])
    tl = torch.tensor([40.0, 60.0])
    quad = torch.stack([tl, tl + 120 * u, tl + 120 * u + 20 * d, tl + 20 * d]).float()[None].repeat(400, 1, 1)
    torch.manual_seed(0)
    sheared = jitter_quads(quad, 0.0, (0.0, 0.0), shear=0.3)
    move = sheared - quad
    along = move @ u.float()  # each corner's move along the line; none across it
    torch.testing.assert_close(move @ d.float(), torch.zeros(400, 4), atol=1e-4, rtol=0)
    # the top edge moves by +t * h / 2, the bottom by -t * h / 2, t in [-0.3, 0.3]: centre, length, height kept
    torch.testing.assert_close(along[:, 0], along[:, 1])
    torch.testing.assert_close(along[:, 2], -along[:, 0])
    torch.testing.assert_close(along[:, 3], -along[:, 0])
    t = along[:, 0] / 10.0
    assert t.abs().max() <= 0.3 + 1e-5 and t.min() < -0.2 and t.max() > 0.2
    torch.testing.assert_close(sheared.mean(dim=1), quad.mean(dim=1))
    assert jitter_quads(quad, 0.0, (0.0, 0.0), shear=0.0) is quad
    # What the reader samples: its column's top row lies t x (rows apart) further along the page than its
    # bottom row, so a stroke upright on the page reads slanted by atan(t) in the RoI.
    feats = _coordinate_map(64, 64, 4)
    i = int(t.abs().argmax())
    rois, _ = _sample(feats, [sheared[i : i + 1]], max_width=64)
    x_top, x_bottom = rois[0, :, 0, 5] @ u.float(), rois[0, :, -1, 5] @ u.float()
    rows_apart = 20.0 * 7 / 8  # the first and last of 8 rows' centres
    torch.testing.assert_close(x_top - x_bottom, t[i] * rows_apart, atol=1e-2, rtol=0)


def test_line_stretch_scales_each_lines_columns_in_training_only(charset, monkeypatch):
    quads = torch.tensor([[[0.0, 0.0], [200.0, 0.0], [200.0, 20.0], [0.0, 20.0]]]).repeat(300, 1, 1)
    torch.manual_seed(0)
    widths = roi_widths(quads, 4, 256, stretch=0.2)
    assert widths.min() >= 40 and widths.max() <= 60 and widths.min() < 43 and widths.max() > 57
    assert set(roi_widths(quads, 4, 256).tolist()) == {50}
    images, targets = batch(charset)
    model = build_model({**TINY, "recognition": {**TINY["recognition"], "line_stretch": 0.2, "quad_shear": 0.3}},
                        charset)
    seen = []
    real = model.rec_head.lines
    monkeypatch.setattr(model.rec_head, "lines", lambda fused, quads, stretch=0.0: seen.append(stretch)
                        or real(fused, quads, stretch))
    model.train()(images, targets)
    model.eval().recognize(images, [t["line_quads"] for t in targets])
    assert seen == [0.2, 0.0]  # the training step stretches, reading does not
    for bad in ({"line_stretch": 1.0}, {"quad_shear": -0.1}):
        with pytest.raises(ValueError, match="quad_shear must be"):
            build_model({**TINY, "recognition": {**TINY["recognition"], **bad}}, charset)


@pytest.mark.parametrize("neck_cls", [FusedFPN, LightFPN])
def test_fused_map_has_stride_four(neck_cls):
    neck = neck_cls({"c2": 64, "c3": 128, "c4": 256, "c5": 512}, channels=32)
    feats = {f"c{i}": torch.randn(1, c, 128 // 2**i, 96 // 2**i) for i, c in zip(range(2, 6), (64, 128, 256, 512))}
    assert neck(feats).shape == (1, 32, 32, 24)


def test_light_neck_costs_a_fifth_of_the_fpn_and_every_level_reaches_the_map():
    from torch.utils.flop_counter import FlopCounterMode

    chans = {"c2": 256, "c3": 512, "c4": 1024, "c5": 2048}  # ResNet-50
    feats = {k: torch.randn(1, c, 256 // 2**i, 256 // 2**i) for i, (k, c) in enumerate(chans.items())}
    flops = {}
    for cls in (FusedFPN, LightFPN):
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            cls(chans, 256)(feats)
        flops[cls] = fc.get_total_flops()
    assert flops[LightFPN] < 0.25 * flops[FusedFPN]
    # C5 (page context) changes the stride-4 map: a level's quarter of the channels is its own.
    neck = LightFPN(chans, 256).eval()
    with torch.no_grad():
        base = neck(feats)
        moved = neck({**feats, "c5": feats["c5"] + 1.0})
    assert not torch.allclose(base[:, :64], moved[:, :64])


def test_neck_option_and_legacy_checkpoints(charset):
    cfg = default_model_cfg()
    cfg["backbone"]["name"] = "resnet18"
    assert cfg["neck"] == "light" and isinstance(build_model(cfg, charset).neck, LightFPN)
    # A model config saved before the option has no ``neck``: it was the FPN.
    del cfg["neck"]
    assert isinstance(build_model(cfg, charset).neck, FusedFPN)
    with pytest.raises(ValueError, match="model.neck"):
        build_model({**cfg, "neck": "bifpn"}, charset)


# --- building, losses, predictions -----------------------------------------------------


def test_default_config_builds_the_resnet50_model(charset):
    cfg = default_model_cfg()
    model = build_model(cfg, charset)
    backbone = sum(p.numel() for p in model.backbone.parameters())
    total = sum(p.numel() for p in model.parameters())
    print(f"default model: {total:,} parameters, backbone {backbone:,}")
    assert backbone == 23_508_032  # torchvision ResNet-50 without its classifier
    assert [r["index"] for r in model.backbone.schedule() if r["always_run"]] == [0, 3, 7, 13]
    assert model.backbone.p_min == 0.8 and model.kinds == ["printed", "handwritten"]
    assert model.region_kinds == ["form_field"] and model.seg_head.out.out_channels == 3 + 1 + 1
    assert "backbone.layer1.0.conv1.weight" in model.state_dict()
    assert not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.backbone.modules())
    assert not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.rec_head.encoder.modules())


def test_unknown_config_keys_are_refused(charset):
    with pytest.raises(TypeError):
        build_model({**TINY, "recognition": {**TINY["recognition"], "d_modle": 32}}, charset)


def test_training_forward_returns_weighted_losses(charset):
    images, targets = batch(charset)
    torch.manual_seed(0)
    model = build_model({**TINY, "loss_weights": {"rec": 0.5}}, charset).train()
    torch.manual_seed(0)
    ref = build_model(TINY, charset).train()
    model.set_step(3)
    ref.set_step(3)
    losses, ref_losses = model(images, targets), ref(images, targets)
    assert set(losses) == {"seg", "core", "rec", "ctc"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    torch.testing.assert_close(losses["rec"], 0.5 * ref_losses["rec"])
    torch.testing.assert_close(losses["ctc"], ref_losses["ctc"])
    torch.testing.assert_close(losses["seg"], ref_losses["seg"])
    sum(losses.values()).backward()
    assert model.rec_head.classifier.weight.grad is not None
    assert model.rec_head.ctc_head.weight.grad is not None
    assert model.backbone.last_executed == [i for i, r in enumerate(model.backbone.sample_decisions(3)) if r]


def test_a_batch_without_readable_lines_still_reaches_every_head_parameter(tiny_model, charset):
    images, targets = batch(charset)
    unreadable = [{**t, "line_quads": t["line_quads"][:0], "line_tokens": t["line_tokens"][:0]} for t in targets]
    losses = tiny_model.train()(images, unreadable)
    assert losses["rec"] == 0 and losses["ctc"] == 0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in tiny_model.rec_head.parameters())


def test_training_caps_the_lines_per_batch(charset):
    images, targets = batch(charset)
    model = build_model({**TINY, "recognition": {**TINY["recognition"], "max_lines_per_batch": 2}}, charset)
    quads = [t["line_quads"] for t in targets]
    ids = [torch.arange(len(q)) + 10 * b for b, q in enumerate(quads)]  # which line is which
    capped, tokens, kept = model._cap_lines(model.max_lines_per_batch, quads,
                                            [t["line_tokens"] for t in targets], ids)
    assert sum(q.shape[0] for q in capped) == 2 and sum(t.shape[0] for t in tokens) == 2
    for b, (q, t, i) in enumerate(zip(capped, tokens, kept)):  # the same lines kept in every list
        torch.testing.assert_close(q, quads[b][i - 10 * b])
        torch.testing.assert_close(t, targets[b]["line_tokens"][i - 10 * b])
    losses = model.train()(images, targets)
    assert torch.isfinite(losses["rec"])


def test_a_zero_weight_reader_is_not_computed_and_must_not_be_the_decoder(charset):
    images, targets = batch(charset)
    rec = {**TINY["recognition"], "decoder": "ctc"}
    model = build_model({**TINY, "recognition": rec, "loss_weights": {"rec": 0.0}}, charset).train()
    losses = model(images, targets)
    assert "rec" not in losses and losses["ctc"] > 0
    sum(losses.values()).backward()
    assert model.rec_head.classifier.weight.grad is None  # the attention decoder did not run
    assert model.rec_head.ctc_head.weight.grad is not None
    with pytest.raises(ValueError, match="loss_weights.rec=0"):
        build_model({**TINY, "loss_weights": {"rec": 0.0}}, charset)  # decoder: attention
    with pytest.raises(ValueError, match="both 0"):
        build_model({**TINY, "recognition": rec, "loss_weights": {"rec": 0.0, "ctc": 0.0}}, charset)


def test_reads_per_line_reads_each_line_k_times_with_its_own_box_noise(charset, monkeypatch):
    images, targets = batch(charset)
    n = sum(t["line_quads"].shape[0] for t in targets)
    rec = {**TINY["recognition"], "reads_per_line": 3, "quad_jitter": 0.05}
    model = build_model({**TINY, "recognition": rec}, charset).train()
    seen = {}

    def spy(fused, quads, tokens, label_smoothing=0.0, branches=("rec", "ctc"), images=None, case_free=None,
            stretch=0.0):
        seen["quads"], seen["tokens"], seen["case_free"] = quads, tokens, case_free
        return {b: fused.sum() * 0.0 for b in branches}

    monkeypatch.setattr(model.rec_head, "loss", spy)
    model(images, targets)
    quads = torch.cat(seen["quads"])
    assert quads.shape[0] == 3 * n and seen["tokens"].shape[0] == 3 * n
    first = seen["quads"][0]
    m = targets[0]["line_quads"].shape[0]
    assert not torch.allclose(first[:m], first[m:2 * m])  # the same lines, different noise
    torch.testing.assert_close(seen["tokens"][:m], seen["tokens"][m:2 * m])
    assert seen["case_free"] is None  # no page ignores case: the losses as written
    targets[1]["line_fold_case"][:] = True  # the second page's labels ignore case
    model(images, targets)
    fold = seen["case_free"][0]  # each read of each line keeps its page's flag
    assert fold.tolist() == [False] * 3 * m + [True] * 3 * (n - m)
    assert seen["case_free"][1].tolist() == charset.case_partners()


def _upper(targets: list[dict], charset: Charset, fold: bool) -> list[dict]:
    """The pages' targets with every label in capitals, flagged as ignoring case or not."""
    out = []
    for t in targets:
        rows = [charset.encode(charset.decode(r).upper()) for r in t["line_tokens"]]
        tokens = torch.full((len(rows), max(map(len, rows))), charset.pad_id)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = torch.tensor(r)
        out.append({**t, "line_tokens": tokens, "line_fold_case": torch.full((len(rows),), fold)})
    return out


def test_a_loss_that_ignores_case_scores_either_case_of_a_label_alike():
    charset = Charset.build(["hi 42 cat Ok go box 7 zap".upper(), "hi 42 cat Ok go box 7 zap"])
    torch.manual_seed(0)
    # No block dropped: the same network for every call.
    model = build_model({**TINY, "backbone": {**TINY["backbone"], "p_min": 1.0}, "label_smoothing": 0.1},
                        charset).train()
    images, targets = batch(charset)

    def losses(t):
        torch.manual_seed(0)
        return model(images, t)

    written = losses(targets)
    unflagged = {**targets[0], "line_fold_case": torch.zeros(len(targets[0]["line_tokens"]), dtype=torch.bool)}
    folded_lower = losses([{**t, "line_fold_case": torch.ones(len(t["line_tokens"]), dtype=torch.bool)}
                           for t in targets])
    upper_written, upper_folded = losses(_upper(targets, charset, False)), losses(_upper(targets, charset, True))
    # No line flagged: the losses as written (F.cross_entropy's smoothed loss and CTC), exactly.
    assert {k: v.item() for k, v in losses([unflagged, targets[1]]).items()} == {k: v.item() for k, v in written.items()}
    # Flagged labels without a cased letter: the merged path's smoothed cross-entropy is F.cross_entropy's.
    digits = [{**t, "line_tokens": torch.tensor([charset.encode("42 7")] * len(t["line_tokens"]))} for t in targets]
    flagged = [{**t, "line_fold_case": torch.ones(len(t["line_tokens"]), dtype=torch.bool)} for t in digits]
    for key, value in losses(digits).items():
        torch.testing.assert_close(losses(flagged)[key], value)
    # A flagged label in small letters takes in its capitals' probability too (both directions are paired).
    assert folded_lower["rec"] < written["rec"] and folded_lower["ctc"] < written["ctc"]
    # CTC ignoring case: a label in capitals costs what the same label in small letters does.
    torch.testing.assert_close(upper_folded["ctc"], folded_lower["ctc"])
    # Either loss of a label in capitals falls when case is ignored (the untrained reader leans to neither
    # case); the small letters' own probability is merged in, never taken away.
    assert upper_folded["ctc"] < upper_written["ctc"] and upper_folded["rec"] < upper_written["rec"]
    sum(upper_folded.values()).backward()
    assert model.rec_head.classifier.weight.grad is not None and model.rec_head.ctc_head.weight.grad is not None


def test_the_case_flags_stay_on_the_host_when_the_batch_moves_to_the_device(charset):
    _, targets = batch(charset)
    _, moved = to_model_input(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), targets, torch.device("meta"))
    assert moved[0]["line_tokens"].device.type == "meta"  # as a GPU would have them
    assert moved[0]["line_fold_case"].device.type == "cpu"  # tested without waiting for the device


def test_pages_whose_labels_ignore_case_teach_no_case():
    """The same drawn lines labelled in small letters on one page and in capitals on the other: read
    as written on both, the reader must learn each glyph both ways; with the capitals' page flagged as
    ignoring case it learns them once, as drawn, and reads the flagged page in small letters."""
    spec = [("hi 42", (8, 30), "printed"), ("cat", (8, 70), "handwritten")]
    img, lines = render(spec)
    images = normalize(torch.from_numpy(np.stack([img, img])).permute(0, 3, 1, 2))
    charset = Charset.build(["hi 42 cat".upper(), "hi 42 cat"])
    as_drawn = build_targets(lines, img.shape[0], img.shape[1], KINDS, charset, max_len=16)
    capitals = build_targets([(p, t.upper(), k) for p, t, k in lines], img.shape[0], img.shape[1], KINDS,
                             charset, max_len=16, fold_case=True)
    assert capitals["line_fold_case"].all() and not as_drawn["line_fold_case"].any()
    torch.manual_seed(0)
    model = build_model(TINY, charset).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for step in range(60):
        model.set_step(step)
        loss = sum(model(images, [as_drawn, capitals]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    reads = model.recognize(images, [as_drawn["line_quads"], capitals["line_quads"]])
    assert [[text for text, _ in page] for page in reads] == [["hi 42", "cat"]] * 2


def test_two_samples_per_feature_column_double_the_tokens(charset):
    quad = torch.tensor([[[10.0, 10.0], [90.0, 10.0], [90.0, 22.0], [10.0, 22.0]]])
    assert int(roi_widths(quad, 4, 64)[0]) == 20
    assert int(roi_widths(quad, 4, 64, per_column=2)[0]) == 40
    rec = {**TINY["recognition"], "roi_column_samples": 2}
    model = build_model({**TINY, "recognition": rec}, charset).eval()
    fused = torch.randn(1, model.neck.out_channels, 32, 32)
    memory, padding = model.rec_head.encode(fused, [quad])
    assert memory.shape[1] == 40 and int((~padding).sum()) == 40


def test_eval_forward_returns_predictions_at_input_resolution(tiny_model, charset):
    # Force one detection on an untrained model: every pixel is "core".
    tiny_model.postprocess = {"core_threshold": 0.0, "min_score": 0.0}
    images = torch.randn(2, 3, 100, 150)  # not a multiple of 32: padded inside
    with torch.no_grad():
        out = tiny_model.eval()(images)
    assert len(out) == 2
    for page in out:
        assert page["class_map"].dtype == torch.int64 and page["class_map"].shape == (100, 150)
        assert len(page["lines"]) == 1
        line = page["lines"][0]
        assert set(line) >= {"polygon", "kind", "text", "confidence"}
        assert all(len(p) == 2 and isinstance(p[0], float) for p in line["polygon"])
        assert line["kind"] in KINDS and isinstance(line["text"], str)
        assert 0.0 <= line["confidence"] <= 1.0


@pytest.mark.parametrize("pixel_stem", [0, 8])
def test_channels_last_and_bf16_autocast(charset, pixel_stem):
    images, targets = batch(charset)
    torch.manual_seed(0)
    model = build_model({**TINY, "recognition": {**TINY["recognition"], "pixel_stem": pixel_stem}}, charset)
    model = model.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
    model.postprocess = {"core_threshold": 0.0, "min_score": 0.0}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.train()(images, targets)
        assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
        sum(losses.values()).backward()
        with torch.no_grad():
            model.eval()
            out = model(images)
            reads = model.recognize(images, [t["line_quads"] for t in targets])
    assert out[0]["class_map"].shape == images.shape[-2:] and len(out[0]["lines"]) == 1
    assert [len(r) for r in reads] == [3, 2] and all(isinstance(t, str) for r in reads for t, _ in r)


@pytest.mark.slow
def test_compiled_regions_match_eager(tiny_model, charset):
    images, targets = batch(charset)
    compiled = copy.deepcopy(tiny_model)
    compiled.compile_regions(backend="eager")
    assert set(compiled.state_dict()) == set(tiny_model.state_dict())
    for m in (tiny_model, compiled):
        m.train().set_step(1)
    a, b = tiny_model(images, targets), compiled(images, targets)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4)
    torch._dynamo.reset()


@pytest.mark.slow
def test_overfits_two_tiny_pages_and_reads_them_back(charset):
    torch.manual_seed(0)
    model = build_model(TINY, charset).train()
    images, targets = batch(charset)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    history = []
    for step in range(80):
        model.set_step(step)
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert np.mean(history[-5:]) < 0.2 * history[0], history[::10]

    model.eval()
    reads = model.recognize(images, [t["line_quads"] for t in targets])
    assert [[text for text, _ in page] for page in reads] == [[t for t, _, _ in spec] for spec in PAGES]
    assert min(conf for page in reads for _, conf in page) > 0.5
    # The CTC head reads them too, in one parallel pass (it converges more slowly than the decoder here).
    with torch.no_grad():
        ctc_reads = model._read(model.fused_map(images), [t["line_quads"] for t in targets], "ctc")
    pairs = [(text, t) for page, spec in zip(ctc_reads, PAGES) for (text, _), (t, _, _) in zip(page, spec)]
    assert corpus_cer(pairs) < 0.3, pairs
    # End to end: lines found from the maps, read, and given their kind.
    with torch.no_grad():
        out = model(images)
    for page, spec in zip(out, PAGES):
        assert sorted((ln["text"], ln["kind"]) for ln in page["lines"]) == sorted((t, k) for t, _, k in spec)


def test_ctc_best_path_merges_repeats_and_drops_blanks(tiny_model):
    head = tiny_model.rec_head
    blank, a, b = head.pad_id, 5, 6
    # Columns: a a blank a b b <padding>; best path "a a b" -> "aab" (the blank separates the two a's).
    path = [a, a, blank, a, b, b, blank]
    logits = torch.full((1, 7, head.ctc_head.out_features), -10.0)
    for t, s in enumerate(path):
        logits[0, t, s] = 10.0
    padding = torch.tensor([[False] * 6 + [True]])
    original = head.ctc_log_probs  # read the hand-made scores as they are
    head.ctc_log_probs = lambda memory: memory.log_softmax(-1)
    try:
        rows, conf = head.ctc_greedy(logits, padding)
    finally:
        head.ctc_log_probs = original
    assert rows == [[a, a, b]]
    assert 0.99 < float(conf[0]) <= 1.0


def test_blank_penalty_writes_the_guess_where_the_blank_wins_narrowly(tiny_model, monkeypatch):
    """A column whose blank beats "b" by less than the penalty reads "b"; one it beats by more stays blank.
    The confidence is the unpenalised probability of the path read."""
    head = tiny_model.rec_head
    blank, a, b = head.pad_id, 5, 6
    logits = torch.full((1, 4, head.ctc_head.out_features), -10.0)
    logits[0, 0, a] = 10.0
    logits[0, 1, blank], logits[0, 1, b] = 3.0, 2.5     # blank ahead by 0.5 log-probability
    logits[0, 2, blank], logits[0, 2, b] = 3.0, 0.0     # blank ahead by 3.0
    logits[0, 3, a] = 10.0
    padding = torch.zeros(1, 4, dtype=torch.bool)
    monkeypatch.setattr(head, "ctc_log_probs", lambda memory: memory.log_softmax(-1))
    logp = logits.log_softmax(-1)[0]
    for penalty, path, expected in [(0.0, [a, blank, blank, a], [a, a]), (1.0, [a, b, blank, a], [a, b, a]),
                                    (4.0, [a, b, b, a], [a, b, a])]:
        monkeypatch.setattr(head, "blank_penalty", penalty)
        rows, conf = head.ctc_greedy(logits, padding)
        assert rows == [expected], penalty
        unpenalised = logp[torch.arange(4), torch.tensor(path)].mean().exp()
        assert float(conf[0]) == pytest.approx(float(unpenalised), rel=1e-5)


def test_blank_penalty_is_checked_and_reaches_the_head_from_the_config():
    from docrec.models.recognition import RecognitionHead
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="blank_penalty"):
            RecognitionHead(32, 40, pad_id=0, bos_id=1, eos_id=2, d_model=64, nhead=4, blank_penalty=bad)
    cfg = compose_cfg(["model.recognition.blank_penalty=1.5"])
    assert build_model(cfg.model, Charset(list("ab"))).rec_head.blank_penalty == 1.5
    assert compose_cfg([]).model.recognition.blank_penalty == 0.5
    with pytest.raises(ConfigError, match="model.recognition.blank_penalty must be >= 0"):
        check_config(compose_cfg(["model.recognition.blank_penalty=-1"]))
    with pytest.raises(ConfigError, match="model.recognition.blank_penalty must be a number, got None"):
        check_config(compose_cfg(["model.recognition.blank_penalty=null"]))
    for bad in ("inf", "nan"):
        with pytest.raises(ConfigError, match="model.recognition.blank_penalty must be"):
            check_config(compose_cfg([f"model.recognition.blank_penalty={bad}"]))


def _ctc_text_probabilities(log_probs: torch.Tensor, blank: int) -> dict[tuple[int, ...], float]:
    """Every label sequence's CTC probability over frames ``log_probs`` [T, V], by enumerating all paths."""
    import itertools
    import math
    out: dict[tuple[int, ...], float] = {}
    t, v = log_probs.shape
    for path in itertools.product(range(v), repeat=t):
        text = tuple(s for i, s in enumerate(path) if s != blank and (i == 0 or s != path[i - 1]))
        out[text] = out.get(text, 0.0) + math.exp(sum(float(log_probs[i, s]) for i, s in enumerate(path)))
    return out


def test_ctc_prefix_beam_sums_every_alignment_of_a_text():
    """A beam wide enough keeps every text with its exact CTC probability (all paths summed), best first;
    the text it ranks first can differ from the best single path's."""
    import math

    from docrec.decoding import ctc_prefix_beam
    torch.manual_seed(0)
    log_probs = torch.randn(5, 4).mul(1.5).log_softmax(-1)
    exact = _ctc_text_probabilities(log_probs, blank=0)
    found = ctc_prefix_beam(log_probs.numpy(), 0, beam=1000, min_log_prob=-math.inf)
    assert {text for text, _ in found} == set(exact)
    for text, logp in found:
        assert logp == pytest.approx(math.log(exact[text]), abs=1e-9)
    assert [lp for _, lp in found] == sorted((lp for _, lp in found), reverse=True)
    # A repeated symbol counts twice only across a blank: "a a" -> "a", "a _ a" -> "aa".
    sure = torch.full((3, 3), -30.0)
    for i, s in enumerate([1, 1, 2]):
        sure[i, s] = 0.0
    assert ctc_prefix_beam(sure.numpy(), 0, beam=4)[0][0] == (1, 2)
    sure = torch.full((3, 3), -30.0)
    for i, s in enumerate([1, 0, 1]):
        sure[i, s] = 0.0
    assert ctc_prefix_beam(sure.numpy(), 0, beam=4)[0][0] == (1, 1)
    # Frames: "a" sure, then twice a blank at 0.4 against "b" and "c" at 0.3 each: a beam of 8 ranks first
    # the text whose paths sum highest.
    split = torch.log(torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.4, 0.0, 0.3, 0.3], [0.4, 0.0, 0.3, 0.3]]) + 1e-12)
    exact = _ctc_text_probabilities(split, blank=0)
    assert ctc_prefix_beam(split.numpy(), 0, beam=8)[0][0] == max(exact, key=exact.get)


def test_ctc_beam_search_reads_a_text_at_least_as_likely_as_the_best_path(tiny_model, monkeypatch):
    """On the same frames, the text the beam reads has a CTC probability >= the best path's text's, and the
    confidence is that probability per frame (a narrower beam keeps fewer of a text's alignments)."""
    import torch.nn.functional as F
    head = tiny_model.rec_head
    monkeypatch.setattr(head, "ctc_log_probs", lambda memory: memory.log_softmax(-1))
    monkeypatch.setattr(head, "blank_penalty", 0.0)
    torch.manual_seed(1)
    v = head.ctc_head.out_features
    # Each frame torn between the blank and two of four letters, as an unsure reader's frames are.
    logits = torch.full((3, 12, v), -20.0)
    letters = torch.tensor([5, 6, 7, 8])
    for i in range(3):
        for t in range(12):
            pick = torch.cat([torch.tensor([head.pad_id]), letters[torch.randperm(4)[:2]]])
            logits[i, t, pick] = torch.randn(3)
    padding = torch.zeros(3, 12, dtype=torch.bool)
    padding[1, 9:] = True
    greedy, _ = head.ctc_greedy(logits, padding)
    monkeypatch.setattr(head, "ctc_beam", 4096)  # wide enough to keep every prefix: the search is exact
    beam, conf = head.ctc_beam_search(logits, padding)
    log_probs = logits.log_softmax(-1)
    frames = (~padding).sum(1)

    def text_logp(i: int, text: list[int]) -> float:
        if not text:
            return float(log_probs[i, : frames[i], head.pad_id].sum())
        return -float(F.ctc_loss(log_probs[i, : frames[i], None], torch.tensor([text]), frames[i : i + 1],
                                 torch.tensor([len(text)]), blank=head.pad_id, reduction="sum"))

    for i in range(3):
        assert text_logp(i, beam[i]) >= text_logp(i, greedy[i]) - 1e-4
        assert float(conf[i]) == pytest.approx(math.exp(text_logp(i, beam[i]) / int(frames[i])), rel=1e-4)
    assert any(b != g for b, g in zip(beam, greedy))  # here the most likely text is not the best path's


def test_rescore_weighs_the_attention_decoder_over_the_beams_candidates(tiny_model, monkeypatch):
    """rescore=0 takes the beam's most likely CTC text; rescore=1 the candidate the attention decoder
    scores highest; the decoder scores each candidate token by token, its EOS included."""
    head = tiny_model.rec_head.eval()
    torch.manual_seed(2)
    memory = torch.randn(2, 10, head.classifier.in_features)
    padding = torch.zeros(2, 10, dtype=torch.bool)
    padding[1, 7:] = True
    # The decoder's score of a text = its log-probability read one token at a time, EOS last, with PAD
    # and BOS never read (as greedy decoding reads).
    texts = [[5, 6, 5, 7], []]
    scored = head.sequence_log_probs(memory, padding, [0, 1], texts)
    banned = torch.zeros(head.classifier.out_features)
    banned[[head.pad_id, head.bos_id]] = float("-inf")
    for i, text in enumerate(texts):
        tokens = [head.bos_id, *text, head.eos_id]
        expected = 0.0
        for t in range(1, len(tokens)):
            prefix = torch.tensor([tokens[:t]])
            logits = head.decode(memory[i : i + 1], padding[i : i + 1], prefix)[0, -1] + banned
            expected += float(logits.detach().log_softmax(-1)[tokens[t]])
        assert float(scored[i]) == pytest.approx(expected, abs=1e-4)
    from docrec.models import recognition
    monkeypatch.setattr(recognition, "RESCORE_CHUNK", 1)  # candidates scored in several passes: the same scores
    torch.testing.assert_close(head.sequence_log_probs(memory, padding, [0, 1], texts), scored)
    # Which candidate wins: the decoder's scores made to favour each line's last candidate.
    monkeypatch.setattr(head, "ctc_log_probs", lambda m: m[..., : head.ctc_head.out_features].log_softmax(-1))
    wide = torch.randn(2, 10, head.classifier.in_features)
    monkeypatch.setattr(head, "ctc_beam", 4)
    from docrec.decoding import ctc_prefix_beam
    lp = head.mean_ctc_log_probs(wide)
    if head.blank_penalty:
        lp = lp.clone()
        lp[..., head.pad_id] -= head.blank_penalty
    frames = (~padding).sum(1).tolist()
    nbest = [ctc_prefix_beam(lp[i, : frames[i]].numpy(), head.pad_id, 4) for i in range(2)]

    def favour_last(memory, pad, owner, cands):
        out, seen = [], {}
        for o in owner:
            seen[o] = seen.get(o, 0) + 1
            out.append(100.0 * seen[o])
        return torch.tensor(out)

    monkeypatch.setattr(head, "sequence_log_probs", favour_last)
    monkeypatch.setattr(head, "rescore", 0.0)
    assert head.ctc_beam_search(wide, padding)[0] == [list(c[0][0]) for c in nbest]
    monkeypatch.setattr(head, "rescore", 1.0)
    assert head.ctc_beam_search(wide, padding)[0] == [list(c[-1][0]) for c in nbest]


def test_ctc_beam_and_rescore_are_checked_and_reach_the_head(tiny_model):
    from docrec.models.recognition import RecognitionHead
    for kwargs, match in [({"ctc_beam": 0}, "ctc_beam must be an integer >= 1"),
                          ({"ctc_beam": 2.5}, "ctc_beam must be an integer"),
                          ({"ctc_beam": 4, "rescore": 1.5}, r"rescore must be in \[0, 1\]"),
                          ({"rescore": 0.5}, "needs ctc_beam >= 2")]:
        with pytest.raises(ValueError, match=match):
            RecognitionHead(32, 40, pad_id=0, bos_id=1, eos_id=2, d_model=64, nhead=4, **kwargs)
    cfg = compose_cfg(["model.recognition.ctc_beam=8", "model.recognition.rescore=0.5"])
    head = build_model(cfg.model, Charset(list("ab"))).rec_head
    assert (head.ctc_beam, head.rescore) == (8, 0.5)
    assert (compose_cfg([]).model.recognition.ctc_beam, compose_cfg([]).model.recognition.rescore) == (8, 0.3)
    old = RecognitionHead(32, 40, pad_id=0, bos_id=1, eos_id=2, d_model=64, nhead=4)  # a config without the keys
    assert (old.ctc_beam, old.rescore) == (1, 0.0)
    for over, match in [(["model.recognition.ctc_beam=0"], "model.recognition.ctc_beam must be >= 1"),
                        (["model.recognition.rescore=2"], "model.recognition.rescore must be <= 1"),
                        (["model.recognition.ctc_beam=1", "model.recognition.rescore=0.3"],
                         "needs model.recognition.ctc_beam >= 2")]:
        with pytest.raises(ConfigError, match=match):
            check_config(compose_cfg(over))
    cfg = compose_cfg(["model.recognition.ctc_beam=4", "model.recognition.rescore=0.5", "model.loss_weights.rec=0",
                       "model.recognition.decoder=ctc"])
    # without a trained attention decoder there is nothing to rescore with: the beam's CTC text is read
    assert build_model(cfg.model, Charset(list("ab"))).rec_head.rescore == 0.0


def test_centre_read_is_the_box_as_found():
    """The read the attention decoder rescores from: the shift nearest 0, wherever it stands in the list."""
    from docrec.geometry import centre_read
    assert centre_read((-0.1, 0.0, 0.1)) == 1
    assert centre_read((0.0,)) == 0
    assert centre_read((0.2, -0.05, 0.1)) == 1


def test_shift_across_moves_boxes_by_their_height_in_numpy_and_torch():
    from docrec.geometry import shift_across
    # A level box 10 px tall and a box tilted 90 degrees (its "down" is -x): each moves along its own across.
    quads = np.array([[[0, 0], [40, 0], [40, 10], [0, 10]], [[20, 0], [20, 30], [0, 30], [0, 0]]], np.float32)
    moved = shift_across(quads, 0.1)
    assert moved.dtype == np.float32
    np.testing.assert_allclose(moved[0], quads[0] + [0, 1.0])
    np.testing.assert_allclose(moved[1], quads[1] + [-2.0, 0])
    np.testing.assert_allclose(shift_across(torch.from_numpy(quads), -0.25).numpy(), shift_across(quads, -0.25))
    np.testing.assert_array_equal(shift_across(quads, 0.0), quads)


def test_read_shifts_average_the_reads_of_moved_boxes(small_head, monkeypatch):
    """The CTC reader reads each box at every shift and takes the best path of the mean probabilities;
    [0.0] reads it once, as found; the attention decoder reads it once whatever the shifts."""
    from docrec.geometry import shift_across
    head = small_head
    torch.manual_seed(3)
    fused = torch.randn(2, 32, 16, 24)
    quads = [torch.tensor([[[4.0, 10.0], [60.0, 12.0], [60.0, 26.0], [4.0, 24.0]]]),
             torch.tensor([[[8.0, 30.0], [90.0, 30.0], [90.0, 44.0], [8.0, 44.0]],
                           [[8.0, 4.0], [40.0, 4.0], [40.0, 16.0], [8.0, 16.0]]])]
    assert head.read_shifts == (0.0,)  # a head built without the option (checkpoints before it)
    once = head.read(fused, quads, "ctc")
    # Each shifted read is the read of the moved boxes; the averaged read, the best path of their mean.
    logps, paddings = [], []
    for s in (-0.2, 0.0, 0.2):
        moved = [shift_across(q, s) for q in quads]
        flat, owner, widths = head.lines(fused, moved)
        memory, padding = head.encode_lines(fused, flat, owner, widths)
        logps.append(head.ctc_log_probs(memory))
        paddings.append(padding)
    assert not torch.allclose(logps[0], logps[1])  # the moved boxes read other features
    mean = torch.stack(logps).exp().mean(0).log()
    monkeypatch.setattr(head, "read_shifts", (-0.2, 0.0, 0.2))
    ids, conf = head.read(fused, quads, "ctc")
    monkeypatch.setattr(head, "ctc_log_probs", lambda memory: memory)  # read the mean as it is
    ref_ids, ref_conf = head.ctc_greedy(mean, paddings[0])
    assert ids == ref_ids
    torch.testing.assert_close(conf, ref_conf, atol=1e-5, rtol=0)
    monkeypatch.undo()
    assert head.read(fused, quads, "ctc")[0] == once[0]
    monkeypatch.setattr(head, "read_shifts", (0.0, 0.0))  # the same read twice: its own mean
    assert head.read(fused, quads, "ctc")[0] == once[0]
    attention = head.read(fused, quads, "attention", max_len=6)
    monkeypatch.setattr(head, "read_shifts", (-0.2, 0.2))
    assert head.read(fused, quads, "attention", max_len=6)[0] == attention[0]


def test_read_shifts_are_checked_and_reach_the_head_from_the_config():
    from docrec.models.recognition import RecognitionHead
    for bad, msg in (([], "at least one"), ([0.6], "within"), (["a"], "within"), ([float("nan")], "within"),
                     ([True], "within"), (0.1, "a list"), ("0.1", "a list")):
        with pytest.raises(ConfigError, match=msg):
            RecognitionHead(32, 40, pad_id=0, bos_id=1, eos_id=2, d_model=64, nhead=4, read_shifts=bad)
    cfg = compose_cfg(["model.recognition.read_shifts=[-0.2,0,0.2]"])
    assert build_model(cfg.model, Charset(list("ab"))).rec_head.read_shifts == (-0.2, 0.0, 0.2)
    assert tuple(compose_cfg([]).model.recognition.read_shifts) == (-0.1, 0.0, 0.1)
    with pytest.raises(ConfigError, match=r"model.recognition.read_shifts must be finite numbers within \+-0.5"):
        check_config(compose_cfg(["model.recognition.read_shifts=[0,0.7]"]))
    with pytest.raises(ConfigError, match="model.recognition.read_shifts must be a list"):
        check_config(compose_cfg(["model.recognition.read_shifts=0.1"]))


def _frames_head(frames: int):
    from docrec.models.recognition import RecognitionHead
    torch.manual_seed(0)
    return RecognitionHead(32, 40, pad_id=0, bos_id=1, eos_id=2, d_model=64, nhead=4, dim_feedforward=128,
                           decoder_layers=1, roi_max_width=64, max_len=40, ctc_frames=frames)


def test_ctc_frames_give_each_column_its_own_frames_and_read_more_characters_than_columns():
    head = _frames_head(2)
    memory = torch.randn(2, 5, 64)
    logp = head.ctc_log_probs(memory)
    assert logp.shape == (2, 10, 40)
    changed = memory.clone()
    changed[0, 3] += 1.0  # column 3 feeds frames 6 and 7 only
    diff = (head.ctc_log_probs(changed) - logp).abs().amax(-1)
    assert diff[0, 6] > 0 and diff[0, 7] > 0 and diff[0, :6].max() == 0 and diff[0, 8:].max() == 0
    blank, a, b, c = head.pad_id, 5, 6, 7
    # Two columns read "aab" (a blank between the a's): one frame per column could not hold it. The
    # padded third column's frames say "c", which must not be read.
    scores = torch.full((1, 6, 40), -10.0)
    for t, sym in enumerate([a, blank, a, b, c, c]):
        scores[0, t, sym] = 10.0
    head.ctc_log_probs = lambda memory: scores.log_softmax(-1)
    rows, _ = head.ctc_greedy(torch.zeros(1, 3, 64), torch.tensor([[False, False, True]]))
    assert rows == [[a, a, b]]


def test_ctc_frames_learn_texts_longer_than_the_columns_and_one_frame_keeps_the_old_weights():
    fused = torch.randn(1, 32, 8, 16)
    quads = [torch.tensor([[[4.0, 8.0], [20.0, 8.0], [20.0, 24.0], [4.0, 24.0]]])]  # 16 px: 4 columns
    tokens = torch.tensor([[1, 5, 5, 6, 6, 5, 2]])  # "aabba": 5 characters, 7 frames with the blanks
    one, two = _frames_head(1), _frames_head(2)
    assert float(one.loss(fused, quads, tokens, branches=("ctc",))["ctc"]) == 0.0  # impossible: zero_infinity
    loss = two.loss(fused, quads, tokens, branches=("ctc",))["ctc"]
    loss.backward()
    assert float(loss) > 0 and two.ctc_upsample.weight.grad.abs().sum() > 0
    assert one.ctc_upsample is None and not any("ctc_upsample" in k for k in one.state_dict())


# --- cached decoding --------------------------------------------------------------------


def _bench_decode():
    from tests.conftest import load_script
    return load_script("scripts/bench_decode.py")


@pytest.fixture
def small_head():
    from docrec.models.recognition import RecognitionHead
    torch.manual_seed(0)
    return RecognitionHead(32, 40, pad_id=0, bos_id=1, eos_id=2, d_model=64, nhead=4, dim_feedforward=128,
                           decoder_layers=2, roi_max_width=64, max_len=40).eval()


def test_cached_step_equals_the_decoder_on_the_whole_prefix(small_head):
    head = small_head
    memory = torch.randn(3, 20, 64)
    padding = torch.zeros(3, 20, dtype=torch.bool)
    padding[1, 12:] = True
    tokens = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 4, 4, 3], [1, 3, 3, 3, 3]])
    cross_k, cross_v = head.cross_cache(memory)
    past_k = past_v = cross_k.new_zeros((*cross_k.shape[:3], 0, cross_k.shape[-1]))
    with torch.no_grad():
        for t in range(1, tokens.shape[1] + 1):
            logits, past_k, past_v = head.decode_step(tokens[:, t - 1], past_k, past_v, cross_k, cross_v, padding)
            torch.testing.assert_close(logits, head.decode(memory, padding, tokens[:, :t])[:, -1],
                                       atol=1e-5, rtol=1e-5)
            assert past_k.shape[3] == t


def test_cached_greedy_reads_what_prefix_decoding_reads(small_head):
    """Same ids and confidences as decoding the whole prefix each step, lines of every length finishing apart."""
    head = small_head
    fused = torch.randn(1, 32, 24, 64)
    quads = torch.tensor([[[4, 4], [200, 4], [200, 20], [4, 20]], [[8, 30], [90, 32], [89, 50], [7, 48]],
                          [[8, 60], [24, 60], [24, 76], [8, 76]]], dtype=torch.float32)
    with torch.no_grad():
        memory, padding = head.encode(fused, [quads])
        ref_ids, ref_conf = _bench_decode().greedy_by_prefix(head, memory, padding)
        ids, conf = head.greedy(memory, padding)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(conf, ref_conf)
    assert (ids[:, 1:] != head.pad_id).sum(1).unique().numel() > 1  # the lines stopped at different steps


# --- packed (width-grouped) reading ------------------------------------------------------


def test_token_norm_starts_the_roi_tokens_at_the_scale_of_the_positions(charset):
    from docrec.models.recognition import RecognitionHead
    rois, valid = torch.relu(torch.randn(3, 32, 8, 20)), torch.ones(3, 20, dtype=torch.bool)
    content_rms = {}
    for norm in (False, True):
        torch.manual_seed(0)
        head = RecognitionHead(32, 40, pad_id=0, bos_id=1, eos_id=2, d_model=64, nhead=4, dim_feedforward=128,
                               roi_max_width=64, max_len=40, token_norm=norm)
        seen = []
        head.encoder.register_forward_pre_hook(lambda m, args, seen=seen: seen.append(args[0]))
        with torch.no_grad():
            head.memory(rois, valid)
        content = seen[0] - head.memory_pos[:20]  # what the encoder gets, less the fixed positions
        content_rms[norm] = float(content.pow(2).mean().sqrt())
    positions_rms = float(head.memory_pos.pow(2).mean().sqrt())  # 1/sqrt(2)
    assert content_rms[False] < positions_rms / 2  # untrained tokens drown in the positions
    assert content_rms[True] == pytest.approx(1.0, abs=0.02)
    # A model config saved before the option has no ``token_norm``: its head had none.
    cfg = default_model_cfg()
    cfg["backbone"]["name"] = "resnet18"
    assert isinstance(build_model(cfg, charset).rec_head.token_norm, torch.nn.LayerNorm)
    del cfg["recognition"]["token_norm"]
    assert build_model(cfg, charset).rec_head.token_norm is None


def test_width_buckets_bound_padding_and_cover_every_line():
    from docrec.models.roi import width_buckets
    widths = torch.tensor([40, 4, 200, 6, 41, 256, 9, 100])
    groups = width_buckets(widths, 1.5)
    assert sorted(i for g in groups for i in g) == list(range(8))
    for g in groups:
        assert widths[g].max() <= 1.5 * widths[g].min()
    assert width_buckets(torch.zeros(0, dtype=torch.long)) == []


def test_width_groups_option_zero_pads_every_line_to_the_widest_and_rejects_ratios_below_one(charset):
    from docrec.models.recognition import RecognitionHead
    kw = {"in_channels": 8, "vocab_size": len(charset), "pad_id": 0, "bos_id": 1, "eos_id": 2, "d_model": 16,
          "nhead": 2, "dim_feedforward": 32}
    assert RecognitionHead(**kw).width_groups == 1.25
    assert RecognitionHead(**kw, width_groups=0).width_groups == float("inf")
    assert RecognitionHead(**kw, width_groups=2).width_groups == 2
    with pytest.raises(ValueError, match="width_groups"):
        RecognitionHead(**kw, width_groups=0.5)


def test_grouped_reading_gives_the_losses_and_reads_of_one_padded_batch(small_head, monkeypatch):
    import docrec.models.recognition as rec
    head = small_head
    torch.manual_seed(1)
    fused = torch.randn(2, 32, 24, 64)
    quads = [torch.tensor([[[4, 4], [240, 4], [240, 20], [4, 20]], [[8, 60], [30, 60], [30, 76], [8, 76]]],
                          dtype=torch.float32),
             torch.tensor([[[8, 30], [90, 32], [89, 50], [7, 48]], [[4, 4], [60, 4], [60, 20], [4, 20]],
                           [[100, 70], [250, 70], [250, 90], [100, 90]]], dtype=torch.float32)]
    tokens = torch.tensor([[1, 5, 6, 7, 8, 9, 10, 11, 2], [1, 9, 2, 0, 0, 0, 0, 0, 0], [1, 3, 4, 5, 6, 2, 0, 0, 0],
                           [1, 7, 8, 2, 0, 0, 0, 0, 0], [1, 3, 3, 4, 4, 5, 6, 7, 2]])

    def run(ratio):
        monkeypatch.setattr(head, "width_groups", ratio)
        head.zero_grad()
        losses = head.loss(fused, quads, tokens, label_smoothing=0.1)
        sum(losses.values()).backward()
        grad = head.roi_proj[2].weight.grad.clone()
        with torch.no_grad():
            reads = {d: head.read(fused, quads, d) for d in ("ctc", "attention")}
        return losses, grad, reads

    head.eval()  # the decoder's dropout would draw other masks for other group shapes
    grouped, one = run(1.25), run(float("inf"))  # inf: every line in one group, padded to the widest
    _, _, widths = head.lines(fused, quads)
    assert len(rec.width_buckets(widths, 1.25)) > 1
    for k in ("rec", "ctc"):
        torch.testing.assert_close(grouped[0][k], one[0][k], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grouped[1], one[1], atol=1e-5, rtol=1e-4)
    for d in ("ctc", "attention"):
        assert [r[: r.index(2) + 1] if 2 in r else [t for t in r if t != 0] for r in grouped[2][d][0]] == \
               [r[: r.index(2) + 1] if 2 in r else [t for t in r if t != 0] for r in one[2][d][0]]
        torch.testing.assert_close(grouped[2][d][1], one[2][d][1], atol=1e-5, rtol=1e-5)
