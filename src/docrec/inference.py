"""Load a trained checkpoint for inference and turn model outputs into Page objects."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from docrec.data.augment import eval_transform
from docrec.data.dataset import PageDataset, collate, to_model_input
from docrec.data.loading import data_sources, loader_workers, read_pages, worker_dies_with
from docrec.engine import checkpoint as ckpt
from docrec.engine.config import ConfigError, check_number
from docrec.geometry import line_scaled_long_side, median_line_height, reading_long_side
from docrec.images import MAX_PIXELS, image_size, read_image
from docrec.models import build_model
from docrec.models.recognition import check_read_shifts
from docrec.pages import Line, Page, Region, polygon_area
from docrec.postprocess import estimate_baseline, lines_from_maps
from docrec.text import Charset

log = logging.getLogger("docrec.inference")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")

#: What ``postprocess`` overrides may set: the thresholds of :func:`lines_from_maps` (not ``shrink``,
#: which the training targets fixed).
POSTPROCESS_KEYS = tuple(k for k in list(inspect.signature(lines_from_maps).parameters)[2:] if k != "shrink")


def load_model(path: str | Path, weights: str = "ema", device: torch.device | str = "cpu",
               decoder: str | None = None, postprocess: Mapping | None = None, blank_penalty: float | None = None,
               read_shifts: Sequence[float] | None = None, ctc_beam: int | None = None, rescore: float | None = None):
    """(model in eval mode, charset, training config) from a checkpoint; ``weights`` is ema or raw,
    ``decoder`` (attention | ctc) overrides how the checkpoint reads lines, ``postprocess`` (some of
    :data:`POSTPROCESS_KEYS`; None values keep the checkpoint's) its line-finding thresholds,
    ``blank_penalty``, ``read_shifts``, ``ctc_beam`` and ``rescore`` (None: the checkpoint's; ``ctc_beam=1``
    alone also sets ``rescore`` 0) the CTC reader's :meth:`RecognitionHead.ctc_greedy`,
    :meth:`RecognitionHead.ctc_beam_search` and :meth:`RecognitionHead.read`."""
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    postprocess = {k: v for k, v in (postprocess or {}).items() if v is not None}
    unknown = sorted(set(postprocess) - set(POSTPROCESS_KEYS))
    if unknown:
        raise ConfigError(f"postprocess.{unknown[0]} is not a post-processing setting; "
                         f"known: {', '.join(POSTPROCESS_KEYS)}")
    state = ckpt.load(path, prefer="best")
    cfg = state["config"]
    model_cfg = dict(cfg["model"])
    model_cfg["kinds"] = list(cfg["data"]["kinds"])
    model_cfg["region_kinds"] = list(cfg["data"].get("region_kinds") or [])
    model_cfg["backbone"] = {**model_cfg["backbone"], "weights": None}  # the checkpoint holds the weights
    if ctc_beam == 1 and rescore is None:  # the best path: nothing to rescore
        rescore = 0.0
    reading = {"decoder": decoder,
               "blank_penalty": None if blank_penalty is None else check_number(blank_penalty, "blank_penalty", 0.0),
               "read_shifts": None if read_shifts is None else check_read_shifts(read_shifts),
               "ctc_beam": None if ctc_beam is None else check_number(ctc_beam, "ctc_beam", 1, integer=True),
               "rescore": None if rescore is None else check_number(rescore, "rescore", 0.0, 1.0)}
    model_cfg["recognition"] = {**model_cfg.get("recognition", {}),
                                **{k: v for k, v in reading.items() if v is not None}}
    if postprocess:
        model_cfg["postprocess"] = {**(model_cfg.get("postprocess") or {}), **postprocess}
    charset = Charset.from_dict(state["charset"])
    model = build_model(model_cfg, charset)
    sd = state["ema"] if weights == "ema" and state.get("ema") is not None else state["model"]
    model.load_state_dict(sd)
    return model.to(device).eval(), charset, cfg


def find_images(path: Path) -> list[Path]:
    """An image file, or the images under a folder (recursive, sorted)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such image or folder")
    return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


class ImageFolder(Dataset):
    """Images resized like validation pages (long side, padded to 32) for batched prediction;
    ``long_sides`` gives some images (by index) a long side of their own."""

    def __init__(self, paths: list[Path], long_side: int, max_pixels: int = MAX_PIXELS,
                 long_sides: Mapping[int, int] | None = None) -> None:
        self.paths, self.long_side, self.max_pixels = paths, long_side, max_pixels
        self.long_sides = dict(long_sides or {})

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        width, height = image_size(self.paths[i], self.max_pixels)
        long_side = self.long_sides.get(i, self.long_side)
        # Decoded and scaled as in training (read_image's long_side), then padded like a validation page.
        img = read_image(self.paths[i], self.max_pixels, long_side=long_side)
        out = eval_transform(long_side)(image=img, keypoints=np.zeros((0, 2), np.float32))["image"]
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))), {
            "index": i, "path": str(self.paths[i]), "width": width, "height": height,
            "scale": long_side / max(width, height)}


def reading_long_side_of(value: int | None, train_cfg: Mapping) -> int:
    """``long_side`` of evaluate / predict / export: the value given, else the run's reading long side
    (``data.long_side`` x ``data.read_scale``, as its validation read its pages)."""
    if value:
        return int(value)
    return reading_long_side(train_cfg["data"]["long_side"], train_cfg["data"].get("read_scale"))


