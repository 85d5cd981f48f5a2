"""Augmentation moves image and polygons together; seeds make it a pure function."""

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from docrec.data.augment import build_augment

GEOMETRIC = {
    "affine": {"p": 1.0, "rotate": 8.0, "shear": 6.0, "scale": [0.85, 1.15], "translate": 0.05},
    "perspective": {"p": 1.0, "scale": [0.03, 0.06]},
    "elastic": {"p": 1.0, "alpha": 30.0, "sigma": 8.0},
}


def _page_with_boxes():
    img = np.full((400, 300, 3), 255, np.uint8)
    polys = [np.array([[30, 40], [260, 50], [255, 90], [28, 80]], np.float32),
             np.array([[40, 200], [200, 180], [210, 260], [50, 270]], np.float32)]
    for p in polys:
        cv2.fillPoly(img, [p.round().astype(np.int32)], (0, 0, 0))
    return img, polys


@pytest.mark.parametrize("name", ["affine", "perspective", "elastic", "all"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_polygons_follow_the_image(name, seed):
    cfg = GEOMETRIC if name == "all" else {name: GEOMETRIC[name]}
    aug = build_augment(cfg, long_side=400, train=True)
    aug.set_random_seed(seed)
    img, polys = _page_with_boxes()
    out = aug(image=img, keypoints=np.concatenate(polys))
    ink = out["image"][..., 0] < 128
    kp = np.asarray(out["keypoints"], np.float32)
    for k, _ in enumerate(polys):
        mask = np.zeros(ink.shape, np.uint8)
        cv2.fillPoly(mask, [kp[4 * k: 4 * k + 4].round().astype(np.int32)], 1)
        mask = mask.astype(bool)
        # The moved polygon covers the moved ink (elastic bends edges: allow a margin).
        inside = (ink & mask).sum() / mask.sum()
        assert inside > 0.85, f"{name}: only {inside:.2f} of polygon {k} is ink"
    covered = np.zeros(ink.shape, np.uint8)
    for k in range(len(polys)):
        cv2.fillPoly(covered, [kp[4 * k: 4 * k + 4].round().astype(np.int32)], 1)
    assert (ink & covered.astype(bool)).sum() / ink.sum() > 0.85


def test_same_seed_same_result_and_output_padded():
    aug = build_augment({**GEOMETRIC, "erase": {"p": 1.0, "holes": [1, 3], "size": [0.05, 0.1]},
                         "noise": {"p": 1.0, "std": [0.02, 0.05]}}, long_side=400)
    img, polys = _page_with_boxes()
    outs = []
    for _ in range(2):
        aug.set_random_seed(7)
        outs.append(aug(image=img, keypoints=np.concatenate(polys)))
    assert np.array_equal(outs[0]["image"], outs[1]["image"])
    assert np.array_equal(outs[0]["keypoints"], outs[1]["keypoints"])
    h, w = outs[0]["image"].shape[:2]
    assert h % 32 == 0 and w % 32 == 0 and max(h, w) >= 400


def test_disabled_only_resizes_and_pads():
    aug = build_augment({"enabled": False, **GEOMETRIC}, long_side=200)
    img, polys = _page_with_boxes()
    out = aug(image=img, keypoints=np.concatenate(polys))
    assert out["image"].shape == (224, 160, 3)  # 200x150 padded to multiples of 32
    np.testing.assert_allclose(out["keypoints"], np.concatenate(polys) * 0.5, atol=1e-3)


def test_enlarging_interpolates_a_thin_line_instead_of_copying_pixels():
    img = np.full((64, 64, 3), 255, np.uint8)
    cv2.line(img, (0, 0), (63, 63), (0, 0, 0), 1)  # a 1-px diagonal stroke
    out = build_augment(None, long_side=128, train=False)(image=img)["image"][:128, :128, 0].astype(int)
    # Nearest-like enlargement (what INTER_AREA does at x2) repeats each pixel as a constant 2x2 block.
    blocks = out.reshape(64, 2, 64, 2).transpose(0, 2, 1, 3).reshape(64, 64, 4)
    assert (blocks.max(-1) != blocks.min(-1)).sum() >= 64  # every block the stroke crosses varies
    grey = (out > 0) & (out < 255)
    assert grey.sum() >= 2 * 128  # intermediate values on both sides of the stroke
    assert out.min() < 64  # the stroke stays dark, not washed out


def test_shrinking_still_averages_each_footprint():
    checker = ((np.indices((96, 96)).sum(0) % 2) * 255).astype(np.uint8)
    img = np.repeat(checker[..., None], 3, axis=2)
    out = build_augment(None, long_side=32, train=False)(image=img)["image"][..., 0].astype(int)
    # Each output pixel covers 3x3 input pixels: 5 or 4 of the 9 are white (a point sample is 0 or 255).
    np.testing.assert_allclose(out, np.where(np.indices((32, 32)).sum(0) % 2, 5, 4) * 255 / 9, atol=1)


def _lines_inside(out, n_lines: int) -> int:
    h, w = out["image"].shape[:2]
    kp = np.asarray(out["keypoints"], np.float32).reshape(n_lines, 4, 2)
    return int(((kp >= 0).all(axis=(1, 2)) & (kp[..., 0] <= w).all(1) & (kp[..., 1] <= h).all(1)).sum())


def test_text_dense_crop_keeps_the_window_with_the_most_whole_lines():
    # A 1000-px page with ten lines in its lower third: a uniform 200-px band misses them most of the time.
    img = np.full((1000, 300, 3), 255, np.uint8)
    polys = [np.array([[20, y], [280, y], [280, y + 16], [20, y + 16]], np.float32) for y in range(700, 1000, 30)]
    boxes = np.array([[*p.min(0) / [300, 1000], *p.max(0) / [300, 1000]] for p in polys])
    counts = {}
    for tries in (1, 8):
        aug = build_augment({"enabled": False}, long_side=1000, crop=(200, 300), train=True, crop_tries=tries)
        found = []
        for seed in range(40):
            aug.set_random_seed(seed)
            out = aug(image=img, keypoints=np.concatenate(polys), line_boxes=boxes)
            found.append(_lines_inside(out, len(polys)))
        counts[tries] = found
    assert np.mean(counts[8]) > 2 * np.mean(counts[1])
    # Windows that miss the text become rare: a window misses only when all eight draws do.
    assert counts[8].count(0) < counts[1].count(0) / 2
    # One try is RandomCrop itself: the same windows as before the option existed.
    plain = build_augment({"enabled": False}, long_side=1000, crop=(200, 300), train=True)
    plain.set_random_seed(3)
    dense1 = build_augment({"enabled": False}, long_side=1000, crop=(200, 300), train=True, crop_tries=1)
    dense1.set_random_seed(3)
    a = plain(image=img, keypoints=np.concatenate(polys))
    b = dense1(image=img, keypoints=np.concatenate(polys), line_boxes=boxes)
    np.testing.assert_array_equal(a["image"], b["image"])


def test_text_dense_crop_prefers_the_longest_lines_to_the_most_lines():
    # Six 20-px fields near the top, two 260-px lines (taller, as handwriting) near the bottom: the
    # reader gets more columns from the two, so with enough draws the band holding them wins.
    img = np.full((1000, 300, 3), 255, np.uint8)
    short = [np.array([[20, y], [40, y], [40, y + 12], [20, y + 12]], np.float32) for y in range(150, 270, 20)]
    long = [np.array([[20, y], [280, y], [280, y + 40], [20, y + 40]], np.float32) for y in (740, 800)]
    polys = short + long
    boxes = np.array([[*p.min(0) / [300, 1000], *p.max(0) / [300, 1000]] for p in polys])
    aug = build_augment({"enabled": False}, long_side=1000, crop=(200, 300), train=True, crop_tries=64)
    for seed in range(10):
        aug.set_random_seed(seed)
        kp = np.asarray(aug(image=img, keypoints=np.concatenate(polys), line_boxes=boxes)["keypoints"]).reshape(-1, 4, 2)
        whole = [(kp[i] >= 0).all() and (kp[i, :, 1] <= 200).all() for i in range(len(polys))]
        assert whole[len(short):] == [True, True] and not any(whole[: len(short)])


def test_text_dense_crop_refuses_zero_tries():
    with pytest.raises(ValueError, match="tries"):
        build_augment({"enabled": False}, long_side=100, crop=(32, 32), train=True, crop_tries=0)


def test_dataset_gives_the_dense_crop_its_lines(tmp_path):
    """PageDataset passes each line's box to the crop: with 8 tries, 64-px bands of toy pages hold more lines."""
    from docrec.data.dataset import PageDataset
    from docrec.formats import load
    from docrec.models import Charset
    from tests.conftest import make_toy_pages

    pages = load("manifest", make_toy_pages(tmp_path, n_pages=8) / "train.jsonl").pages
    charset = Charset.build(ln.text for p in pages for ln in p.lines)
    found = {}
    for tries in (1, 8):
        ds = PageDataset(pages, charset, ["printed", "handwritten"], 320, {"enabled": False}, (64, 320), True,
                         crop_tries=tries)
        found[tries] = [len(ds[i + k * len(pages)][2]["gt_lines"]) for k in range(5)
                        for i in range(len(pages))]
    assert np.mean(found[8]) > 1.5 * np.mean(found[1])
    assert found[8].count(0) < found[1].count(0)


def test_noise_is_grey_unless_per_channel():
    img = np.full((64, 96, 3), 128, np.uint8)
    for per_channel, grey in ((False, True), (True, False)):
        aug = build_augment({"noise": {"p": 1.0, "std": [0.05, 0.05], "per_channel": per_channel}}, long_side=96)
        aug.set_random_seed(0)
        out = aug(image=img)["image"][:64, :96].astype(int)
        assert out.std() > 3  # noise was added
        assert (out[..., 0] == out[..., 1]).all() == grey and (out[..., 1] == out[..., 2]).all() == grey


def test_scan_noise_has_the_asked_spread_saturates_and_repeats_with_its_seed():
    from docrec.data.augment import ScanNoise

    def noisy(img, seed, per_channel=False, std=0.04):
        aug = A.Compose([ScanNoise(std_range=(std, std), per_channel=per_channel, p=1.0)])
        aug.set_random_seed(seed)
        return aug(image=img)["image"]

    grey = np.full((256, 200), 128, np.uint8)
    out = noisy(grey, 0)
    assert out.dtype == np.uint8 and out.shape == grey.shape
    d = out.astype(float) - 128
    assert abs(d.std() - 0.04 * 255) < 0.2 and abs(d.mean()) < 0.1  # sigma is a share of 255
    assert np.array_equal(out, noisy(grey, 0)) and not np.array_equal(out, noisy(grey, 1))
    paper = noisy(np.full((64, 64), 250, np.uint8), 0, std=0.1)
    ink = noisy(np.full((64, 64), 5, np.uint8), 0, std=0.1)
    assert (paper == 255).mean() > 0.2 and paper.min() > 100  # saturates at white, no wrap-around to black
    assert (ink == 0).mean() > 0.2 and ink.max() < 155
    colour = np.full((64, 64, 3), 128, np.uint8)
    shared, own = noisy(colour, 0), noisy(colour, 0, per_channel=True)
    assert np.array_equal(shared[..., 0], shared[..., 2]) and not np.array_equal(own[..., 0], own[..., 2])


def test_a_grey_page_is_augmented_as_one_channel_and_batched_as_three(tmp_path):
    from omegaconf import OmegaConf

    from docrec.data.dataset import PageDataset, collate
    from docrec.pages import Line, Page
    from docrec.text import Charset

    grey = np.full((200, 300), 255, np.uint8)
    cv2.rectangle(grey, (20, 40), (260, 70), 0, -1)
    colour = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    colour[40:70, 20:260] = (0, 0, 200)  # red ink
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    cv2.imwrite(str(tmp_path / "colour.png"), colour)
    line = Line(id="l0", polygon=[(20, 40), (260, 40), (260, 70), (20, 70)], text="ink", kind="printed")
    pages = [Page(image=name, width=300, height=200, lines=[line], root=tmp_path) for name in ("grey.png", "colour.png")]
    every = {"affine": {"p": 1.0, "rotate": 2.0, "shear": 3.0, "scale": [0.9, 1.1], "translate": 0.02},
             "perspective": {"p": 1.0, "scale": [0.01, 0.03]}, "elastic": {"p": 0.0, "alpha": 30.0, "sigma": 8.0},
             "erase": {"p": 1.0, "holes": [1, 2], "size": [0.05, 0.1]}, "brightness_contrast": {"p": 1.0, "limit": 0.2},
             "blur": {"p": 1.0, "kernel": [3, 5]}, "noise": {"p": 1.0, "std": [0.02, 0.06], "per_channel": False},
             "jpeg": {"p": 1.0, "quality": [50, 95]}}
    ds = PageDataset(pages, Charset.build(["ink"]), ["printed"], 320, augment=OmegaConf.create(every), train=True)
    (g, _, _), (c, _, _) = ds[0], ds[1]
    assert g.dtype == c.dtype == torch.uint8
    assert g.shape[0] == 1 and c.shape[0] == 3  # every transform ran on one channel only
    images, _, _ = collate([ds[0], ds[1]])
    assert images.shape[:2] == (2, 3)
    h, w = g.shape[1:]
    assert torch.equal(images[0, 0, :h, :w], g[0]) and torch.equal(images[0, 2, :h, :w], g[0])  # grey, expanded
    assert (images[0, :, h:, :] == 255).all() and (images[0, :, :, w:] == 255).all()  # padded white
    assert not torch.equal(images[1, 0], images[1, 2])  # the colour page keeps its colours
