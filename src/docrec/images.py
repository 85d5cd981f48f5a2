"""Image I/O with clear errors: header check (size, pixel cap) before any decode."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from docrec.pages import DataError

#: Refuse images above this many pixels (decompression bombs); configurable per call.
MAX_PIXELS = 100_000_000


def image_size(path: Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (OSError, Image.DecompressionBombError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None
    _check_complete(path)
    if w * h > max_pixels:
        raise DataError(f"{path}: image has {w}x{h} = {w * h:,} pixels, above the cap of {max_pixels:,} "
                        "(a decompression bomb or a scan far too large; raise max_pixels to allow it)")
    return w, h


def _check_complete(path: Path) -> None:
    """Cheap truncation check from the file's tail: PNG ends with IEND, JPEG with the EOI marker."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - 64))
        tail = fh.read()
    if head.startswith(b"\x89PNG") and b"IEND" not in tail:
        raise DataError(f"{path}: truncated PNG (no IEND chunk at the end of the file)")
    if head.startswith(b"\xff\xd8") and b"\xff\xd9" not in tail.rstrip(b"\x00\r\n "):
        raise DataError(f"{path}: truncated JPEG (no end-of-image marker)")


def scaled_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(width, height) with the long side scaled to ``long_side``, rounded as albumentations' LongestMaxSize."""
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def read_image(path: Path, max_pixels: int = MAX_PIXELS, long_side: int | None = None,
               grey: bool = False) -> np.ndarray:
    """Decode an image to an RGB uint8 array (H, W, 3); truncated or corrupt files are refused.

    With ``long_side``, an image whose long side is larger is scaled down to it (area
    averaging, size as :func:`scaled_size`) while decoding: a JPEG is decoded at 1/2, 1/4
    or 1/8 scale (libjpeg's DCT scaling) where that still covers the target, and grey
    pages are resized before they are expanded to RGB. Smaller images come back as they are.
    ``grey``: a grey page comes back as (H, W), not expanded (the training pipeline augments
    one channel and expands it when it batches).
    """
    width, height = image_size(path, max_pixels)
    target = scaled_size(width, height, long_side) if long_side and long_side < max(width, height) else None
    # PIL, unlike cv2.imdecode, raises on a truncated file instead of returning grey rows.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if target is not None:
                    im.draft("RGB", target)  # JPEG only (a no-op for other formats); keeps size >= target
                im.load()
                if im.mode not in ("RGB", "L"):  # palette, alpha, CMYK, 16-bit: resize in RGB
                    im = im.convert("RGB")
                if target is not None and im.size != target:
                    # BOX = the mean over each output pixel's footprint, like cv2.INTER_AREA.
                    im = im.resize(target, Image.Resampling.BOX)
                # convert() copies even RGB to RGB: only grey pages need it, unless they stay grey.
                return np.asarray(im if im.mode == "RGB" or (grey and im.mode == "L") else im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({exc})") from None
