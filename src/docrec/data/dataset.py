"""PageDataset: decode a page, augment image and polygons together, build the training targets."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from docrec.data.augment import WHITE, build_augment, eval_transform
from docrec.data.cache import read_page
from docrec.data.targets import MIN_LINE_AREA, build_targets
from docrec.geometry import line_scaled_long_side, median_line_height
from docrec.images import MAX_PIXELS
from docrec.pages import DataError, Page

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: A line counts as readable (gets a recognition target) when this share of it is in the frame.
READABLE_SHARE = 0.98


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> ImageNet-normalized float; done on the device, so loaders ship bytes."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std


#: Targets that stay on the host: the model tests them before it launches any work on the device.
HOST_TARGETS = frozenset({"line_fold_case"})


def to_model_input(images: torch.Tensor, targets: list[dict] | None, device: torch.device,
                   channels_last: bool = False) -> tuple[torch.Tensor, list[dict] | None]:
    """A loader batch as the model takes it: uint8 images on ``device``, normalised, channels-last
    when asked; the targets (if any) on the same device, but for the per-line flags the model reads
    on the host (:data:`HOST_TARGETS`)."""
    images = normalize(images.to(device, non_blocking=True))
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    if targets is not None:
        targets = [{k: v if k in HOST_TARGETS else v.to(device, non_blocking=True) for k, v in t.items()}
                   for t in targets]
    return images, targets


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Augmentation seed of one sample: a pure function, so resumed runs and any worker count agree."""
    return (seed * 1_000_003 + epoch * 65_537 + index) % (2**31 - 1)


def line_scaled_sides(pages: Sequence[Page], long_side: int, max_line_height: float | None) -> dict[int, int]:
    """``data.max_line_height`` from the annotations: for each page whose median GT line is taller than
    ``max_line_height`` px at ``long_side``, the long side that makes it that tall (index -> long side).

    Training and its validation scale by the ground truth; ``scripts/evaluate.py`` and ``predict.py``
    choose the same long side from the lines a first pass finds (:func:`docrec.inference.line_scaled_long_sides`).
    """
    if not max_line_height:
        return {}
    sides = {}
    for i, page in enumerate(pages):
        height = median_line_height([ln.polygon for ln in page.lines])
        scale = long_side / max(page.width, page.height)
        side = line_scaled_long_side(long_side, None if height is None else height * scale, max_line_height)
        if side != long_side:
            sides[i] = side
    return sides


def _clip_to_frame(poly: np.ndarray, w: int, h: int) -> tuple[np.ndarray, float]:
    """Polygon clipped to the frame's box, and the share of its (hull's) area that stayed inside."""
    clipped = np.stack([poly[:, 0].clip(0, w), poly[:, 1].clip(0, h)], axis=1).astype(np.float32)
    hull = cv2.convexHull(poly.astype(np.float32))
    hull_area = cv2.contourArea(hull)
    if hull_area <= 0:
        return clipped, 0.0
    inter, _ = cv2.intersectConvexConvex(hull, np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32))
    return clipped, float(inter / hull_area)


def erased_holes(applied: Sequence) -> np.ndarray:
    """Erase holes [K, 4] (x0, y0, x1, y1, final pixels) from albumentations' applied parameters.

    Erase runs after every geometric transform (build_augment), so its holes are in the
    output frame (the final padding is bottom/right and moves nothing).
    """
    holes = [np.asarray(params["holes"], np.float32).reshape(-1, 4) for name, params in applied
             if name == "CoarseDropout" and "holes" in params]
    return np.concatenate(holes) if holes else np.zeros((0, 4), np.float32)


def hidden_share(polygon: np.ndarray, holes: np.ndarray) -> float:
    """Share of the polygon's bounding box covered by erase holes (0 when none overlaps it)."""
    if len(holes) == 0:
        return 0.0
    x0, y0 = polygon.min(axis=0)
    x1, y1 = polygon.max(axis=0)
    area = max((x1 - x0) * (y1 - y0), 1e-6)
    iw = (np.minimum(holes[:, 2], x1) - np.maximum(holes[:, 0], x0)).clip(min=0)
    ih = (np.minimum(holes[:, 3], y1) - np.maximum(holes[:, 1], y0)).clip(min=0)
    return float(min((iw * ih).sum() / area, 1.0))


