"""The page cache: decoded, scaled pages kept on disk give the same samples without decoding again."""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import pytest
import torch

from docrec.data import cache
from docrec.data.cache import cache_entry, cache_usage, read_page
from docrec.images import read_image
from docrec.pages import DataError


def _scan(path, size=(300, 200), colour=False):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (size[1], size[0], 3) if colour else (size[1], size[0]), dtype=np.uint8)
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def _no_decoding(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("decoded although the page is cached")
    monkeypatch.setattr(cache, "read_image", refuse)


@pytest.mark.parametrize("colour", [False, True])
def test_a_cached_page_is_the_decoded_page_and_is_not_decoded_again(tmp_path, monkeypatch, colour):
    img_path = _scan(tmp_path / "page.jpg", colour=colour)
    expected = read_image(img_path, long_side=160, grey=True)
    first = read_page(img_path, long_side=160, grey=True, cache_dir=tmp_path / "cache")
    assert np.array_equal(first, expected) and first.shape[:2] == (107, 160)
    assert cache_entry(tmp_path / "cache", img_path, 160, True).is_file()
    assert cache_usage(tmp_path / "cache")[0] == 1
    _no_decoding(monkeypatch)
    again = read_page(img_path, long_side=160, grey=True, cache_dir=tmp_path / "cache")
    assert np.array_equal(again, expected) and again.flags.writeable
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # the temporary file was renamed


def test_another_scale_or_an_edited_image_is_decoded_again(tmp_path):
    img_path = _scan(tmp_path / "page.jpg")
    root = tmp_path / "cache"
    read_page(img_path, long_side=160, grey=True, cache_dir=root)
    assert read_page(img_path, long_side=120, grey=True, cache_dir=root).shape == (80, 120)
    assert read_page(img_path, long_side=160, grey=False, cache_dir=root).shape == (107, 160, 3)
    assert cache_usage(root)[0] == 3
    old = cache_entry(root, img_path, 160, True)
    _scan(img_path, size=(200, 300))  # the scan is replaced: portrait now
    st = os.stat(img_path)
    os.utime(img_path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache_entry(root, img_path, 160, True) != old
    assert read_page(img_path, long_side=160, grey=True, cache_dir=root).shape == (160, 107)


def test_a_damaged_entry_is_decoded_again_and_rewritten(tmp_path, caplog):
    img_path = _scan(tmp_path / "page.jpg")
    root = tmp_path / "cache"
    good = read_page(img_path, long_side=160, grey=True, cache_dir=root)
    entry = cache_entry(root, img_path, 160, True)
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING, logger="docrec.data.cache"):
        assert np.array_equal(read_page(img_path, long_side=160, grey=True, cache_dir=root), good)
    assert "unreadable cache entry" in caplog.text and str(img_path) in caplog.text
    assert np.array_equal(np.load(entry), good)
    np.save(entry, np.zeros((10, 10), np.float32))  # well-formed, but not pixels of this scale
    assert np.array_equal(read_page(img_path, long_side=160, grey=True, cache_dir=root), good)
    assert np.load(entry).dtype == np.uint8


def test_an_unwritable_cache_leaves_the_pages_decoded_and_says_so_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(cache, "_unwritable", set())
    img_path = _scan(tmp_path / "page.jpg")
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="docrec.data.cache"):
        for _ in range(3):
            img = read_page(img_path, long_side=160, grey=True, cache_dir=blocked)
            assert np.array_equal(img, read_image(img_path, long_side=160, grey=True))
    assert caplog.text.count("cannot be written") == 1 and str(blocked) in caplog.text


def test_a_missing_image_is_named(tmp_path):
    with pytest.raises(DataError, match="gone.jpg: image file not found"):
        read_page(tmp_path / "gone.jpg", long_side=160, cache_dir=tmp_path / "cache")


def test_training_samples_are_the_same_with_the_cache(tmp_path, monkeypatch):
    """Trainer's loaders with data.cache_dir: the same batches, cold and warm, and the warm pass decodes nothing."""
    from omegaconf import OmegaConf

    from docrec.data.loading import PageSplits, make_loaders
    from docrec.formats import load
    from docrec.models import Charset
    from tests.conftest import compose_cfg, make_toy_pages

    pages = load("manifest", make_toy_pages(tmp_path / "toy", n_pages=6) / "train.jsonl").pages
    charset = Charset.build(ln.text for p in pages for ln in p.lines)
    cfg = compose_cfg(["data.long_side=256", "data.batch_size=2", "data.num_workers=0"])

    def batches(cache_dir):
        data = OmegaConf.merge(cfg.data, {"cache_dir": str(cache_dir) if cache_dir else None})
        loader, _, sampler = make_loaders(PageSplits(train=pages, val=[]), charset, data, cfg.augment, 0, 0, 1)
        sampler.set_epoch(0)
        return [(images, [t["class_mask"] for t in targets]) for images, targets, _ in loader]

    plain = batches(None)
    cold = batches(tmp_path / "cache")
    assert cache_usage(tmp_path / "cache")[0] == len(pages)
    _no_decoding(monkeypatch)
    warm = batches(tmp_path / "cache")
    for a, b, c in zip(plain, cold, warm, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0])
        assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(a[1], b[1], c[1]))
