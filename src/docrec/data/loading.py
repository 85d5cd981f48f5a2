"""Turn the data config into pages, a charset, datasets and loaders."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from docrec.data.dataset import PageDataset, collate, line_scaled_sides
from docrec.data.sampler import EpochBatchSampler, ResumableSampler, WeightedSourceSampler, aspect_groups
from docrec.formats import load
from docrec.geometry import reading_long_side
from docrec.pages import Page
from docrec.settings import ConfigError, abs_path

log = logging.getLogger(__name__)


#: Keys a source of ``data.sources`` may set; a key it omits takes the data group's value, except
#: that a source with its own ``path`` holds its validation pages out of them unless it sets ``val_path``.
SOURCE_READER_KEYS = ("format", "path", "val_path", "val_fraction", "kind", "strict", "allow_outside_root",
                      "limit_pages", "max_val_pages", "fold_case")


def data_sources(data_cfg: DictConfig) -> list[DictConfig]:
    """``data.sources`` with every omitted reader key filled from the data group ([] without sources).

    ``val_path`` is inherited only by a source that takes the group's ``path`` too: another
    folder's pages are validated on pages of their own (``val_fraction``), never on the group's.
    """
    sources = data_cfg.get("sources")
    if sources is None:
        return []
    if not OmegaConf.is_list(sources) or not len(sources):
        raise ConfigError(f"data.sources must be a list of sources (name, path, weight, ...) or null, got {sources}")
    out = []
    for i, src in enumerate(sources):
        if not OmegaConf.is_dict(src):
            raise ConfigError(f"data.sources[{i}] must be a mapping (name, path, weight, ...), got {src!r}")
        unknown = set(src) - {"name", "weight", "weight_end", *SOURCE_READER_KEYS}
        if unknown:
            raise ConfigError(f"data.sources[{i}].{min(unknown)}: unknown key (a source takes name, weight, weight_end, "
                              f"{', '.join(SOURCE_READER_KEYS)})")
        full = {k: data_cfg.get(k) for k in SOURCE_READER_KEYS}
        if "path" in src:
            full["val_path"] = None
        full.update(name=None, weight=1.0, weight_end=None, max_pixels=data_cfg.get("max_pixels"))
        full.update(OmegaConf.to_container(src, resolve=True))
        if full["weight_end"] is None:
            full["weight_end"] = full["weight"]  # no curriculum: the same weight all along
        out.append(OmegaConf.create(full))
    return out


#: Most loader processes ``num_workers: auto`` gives one training process.
MAX_AUTO_WORKERS = 8


def loader_workers(value: int | str) -> int:
    """``data.num_workers``: an integer as given; ``auto``: the CPUs this process may use per local
    training process (torchrun's ``LOCAL_WORLD_SIZE``), less one for the process itself, at most
    ``MAX_AUTO_WORKERS`` (2 cores, one process: 1 worker; 64 cores, 8 GPUs: 7 each)."""
    if value != "auto":
        return int(value)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(MAX_AUTO_WORKERS, per_process - 1))


@dataclass(frozen=True)
class SourceSplit:
    """One source of a mixed dataset: its pages are a consecutive range of ``train`` and of ``val``."""

    name: str
    weight: float
    n_train: int
    n_val: int
    weight_end: float  # the weight after data.weight_ramp (``weight`` without a ramp)


@dataclass
class PageSplits:
    train: list[Page]
    val: list[Page]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    sources: list[SourceSplit] = field(default_factory=list)  # empty: one source (data.sources is null)

    def val_source_names(self) -> list[str] | None:
        """The source name of each validation page; None for a single source."""
        return [s.name for s in self.sources for _ in range(s.n_val)] if self.sources else None


def read_pages(src, path: str, limit: int | None, skipped: list[tuple[str, str]]) -> list[Page]:
    """The pages at ``path`` read as reader config ``src`` says (the data group or one of its
    sources: format, strict, kind, allow_outside_root, max_pixels, fold_case); skipped pages are logged and
    added to ``skipped``, the readers' notes logged. Training and ``scripts/evaluate.py`` read alike.
    ``fold_case`` true or false overrides the reader's own (SROIE: true, every other format: false)."""
    fold = src.get("fold_case")
    if fold is not None and not isinstance(fold, bool):
        raise ConfigError(f"fold_case of {path} must be true, false or null (the reader's own), got {fold!r}")
    opts = {"kind": src.kind, "allow_outside_root": src.allow_outside_root, "max_pixels": src.max_pixels}

    def report(source: str, message: str) -> None:
        log.warning("skipped %s", message)

    res = load(src.format, abs_path(path), strict=src.strict, on_skip=report, limit=limit, **opts)
    skipped.extend(res.skipped)
    for note in res.notes(src.format):
        log.info("%s: %s", path, note)
    if fold is not None:
        for page in res.pages:
            page.fold_case = fold
    return res.pages


def _read_split(src, key: str, skipped: list[tuple[str, str]]) -> tuple[list[Page], list[Page]]:
    """Train and val pages of one reader config (the data group or one of its sources)."""
    train = read_pages(src, src.path, src.limit_pages, skipped)
    if src.val_path:
        val = read_pages(src, src.val_path, src.max_val_pages, skipped)
    else:
        # Deterministic hold-out: every k-th page, so it spreads over the whole set.
        k = max(2, round(1 / src.val_fraction)) if src.val_fraction > 0 else 0
        val = (train[::k] if k else [])[: src.max_val_pages]
        train = [p for i, p in enumerate(train) if not k or i % k]
    if not train:
        raise ValueError(f"{key}.path={src.path}: no training pages found")
    return train, val


def load_splits(data_cfg) -> PageSplits:
    """Read train/val pages of every source; strict mode fails here, before any training, naming file and element."""
    skipped: list[tuple[str, str]] = []
    sources = data_sources(data_cfg)
    if not sources:
        return PageSplits(*_read_split(data_cfg, "data", skipped), skipped)
    splits = PageSplits([], [], skipped)
    for i, src in enumerate(sources):
        train, val = _read_split(src, f"data.sources[{i}]", skipped)
        splits.train += train
        splits.val += val
        splits.sources.append(SourceSplit(src.name, float(src.weight), len(train), len(val), float(src.weight_end)))
    return splits


#: glibc's mallopt parameters, and the values set in loader workers (32 MiB is the largest threshold it takes).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 32 << 20, 256 << 20


def keep_freed_memory() -> bool:
    """Let this process's malloc keep the page-sized blocks it frees, for the next sample (glibc only).

    A loader allocates and frees the same few arrays of a page's size for every sample (the page,
    its warps, its masks). glibc hands blocks over its mmap threshold back to the kernel when they
    are freed, and gets them back zeroed, one page fault per 4 KiB (thousands a page at long side 2048:
    docs/benchmarks.md). Served from the heap, and the heap not trimmed, the
    blocks are reused as they are. Returns False where the C library has no ``mallopt`` (musl,
    macOS): nothing changes there.
    """
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


#: Linux's prctl option that has the kernel signal a process when the thread that started it exits.
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> bool:
    """Have the kernel SIGKILL this process when ``parent`` (the process that started it) dies,
    however it dies: a loader worker of a run killed with ``kill -9`` or by the OOM killer can
    otherwise sleep forever, holding its memory, its queue's pipe full. Linux only (``prctl``);
    elsewhere it returns False and a killed run's children must be stopped by hand. A parent that
    died before the call is caught too: this process exits at once.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:
        os._exit(1)
    return True


def worker_dies_with(parent: int) -> functools.partial:
    """A loader's ``worker_init_fn`` that has each worker die with ``parent`` (predict, evaluate)."""
    return functools.partial(_die_with, parent=parent)


def _die_with(worker_id: int, parent: int) -> None:
    die_with_parent(parent)


def _init_worker(worker_id: int, parent: int) -> None:
    """A loader worker dies with the process that started it (:func:`die_with_parent`), keeps freed
    memory (:func:`keep_freed_memory`) and leaves SIGTERM/SIGINT to the main process, which saves a
    checkpoint and then stops it.

    Schedulers and terminals signal the whole process group; a worker dying first would crash
    the main process before it could save.
    """
    die_with_parent(parent)
    keep_freed_memory()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loaders(splits: PageSplits, charset, data_cfg, aug_cfg, seed: int, rank: int, world: int):
    """Training loader with a resumable batch sampler (weighted over sources; whole pages grouped by
    aspect ratio), and an ordered validation loader. The third value is the training batch sampler:
    ``set_epoch(epoch, skip=batches)`` before each pass."""
    kinds = list(data_cfg.kinds)
    regions = list(data_cfg.get("region_kinds") or [])
    cache_dir = str(abs_path(str(data_cfg.cache_dir))) if data_cfg.get("cache_dir") else None
    pages_kw = {"charset": charset, "kinds": kinds, "long_side": data_cfg.long_side, "max_len": data_cfg.max_len,
                "max_pixels": data_cfg.max_pixels, "seed": seed, "strict": data_cfg.strict, "region_kinds": regions,
                "cache_dir": cache_dir}
    # Validation reads pages as evaluate and predict do: at data.long_side x data.read_scale.
    read_side = reading_long_side(data_cfg.long_side, data_cfg.get("read_scale"))
    # data.max_line_height: pages whose GT lines are taller are read smaller, so that they are that tall.
    max_line_height = data_cfg.get("max_line_height")
    sides = [line_scaled_sides(pages, side, max_line_height)
             for pages, side in ((splits.train, data_cfg.long_side), (splits.val, read_side))]
    if max_line_height and rank == 0:
        log.info("data.max_line_height=%s: %d of %d training and %d of %d validation pages read smaller",
                 max_line_height, len(sides[0]), len(splits.train), len(sides[1]), len(splits.val))
    train_ds = PageDataset(splits.train, augment=aug_cfg, crop=data_cfg.crop, train=True,
                           crop_tries=data_cfg.get("crop_tries", 1), long_sides=sides[0], **pages_kw)
    val_ds = PageDataset(splits.val, augment=None, crop=None, train=False, long_sides=sides[1],
                         **{**pages_kw, "long_side": read_side})
    if splits.sources:
        ramp = data_cfg.get("weight_ramp")  # steps -> pages drawn by all ranks together
        curriculum = {} if ramp is None else {
            "end_weights": [s.weight_end for s in splits.sources],
            "ramp": (int(ramp[0]) * data_cfg.batch_size * world, int(ramp[1]) * data_cfg.batch_size * world)}
        sampler = WeightedSourceSampler([s.n_train for s in splits.sources], [s.weight for s in splits.sources],
                                        data_cfg.get("epoch_pages"), seed, rank, world, **curriculum)
    else:
        sampler = ResumableSampler(len(train_ds), seed, rank, world, shuffle=True)
    # Crops all have one size: grouping whole pages only.
    factor = data_cfg.get("aspect_ratio_group_factor", 3)
    groups = aspect_groups([p.width / p.height for p in splits.train], factor) if factor and not data_cfg.crop \
        else None
    batch_sampler = EpochBatchSampler(sampler, data_cfg.batch_size, groups)
    workers = loader_workers(data_cfg.num_workers)
    loader_kw = {"num_workers": workers, "collate_fn": collate, "pin_memory": torch.cuda.is_available(),
                 "persistent_workers": False, "worker_init_fn": functools.partial(_init_worker, parent=os.getpid())}
    if workers > 0:
        loader_kw["prefetch_factor"] = 4
    # A private generator: creating an iterator must not draw from the global torch RNG (exact resume).
    train_loader = DataLoader(train_ds, batch_sampler=batch_sampler, generator=torch.Generator().manual_seed(seed),
                              **loader_kw)
    val_loader = DataLoader(val_ds, batch_size=data_cfg.val_batch_size, shuffle=False,
                            generator=torch.Generator().manual_seed(seed), **loader_kw)
    return train_loader, val_loader, batch_sampler
