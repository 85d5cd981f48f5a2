"""The synthetic dataset: page i is a pure function of (seed, i); pages are made in parallel.

``generate`` writes ``images/NNNNN.jpg`` and the manifests ``train.jsonl`` / ``val.jsonl``.
Whatever the number of workers, the same seed gives byte-identical files.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from docrec.formats import manifest
from docrec.pages import Line, Page, Region
from docrec.synth import degrade, fonts, layouts
from docrec.synth.canvas import Canvas
from docrec.synth.forms import form_page
from docrec.synth.receipts import paper as receipt_paper
from docrec.synth.receipts import receipt_page
from docrec.synth.text import LOCALES, TextSource

#: Page types and how often each occurs by default.
PAGE_TYPES: dict[str, Callable[[layouts.Sheet], None]] = {
    "printed": layouts.printed_page, "handwritten": layouts.handwritten_page, "form": form_page,
    "receipt": receipt_page}
DEFAULT_MIX: dict[str, float] = {"printed": 0.3, "handwritten": 0.3, "form": 0.25, "receipt": 0.15}
#: Paper sizes in millimetres.
PAPERS = ((210.0, 297.0), (215.9, 279.4))  # A4, US Letter
#: JPEG at this quality is a third of the size of PNG for noisy scans and decodes faster.
JPEG_QUALITY = 90


@dataclass
class SynthPage:
    """One generated page before it is written: pixels and annotations."""

    image: np.ndarray  # uint8, (H, W) grey or (H, W, 3) RGB
    regions: list[Region]
    lines: list[Line]
    page_type: str
    process: str = "scan"  # how it became pixels (docrec.synth.degrade.PROCESSES)


def make_page(seed: int, index: int, page_type: str | None = None, scale: float = 1.0,
              processes: Sequence[str] | None = None, families: Sequence[str] | None = None) -> SynthPage:
    """Page ``index`` of the dataset of ``seed``; ``scale`` shrinks the page (1.0: a 150-200 dpi scan).

    ``page_type`` forces the type (the rest of the page is still drawn from the same seed);
    ``processes`` limits the print and scan processes drawn (:func:`degrade.choose_process`),
    ``families`` the printed font families (:func:`fonts.only_families`)."""
    with fonts.only_families(families):
        return _make_page(seed, index, page_type, scale, processes)


@dataclass
class DrawnPage:
    """A page as drawn, before any print or scan process: what :func:`degrade.scan` is given."""

    canvas: Canvas  # the ink (``canvas.image()``: float RGB, 1 = no ink) and the annotations
    matrix: np.ndarray  # the 2x3 skew the scan applies
    dpi: float
    page_type: str
    rng: np.random.Generator  # the page's generator, where the process is drawn next


def draw_page(seed: int, index: int, page_type: str | None = None, scale: float = 1.0) -> DrawnPage:
    """Page ``index`` of the dataset of ``seed`` drawn (layout, text, ink, skew), not yet printed or
    scanned: :func:`make_page` goes on from here; ``scripts/bench_degrade.py`` times processes on it."""
    rng = np.random.default_rng([seed, index])
    names = sorted(DEFAULT_MIX)
    drawn = names[int(rng.choice(len(names), p=[DEFAULT_MIX[n] for n in names]))]
    page_type = page_type or drawn
    if page_type not in PAGE_TYPES:
        raise ValueError(f"unknown page type {page_type!r}; choose one of {', '.join(PAGE_TYPES)}")
    dpi = float(rng.uniform(150, 200)) * scale
    paper_w, paper_h = receipt_paper(rng) if page_type == "receipt" else PAPERS[int(rng.random() < 0.3)]
    canvas = Canvas(round(paper_w * dpi / 25.4), round(paper_h * dpi / 25.4))
    text = TextSource(LOCALES[int(rng.integers(len(LOCALES)))], rng)
    PAGE_TYPES[page_type](layouts.setup(canvas, text, rng, dpi))

    points = [pt for ann in canvas.regions + canvas.lines for pt in ann.polygon]
    points += [pt for ln in canvas.lines for pt in ln.baseline or []]
    matrix = degrade.choose_skew(points, canvas.width, canvas.height, rng)
    return DrawnPage(canvas, matrix, dpi, page_type, rng)


def _make_page(seed: int, index: int, page_type: str | None, scale: float,
               processes: Sequence[str] | None) -> SynthPage:
    drawn = draw_page(seed, index, page_type, scale)
    canvas, matrix, rng, page_type = drawn.canvas, drawn.matrix, drawn.rng, drawn.page_type
    process = degrade.choose_process(page_type, rng, processes)
    image = degrade.scan(canvas.image(), matrix, rng, process, drawn.dpi)

    def move(pts: list) -> list:
        return [(float(x), float(y)) for x, y in degrade.transform(np.asarray(pts, np.float64), matrix)]

    for ann in canvas.regions + canvas.lines:
        ann.polygon = move(ann.polygon)
    for ln in canvas.lines:
        ln.baseline = move(ln.baseline) if ln.baseline else None
    return SynthPage(image, canvas.regions, canvas.lines, page_type, process)


def encode(image: np.ndarray) -> bytes:
    """The image file's bytes (JPEG; grey pages stay single-channel)."""
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _write_page(index: int, out_dir: Path, seed: int, scale: float, processes: Sequence[str] | None,
                families: Sequence[str] | None) -> Page:
    cv2.setNumThreads(1)  # one process per core already
    sp = make_page(seed, index, scale=scale, processes=processes, families=families)
    rel = f"images/{index:05d}.jpg"
    path = out_dir / rel
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(encode(sp.image))
    os.replace(tmp, path)
    h, w = sp.image.shape[:2]
    return Page(image=rel, width=w, height=h, regions=sp.regions, lines=sp.lines, root=out_dir, source=str(path))


def is_val(index: int, val_fraction: float) -> bool:
    """Whether page ``index`` belongs to the validation split (evenly spread; stable as pages are added)."""
    return int((index + 1) * val_fraction) > int(index * val_fraction)


def generate(out_dir: str | Path, pages: int = 5000, seed: int = 0, workers: int | None = None,
             val_fraction: float = 0.05, scale: float = 1.0, progress: bool = True,
             processes: Sequence[str] | None = None, families: Sequence[str] | None = None) -> tuple[Path, Path]:
    """Write ``pages`` synthetic pages and their train/val manifests; returns the manifests' paths.

    ``processes`` limits the print and scan processes, ``families`` the printed font families (all
    of them by default)."""
    if pages < 2:
        raise ValueError("need at least 2 pages: one for training and one for validation")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if processes is not None:
        degrade.check_processes(processes)  # unknown names fail here, not in a worker
    if families is not None:
        fonts.check_families(families)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, pages))
    job = partial(_write_page, out_dir=out_dir, seed=seed, scale=scale, processes=processes, families=families)
    bar = partial(tqdm, total=pages, desc="synthetic pages", unit="page", disable=not progress)
    if workers == 1:
        made = [job(i) for i in bar(range(pages))]
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            made = list(bar(pool.imap(job, range(pages), chunksize=4)))
    val = [p for i, p in enumerate(made) if is_val(i, val_fraction)]
    if not val:
        val = [made[-1]]
    val_ids = {id(p) for p in val}
    train = [p for p in made if id(p) not in val_ids]
    return manifest.write(train, out_dir / "train.jsonl"), manifest.write(val, out_dir / "val.jsonl")
