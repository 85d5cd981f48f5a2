"""Tesseract on the kept-apart real pages, scored by docrec's own metrics: the anchor of every table.

    python scripts/bench_tesseract.py [--sets funsd,sroie,cremma,hooker] [--part kept] [--gt-lines] [--json OUT]

Each page is read whole (``--psm 3``, the set's language: English, French for the wills); the
words of each Tesseract line become one predicted line (its box, its words joined by spaces),
scored with :class:`docrec.metrics.PageEvaluator` like ``scripts/evaluate.py`` scores docrec:
line detection at IoU >= 0.5, CER over matched lines, bag-of-words F1 and page CER (SROIE's
ignoring case, as its transcripts do). With
``--gt-lines`` every ground-truth line is also cut out (its box, 2 px margin) and read alone
(``--psm 7``), which gives CER on GT lines, the figure docrec's ``cer`` is. Tesseract is a
benchmark, never a dependency of docrec: install it yourself (Debian: ``tesseract-ocr``,
``tesseract-ocr-fra``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

from docrec.metrics import PageEvaluator
from docrec.pages import Page
from docrec.realdata import PARTS, REALDATA, SETS, available, split_pages

COLUMNS = ("det_f1", "e2e_cer", "cer", "bow_f1", "page_cer")


def tesseract(args: list[str]) -> str:
    """Tesseract's stdout; a failure names the command."""
    run = subprocess.run(["tesseract", *args], capture_output=True, text=True, check=False)
    if run.returncode:
        raise RuntimeError(f"tesseract {' '.join(args)}: {run.stderr.strip()}")
    return run.stdout


def page_lines(image: Path, lang: str) -> list[dict]:
    """Tesseract's lines of a page: box polygon and text (``--psm 3``, TSV output)."""
    rows = csv.DictReader(io.StringIO(tesseract([str(image), "-", "-l", lang, "--psm", "3", "tsv"])),
                          delimiter="\t", quoting=csv.QUOTE_NONE)
    lines: dict[tuple[str, str, str], list[dict]] = {}
    for row in rows:
        if row["level"] == "5" and (row.get("text") or "").strip():
            lines.setdefault((row["block_num"], row["par_num"], row["line_num"]), []).append(row)
    out = []
    for words in lines.values():
        x0 = min(int(w["left"]) for w in words)
        y0 = min(int(w["top"]) for w in words)
        x1 = max(int(w["left"]) + int(w["width"]) for w in words)
        y1 = max(int(w["top"]) + int(w["height"]) for w in words)
        out.append({"polygon": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]],
                    "text": " ".join(w["text"].strip() for w in words)})
    return out


def gt_line_texts(page: Page, lang: str, tmp: Path, margin: int = 2) -> list[str]:
    """Each GT line's box cut out and read alone (``--psm 7``), in one Tesseract process per page."""
    img = cv2.imread(str(page.image_path), cv2.IMREAD_GRAYSCALE)
    listing = []
    for i, line in enumerate(page.lines):
        xs, ys = [x for x, _ in line.polygon], [y for _, y in line.polygon]
        x0, y0 = max(0, int(min(xs)) - margin), max(0, int(min(ys)) - margin)
        x1, y1 = min(img.shape[1], int(max(xs)) + margin + 1), min(img.shape[0], int(max(ys)) + margin + 1)
        crop = tmp / f"{i:05d}.png"
        cv2.imwrite(str(crop), img[y0:y1, x0:x1])
        listing.append(str(crop))
    if not listing:
        return []
    (tmp / "lines.txt").write_text("\n".join(listing) + "\n", encoding="utf-8")
    texts = tesseract([str(tmp / "lines.txt"), "-", "-l", lang, "--psm", "7"]).split("\f")
    return [" ".join(t.split()) for t in texts[: len(listing)]]


def score_set(name: str, part: str, realdata: Path, gt_lines: bool) -> dict[str, float]:
    """Tesseract's metrics on one set's pages of ``part``, with pages and seconds per page."""
    pages = split_pages(name, realdata)[part]
    ev, t0 = PageEvaluator(), time.perf_counter()
    lang = SETS[name].lang
    with tempfile.TemporaryDirectory() as tmp:
        for page in pages:
            preds = page_lines(page.image_path, lang)
            ev.update(preds, page.lines, gt_line_preds=gt_line_texts(page, lang, Path(tmp)) if gt_lines else None,
                      fold_case=page.fold_case)
    out = ev.compute()
    out["s_per_page"] = (time.perf_counter() - t0) / max(1, len(pages))
    return out


def table(results: dict[str, dict[str, float]]) -> str:
    """One row per set: pages, lines and the metrics of ``COLUMNS`` (CER and F1 in %)."""
    head = f"{'set':<8}{'pages':>6}{'gt lines':>9}{'pred':>6}" + "".join(f"{c:>10}" for c in COLUMNS) + f"{'s/page':>8}"
    rows = [head]
    for name, m in results.items():
        cells = "".join(f"{100 * m[c]:>10.1f}" if c in m else f"{'-':>10}" for c in COLUMNS)
        rows.append(f"{name:<8}{m['n_pages']:>6.0f}{m['n_gt_lines']:>9.0f}{m['n_pred_lines']:>6.0f}{cells}"
                    f"{m['s_per_page']:>8.2f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Score every set asked for, print the table, write the JSON when asked."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated sets (default: all)")
    ap.add_argument("--part", default="kept", choices=PARTS, help="which side of the split (default: kept)")
    ap.add_argument("--gt-lines", action="store_true", help="also read every GT line alone (CER on GT lines)")
    ap.add_argument("--realdata", type=Path, default=REALDATA)
    ap.add_argument("--json", type=Path, help="write the metrics per set here")
    args = ap.parse_args(argv)
    if shutil.which("tesseract") is None:
        print("error: tesseract is not installed (Debian: apt-get install tesseract-ocr tesseract-ocr-fra)",
              file=sys.stderr)
        return 2
    names = [n for n in args.sets.split(",") if n]
    unknown = set(names) - set(SETS)
    if unknown:
        print(f"error: unknown set(s) {', '.join(sorted(unknown))}; choose from {', '.join(SETS)}", file=sys.stderr)
        return 2
    present = available(args.realdata)
    results = {n: score_set(n, args.part, args.realdata, args.gt_lines) for n in names if n in present}
    version = tesseract(["--version"]).splitlines()[0]
    print(f"{version}, {args.part} pages of {args.realdata}; CER and F1 in %\n{table(results)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
