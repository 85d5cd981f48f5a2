"""Generate the synthetic default dataset (printed, handwritten, form and receipt pages) and its manifests.

    python scripts/make_synthetic.py --out data/synthetic --pages 5000 --seed 0 [--workers N]
    python scripts/make_synthetic.py --previews data/samples      # one annotated preview per page type
    python scripts/make_synthetic.py --contact-sheet data/samples/contact_sheet.png \
        [--real form=PAGE.png receipt=PAGE.jpg handwritten=PAGE.jpg]   # every type x process, real pages beside

Writes DIR/images/NNNNN.jpg, DIR/train.jsonl and DIR/val.jsonl; the same seed gives the same
files whatever the number of workers. Prints the rate and the disk size at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from docrec.synth import PAGE_TYPES, generate, write_contact_sheet, write_previews
from docrec.synth.degrade import PROCESSES
from docrec.synth.fonts import check_families


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="output folder")
    ap.add_argument("--pages", type=int, default=5000, help="number of pages (default 5000)")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--val-fraction", type=float, default=0.05, help="share of pages in val.jsonl (default 0.05)")
    ap.add_argument("--scale", type=float, default=1.0, help="page resolution factor (1.0: a 150-200 dpi scan)")
    ap.add_argument("--processes", nargs="+", choices=PROCESSES, metavar="PROCESS",
                    help=f"draw only these print and scan processes ({', '.join(PROCESSES)}; default all): "
                    "--processes scan makes the clean pages a curriculum starts on")
    ap.add_argument("--families", nargs="+", metavar="FAMILY",
                    help="set printed text in these font families only (serif, sans and mono among them; default "
                    "all 53), e.g. DejaVuSerif DejaVuSans DejaVuSansMono LiberationSerif LiberationSans LiberationMono")
    ap.add_argument("--previews", type=Path, help="write one annotated preview PNG per page type to this folder")
    ap.add_argument("--contact-sheet", type=Path, help="write a PNG of every page type through each of its "
                    "print and scan processes, a row per type")
    ap.add_argument("--real", nargs="+", default=[], metavar="TYPE=IMAGE",
                    help="with --contact-sheet: a real page to show at the end of that type's row")
    args = ap.parse_args(argv)
    if args.out is None and args.previews is None and args.contact_sheet is None:
        ap.error("give --out (a dataset) and/or --previews / --contact-sheet (sample images)")
    if args.families is not None:
        try:
            check_families(args.families)
        except ValueError as exc:
            ap.error(f"--families: {exc}")
    bad = [r for r in args.real if "=" not in r or r.split("=", 1)[0] not in PAGE_TYPES]
    if bad:
        ap.error(f"--real takes TYPE=IMAGE with TYPE one of {', '.join(PAGE_TYPES)}; got {' '.join(bad)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Generate, print what was made, return the exit code."""
    args = parse_args(argv)
    if args.previews is not None:
        for path in write_previews(args.previews, seed=args.seed):
            print(path)
    if args.contact_sheet is not None:
        real = dict(r.split("=", 1) for r in args.real)
        print(write_contact_sheet(args.contact_sheet, seed=args.seed, real=real))
    if args.out is None:
        return 0
    start = time.perf_counter()
    train, val = generate(args.out, pages=args.pages, seed=args.seed, workers=args.workers,
                          val_fraction=args.val_fraction, scale=args.scale,
                          processes=args.processes, families=args.families)
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"{args.pages} pages in {seconds:.1f} s ({args.pages / seconds:.2f} pages/s); "
          f"{size / 1e6:.1f} MB on disk ({size / args.pages / 1e3:.0f} kB/page)")
    print(f"manifests: {train} {val}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
