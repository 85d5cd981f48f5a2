"""How tall are real text lines once a page is scaled to ``data.long_side``? Which long side to pick.

    python scripts/measure_resolution.py [--markdown] [--long-sides 1024 1536 2048]
        [--realdata ../shared/realdata] [--synthetic data/synthetic/train.jsonl] [--no-xheight]
        [--pages FORMAT PATH ...]

Pages are scaled so that their long side equals ``data.long_side`` (scale = long_side / max(w, h),
up or down, as ``A.LongestMaxSize`` does in the data pipeline). The model reads each line from a
**stride-4** fused feature map: the recognition RoI samples the line's rotated box to a fixed 8
feature rows, i.e. 32 input pixels.

What is measured, per line:

* **line height**: the height across the reading direction of the line's rotated box, exactly the
  box the model samples (``docrec.geometry.line_quad``: ``cv2.minAreaRect`` of the line polygon,
  the side closest to horizontal taken as the reading direction). For every line wider than tall
  this is the short side of the min-area rectangle; for the few boxes taller than wide (a single
  digit, a tick box) it is the long side, which is the character height there. Original pixels.
* **core height** (an x-height proxy, optional, reads the images): the line's box is rectified at
  native resolution, binarised (Otsu), long horizontal rules (underlines, form boxes) removed, and
  the ink-per-row profile taken; the core height is the contiguous band of rows around the densest
  row holding at least half its ink (full width at half maximum). For print this is about the
  x-height; for handwriting, the body of the letters without ascenders and descenders.

Criterion (printed with the numbers): at stride 4 a line of ``h`` input pixels covers ``h / 4``
feature rows. Below **16 px** (4 rows) the body of the letters falls on ~2 rows and small
characters (``e``/``c``/``o``, accents, punctuation) are not separable: such a line is *too small*.
The recommended long side is the smallest candidate at which

1. the median line is at least **24 px** (6 rows),
2. fewer than **5 %** of the lines are below 16 px, and
3. the median core (x-height proxy) is at least **10 px** (2.5 rows; checked only when measured).
   Print has a core of ~0.4 line heights, so 1. implies ~10 px there; handwriting polygons
   (ascender to descender plus slack) have a core of 0.2-0.25 and need 3.

Above **32 px** (the RoI's 8 rows) the RoI samples the map more coarsely than it is resolved; the
letter body then gets about 8 x core / line-height RoI rows whatever the long side ("core in RoI").

``long side needed`` is the continuous version: the smallest long side meeting 1.-3. (heights scale
linearly with it). Measure your own pages with ``--pages FORMAT PATH`` (e.g. ``--pages pagexml
/data/letters``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from docrec.formats import load
from docrec.geometry import line_quad

REPO = Path(__file__).resolve().parents[3]

STRIDE = 4  # the fused feature map the recognition RoI reads
ROI_ROWS = 8  # feature rows the RoI samples across a line
MIN_PX = 16.0  # below this many input px a line is too small to read (4 rows at stride 4)
TARGET_MEDIAN_PX = 24.0  # the median line should reach this (6 rows at stride 4)
MAX_SMALL_SHARE = 0.05  # and fewer than this share of lines should be below MIN_PX
MIN_CORE_PX = 10.0  # and the median core (x-height proxy) should reach this (2.5 rows at stride 4)
LONG_SIDES = (1024, 1536, 2048)

#: (name, format, folder under realdata, reader options)
DATASETS: tuple[tuple[str, str, str, dict], ...] = (
    ("FUNSD (forms, print)", "funsd", "funsd/dataset/training_data", {}),
    ("SROIE (receipts, print)", "sroie", "sroie/data", {}),
    ("CREMMA (French handwriting)", "alto", "cremma_testaments_de_poilus/data", {"kind": "handwritten"}),
    ("Hooker (English handwriting)", "pagexml", "joseph_hooker_htr", {}),
)


# ----------------------------------------------------------------------------------------------
# Pure functions


def line_box(polygon: Sequence[Sequence[float]]) -> tuple[float, float]:
    """(length along the reading direction, height across it) of a line's rotated box, original px."""
    return box_size(line_quad(np.asarray(polygon, np.float32)))


