"""Print and scan processes: the generator's own (``docrec.synth.degrade``) against augraphy's, CPU ms a page.

    python scripts/bench_degrade.py [--pages 4] [--types printed form handwritten receipt] [--seed 0]
        [--sheet degrade_sheet.png] [--json PATH]

augraphy is not a dependency of docrec; install it beside it for this benchmark (its wheel asks for
``opencv-python``, which would sit beside ``opencv-python-headless``: install it without that):

    pip install --no-deps augraphy && pip install numba scikit-image scikit-learn requests matplotlib

Every page is drawn once (``docrec.synth.generate.draw_page``: layout, text, ink, skew, the page kind's
own size and dpi), then made into pixels by each contender, in one thread (OpenCV, numba and BLAS
held to one), timed with ``time.process_time``: CPU time, so the figures hold on a busy machine.
augraphy's kernels are compiled (numba) on a page of each kind before the timing.

- ``docrec <process>``: :func:`docrec.synth.degrade.scan` with that process (every process the page
  kind uses in ``PROCESS_MIX``), skew included;
- ``augraphy <process>``: augraphy's augmentations for the same process (below, ``AUGRAPHY``), each
  at its own default parameters, ``p=1``; then the same skew (``cv2.warpAffine``) so both do the same
  geometric work;
- ``augraphy default``: ``augraphy.default_augraphy_pipeline()``, the library's recommended pipeline
  (a random draw of its ink, paper and post phases), and the skew. Its Scribbles augmentation
  downloads a font from www.fontsquirrel.com on first use and, offline, falls back on the system's
  fonts through matplotlib;
- ``augraphy's input cache``: ``AugraphyPipeline`` writes every page it is given as a PNG to
  ``./augraphy_cache/`` (its last 30), inside each augraphy figure above; this row times that write
  alone (``cv2.imwrite`` of the page), to tell the library's own work from it. The benchmark runs in a
  temporary folder, so the cache is not left in yours.

The table gives the median and the mean CPU ms a page per page kind and contender, and what that
means for generation (``make_page`` is drawing + process: the drawing is timed too). ``--sheet``
writes one page of each kind through each contender, side by side, to compare by eye.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import cv2
import numpy as np

from docrec.synth import degrade
from docrec.synth.generate import PAGE_TYPES, draw_page
from docrec.synth.preview import captioned_sheet

#: augraphy's augmentations standing for each of the generator's processes, by pipeline phase.
AUGRAPHY: dict[str, dict[str, list[str]]] = {
    "scan": {"ink": ["InkBleed"], "paper": ["NoiseTexturize", "BrightnessTexturize"],
             "post": ["LightingGradient", "SubtleNoise", "Jpeg"]},
    "fax": {"ink": ["InkBleed"], "paper": [], "post": ["Faxify"]},
    "photocopy": {"ink": [], "paper": ["NoiseTexturize"], "post": ["BadPhotoCopy", "DirtyDrum"]},
    "thermal": {"ink": ["LowInkPeriodicLines", "LowInkRandomLines"], "paper": [], "post": ["SubtleNoise"]},
    "aged": {"ink": ["InkBleed"], "paper": ["ColorPaper", "NoiseTexturize", "Stains"],
             "post": ["BleedThrough", "Jpeg"]},
}


def _augraphy():
    """The augraphy module, or exit with how to install it."""
    try:
        import augraphy
        import matplotlib.font_manager  # noqa: F401  augraphy's Scribbles falls back on it offline
    except ImportError as exc:
        sys.exit(f"error: augraphy is not installed ({exc}); see this script's docstring for the install line")
    return augraphy


def augraphy_pipeline(process: str):
    """An ``AugraphyPipeline`` of :data:`AUGRAPHY`'s augmentations for ``process``, every one at p=1."""
    aug = _augraphy()
    phases = {phase: [getattr(aug, name)(p=1.0) for name in names] for phase, names in AUGRAPHY[process].items()}
    return aug.AugraphyPipeline(ink_phase=phases["ink"], paper_phase=phases["paper"], post_phase=phases["post"])


