"""Training batches: resumable by batch count, grouped by aspect ratio for whole pages, equal steps on every rank."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from docrec.data.loading import PageSplits, make_loaders
from docrec.data.sampler import EpochBatchSampler, ResumableSampler, WeightedSourceSampler, aspect_groups
from docrec.engine.config import ConfigError, check_config
from docrec.pages import Line, Page
from docrec.text import Charset
from tests.conftest import compose_cfg

A4, LANDSCAPE, RECEIPT = 1 / 2**0.5, 2**0.5, 0.35


def test_aspect_groups_separate_document_shapes():
    g = aspect_groups([A4, A4 * 1.02, LANDSCAPE, RECEIPT, 1.0], 3)
    assert g[0] == g[1]  # two A4 scans
    assert len({g[0], g[2], g[3], g[4]}) == 4  # portrait, landscape, receipt and square apart
    assert aspect_groups([RECEIPT, A4, LANDSCAPE], 1) == [0, 1, 2]  # factor 1: below 1:2, 1:2-2:1, above
    with pytest.raises(ValueError, match="aspect_ratio_group_factor"):
        aspect_groups([A4], 0)


def test_without_groups_batches_are_the_ranks_indices_in_chunks():
    s = ResumableSampler(23, seed=3)
    b = EpochBatchSampler(s, 4)
    b.set_epoch(2)
    idx = s.indices()
    assert list(b) == [idx[i : i + 4] for i in range(0, 23, 4)]  # what DataLoader(batch_size, sampler) does
    assert len(b) == 6


def test_grouped_batches_hold_one_group_and_every_page_once():
    groups = [i % 3 for i in range(50)]
    b = EpochBatchSampler(ResumableSampler(50, seed=1), 4, groups)
    for epoch in range(3):
        b.set_epoch(epoch)
        batches = list(b)
        assert all(len({groups[i] for i in batch}) == 1 for batch in batches)
        assert sorted(i for batch in batches for i in batch) == list(range(50))
        assert sum(len(batch) < 4 for batch in batches) <= 3  # one remainder per group at most
        assert len(b) == len(batches)


def test_resume_skips_whole_batches_and_reproduces_the_rest():
    groups = [int(i % 5 == 0) for i in range(40)]
    b = EpochBatchSampler(ResumableSampler(40, seed=7), 4, groups)
    b.set_epoch(4)
    full = list(b)
    again = EpochBatchSampler(ResumableSampler(40, seed=7), 4, groups)  # a new process after a restart
    again.set_epoch(4, skip=5)
    assert list(again) == full[5:]
    assert len(again) == len(full) - 5
    b.set_epoch(5)
    assert list(b) != full  # a new epoch, a new order


def test_ranks_take_the_same_number_of_grouped_steps():
    groups = [0] * 30 + [1] * 3  # one rare shape: the ranks' remainders differ
    counts, seen = [], set()
    for rank in range(3):
        b = EpochBatchSampler(ResumableSampler(33, seed=0, rank=rank, world_size=3), 4, groups)
        b.set_epoch(1)
        batches = list(b)
        counts.append(len(batches))
        assert all(len({groups[i] for i in batch}) == 1 for batch in batches)
        seen |= {i for batch in batches for i in batch}
    assert len(set(counts)) == 1  # DDP: no rank waits for a step another never takes
    assert seen == set(range(33))


def test_weighted_repeats_take_their_pages_group():
    sizes, groups = [3, 5], [0, 0, 0, 1, 1, 1, 1, 1]
    s = WeightedSourceSampler(sizes, [3.0, 1.0], epoch_pages=24, seed=2)  # source 0 drawn ~6 times per page
    b = EpochBatchSampler(s, 2, groups)
    b.set_epoch(0)
    batches = list(b)
    assert any(i >= 8 for batch in batches for i in batch)  # repeat passes (index + k * total) occur
    assert all(len({groups[i % 8] for i in batch}) == 1 for batch in batches)


def _page(i: int, w: int, h: int) -> Page:
    return Page(image=f"{i}.png", width=w, height=h, source=f"p{i}.json",
                lines=[Line(id="l0", polygon=[(1, 1), (9, 1), (9, 5), (1, 5)], text="ab", kind="printed")])


def _loader_sampler(overrides: list[str], pages: list[Page]):
    cfg = compose_cfg(["data.num_workers=0", *overrides])
    _, _, sampler = make_loaders(PageSplits(train=pages, val=[]), Charset.build(["ab"]), cfg.data, cfg.augment,
                                 0, 0, 1)
    return sampler


def test_loader_groups_whole_pages_but_not_crops():
    pages = [_page(i, 850, 1100) if i % 2 else _page(i, 1100, 850) for i in range(16)]
    b = _loader_sampler([], pages)  # whole pages (configs/data/synthetic.yaml: crop null), factor 3
    b.set_epoch(0)
    assert all(len({pages[i].width for i in batch}) == 1 for batch in b)  # never portrait beside landscape
    assert _loader_sampler(["data.crop=[128,128]"], pages).groups is None  # crops: one size already
    assert _loader_sampler(["data.aspect_ratio_group_factor=0"], pages).groups is None


def test_group_factor_is_checked_at_start(toy_data):
    cfg = compose_cfg(["data.aspect_ratio_group_factor=-1", f"data.path={toy_data / 'train.jsonl'}",
                       f"data.val_path={toy_data / 'val.jsonl'}"])
    with pytest.raises(ConfigError, match="data.aspect_ratio_group_factor"):
        check_config(cfg)
    check_config(OmegaConf.merge(cfg, {"data": {"aspect_ratio_group_factor": 2}}))


_SAMPLE_FAULTS = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from docrec.data.loading import keep_freed_memory
    assert keep_freed_memory()
def sample():  # a page's worth of arrays, allocated, touched and freed, as a loader does per sample
    arrays = [np.ones((1024, 1024 + 64 * i), np.uint8) for i in range(6)]
    return sum(int(a[0, 0]) for a in arrays)
for _ in range(3):
    sample()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    sample()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_loader_workers_reuse_freed_page_memory_instead_of_faulting_it_back():
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _SAMPLE_FAULTS, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.strip())

    default, kept = faults("default"), faults("keep")
    assert default > 1000  # ~6 MiB of fresh pages a sample, faulted in again and again
    assert kept < default / 20