def box_size(quad: np.ndarray) -> tuple[float, float]:
    """(length along the reading direction, height across it) of a quad TL, TR, BR, BL."""
    q = np.asarray(quad, dtype=np.float64)
    length = (np.hypot(*(q[1] - q[0])) + np.hypot(*(q[2] - q[3]))) / 2
    height = (np.hypot(*(q[3] - q[0])) + np.hypot(*(q[2] - q[1]))) / 2
    return float(length), float(height)


def line_height(polygon: Sequence[Sequence[float]]) -> float:
    """Height of a line across its reading direction (original px): see the module docstring."""
    return line_box(polygon)[1]


def short_side(polygon: Sequence[Sequence[float]]) -> float:
    """The short side of ``cv2.minAreaRect`` of a polygon."""
    (_, _), (w, h), _ = cv2.minAreaRect(np.asarray(polygon, dtype=np.float32).reshape(-1, 2))
    return float(min(w, h))


def scale_factor(long_side: float, width: float, height: float) -> float:
    """The factor that brings a ``width`` x ``height`` page to ``long_side`` on its long side."""
    return float(long_side) / float(max(width, height))


def line_heights(pages: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """Per line of ``pages``: (height in original px, the long side of its page in px)."""
    heights, sides = [], []
    for page in pages:
        side = max(page.width, page.height)
        for ln in page.lines:
            heights.append(line_height(ln.polygon))
            sides.append(side)
    return np.asarray(heights, dtype=np.float64), np.asarray(sides, dtype=np.float64)


def core_height(profile: Sequence[float], frac: float = 0.5) -> int:
    """Rows of the contiguous band around the densest row of ``profile`` holding >= ``frac`` x its ink.

    0 for a profile without ink.
    """
    p = np.asarray(profile, dtype=np.float64)
    if p.size == 0 or p.max() <= 0:
        return 0
    peak = int(np.argmax(p))
    keep = p >= frac * p[peak]
    lo, hi = peak, peak
    while lo > 0 and keep[lo - 1]:
        lo -= 1
    while hi < p.size - 1 and keep[hi + 1]:
        hi += 1
    return hi - lo + 1


def ink_profile(gray: np.ndarray, quad: np.ndarray, rule_factor: float = 3.0) -> np.ndarray | None:
    """Ink pixels per row of the line's box rectified at native resolution; None when unusable.

    Dark ink on light paper; horizontal runs longer than ``rule_factor`` x the box height
    (underlines, form boxes) are removed first. None for a box under 4 px high, or a crop that is
    blank or mostly dark (a stamp, a photo, a bad binarisation).
    """
    length, height = box_size(quad)
    w, h = round(length), round(height)
    if h < 4 or w < 2:
        return None
    dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(np.asarray(quad, dtype=np.float32), dst)
    crop = cv2.warpPerspective(gray, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    _, ink = cv2.threshold(crop, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    run = int(rule_factor * h)
    if run < w:
        rules = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (run, 1)))
        ink = cv2.subtract(ink, rules)
    share = float(np.count_nonzero(ink)) / ink.size
    if share == 0.0 or share > 0.6:
        return None
    return (ink > 0).sum(axis=1).astype(np.float64)


def percentile(values: np.ndarray, q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``; NaN when empty."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.percentile(values, q)) if values.size else math.nan


@dataclass
class Measured:
    """One dataset's measurements: per-line arrays and per-page long sides."""

    name: str
    heights: np.ndarray  # line heights, original px
    sides: np.ndarray  # the long side of each line's page, px
    page_sides: np.ndarray  # long side of each page, px
    cores: np.ndarray | None = None  # core heights, original px (NaN where unusable)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    taller_than_wide: int = 0  # line boxes whose height is their long side


def needed_long_side(heights: np.ndarray, sides: np.ndarray, cores: np.ndarray | None = None) -> float:
    """The smallest long side (continuous) at which the lines meet the criterion.

    Line heights scale linearly with the long side: the median line reaches TARGET_MEDIAN_PX at
    TARGET_MEDIAN_PX / median(h / side), the MAX_SMALL_SHARE-quantile line reaches MIN_PX at
    MIN_PX / that quantile of h / side, and the median core reaches MIN_CORE_PX likewise.
    """
    heights = np.asarray(heights, dtype=np.float64)
    sides = np.asarray(sides, dtype=np.float64)
    if not heights.size:
        return math.nan
    rel = heights / sides
    need = [TARGET_MEDIAN_PX / percentile(rel, 50), MIN_PX / percentile(rel, 100 * MAX_SMALL_SHARE)]
    if cores is not None:
        cores = np.asarray(cores, dtype=np.float64)
        good = np.isfinite(cores) & (cores > 0)
        if good.any():
            need.append(MIN_CORE_PX / percentile(cores[good] / sides[good], 50))
    return float(max(need))


def meets(at: dict) -> bool:
    """Whether one long side's statistics (an ``at[L]`` of :func:`summarize`) meet the criterion."""
    core_ok = math.isnan(at["core_median_px"]) or at["core_median_px"] >= MIN_CORE_PX
    return at["median_px"] >= TARGET_MEDIAN_PX and at["below_min"] < MAX_SMALL_SHARE and core_ok


def summarize(heights: np.ndarray, sides: np.ndarray, long_sides: Sequence[int],
              cores: np.ndarray | None = None) -> dict:
    """Native statistics and, per long side, the scaled line heights.

    ``heights`` and ``sides`` are per line: the line height and its page's long side, original px;
    ``cores`` (optional) the core heights, original px, NaN or 0 where unknown. Returns a dict:
    ``lines``, ``median_px``, ``p10_px``, ``core_median_px``, ``core_lines``, ``core_share`` (median
    core / line height), ``needed`` (:func:`needed_long_side`) and ``at``: per long side L the median
    and 10th percentile line height in input px, the median in stride-4 rows, the shares of lines
    below MIN_PX and above the RoI's 32 px, the median core in input px and in stride-4 rows, and
    ``roi_core_rows``: the median number of rows the letter core really gets in the recognition RoI,
    min(core / STRIDE feature rows, ROI_ROWS x core / line height RoI rows).
    """
    heights = np.asarray(heights, dtype=np.float64)
    sides = np.asarray(sides, dtype=np.float64)
    if heights.shape != sides.shape:
        raise ValueError(f"heights {heights.shape} and sides {sides.shape} differ in shape")
    good = None
    if cores is not None:
        cores = np.asarray(cores, dtype=np.float64)
        if cores.shape != heights.shape:
            raise ValueError(f"cores {cores.shape} and heights {heights.shape} differ in shape")
        good = np.isfinite(cores) & (cores > 0) & (heights > 0)
        if not good.any():
            good = None
    out: dict = {
        "lines": int(heights.size),
        "median_px": percentile(heights, 50),
        "p10_px": percentile(heights, 10),
        "core_median_px": percentile(cores[good], 50) if good is not None else math.nan,
        "core_lines": int(good.sum()) if good is not None else 0,
        "core_share": percentile(cores[good] / heights[good], 50) if good is not None else math.nan,
        "needed": needed_long_side(heights, sides, cores),
        "at": {},
    }
    for L in long_sides:
        scaled = heights * (L / sides)
        med = percentile(scaled, 50)
        at = {
            "median_px": med,
            "p10_px": percentile(scaled, 10),
            "median_rows": med / STRIDE,
            "below_min": float(np.mean(scaled < MIN_PX)) if scaled.size else math.nan,
            "above_roi": float(np.mean(scaled > ROI_ROWS * STRIDE)) if scaled.size else math.nan,
            "core_median_px": math.nan,
            "core_rows": math.nan,
            "roi_core_rows": math.nan,
        }
        if good is not None:
            core_in = cores[good] * (L / sides[good])
            at["core_median_px"] = percentile(core_in, 50)
            at["core_rows"] = at["core_median_px"] / STRIDE
            roi_rows = np.minimum(core_in / STRIDE, ROI_ROWS * cores[good] / heights[good])
            at["roi_core_rows"] = percentile(roi_rows, 50)
        at["meets"] = meets(at)
        out["at"][L] = at
    return out


def pick_long_side(summary: dict) -> int | None:
    """The smallest long side of ``summary`` meeting the criterion, or None when none does."""
    for L in sorted(summary["at"]):
        if summary["at"][L]["meets"]:
            return L
    return None


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:,.{digits}f}"


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f} %"