class PageDataset(Dataset):
    """Pages -> (uint8 image tensor, targets, meta); ``train`` turns on crops and augmentation.

    The image tensor is (3, H, W), or (1, H, W) for a grey page: it is decoded, augmented and
    shipped as one channel, and :func:`collate` expands it (augmenting a third of the pixels).
    """

    def __init__(self, pages: Sequence[Page], charset, kinds: Sequence[str], long_side: int,
                 augment: Mapping | None = None, crop: Sequence[int] | None = None, train: bool = True,
                 max_len: int = 128, max_pixels: int = MAX_PIXELS, seed: int = 0, strict: bool = True,
                 region_kinds: Sequence[str] = (), crop_tries: int = 1, cache_dir: str | None = None,
                 long_sides: Mapping[int, int] | None = None) -> None:
        self.pages = list(pages)
        self.cache_dir = cache_dir  # decoded, scaled pages kept there (docrec.data.cache); None: decode each time
        self.charset, self.kinds, self.train = charset, list(kinds), train
        self.region_kinds = list(region_kinds)
        self.max_len, self.max_pixels, self.seed, self.epoch = max_len, max_pixels, seed, 0
        self.long_side, self.strict = long_side, strict
        self._augment = (augment, tuple(crop) if crop else None, crop_tries)
        self.aug = build_augment(augment, long_side, self._augment[1], train=train, crop_tries=crop_tries)
        self._train_augs = {long_side: self.aug}  # training pipelines by long side (long_sides)
        self.dense_crop = train and bool(crop) and crop_tries > 1  # the crop needs the lines' boxes
        # Pages read at their own long side, by page index (the scale of each page's lines: line_scaled_sides).
        self.long_sides = dict(long_sides or {})

    def _transform(self, long_side: int):
        """The pipeline of a page read at ``long_side``: this dataset's own, or one like it at that side."""
        if long_side == self.long_side:
            return self.aug
        if not self.train:
            return eval_transform(long_side)
        if long_side not in self._train_augs:
            augment, crop, tries = self._augment
            self._train_augs[long_side] = build_augment(augment, long_side, crop, train=True, crop_tries=tries)
        return self._train_augs[long_side]

    def set_epoch(self, epoch: int) -> None:
        """New augmentation draws each epoch (call before iterating, like DistributedSampler)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pages)

    def __getitem__(self, index: int):
        # A weighted sampler yields index + k * len for a page's k-th pass: same page, its own augmentation.
        page = self.pages[index % len(self.pages)]
        long_side = self.long_sides.get(index % len(self.pages), self.long_side)
        aug = self._transform(long_side)
        try:
            img = read_page(page.image_path, self.max_pixels, long_side=long_side, grey=True,
                            cache_dir=self.cache_dir)
        except DataError as exc:
            # Start-up checks read headers only; a page corrupt inside fails here.
            if self.strict or len(self.pages) < 2:
                raise
            log.warning("skipping unreadable page (lenient mode): %s", exc)
            return self[(index + 1) % len(self.pages)]
        # Line polygons, baselines and the region polygons of region_kinds travel together as keypoints.
        regions = [r for r in page.regions if r.kind in self.region_kinds]
        region_kind = {r.id: r.kind for r in regions}  # the region kind holding a line, for its metrics
        shapes = ([ln.polygon for ln in page.lines] + [ln.baseline or [] for ln in page.lines]
                  + [r.polygon for r in regions])
        sizes = [len(s) for s in shapes]
        pts = np.array([p for s in shapes for p in s], np.float32).reshape(-1, 2)
        # read_page already scaled a larger page to long_side (cheaper while decoding), by
        # LongestMaxSize's factor, which then has nothing left to do: scale the points alike.
        pts *= max(img.shape[:2]) / max(page.width, page.height)
        aug.set_random_seed(sample_seed(self.seed, self.epoch, index) if self.train else 0)
        extra = {}
        if self.dense_crop and page.lines:  # each line's box, as shares of the image, from its points above
            starts = np.cumsum([0, *sizes[: len(page.lines) - 1]])
            line_pts = pts[: sum(sizes[: len(page.lines)])]
            extra["line_boxes"] = np.concatenate([np.minimum.reduceat(line_pts, starts),
                                                  np.maximum.reduceat(line_pts, starts)], axis=1) \
                / np.tile([img.shape[1], img.shape[0]], 2)
        out = aug(image=img, keypoints=pts, **extra)
        image, kp = out["image"], np.asarray(out["keypoints"], np.float32).reshape(-1, 2)
        h, w = image.shape[:2]
        holes = erased_holes(out.get("applied_transforms", ()))
        moved = np.split(kp, np.cumsum(sizes)[:-1]) if sizes else []
        n = len(page.lines)
        lines, gt_lines = [], []
        for ln, poly, base in zip(page.lines, moved[:n], moved[n:2 * n]):
            poly, share = _clip_to_frame(poly, w, h)
            if share <= 0:
                continue
            # A line cut by the crop, or partly under an erase hole, is still segmented, but its
            # text is not what is visible: it is not read.
            readable = share >= READABLE_SHARE and hidden_share(poly, holes) <= 0.0
            text = ln.text if readable else None
            baseline = base if len(base) >= 2 else None
            lines.append((poly, text, ln.kind, baseline))
            # The same area test as build_targets, so gt_lines are exactly the lines it reads.
            if text is not None and abs(cv2.contourArea(poly)) >= MIN_LINE_AREA:
                gt_lines.append({"polygon": poly.tolist(), "text": ln.text, "kind": ln.kind,
                                 "region": region_kind.get(ln.region),
                                 "baseline": baseline.tolist() if baseline is not None else None})
        region_polys = [(_clip_to_frame(poly, w, h)[0], r.kind) for r, poly in zip(regions, moved[2 * n:])]
        targets = build_targets(lines, h, w, self.kinds, self.charset, self.max_len,
                                regions=region_polys, region_kinds=self.region_kinds, holes=holes,
                                fold_case=page.fold_case)
        meta = {"index": index, "source": page.source, "image": str(page.image_path),
                "scale": long_side / max(page.width, page.height), "gt_lines": gt_lines, "fold_case": page.fold_case}
        chw = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(chw)), targets, meta


#: Per-pixel targets that collate pads, and their fill (ignored class / no core / no region).
_PADDED_TARGETS = {"class_mask": 255, "core_mask": 0, "region_mask": 0}


def _batch_buffer(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Uninitialised tensor; in a loader worker in shared memory, so it reaches the trainer without a copy."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)


def _paste(dst: torch.Tensor, src: torch.Tensor, fill: int) -> None:
    """``src`` into the top-left corner of ``dst`` (same leading dims, or one channel broadcast), ``fill`` in the rest."""
    h, w = src.shape[-2:]
    dst[..., :h, :w] = src
    dst[..., h:, :] = fill
    dst[..., :h, w:] = fill


def pad_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """uint8 (3, h, w) or grey (1, h, w) images -> one (B, 3, H, W) batch, padded white at the right and bottom."""
    H = max(im.shape[1] for im in images)
    W = max(im.shape[2] for im in images)
    out = _batch_buffer((len(images), 3, H, W), torch.uint8)
    for i, im in enumerate(images):
        _paste(out[i], im, WHITE)
    return out


def collate(batch):
    """Pad images (white) and masks (ignore / 0) to the largest page of the batch."""
    images, targets, metas = zip(*batch)
    out = pad_images(images)
    H, W = out.shape[-2:]
    # One buffer per target kind; each sample's mask is a view of it (one copy, no per-sample allocation).
    masks = {key: _batch_buffer((len(images), H, W), targets[0][key].dtype) for key in _PADDED_TARGETS}
    padded = []
    for i, t in enumerate(targets):
        t = dict(t)
        for key, fill in _PADDED_TARGETS.items():
            _paste(masks[key][i], t[key], fill)
            t[key] = masks[key][i]
        padded.append(t)
    return out, padded, list(metas)
