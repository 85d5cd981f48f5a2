"""Albumentations pipelines that move the image and every line polygon together."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import albumentations as A
import cv2
import numpy as np

WHITE = 255  # pages are paper: borders that geometric transforms expose are filled white


def _geometric(cfg: Mapping) -> list[A.BasicTransform]:
    t: list[A.BasicTransform] = []
    if (c := cfg.get("affine")) and c["p"] > 0:
        t.append(A.Affine(rotate=(-c["rotate"], c["rotate"]), shear=(-c["shear"], c["shear"]),
                          scale=tuple(c["scale"]), translate_percent=(-c["translate"], c["translate"]),
                          border_mode=cv2.BORDER_CONSTANT, fill=WHITE, p=c["p"]))
    if (c := cfg.get("perspective")) and c["p"] > 0:
        t.append(A.Perspective(scale=tuple(c["scale"]), border_mode=cv2.BORDER_CONSTANT, fill=WHITE, p=c["p"]))
    if (c := cfg.get("elastic")) and c["p"] > 0:
        # "direct" remapping keeps points that an earlier transform moved off the frame.
        t.append(A.ElasticTransform(alpha=c["alpha"], sigma=c["sigma"], keypoint_remapping_method="direct",
                                    border_mode=cv2.BORDER_CONSTANT,
                                    fill=WHITE, p=c["p"]))
    return t


class TextDenseCrop(A.RandomCrop):
    """RandomCrop that draws ``tries`` windows and keeps the one whose whole lines are longest in all.

    Uniform crops of a page band often fall in margins or cut lines (a 256-px band of a
    generated page holds 5 readable lines on average, none in one crop of eight): the reader
    then learns from few lines per step. The score is the summed width of the lines wholly
    inside, i.e. the columns the reader gets; counting lines instead favoured bands of short
    printed lines over taller handwriting (generated pages: 17 % of the read characters
    handwritten against 25 % on the pages; by length 21 %). The lines come as ``line_boxes`` [N, 4]
    (x0, y0, x1, y1 as shares of the image size) beside the image; ``tries=1`` is RandomCrop.
    Ties keep the first draw, so the choice stays random among equally dense windows.
    """

    def __init__(self, height: int, width: int, tries: int = 1, **kwargs) -> None:
        super().__init__(height=height, width=width, **kwargs)
        if tries < 1:
            raise ValueError(f"crop tries must be >= 1, got {tries}")
        self.tries = tries

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        first = super().get_params_dependent_on_data(params, data)
        boxes = np.asarray(data.get("line_boxes", np.zeros((0, 4))), np.float64).reshape(-1, 4)
        if self.tries == 1 or len(boxes) == 0:
            return first
        h, w = params["shape"][:2]
        pad = first["pad_params"] or {}
        boxes = boxes * [w, h, w, h] + [pad.get("pad_left", 0), pad.get("pad_top", 0)] * 2
        best, best_n = first, -1
        for i in range(self.tries):
            cand = first if i == 0 else super().get_params_dependent_on_data(params, data)
            x0, y0, x1, y1 = cand["crop_coords"]
            inside = (boxes[:, 0] >= x0) & (boxes[:, 1] >= y0) & (boxes[:, 2] <= x1) & (boxes[:, 3] <= y1)
            inside = (boxes[inside, 2] - boxes[inside, 0]).sum()  # the line length the reader gets
            if inside > best_n:
                best, best_n = cand, inside
        return best


class ScanNoise(A.GaussNoise):
    """GaussNoise drawn and added in integers: the same noise in half the time (a third on colour pages).

    Albumentations draws the map in float64, converts it to float32 and adds it to the page in
    floats (timings: docs/benchmarks.md). This draws it
    rounded into int16 (``cv2.randn``, seeded from the pipeline's generator) and adds it with
    ``cv2.add``, saturating to 0-255 as the float path clips. The page is uint8, so rounding the
    noise first gives the same values as rounding the sum. ``per_channel=False`` adds one map to
    every channel (scanner noise on paper). uint8 pages only (the training pipeline's);
    ``noise_scale_factor`` is not used.
    """

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        image = data["image"]
        sigma = self.py_random.uniform(*self.std_range) * 255
        mean = self.py_random.uniform(*self.mean_range) * 255
        channels = image.shape[2] if image.ndim == 3 and self.per_channel else 1
        noise = np.empty(image.shape[:2] if channels == 1 else image.shape, np.int16)
        cv2.setRNGSeed(int(self.random_generator.integers(0, 2**31 - 1)))
        cv2.randn(noise, (mean,) * channels, (sigma,) * channels)
        return {"noise_map": noise}

    def apply(self, img: np.ndarray, noise_map: np.ndarray, **params) -> np.ndarray:
        if img.ndim == 3 and noise_map.ndim == 2:
            noise_map = cv2.merge([noise_map] * img.shape[2])
        return cv2.add(img, noise_map, dtype=cv2.CV_8U).reshape(img.shape)


def _photometric(cfg: Mapping) -> list[A.BasicTransform]:
    t: list[A.BasicTransform] = []
    if (c := cfg.get("erase")) and c["p"] > 0:
        # RandomErase: coarse patches, sized relative to the image.
        t.append(A.CoarseDropout(num_holes_range=tuple(c["holes"]), hole_height_range=tuple(c["size"]),
                                 hole_width_range=tuple(c["size"]), fill="random_uniform", p=c["p"]))
    if (c := cfg.get("brightness_contrast")) and c["p"] > 0:
        t.append(A.RandomBrightnessContrast(brightness_limit=c["limit"], contrast_limit=c["limit"], p=c["p"]))
    if (c := cfg.get("blur")) and c["p"] > 0:
        t.append(A.GaussianBlur(blur_limit=tuple(c["kernel"]), p=c["p"]))
    if (c := cfg.get("noise")) and c["p"] > 0:
        # per_channel false: one grey noise map for the three channels (scanner noise on paper), a third
        # of the random draws of per-channel noise.
        t.append(ScanNoise(std_range=tuple(c["std"]), per_channel=c.get("per_channel", False), p=c["p"]))
    if (c := cfg.get("jpeg")) and c["p"] > 0:
        t.append(A.ImageCompression(quality_range=tuple(c["quality"]), p=c["p"]))
    return t


@lru_cache(maxsize=16)
def eval_transform(long_side: int) -> A.Compose:
    """:func:`build_augment` for evaluation and prediction pages (resize, pad), built once per long side."""
    return build_augment(None, long_side, train=False)


def build_augment(cfg: Mapping | None, long_side: int, crop: tuple[int, int] | None = None,
                  train: bool = True, divisor: int = 32, crop_tries: int = 1) -> A.Compose:
    """Resize the long side, then (training) crop/geometric/RandomErase/photometric, then pad to ``divisor``.

    The crop is the densest of ``crop_tries`` random windows (:class:`TextDenseCrop`; pass the
    lines as ``line_boxes`` when calling the pipeline).

    Polygons travel as keypoints (``format="xy"``, never dropped when outside the frame:
    the caller clips them and decides which lines stay readable).
    """
    # Area averaging only when shrinking: enlarging with INTER_AREA is nearest-like (blocky strokes).
    t: list[A.BasicTransform] = [A.LongestMaxSize(max_size=long_side, interpolation=cv2.INTER_LINEAR,
                                                  area_for_downscale="image")]
    if train:
        if crop is not None:
            t.append(TextDenseCrop(height=crop[0], width=crop[1], tries=crop_tries, pad_if_needed=True,
                                   border_mode=cv2.BORDER_CONSTANT, fill=WHITE))
        if cfg and cfg.get("enabled", True):
            t += _geometric(cfg) + _photometric(cfg)
    t.append(A.PadIfNeeded(min_height=None, min_width=None, pad_height_divisor=divisor, pad_width_divisor=divisor,
                           position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=WHITE))
    # save_applied_params: the dataset reads the erase holes, so hidden text is not asked for.
    return A.Compose(t, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False,
                                                         check_each_transform=False),
                     save_applied_params=True)