Row = tuple[str, int, float, dict]  # dataset name, pages, median page long side (px), summary


def tables(rows: Sequence[Row], long_sides: Sequence[int]
           ) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    """(header, rows) of the native table and of the per-long-side table."""
    h1 = ["dataset", "pages", "lines", "page long side (median px)", "line height p10 (px)",
          "line height median (px)", "core height median (px)", "core / line", "long side needed"]
    r1 = [[name, str(pages), str(s["lines"]), _fmt(side, 0), _fmt(s["p10_px"]), _fmt(s["median_px"]),
           _fmt(s["core_median_px"]), _fmt(s["core_share"], 2), _fmt(s["needed"], 0)]
          for name, pages, side, s in rows]
    h2 = ["dataset", "long_side", "line p10 (px)", "line median (px)", "line median (stride-4 rows)",
          f"lines < {MIN_PX:g} px", f"lines > {ROI_ROWS * STRIDE} px", "core median (px)",
          "core in RoI (rows)", "meets criterion"]
    r2 = []
    for name, _, _, s in rows:
        pick = pick_long_side(s)
        for L in long_sides:
            at = s["at"][L]
            mark = ("yes (smallest)" if L == pick else "yes") if at["meets"] else "no"
            r2.append([name, str(L), _fmt(at["p10_px"]), _fmt(at["median_px"]), _fmt(at["median_rows"]),
                       _pct(at["below_min"]), _pct(at["above_roi"]), _fmt(at["core_median_px"]),
                       _fmt(at["roi_core_rows"]), mark])
    return h1, r1, h2, r2


