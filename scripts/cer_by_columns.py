"""CER on ground-truth lines against how many feature columns a character gets, from evaluate's pages.jsonl.

    python scripts/cer_by_columns.py outputs/eval/<run>/pages.jsonl [more pages.jsonl ...] [--stride 4]

The reader samples one column per ``--stride`` input pixels along a line (the stride-4 map), and
CTC needs a frame per character (two for a doubled one): a line of ``n`` characters that is
``L`` pixels long at the evaluation scale gives each character ``L / stride / n`` columns. The
table buckets lines by that figure; a CER that climbs as the columns per character fall says the
reader's resolution caps it. The second table is how often each glyph is read against how often
the ground truth holds it (1.00: as often), narrowest first: narrow glyphs that vanish are the
same cap seen per character. The last line splits the CER by case: ignoring it, and on lines
whose letters are mostly capitals (forms and receipts) against the others.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from docrec.metrics import char_edits

BUCKETS = (1.5, 2.0, 2.5, 3.0, 4.0, 6.0)  # upper edges of columns per character; the last bucket is open
GLYPHS = "iljtfrI1.,:;!'-()/JsczaoeunhkxbdpqgyvABCDEFGHKLNOPQRSTUVXYZ0123456789mwMW"


def bucket(columns_per_char: float) -> str:
    """The label of the bucket holding a value."""
    lo = 0.0
    for hi in BUCKETS:
        if columns_per_char < hi:
            return f"{lo:.1f}-{hi:.1f}"
        lo = hi
    return f">= {BUCKETS[-1]:.1f}"


CAPS_SHARE = 0.8  # a line is "all caps" when this share of its letters are capitals


def tables(records: list[dict], stride: float) -> tuple[str, str, str]:
    """(CER by columns per character, glyph read/held ratios, CER by case) over the GT lines of ``records``
    that hold text (evaluate also counts what is read on empty ones)."""
    rows: dict[str, list[int]] = {}
    held, read = Counter(), Counter()
    case = Counter()  # edits and lengths: all, ignoring case, all-caps lines
    for page in records:
        for ln in page["gt_recognition"]:
            gt, pred = ln["gt"], ln["pred"]
            if not gt or "length_px" not in ln:
                continue
            dist, length = char_edits(pred, gt)
            letters = [c for c in gt if c.isalpha()]
            caps = bool(letters) and sum(c.isupper() for c in letters) >= CAPS_SHARE * len(letters)
            case.update({"dist": dist, "len": length, "nocase": char_edits(pred.lower(), gt.lower())[0],
                         "caps_dist": dist if caps else 0, "caps_len": length if caps else 0})
            row = rows.setdefault(bucket(ln["length_px"] / stride / len(gt)), [0, 0, 0])
            row[0] += 1
            row[1] += length
            row[2] += dist
            held.update(gt)
            read.update(pred)
    order = [bucket(x - 1e-9) for x in BUCKETS] + [bucket(BUCKETS[-1])]
    lines = [f"{'columns/char':>13}{'lines':>7}{'chars':>8}{'CER':>8}"]
    for label in order:
        if label in rows:
            n, chars, dist = rows[label]
            lines.append(f"{label:>13}{n:>7}{chars:>8}{100 * dist / max(chars, 1):>7.1f}%")
    glyphs = [g for g in GLYPHS if held[g] >= 20]
    ratio = "  ".join(f"{g} {read[g] / held[g]:.2f}" for g in glyphs)

    def rate(d: float, n: float) -> str:
        return f"{100 * d / n:.1f} %" if n else "-"

    by_case = (f"CER {rate(case['dist'], case['len'])}, ignoring case {rate(case['nocase'], case['len'])}; "
               f"all-caps lines ({rate(case['caps_len'], case['len'])} of the characters) "
               f"{rate(case['caps_dist'], case['caps_len'])}, the others "
               f"{rate(case['dist'] - case['caps_dist'], case['len'] - case['caps_len'])}")
    return "\n".join(lines), f"glyphs read / held (>= 20 held): {ratio}", by_case


def main(argv: list[str] | None = None) -> None:
    """Print both tables for the pages.jsonl files given."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pages", type=Path, nargs="+", help="pages.jsonl written by scripts/evaluate.py")
    ap.add_argument("--stride", type=float, default=4.0, help="input pixels per reader column (default 4)")
    args = ap.parse_args(argv)
    records = [json.loads(line) for path in args.pages for line in path.read_text(encoding="utf-8").splitlines()]
    by_cols, glyphs, by_case = tables(records, args.stride)
    print(f"{len(records)} pages\n{by_cols}\n{glyphs}\n{by_case}")


if __name__ == "__main__":
    main()
