"""Convert annotations (manifest, PAGE-XML, ALTO, FUNSD, SROIE) to a JSON-lines manifest.

    python scripts/convert.py --format pagexml path/to/xmls --out data/pages.jsonl [--lenient]

Image paths in the output are relative to its folder. Exit code 2 and a one-line error on
bad input (in strict mode, the first bad page; in lenient mode bad pages are skipped and listed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from docrec.formats import FORMATS, load
from docrec.formats.manifest import write
from docrec.pages import DataError, page_stats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input", type=Path, help="annotation file or folder")
    ap.add_argument("--format", required=True, choices=FORMATS, help="input format")
    ap.add_argument("--out", required=True, type=Path, help="output manifest (.jsonl)")
    ap.add_argument("--lenient", action="store_true", help="skip bad pages (each is reported) instead of stopping")
    ap.add_argument("--kind", default=None, help="kind for lines/regions the format does not classify "
                                                 "(e.g. handwritten); default: the reader's")
    ap.add_argument("--allow-outside-root", action="store_true",
                    help="allow image paths that point outside the annotation's folder")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Convert, print a summary, return the exit code."""
    args = parse_args(argv)
    try:
        result = load(args.format, args.input, strict=not args.lenient, kind=args.kind,
                      allow_outside_root=args.allow_outside_root)
    except DataError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    if not result.pages and not result.skipped:
        print(f"error: {args.input}: no {args.format} annotation files found", file=sys.stderr)
        return 2
    try:
        write(result.pages, args.out)
    except OSError as exc:
        print(f"error: {args.out}: cannot write ({exc.strerror or exc})", file=sys.stderr)
        return 2
    stats = page_stats(result.pages)
    print(f"wrote {args.out}: {stats['pages']} pages, {stats['regions']} regions, {stats['lines']} lines "
          f"({stats['empty_lines']} with empty text), {stats['characters']} characters")
    out_dir = args.out.resolve().parent
    if any(out_dir not in p.image_path.resolve().parents for p in result.pages):
        print(f"note: image paths in {args.out} lead outside its folder; read it with --allow-outside-root "
              "(training: data.allow_outside_root=true), or write it inside the dataset folder")
    if result.skipped:
        print(f"skipped {len(result.skipped)} page(s):")
        for source, reason in result.skipped:
            reason = _one_line(reason)
            print(f"  {reason if reason.startswith(source) else f'{source}: {reason}'}")
    return 0


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


if __name__ == "__main__":
    sys.exit(main())
