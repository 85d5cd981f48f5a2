"""The ceiling of the training targets: how well a model that predicted them perfectly would detect lines.

    python scripts/target_ceiling.py --format pagexml ../shared/realdata/joseph_hooker_htr --lenient
        [--long-side 2048] [--kind handwritten] [--max-pages N] [--json ceiling.json]

What is measured and how is told in :mod:`docrec.analysis.ceiling`, which this script prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from docrec.analysis.ceiling import ceiling, report
from docrec.formats import FORMATS, load
from docrec.pages import DataError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input", type=Path, help="annotation file or folder")
    ap.add_argument("--format", required=True, choices=FORMATS, help="input format")
    ap.add_argument("--long-side", type=int, default=2048, help="pages scaled to this long side (data.long_side)")
    ap.add_argument("--lenient", action="store_true", help="skip bad pages instead of stopping")
    ap.add_argument("--kind", default=None, help="kind for lines the format does not classify (data.kind)")
    ap.add_argument("--max-pages", type=int, default=None, help="read only the first N pages")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure, print, optionally write JSON; exit code 2 on bad input."""
    args = parse_args(argv)
    try:
        result = load(args.format, args.input, strict=not args.lenient, limit=args.max_pages, kind=args.kind)
        for source, reason in result.skipped:
            print(f"skipped {source}: {reason}", file=sys.stderr)
        if not result.pages:
            print(f"error: {args.input}: no {args.format} pages read", file=sys.stderr)
            return 2
        r = ceiling(result.pages, args.long_side)
    except DataError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print(report(r))
    if args.json is not None:
        args.json.write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