def reading_max_line_height(value: float | None, train_cfg: Mapping) -> float | None:
    """``max_line_height`` of evaluate / predict: the value given, else the run's ``data.max_line_height``
    (so a model fine-tuned on pages read at the scale of their lines is read alike); 0 turns it off."""
    return value if value is not None else train_cfg["data"].get("max_line_height")


def evaluation_pages(data_cfg, split: str = "val", max_pages: int | None = None
                     ) -> tuple[list[Page], list[str], list[str], int]:
    """The pages ``scripts/evaluate.py`` (and ``sweep_postprocess.py``) read from a data config: (pages, each
    page's source name (empty without ``data.sources``), what was read from where, pages skipped).
    ``split``: val reads each source's ``val_path`` when set, else its ``path``; path reads ``path``.
    One source: the data group itself; several (``data.sources``): each read alike, then reported apart."""
    sources = data_sources(data_cfg)
    pages: list[Page] = []
    groups: list[str] = []
    read_from: list[str] = []
    n_skipped = 0
    for i, src in enumerate(sources or [data_cfg]):
        key = f"data.sources.{i}" if sources else "data"
        path = src.val_path if split == "val" and src.val_path else src.path
        if path is None:
            raise ConfigError(f"{key}.path is required for data={src.format} (pass {key}.path=...)")
        skipped: list[tuple[str, str]] = []
        read = read_pages(src, path, max_pages, skipped)
        pages += read
        groups += [src.name] * len(read) if sources else []
        n_skipped += len(skipped)
        read_from.append(f"{src.name}={src.format}:{path} ({len(read)} pages)" if sources else f"{src.format}:{path}")
    return pages, groups, read_from, n_skipped


def evaluation_loader(pages: list[Page], model, charset: Charset, train_cfg: Mapping, data_cfg, rt, long_side: int,
                      max_line_height: float | None) -> tuple[DataLoader, dict[int, int]]:
    """(loader of ``pages`` resized as validation resizes them, the pages read at a smaller long side): with
    ``max_line_height`` a first, detection-only pass finds each page's lines and pages with taller lines are read
    smaller (:func:`line_scaled_long_sides`)."""
    kinds = list(train_cfg["data"]["kinds"])

    def pages_loader(long_sides=None) -> DataLoader:
        ds = PageDataset(pages, charset, kinds, long_side, train=False, max_len=train_cfg["data"]["max_len"],
                         max_pixels=data_cfg.max_pixels, region_kinds=list(model.region_kinds), long_sides=long_sides)
        return DataLoader(ds, batch_size=data_cfg.val_batch_size, num_workers=loader_workers(data_cfg.num_workers),
                          collate_fn=collate, worker_init_fn=worker_dies_with(os.getpid()))

    loader = pages_loader()
    sides = line_scaled_long_sides(model, loader, rt, long_side, max_line_height)
    if sides:
        loader = pages_loader(sides)
        log.info("max_line_height=%s: %d of %d pages read at a smaller long side (%d-%d)", max_line_height,
                 len(sides), len(pages), min(sides.values()), max(sides.values()))
    return loader, sides


@torch.no_grad()
def line_scaled_long_sides(model, loader, rt, long_side: int, max_line_height: float | None) -> dict[int, int]:
    """The first pass of reading pages at the scale of their lines: find each page's lines at ``long_side``
    (detection only) and give the long side :func:`line_scaled_long_side` chooses, for the pages whose
    long side changes (index -> long side). ``loader`` yields (images, ..., metas), metas with ``index``."""
    if not max_line_height:
        return {}
    if max_line_height <= 0:
        raise ConfigError(f"max_line_height must be a height in pixels > 0 or null, got {max_line_height}")
    sides = {}
    for batch in loader:
        images, metas = batch[0], batch[-1]
        x, _ = to_model_input(images, None, rt.device, rt.channels_last)
        with rt.autocast():
            polygons = model.detect(x)
        for polys, meta in zip(polygons, metas):
            side = line_scaled_long_side(long_side, median_line_height(polys), max_line_height)
            if side != long_side:
                sides[meta["index"]] = side
    return sides


def to_page(pred: dict, meta: dict, gray: np.ndarray | None = None) -> Page:
    """A prediction in scaled coordinates -> a Page in the original image's pixels.

    Lines carry the reader's confidence; with ``gray`` (the original image, grayscale) each
    also gets a baseline measured from its ink (:func:`docrec.postprocess.estimate_baseline`).
    """
    w, h, s = meta["width"], meta["height"], meta["scale"]
    lines, regions = [], []
    for i, ln in enumerate(pred["lines"]):
        poly = [(min(max(x / s, 0.0), w), min(max(y / s, 0.0), h)) for x, y in ln["polygon"]]
        if len(poly) < 3 or polygon_area(poly) < 1.0:
            continue  # a sliver at the page edge after clipping
        baseline = None
        if gray is not None:
            baseline = [(min(max(x, 0.0), w), min(max(y, 0.0), h)) for x, y in estimate_baseline(gray, poly)]
        # One region per line keeps the PAGE-XML valid; grouping lines into blocks is left to layout analysis.
        # A line inside a predicted form field gets a form_field region; its kind stays printed/handwritten.
        regions.append(Region(id=f"r{i}", polygon=poly, kind=ln.get("region") or ln["kind"]))
        lines.append(Line(id=f"l{i}", polygon=poly, text=ln["text"], kind=ln["kind"], region=f"r{i}",
                          baseline=baseline, confidence=min(max(float(ln["confidence"]), 0.0), 1.0)))
    return Page(image=Path(meta["path"]).name, width=w, height=h, regions=regions, lines=lines,
                root=Path(meta["path"]).parent, source=meta["path"])