def _skew(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The page skewed as the generator's scan skews it (augraphy's output)."""
    h, w = image.shape[:2]
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def contenders(page_type: str) -> list[str]:
    """The contenders for a page kind: docrec and augraphy for each process it uses, then augraphy's default."""
    names = sorted(degrade.PROCESS_MIX[page_type])
    return [f"docrec {p}" for p in names] + [f"augraphy {p}" for p in names] + ["augraphy default"]


def measure(types: list[str], pages: int, seed: int, sheet: Path | None = None) -> dict:
    """CPU ms per page for every contender, and the drawing's own cost, by page kind."""
    aug = _augraphy()
    cv2.setNumThreads(1)
    pipelines = {p: augraphy_pipeline(p) for p in degrade.PROCESSES}
    default = aug.default_augraphy_pipeline()
    result: dict = {}
    shown: list[list[tuple[np.ndarray, str]]] = []
    for page_type in types:
        times: dict[str, list[float]] = {name: [] for name in ["draw", *contenders(page_type), "cache"]}
        row: list[tuple[np.ndarray, str]] = []
        for i in range(pages):
            if i == 0:  # numba compiles augraphy's kernels on first use: not a page's cost
                random.seed(seed)
                np.random.seed(seed)
                warm = degrade.to_uint8(draw_page(seed, pages + 1, page_type).canvas.image())[:600, :500]
                for pipeline in [*(pipelines[p] for p in degrade.PROCESS_MIX[page_type]), default]:
                    pipeline(warm)
            t = time.process_time()
            page = draw_page(seed, i, page_type)
            ink = page.canvas.image()
            times["draw"].append(time.process_time() - t)
            rgb = degrade.to_uint8(ink)
            t = time.process_time()
            cv2.imwrite(str(Path(tempfile.gettempdir()) / "bench_degrade_cache.png"), rgb)
            times["cache"].append(time.process_time() - t)
            for name in contenders(page_type):
                who, process = name.split(" ")
                random.seed(i)
                np.random.seed(i)
                rng = np.random.default_rng([seed, i, 1])
                t = time.process_time()
                if who == "docrec":
                    out = degrade.scan(ink, page.matrix, rng, process, page.dpi)
                else:
                    out = _skew((default if process == "default" else pipelines[process])(rgb), page.matrix)
                times[name].append(time.process_time() - t)
                if i == 0 and sheet is not None:
                    row.append((out, name))
        shown.append(row)
        result[page_type] = {name: {"median_ms": 1000 * statistics.median(v), "mean_ms": 1000 * statistics.fmean(v),
                                    "pages": len(v)} for name, v in times.items()}
    if sheet is not None:  # one row a page kind, one captioned tile a contender
        cv2.imwrite(str(sheet), cv2.cvtColor(captioned_sheet(shown, height=480), cv2.COLOR_RGB2BGR))
    return result


def table(result: dict) -> str:
    lines = ["| page kind | contender | CPU ms a page, median | mean | x docrec (same process) |",
             "|---|---|---:|---:|---:|"]
    for page_type, by_name in result.items():
        for name, v in by_name.items():
            who, _, process = name.partition(" ")
            ours = by_name.get(f"docrec {process}")
            ratio = f"{v['median_ms'] / ours['median_ms']:.1f}" if who == "augraphy" and ours else ""
            label = {"draw": "drawing (layout, text, ink)", "cache": "augraphy's input cache (PNG write)"}.get(name, name)
            lines.append(f"| {page_type} | {label} | {v['median_ms']:.0f} | {v['mean_ms']:.0f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=4, help="pages per page kind")
    ap.add_argument("--types", nargs="+", default=sorted(PAGE_TYPES), choices=sorted(PAGE_TYPES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sheet", type=Path, help="write the pages side by side to this PNG")
    ap.add_argument("--json", type=Path, help="write the figures to this file")
    args = ap.parse_args(argv)
    if args.pages < 1:
        ap.error("--pages must be at least 1")
    sheet = args.sheet.resolve() if args.sheet else None
    here = Path.cwd()
    with tempfile.TemporaryDirectory() as work:  # augraphy writes ./augraphy_cache/ there
        os.chdir(work)
        try:
            result = measure(args.types, args.pages, args.seed, sheet)
        finally:
            os.chdir(here)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
