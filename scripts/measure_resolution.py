"""How tall are real text lines once a page is scaled to ``data.long_side``? Which long side to pick.

    python scripts/measure_resolution.py [--markdown] [--long-sides 1024 1536 2048]
        [--realdata ../shared/realdata] [--synthetic data/synthetic/train.jsonl] [--no-xheight]
        [--pages FORMAT PATH ...]

What is measured and how is told in :mod:`docrec.analysis.resolution`, which this script prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from docrec.analysis import resolution
from docrec.analysis.resolution import (
    DATASETS,
    LONG_SIDES,
    REPO,
    load_dataset,
    measure,
    recommendation,
    render,
    summarize,
    tables,
)
from docrec.pages import DataError
from docrec.realdata import REALDATA


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=resolution.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--realdata", type=Path, default=REALDATA, help="folder of the real datasets")
    ap.add_argument("--synthetic", type=Path, default=REPO / "data" / "synthetic" / "train.jsonl",
                    help="a synthetic manifest to measure too (skipped if absent)")
    ap.add_argument("--pages", nargs=2, action="append", default=[], metavar=("FORMAT", "PATH"),
                    help="your own pages (format: manifest|pagexml|alto|funsd|sroie), measured like the others; "
                         "repeatable")
    ap.add_argument("--long-sides", type=int, nargs="+", default=list(LONG_SIDES))
    ap.add_argument("--no-xheight", dest="xheight", action="store_false",
                    help="skip the core-height (x-height proxy) estimate, which reads the images")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables (for the README)")
    args = ap.parse_args(argv)

    todo: list[tuple[str, str, Path, dict]] = [(n, f, args.realdata / p, o) for n, f, p, o in DATASETS]
    todo.append(("Synthetic (default data)", "manifest", args.synthetic, {}))
    todo += [(f"{Path(p).name} ({fmt})", fmt, Path(p), {}) for fmt, p in args.pages]
    notes: list[str] = []
    rows = []
    for name, fmt, path, opts in todo:
        if not path.exists():
            notes.append(f"{name}: {path} is absent, skipped")
            continue
        print(f"measuring {name} ({fmt}: {path}) ...", file=sys.stderr, flush=True)
        try:
            result = load_dataset(fmt, path, **opts)
        except (DataError, OSError) as exc:
            notes.append(f"{name}: cannot be read, skipped: {exc}")
            continue
        for source, msg in result.skipped:
            msg = msg.splitlines()[0] if msg else ""
            notes.append(f"{name}: skipped (lenient loading) {msg if source in msg else f'{source}: {msg}'}")
        if not result.pages:
            notes.append(f"{name}: no pages read, skipped")
            continue
        m = measure(name, result.pages, result.skipped, args.xheight)
        if m.taller_than_wide:
            notes.append(f"{name}: {m.taller_than_wide} of {m.heights.size} line boxes are taller than wide; "
                         "their height is taken across the reading direction (the long side)")
        if m.cores is not None:
            unusable = int(np.sum(~np.isfinite(m.cores) | (m.cores <= 0)))
            if unusable:
                notes.append(f"{name}: no core height for {unusable} of {m.cores.size} lines "
                             "(box < 4 px, blank or dark crop, or unreadable image)")
        rows.append((name, len(result.pages), float(np.median(m.page_sides)),
                     summarize(m.heights, m.sides, args.long_sides, m.cores)))

    h1, r1, h2, r2 = tables(rows, args.long_sides)
    print(render(h1, r1, args.markdown))
    print()
    print(render(h2, r2, args.markdown))
    print()
    if notes:
        print("Notes:" if not args.markdown else "Notes:\n")
        for n in notes:
            print(f"- {n}")
        print()
    print(recommendation(rows, args.long_sides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
