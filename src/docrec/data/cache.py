"""Pages kept on disk decoded and scaled: after the first epoch a page is read as raw pixels.

Decoding a JPEG scan and scaling it down (:func:`docrec.images.read_image`) is the largest cost
of a training sample, and every epoch repeats it for the same pixels: augmentation starts from
the scaled page. With ``data.cache_dir`` set, the first read of a page stores the scaled array as
``.npy`` (uncompressed; a grey A4 page at long side 1024 is 0.8 MB, a colour one 2.4 MB, four
times that at 2048); later reads load it back. The entry's name hashes the image's path, size and
modification time with the scale, so an edited image, or another ``long_side``, is decoded again.
Entries are written atomically (a temporary file renamed), so workers and DDP ranks may share a
folder, and a half-written entry is never read. A damaged entry is decoded again and rewritten;
a folder that cannot be written (full, read-only) leaves training to decode every time (logged once
per loader process).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from docrec.images import MAX_PIXELS, read_image
from docrec.pages import DataError

log = logging.getLogger(__name__)

#: Part of every entry's name: bump it when the stored pixels would change (decoding, scaling).
CACHE_VERSION = 1
_unwritable: set[str] = set()  # cache folders that failed a write: not written again by this process


def cache_entry(cache_dir: str | Path, path: str | Path, long_side: int | None, grey: bool) -> Path:
    """Where the scaled pixels of image ``path`` live in ``cache_dir`` (two-level, 256 subfolders)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None
    # abspath, not resolve(): no syscall per path component on every read (a link's target gets its own entry).
    ident = f"{CACHE_VERSION}|{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{long_side}|{int(grey)}"
    key = hashlib.sha1(ident.encode()).hexdigest()
    return Path(cache_dir) / key[:2] / f"{key}.npy"


def _valid(img: np.ndarray, long_side: int | None, grey: bool) -> bool:
    shape_ok = (img.ndim == 3 and img.shape[2] == 3) or (grey and img.ndim == 2)
    return img.dtype == np.uint8 and shape_ok and (long_side is None or max(img.shape[:2]) <= long_side)


def read_page(path: str | Path, max_pixels: int = MAX_PIXELS, long_side: int | None = None, grey: bool = False,
              cache_dir: str | Path | None = None) -> np.ndarray:
    """:func:`read_image`, through the cache in ``cache_dir`` when one is given (None: decode)."""
    if cache_dir is None:
        return read_image(path, max_pixels, long_side=long_side, grey=grey)
    entry = cache_entry(cache_dir, path, long_side, grey)
    try:
        img = np.load(entry, allow_pickle=False)
        if _valid(img, long_side, grey):
            return img
        log.warning("%s: cached pixels of %s have shape %s, %s: decoding again", entry, path, img.shape, img.dtype)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, EOFError) as exc:  # truncated or foreign file
        log.warning("%s: unreadable cache entry of %s (%s): decoding again", entry, path, exc)
    img = read_image(path, max_pixels, long_side=long_side, grey=grey)
    if str(cache_dir) not in _unwritable:
        _store(entry, img, str(cache_dir))
    return img


def _store(entry: Path, img: np.ndarray, root: str) -> None:
    """Write ``img`` to ``entry`` atomically; after a failure (logged) this process stops writing to ``root``."""
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=entry.parent, prefix=f".{entry.stem}.", suffix=".tmp",
                                         delete=False) as fh:
            tmp = fh.name
            np.save(fh, np.ascontiguousarray(img), allow_pickle=False)
        os.replace(tmp, entry)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        _unwritable.add(root)
        log.warning("page cache %s cannot be written (%s): pages not stored yet are decoded every time", root, exc)


def cache_usage(cache_dir: str | Path) -> tuple[int, int]:
    """(entries, bytes) stored in ``cache_dir`` (0, 0 when it does not exist yet)."""
    sizes = [f.stat().st_size for f in Path(cache_dir).glob("*/*.npy")]
    return len(sizes), sum(sizes)
