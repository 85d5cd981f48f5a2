"""predict.py's output plan (mirrored tree, no collisions, inputs never overwritten) and baselines from ink."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from docrec.engine.config import ConfigError
from docrec.postprocess import DEFAULT_BASELINE_AT, estimate_baseline
from tests.conftest import load_script

predict = load_script("scripts/predict.py", "predict_script")


def touch(root: Path, *names: str) -> list[Path]:
    paths = []
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
        paths.append(p)
    return paths


def test_outputs_mirror_the_input_tree_and_never_collide(tmp_path):
    images = touch(tmp_path / "in", "a/001.png", "b/001.png", "page.v1.jpg", "page.v2.jpg", "x.png", "x.tif")
    plans = predict.output_paths(images, tmp_path / "in", tmp_path / "out", ["page", "alto", "json", "overlay"])
    names = [{f: p.relative_to(tmp_path / "out").as_posix() for f, p in plan.items()} for plan in plans]
    assert [n["page"] for n in names] == ["a/001.xml", "b/001.xml", "page.v1.xml", "page.v2.xml",
                                          "x.png.xml", "x.tif.xml"]
    assert names[0] == {"page": "a/001.xml", "alto": "a/001.alto.xml", "json": "a/001.json",
                        "overlay": "a/001.overlay.png"}
    every = [p for plan in plans for p in plan.values()]
    assert len(set(every)) == len(every)


def test_a_single_image_lands_in_the_output_folder(tmp_path):
    (image,) = touch(tmp_path, "scan.png")
    (plan,) = predict.output_paths([image], image, tmp_path / "out", ["page"])
    assert plan["page"] == tmp_path / "out" / "scan.xml"


def test_output_that_would_overwrite_an_input_is_refused(tmp_path):
    images = touch(tmp_path, "x.png", "x.overlay.png")
    with pytest.raises(ConfigError, match=r"would overwrite input image\(s\) .*x.overlay.png"):
        predict.output_paths(images, tmp_path, tmp_path, ["overlay"])
    with pytest.raises(ConfigError, match="format must list some of"):
        predict.output_paths(images, tmp_path, tmp_path / "out", ["hocr"])


def test_baseline_is_measured_from_the_ink_on_straight_and_rotated_lines():
    img = np.full((120, 320), 255, np.uint8)
    cv2.putText(img, "Hamburg quay", (20, 70), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 0, 2)  # baseline at y = 70
    box = [(15, 38), (290, 38), (290, 85), (15, 85)]
    (x0, y0), (x1, y1) = estimate_baseline(img, box)
    assert (x0, x1) == pytest.approx((15, 290), abs=1) and y0 == pytest.approx(70, abs=2) == y1
    rot = cv2.getRotationMatrix2D((160, 60), 4, 1.0)  # 4 degrees counter-clockwise
    turned = cv2.warpAffine(img, rot, (320, 120), borderValue=255)
    quad = cv2.transform(np.float32(box)[None], rot)[0]
    start, end = np.float64(estimate_baseline(turned, quad))
    truth = cv2.transform(np.float32([[15, 70], [290, 70]])[None], rot)[0]
    slope = (end[1] - start[1]) / (end[0] - start[0])
    assert slope == pytest.approx((truth[1, 1] - truth[0, 1]) / (truth[1, 0] - truth[0, 0]), abs=0.01)
    assert np.abs(start - truth[0]).max() < 3 and np.abs(end - truth[1]).max() < 3


def test_baseline_without_ink_lies_at_the_default_height():
    blank = np.full((100, 300), 200, np.uint8)
    (_, y0), (_, y1) = estimate_baseline(blank, [(10, 20), (200, 20), (200, 60), (10, 60)])
    assert y0 == pytest.approx(20 + DEFAULT_BASELINE_AT * 40, abs=0.5) == y1
