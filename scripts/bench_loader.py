"""Data-pipeline throughput: pages/s of decode + augment + targets + collate, per worker count.

    python scripts/bench_loader.py [--manifest data/synthetic/train.jsonl] [--long-side 1024] [--pages 64]
        [--workers 0 1 2] [--profile]

Without --manifest it generates --pages synthetic pages into a temp folder first.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, help="pages to read (default: generate synthetic ones)")
    ap.add_argument("--pages", type=int, default=48, help="pages per measurement")
    ap.add_argument("--long-side", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--augment", default="default", help="configs/augment/<name>.yaml")
    ap.add_argument("--profile", action="store_true", help="cProfile the single-process pipeline")
    args = ap.parse_args()

    from docrec.data.dataset import PageDataset, collate
    from docrec.formats import load
    from docrec.models.charset import Charset

    tmp = None
    if args.manifest is None:
        from docrec.synth.generate import generate

        tmp = tempfile.TemporaryDirectory()
        generate(Path(tmp.name), pages=args.pages, seed=0, workers=max(args.workers))
        args.manifest = Path(tmp.name) / "train.jsonl"
    pages = load("manifest", args.manifest).pages[: args.pages]
    aug = OmegaConf.load(REPO / "configs" / "augment" / f"{args.augment}.yaml")
    if "defaults" in aug:
        aug = OmegaConf.merge(OmegaConf.load(REPO / "configs" / "augment" / "default.yaml"), aug)
    charset = Charset.build(ln.text for p in pages for ln in p.lines)
    kinds = ["printed", "handwritten", "form_field"]
    ds = PageDataset(pages, charset, kinds, args.long_side, aug, None, True, 160)

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for i in range(min(len(ds), 16)):
            ds[i]
        prof.disable()
        pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(18)

    print(f"\n{len(pages)} pages, long side {args.long_side}, batch {args.batch}, augment={args.augment}")
    print(f"{'workers':>8} {'pages/s':>10} {'pages/s/worker':>15}")
    for w in args.workers:
        loader = DataLoader(ds, batch_size=args.batch, num_workers=w, collate_fn=collate,
                            persistent_workers=False, prefetch_factor=4 if w else None)
        it = iter(loader)
        next(it)  # worker start-up is not throughput
        t0, n = time.perf_counter(), 0
        for images, _, _ in it:
            n += images.shape[0]
        rate = n / (time.perf_counter() - t0)
        print(f"{w:>8} {rate:>10.1f} {rate / max(w, 1):>15.1f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
