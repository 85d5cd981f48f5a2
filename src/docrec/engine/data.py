"""Turn the data config into pages, a charset, datasets and loaders."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from docrec.data.dataset import PageDataset, collate
from docrec.engine.config import abs_path
from docrec.engine.sampler import ResumableSampler
from docrec.formats import load
from docrec.pages import Page

log = logging.getLogger(__name__)


@dataclass
class PageSplits:
    train: list[Page]
    val: list[Page]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def load_splits(data_cfg) -> PageSplits:
    """Read train/val pages; strict mode fails here, before any training, naming file and element."""
    opts = {"kind": data_cfg.kind, "allow_outside_root": data_cfg.allow_outside_root, "max_pixels": data_cfg.max_pixels}
    skipped: list[tuple[str, str]] = []

    def report(source: str, message: str) -> None:
        log.warning("skipped %s", message)

    def read(path: str, limit: int | None) -> list[Page]:
        res = load(data_cfg.format, abs_path(path), strict=data_cfg.strict, on_skip=report, limit=limit, **opts)
        skipped.extend(res.skipped)
        return res.pages

    train = read(data_cfg.path, data_cfg.limit_pages)
    if data_cfg.val_path:
        val = read(data_cfg.val_path, data_cfg.max_val_pages)
    else:
        # Deterministic hold-out: every k-th page, so it spreads over the whole set.
        k = max(2, round(1 / data_cfg.val_fraction)) if data_cfg.val_fraction > 0 else 0
        val = (train[::k] if k else [])[: data_cfg.max_val_pages]
        train = [p for i, p in enumerate(train) if not k or i % k]
    if not train:
        raise ValueError(f"data.path={data_cfg.path}: no training pages found")
    return PageSplits(train, val, skipped)


def _ignore_stop_signals(worker_id: int) -> None:
    """Workers leave SIGTERM/SIGINT to the main process, which saves a checkpoint and then stops them.

    Schedulers and terminals signal the whole process group; a worker dying first would crash
    the main process before it could save.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loaders(splits: PageSplits, charset, data_cfg, aug_cfg, seed: int, rank: int, world: int):
    """Training loader with a resumable sampler, and an ordered validation loader."""
    kinds = list(data_cfg.kinds)
    regions = list(data_cfg.get("region_kinds") or [])
    train_ds = PageDataset(splits.train, charset, kinds, data_cfg.long_side, aug_cfg, data_cfg.crop, True,
                           data_cfg.max_len, data_cfg.max_pixels, seed, data_cfg.strict, regions)
    val_ds = PageDataset(splits.val, charset, kinds, data_cfg.long_side, None, None, False,
                         data_cfg.max_len, data_cfg.max_pixels, seed, data_cfg.strict, regions)
    sampler = ResumableSampler(len(train_ds), seed, rank, world, shuffle=True)
    common = {"num_workers": data_cfg.num_workers, "collate_fn": collate, "pin_memory": torch.cuda.is_available(),
              "persistent_workers": False, "worker_init_fn": _ignore_stop_signals}
    if data_cfg.num_workers > 0:
        common["prefetch_factor"] = 4
    # A private generator: creating an iterator must not draw from the global torch RNG (exact resume).
    train_loader = DataLoader(train_ds, batch_size=data_cfg.batch_size, sampler=sampler, drop_last=False,
                              generator=torch.Generator().manual_seed(seed), **common)
    val_loader = DataLoader(val_ds, batch_size=data_cfg.val_batch_size, shuffle=False,
                            generator=torch.Generator().manual_seed(seed), **common)
    return train_loader, val_loader, sampler