def render(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    """A markdown table, or a plain aligned one."""
    if markdown:
        sep = ["---"] + ["---:"] * (len(header) - 1)
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*r) for r in rows])


def criterion_text() -> str:
    return (f"Criterion: the smallest long_side at which the median line is >= {TARGET_MEDIAN_PX:g} input px "
            f"({TARGET_MEDIAN_PX / STRIDE:g} stride-4 rows), < {100 * MAX_SMALL_SHARE:g} % of lines are below "
            f"{MIN_PX:g} px ({MIN_PX / STRIDE:g} rows) and the median core (x-height proxy) is >= "
            f"{MIN_CORE_PX:g} px ({MIN_CORE_PX / STRIDE:g} rows; only where measured).")


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def recommendation(rows: Sequence[Row], long_sides: Sequence[int]) -> str:
    """One paragraph derived from the numbers: what each dataset needs, and what to pick."""
    if not rows:
        return "No dataset was measured; nothing to recommend."
    long_sides = sorted(long_sides)
    picks = {name: pick_long_side(s) for name, _, _, s in rows}
    short = {name: name.split(" (")[0] for name, _, _, _ in rows}
    need = "; ".join(f"{short[n]} ~{s['needed']:,.0f}" for n, _, _, s in rows)
    by_pick: dict[int | None, list[str]] = {}
    for name, _, _, _ in rows:
        by_pick.setdefault(picks[name], []).append(short[name])
    parts = []
    for L in long_sides:
        if L in by_pick:
            one = len(by_pick[L]) == 1
            verb = ("needs" if one else "need") if L != long_sides[0] else ("is fine at" if one else "are fine at")
            parts.append(f"{_join(by_pick[L])} {verb} {L}")
    text = [criterion_text(),
            f"Long side needed (continuous): {need}. By that rule {'; '.join(parts) or 'no dataset passes'}."]
    if None in by_pick:
        text.append(f"{_join(by_pick[None])} {'needs' if len(by_pick[None]) == 1 else 'need'} more than {long_sides[-1]}: train on crops at native "
                    "scale (data.crop) or use a finer feature map.")
    lo = {n: s["at"][long_sides[0]] for n, _, _, s in rows}
    worst = max(rows, key=lambda r: r[3]["at"][long_sides[0]]["below_min"])
    text.append(f"At {long_sides[0]} the median line of {short[worst[0]]} is only "
                f"{lo[worst[0]]['median_px']:.0f} px ({lo[worst[0]]['median_rows']:.1f} stride-4 rows) and "
                f"{100 * lo[worst[0]]['below_min']:.0f} % of its lines fall below {MIN_PX:g} px.")
    passing = [p for p in picks.values() if p is not None]
    overall = max(passing) if len(passing) == len(picks) else long_sides[-1]
    text.append(f"Recommendation: use long_side {overall} as the default (it covers every dataset measured "
                f"here); go down to a smaller candidate only when this script, run on ~20 of your own pages "
                f"(--pages FORMAT PATH), says it suffices; a page needs at least {TARGET_MEDIAN_PX:g} x its long side / "
                f"its median line height, and {MIN_CORE_PX:g} x its long side / its x-height.")
    # The RoI's fixed rows across the line box: a loose polygon leaves the letters few of them.
    capped = []
    for name, _, _, s in rows:
        at = s["at"][overall]
        if not math.isnan(at["roi_core_rows"]) and at["roi_core_rows"] < 0.75 * at["core_rows"]:
            capped.append((short[name], at["roi_core_rows"], s["core_share"]))
    if capped:
        what = _join([f"{n} ({r:.1f} RoI rows for a core of {100 * c:.0f} % of the box)" for n, r, c in capped])
        text.append(f"Beyond resolution, the {ROI_ROWS}-row RoI limits {what}: whatever the long side, "
                    f"the letter body gets {ROI_ROWS} x core / line height rows; a taller RoI "
                    f"(model.recognition.roi_height) or tighter line boxes help those more than a larger page.")
    return " ".join(text)


