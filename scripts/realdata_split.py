"""Write the fixed split of ``../shared/realdata`` as manifests: ``OUT/<set>/{finetune,kept}.jsonl``.

    python scripts/realdata_split.py --out /tmp/realsplit
    python train.py 'experiment=[cpu,finetune]' init_from=RUN data.sources.0.path=/tmp/realsplit/funsd/finetune.jsonl ...
    python scripts/evaluate.py checkpoint=RUN data=manifest data.path=/tmp/realsplit/funsd/kept.jsonl \\
        data.allow_outside_root=true
    python scripts/evaluate.py checkpoint=RUN data=manifest data.path=/tmp/realsplit/sroie/kept.jsonl \\
        data.allow_outside_root=true data.fold_case=true    # SROIE's upper-case transcripts: scored ignoring case

The kept-apart pages are listed in ``data/realdata_split.json`` (:mod:`docrec.realdata`); the
manifests point at the images where they lie, so they are read with ``data.allow_outside_root=true``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from docrec.formats import load
from docrec.pages import DataError, page_stats
from docrec.realdata import REALDATA, available, write_split


def main(argv: list[str] | None = None) -> int:
    """Write the manifests and print a line per set and part."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for <set>/{finetune,kept}.jsonl")
    ap.add_argument("--realdata", type=Path, default=REALDATA, help="folder of the real datasets")
    args = ap.parse_args(argv)
    if not available(args.realdata):
        print(f"error: {args.realdata}: none of the real datasets is there", file=sys.stderr)
        return 2
    try:
        written = write_split(args.out, args.realdata)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, parts in written.items():
        for part, path in parts.items():
            stats = page_stats(load("manifest", path, allow_outside_root=True, check_images=False).pages)
            print(f"{path}: {stats['pages']} pages, {stats['lines']} lines, {stats['characters']} characters ({name} {part})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
