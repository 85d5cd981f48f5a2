"""A training target never asks for what the image does not show; form fields get a region map."""

from __future__ import annotations

import numpy as np
import torch

from docrec.data.dataset import PageDataset, erased_holes, hidden_share
from docrec.data.targets import build_targets
from docrec.formats import manifest
from docrec.models.segmentation import segmentation_losses
from docrec.postprocess import line_regions
from docrec.text import IGNORE_INDEX, Charset

KINDS = ["printed", "handwritten"]
CHARSET = Charset.build(["hello world form"])


def rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def test_hidden_share_is_the_covered_part_of_the_line_box():
    holes = np.array([[0, 0, 50, 100], [300, 0, 310, 5]], np.float32)
    assert hidden_share(rect(0, 10, 100, 30), holes) == 0.5
    assert hidden_share(rect(100, 10, 200, 30), holes) == 0.0
    assert hidden_share(rect(0, 10, 100, 30), np.zeros((0, 4), np.float32)) == 0.0


def test_erase_holes_are_read_from_albumentations_params():
    applied = [("Affine", {"matrix": None}), ("CoarseDropout", {"holes": np.array([[1, 2, 3, 4]])})]
    np.testing.assert_array_equal(erased_holes(applied), [[1, 2, 3, 4]])
    assert erased_holes([]).shape == (0, 4)


def test_holes_are_ignored_by_class_and_core_targets():
    lines = [(rect(10, 10, 190, 30), "hello", "printed", None)]
    t = build_targets(lines, 60, 200, KINDS, CHARSET, 16, holes=np.array([[50, 0, 80, 60]], np.float32))
    cls, core = t["class_mask"].numpy(), t["core_mask"].numpy()
    assert (cls[:, 50:80] == IGNORE_INDEX).all() and (core[:, 50:80] == IGNORE_INDEX).all()
    assert cls[20, 30] == 1 and core[20, 30] == 1 and cls[20, 100] == 1  # the rest of the line is still a line
    assert cls[50, 20] == 0 and core[50, 20] == 0


def test_regions_of_the_listed_kinds_are_painted_apart_from_the_line_classes():
    lines = [(rect(20, 20, 100, 40), "form", "handwritten", None)]
    regions = [(rect(10, 10, 120, 50), "form_field"), (rect(130, 10, 190, 50), "printed")]
    t = build_targets(lines, 60, 200, KINDS, CHARSET, 16, regions=regions, region_kinds=["form_field"])
    reg = t["region_mask"].numpy()
    assert reg.dtype == np.uint8 and reg[15, 15] == 1 and reg[30, 60] == 1  # the field, under and around its line
    assert reg[30, 150] == 0 and reg[55, 5] == 0  # a region of another kind is not painted
    assert t["class_mask"].numpy()[30, 60] == 2  # the line keeps its own kind


def test_ignored_pixels_do_not_change_the_core_and_region_losses():
    torch.manual_seed(0)
    class_logits, core_logits = torch.randn(1, 3, 8, 8), torch.randn(1, 8, 8)
    region_logits = torch.randn(1, 1, 8, 8)
    class_mask = torch.randint(0, 3, (1, 8, 8))
    core = torch.randint(0, 2, (1, 8, 8), dtype=torch.uint8)
    region = torch.randint(0, 2, (1, 8, 8), dtype=torch.uint8)
    hidden = core.clone()
    hidden[:, :, :4] = IGNORE_INDEX
    a = segmentation_losses(class_logits, core_logits, class_mask, hidden, region_logits, region)
    # Changing the logits under the ignored pixels changes nothing.
    core_logits2 = core_logits.clone()
    core_logits2[:, :, :4] = 50.0
    b = segmentation_losses(class_logits, core_logits2, class_mask, hidden, region_logits, region)
    torch.testing.assert_close(a["core"], b["core"])
    c = segmentation_losses(class_logits, core_logits2, class_mask, core, region_logits, region)
    assert not torch.allclose(a["core"], c["core"])
    assert set(a) == {"seg", "core", "region"} and torch.isfinite(a["region"])


def test_lines_under_an_erase_hole_are_segmented_but_not_read(toy_data):
    pages = list(manifest.read(toy_data / "train.jsonl"))
    charset = Charset.build(ln.text for p in pages for ln in p.lines)
    erase_everywhere = {"erase": {"p": 1.0, "holes": [8, 8], "size": [0.2, 0.3]}}
    ds = PageDataset(pages, charset, KINDS, 320, augment=erase_everywhere, train=True,
                     region_kinds=["form_field"])
    clean = PageDataset(pages, charset, KINDS, 320, augment={"enabled": False}, train=True,
                        region_kinds=["form_field"])
    hidden_lines = read_lines = 0
    for i in range(len(ds)):
        _, targets, meta = ds[i]
        _, clean_targets, clean_meta = clean[i]
        assert len(clean_meta["gt_lines"]) == 3 and clean_targets["region_mask"].any()
        read_lines += len(meta["gt_lines"])
        hidden_lines += 3 - len(meta["gt_lines"])
        assert targets["line_tokens"].shape[0] == len(meta["gt_lines"])
        assert (targets["class_mask"] == IGNORE_INDEX).any()
        # Every line still read lies clear of every hole.
        for ln in meta["gt_lines"]:
            poly = np.asarray(ln["polygon"], np.float32)
            cls = targets["class_mask"].numpy()
            x0, y0 = np.floor(poly.min(0)).astype(int)
            x1, y1 = np.ceil(poly.max(0)).astype(int)
            assert not (cls[y0:y1, x0:x1] == IGNORE_INDEX).any()
    assert hidden_lines > 0 and read_lines > 0


def test_a_line_takes_the_region_kind_that_covers_it():
    prob = np.zeros((1, 40, 100), np.float32)
    prob[0, 5:25, 5:60] = 0.9
    polys = [rect(10, 10, 50, 20), rect(70, 10, 95, 20), rect(40, 10, 90, 20)]
    assert line_regions(polys, prob) == [0, None, None]
    assert line_regions(polys, np.zeros((0, 40, 100), np.float32)) == [None, None, None]