# ----------------------------------------------------------------------------------------------
# Measuring


def _read_gray(path: Path) -> np.ndarray | None:
    """The page image in grey levels, or None when it cannot be read."""
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def core_heights(pages: Iterable) -> np.ndarray:
    """Per line of ``pages``: the core height in original px (NaN where the image or crop is unusable)."""
    vals = []
    for page in pages:
        gray = _read_gray(page.image_path)
        if gray is not None and gray.shape[:2] != (page.height, page.width):
            gray = None  # the annotation's coordinates do not fit this image
        for ln in page.lines:
            prof = ink_profile(gray, line_quad(np.asarray(ln.polygon, np.float32))) if gray is not None else None
            vals.append(float(core_height(prof)) if prof is not None else math.nan)
    return np.asarray(vals, dtype=np.float64)


def measure(name: str, pages: list, skipped: list[tuple[str, str]], xheight: bool) -> Measured:
    """All per-line measurements of one dataset's pages."""
    heights, sides = line_heights(pages)
    taller = sum(1 for p in pages for ln in p.lines
                 if line_height(ln.polygon) > short_side(ln.polygon) + 1e-3)
    cores = core_heights(pages) if xheight else None
    page_sides = np.asarray([max(p.width, p.height) for p in pages], dtype=np.float64)
    return Measured(name, heights, sides, page_sides, cores, skipped, taller)


def load_dataset(fmt: str, path: Path, **opts):
    """Lenient loading without image checks: bad pages are skipped and listed in ``.skipped``."""
    return load(fmt, path, strict=False, check_images=False, **opts)
