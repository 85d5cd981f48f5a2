"""Convert annotations (manifest, PAGE-XML, ALTO, FUNSD, SROIE) to a manifest, PAGE-XML or ALTO.

    python scripts/convert.py --format pagexml path/to/xmls --out data/pages.jsonl [--lenient]
    python scripts/convert.py --format funsd dataset/training_data --to page --out funsd_page/
    python scripts/convert.py --format pagexml transkribus/ --to alto --out alto/

``--to manifest`` (default) writes one JSON-lines file; ``--to page`` (PAGE-XML 2019) and
``--to alto`` (ALTO 4.4) write one XML per page into the ``--out`` folder, named after the
page's image (the images' folder tree mirrored). Image paths in the output are relative to
the written file. Exit code 2 and a one-line error on bad input (in strict mode, the first bad
page; in lenient mode bad pages are skipped and listed).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from docrec import __version__
from docrec.formats import FORMATS, alto, load, manifest, mirrored_names, pagexml
from docrec.pages import DataError, Page, page_stats

#: Output formats: a manifest file, or a folder of PAGE-XML / ALTO files (suffix per page).
TARGETS = {"manifest": None, "page": ".xml", "alto": ".alto.xml"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input", type=Path, help="annotation file or folder")
    ap.add_argument("--format", required=True, choices=FORMATS, help="input format")
    ap.add_argument("--to", default="manifest", choices=TARGETS, help="output format (default: manifest)")
    ap.add_argument("--out", required=True, type=Path,
                    help="output manifest (.jsonl) for --to manifest, else the output folder")
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
        left = f" ({result.notes(args.format)[-1]})" if result.left else ""
        print(f"error: {args.input}: no {args.format} annotation files found{left}", file=sys.stderr)
        return 2
    try:
        write(result.pages, args.to, args.out)
    except (OSError, DataError) as exc:
        print(f"error: {args.out}: cannot write ({getattr(exc, 'strerror', None) or exc})", file=sys.stderr)
        return 2
    stats = page_stats(result.pages)
    print(f"wrote {args.out}: {stats['pages']} pages, {stats['regions']} regions, {stats['lines']} lines "
          f"({stats['empty_lines']} with empty text), {stats['characters']} characters")
    out_dir = args.out.resolve() if TARGETS[args.to] else args.out.resolve().parent
    if any(out_dir not in p.image_path.resolve().parents for p in result.pages):
        print(f"note: image paths in {args.out} lead outside its folder; read it with --allow-outside-root "
              "(training: data.allow_outside_root=true), or write it inside the dataset folder")
    for note in result.notes(args.format):
        print(note)
    if result.skipped:
        print(f"skipped {len(result.skipped)} page(s):")
        for source, reason in result.skipped:
            reason = _one_line(reason)
            print(f"  {reason if reason.startswith(source) else f'{source}: {reason}'}")
    return 0


def write(pages: list[Page], to: str, out: Path) -> None:
    """A manifest file, or one PAGE-XML / ALTO file per page under the folder ``out``."""
    if to == "manifest":
        manifest.write(pages, out)
        return
    images = [p.image_path.resolve() for p in pages]
    base = Path(os.path.commonpath([i.parent for i in images])) if images else out
    inputs = set(images) | {Path(p.source).resolve() for p in pages if p.source}
    targets = [out / n.with_name(n.name + TARGETS[to]) for n in mirrored_names(images, base)]
    clash = [t for t in targets if t.resolve() in inputs]
    if clash:
        raise DataError(f"{clash[0]} would overwrite an input file; choose another --out folder")
    for page, target in zip(pages, targets):
        if to == "page":
            pagexml.write(page, target)
        else:
            alto.write(page, target, creator_version=__version__)


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


if __name__ == "__main__":
    sys.exit(main())
