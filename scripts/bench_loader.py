"""Data-pipeline throughput: decode + augment + targets + collate, per worker, and the data-wait share.

    python scripts/bench_loader.py [--manifest data/synthetic/train.jsonl] [--long-side 1024] [--pages 64]
        [--workers 0 1 2] [--step-ms 0 250] [--batch 4] [--augment default] [--profile] [--json PATH]
        [--crop H W [--crop-tries N]] [--cache]
    python scripts/bench_loader.py --padding FORMAT=PATH [FORMAT=PATH ...] [--long-side 2048] [--batch 4]

Without --manifest it generates --pages synthetic pages (real size, JPEG) into a temp folder.
The loaders are the trainer's (``docrec.data.loading.make_loaders`` with configs/data/synthetic.yaml
and the overrides given here), so worker start-up, prefetching and collation are as in training.

Reports, all on the training pipeline (augmentation on, whole pages unless --crop):
- single process (one torch thread, as in a worker): ms per page for ``dataset[i]`` (decode,
  augment, targets) and for ``collate``, and CPU ms per page (load-independent on a shared machine);
  then the CPU ms per page of each stage of ``dataset[i]`` (decode, augment, targets, the rest);
- per worker count: pages/s over one pass, after the first batch (worker start-up shown apart), the
  workers' CPU ms per page (it includes sending batches through shared memory) and the main
  process's CPU ms per page for receiving them;
- ``--padding`` (and nothing else): the share of batch pixels that are padding when whole pages
  of the given sets (each alone, then all mixed) are batched, without and with aspect-ratio
  grouping (``data.aspect_ratio_group_factor`` 0 vs 3), over 3 epochs of the trainer's batch
  sampler. Page sizes come from the annotations: no image is read.
- ``--cache``: the pages go through the page cache (``data.cache_dir``, a temporary folder): a
  first pass stores them (its CPU ms per page shown apart) and every figure after it is of pages
  read back from the cache, as in training from the second epoch on;
- per --step-ms: a training epoch whose step is simulated by sleeping that long per batch (a GPU
  busy elsewhere): the share of the loop's time spent waiting for the next batch
  (``wait / (wait + step)``, first batch excluded), per worker count.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, help="pages to read (default: generate synthetic ones)")
    ap.add_argument("--pages", type=int, default=48, help="pages per measurement (the manifest's first N)")
    ap.add_argument("--long-side", type=int, default=1024)
    ap.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="random training crops (data.crop)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--step-ms", type=float, nargs="*", default=[],
                    help="simulated training-step durations for the data-wait share (e.g. 250)")
    ap.add_argument("--augment", default="default", help="configs/augment/<name>.yaml")
    ap.add_argument("--crop-tries", type=int, default=1,
                    help="with --crop: windows drawn per page, the one whose whole lines are longest kept (data.crop_tries)")
    ap.add_argument("--profile", action="store_true", help="cProfile the single-process pipeline")
    ap.add_argument("--profile-pages", type=int, default=16)
    ap.add_argument("--cv2-threads", type=int, help="cv2.setNumThreads before the workers start (inherited)")
    ap.add_argument("--padding", nargs="+", metavar="FORMAT=PATH",
                    help="only the padding share of whole-page batches of these sets, ungrouped vs grouped")
    ap.add_argument("--cache", action="store_true",
                    help="read pages through the page cache (data.cache_dir), filled by a first pass")
    ap.add_argument("--json", type=Path, help="write the results here")
    return ap.parse_args(argv)


def padding_share(pages: list, long_side: int, batch: int, factor: int, epochs: int = 3) -> float:
    """Share of the pixels of whole-page batches that are padding (pages scaled to ``long_side``, each
    padded to multiples of 32 as the pipeline does), batched by the trainer's batch sampler."""
    from docrec.data.sampler import EpochBatchSampler, ResumableSampler, aspect_groups

    def up32(v: float) -> int:
        return -(-round(v) // 32) * 32

    dims = [(up32(p.height * long_side / max(p.width, p.height)), up32(p.width * long_side / max(p.width, p.height)))
            for p in pages]
    groups = aspect_groups([p.width / p.height for p in pages], factor) if factor else None
    sampler = EpochBatchSampler(ResumableSampler(len(pages), seed=0), batch, groups)
    real = padded = 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for b in sampler:
            real += sum(dims[i][0] * dims[i][1] for i in b)
            padded += len(b) * max(dims[i][0] for i in b) * max(dims[i][1] for i in b)
    return 1 - real / padded


def padding_table(args: argparse.Namespace) -> dict:
    from docrec.formats import load

    sets = {}
    for spec in args.padding:
        fmt, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--padding wants FORMAT=PATH, got {spec!r}")
        sets[f"{fmt} ({Path(path).name})"] = load(fmt, Path(path), strict=False).pages
    if len(sets) > 1:
        sets["all mixed"] = [p for pages in list(sets.values()) for p in pages]
    print(f"padding share of whole-page batches (long side {args.long_side}, batch {args.batch}, 3 epochs)")
    print(f"{'set':<40} {'pages':>6} {'aspect min-max':>15} {'ungrouped':>10} {'grouped (3)':>12}")
    out = {}
    for name, pages in sets.items():
        aspects = [p.width / p.height for p in pages]
        row = {"pages": len(pages), "ungrouped": padding_share(pages, args.long_side, args.batch, 0),
               "grouped": padding_share(pages, args.long_side, args.batch, 3)}
        out[name] = row
        print(f"{name:<40} {len(pages):>6} {f'{min(aspects):.2f}-{max(aspects):.2f}':>15} "
              f"{row['ungrouped']:>10.1%} {row['grouped']:>12.1%}")
    return out


def load_pages(args: argparse.Namespace, tmp: list) -> list:
    from docrec.formats import load

    if args.manifest is None:
        from docrec.synth.generate import generate

        t = tempfile.TemporaryDirectory()
        tmp.append(t)
        generate(Path(t.name), pages=args.pages + 2, seed=0, workers=max(1, min(os.cpu_count() or 1, 16)),
                 progress=False)
        args.manifest = Path(t.name) / "train.jsonl"
    pages = load("manifest", args.manifest, limit=args.pages).pages
    if not pages:
        raise SystemExit(f"{args.manifest}: no pages")
    return pages


def loaders(pages: list, charset, args: argparse.Namespace, workers: int):
    """The trainer's training loader over ``pages`` (whole epoch, shuffled by the resumable sampler)."""
    from docrec.data.loading import PageSplits, make_loaders

    data_cfg = OmegaConf.load(REPO / "configs" / "data" / "synthetic.yaml")
    data_cfg.merge_with({"long_side": args.long_side, "crop": list(args.crop) if args.crop else None,
                         "crop_tries": args.crop_tries, "batch_size": args.batch, "num_workers": workers,
                         "cache_dir": args.cache_dir})
    aug = augment_cfg(args.augment)
    train, _, sampler = make_loaders(PageSplits(train=pages, val=[]), charset, data_cfg, aug, 0, 0, 1)
    sampler.set_epoch(0)
    return train


def augment_cfg(name: str):
    path = REPO / "configs" / "augment" / f"{name}.yaml"
    cfg = OmegaConf.load(path)
    if "defaults" in cfg:  # e.g. handwriting.yaml: default.yaml plus its own changes
        cfg = OmegaConf.merge(OmegaConf.load(REPO / "configs" / "augment" / "default.yaml"), cfg)
        cfg.pop("defaults")
    return cfg


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def single_process(ds, collate, n: int, batch: int) -> dict:
    """ms per page of dataset[i] and of collate in this process (a worker's cost), wall and CPU time."""
    get, col = [], []
    c0 = _cpu(resource.RUSAGE_SELF)
    for start in range(0, n, batch):
        t0 = time.perf_counter()
        items = [ds[i] for i in range(start, min(start + batch, n))]
        t1 = time.perf_counter()
        collate(items)
        t2 = time.perf_counter()
        get += [(t1 - t0) / len(items) * 1000] * len(items)
        col += [(t2 - t1) / len(items) * 1000] * len(items)
    cpu_ms = (_cpu(resource.RUSAGE_SELF) - c0) / n * 1000
    total = statistics.fmean(get) + statistics.fmean(col)
    return {"getitem_ms": statistics.fmean(get), "getitem_median_ms": statistics.median(get),
            "collate_ms": statistics.fmean(col), "pages_per_s": 1000 / total,
            "cpu_ms_per_page": cpu_ms, "pages_per_cpu_s": 1000 / cpu_ms}


def stages(ds, n: int, repeats: int = 3) -> dict:
    """CPU ms per page of each stage of ``dataset[i]``: decoding (``read_page``: decoding and scaling, or
    loading the scaled page from the cache), augmentation (the
    albumentations pipeline), targets (``build_targets``) and the rest (polygon bookkeeping, clipping,
    meta). The stages are timed by wrapping the dataset module's references; the best of ``repeats``
    passes over the first ``n`` pages (CPU time, so other processes on the machine count little)."""
    import docrec.data.dataset as dataset_module

    spent = dict.fromkeys(("decode", "augment", "targets"), 0.0)

    def timed(key, fn):
        def wrapper(*a, **k):
            c0 = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.process_time() - c0
        return wrapper

    class TimedPipeline:  # the augmentation pipeline, its calls timed (the dataset also sets its seed)
        def __init__(self, inner) -> None:
            self.inner, self.call = inner, timed("augment", inner)

        def __call__(self, *a, **k):
            return self.call(*a, **k)

        def __getattr__(self, name: str):
            return getattr(self.inner, name)

    saved = dataset_module.read_page, dataset_module.build_targets, ds.aug
    dataset_module.read_page = timed("decode", saved[0])
    dataset_module.build_targets = timed("targets", saved[1])
    ds.aug = TimedPipeline(saved[2])
    best: dict | None = None
    try:
        for _ in range(repeats):
            for key in spent:
                spent[key] = 0.0
            c0 = time.process_time()
            for i in range(n):
                ds[i]
            total = time.process_time() - c0
            row = {key: v / n * 1000 for key, v in spent.items()}
            row["rest"] = total / n * 1000 - sum(row.values())
            row["total"] = total / n * 1000
            if best is None or row["total"] < best["total"]:
                best = row
    finally:
        dataset_module.read_page, dataset_module.build_targets, ds.aug = saved
    return best


def throughput(loader) -> dict:
    """Pages/s of one pass (first batch, i.e. worker start-up, excluded) and CPU seconds per page.

    The workers' CPU time is read once they have exited (RUSAGE_CHILDREN counts reaped children).
    """
    t_start = time.perf_counter()
    self0, children0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    it = iter(loader)
    first = next(it)[0].shape[0]
    t0 = time.perf_counter()
    n = 0
    for images, _, _ in it:
        n += images.shape[0]
    dt = time.perf_counter() - t0
    del it  # joins the workers
    pages = n + first
    workers_cpu = _cpu(resource.RUSAGE_CHILDREN) - children0
    main_cpu = _cpu(resource.RUSAGE_SELF) - self0
    return {"pages_per_s": n / dt if n else None, "first_batch_s": t0 - t_start, "pages": pages,
            "worker_cpu_ms_per_page": workers_cpu / pages * 1000 if workers_cpu > 0 else None,
            "main_cpu_ms_per_page": main_cpu / pages * 1000}


def wait_share(loader, step_s: float) -> dict:
    """Share of an epoch's loop time spent waiting for data when each step takes ``step_s``."""
    it = iter(loader)
    t0 = time.perf_counter()
    next(it)
    startup = time.perf_counter() - t0
    time.sleep(step_s)
    wait = busy = 0.0
    batches = 0
    while True:
        tw = time.perf_counter()
        try:
            next(it)
        except StopIteration:
            break
        wait += time.perf_counter() - tw
        time.sleep(step_s)  # the "GPU step": the loader's workers run meanwhile
        busy += step_s
        batches += 1
    return {"wait_share": wait / (wait + busy) if batches else None, "mean_wait_ms": wait / max(batches, 1) * 1000,
            "startup_s": startup, "batches": batches}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.padding:
        result = {"padding": padding_table(args), "long_side": args.long_side, "batch": args.batch}
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    from docrec.data.dataset import collate
    from docrec.text import Charset

    # One torch thread here, as DataLoader gives each worker, so that workers=0, the profile and
    # the single-process numbers show a worker's cost. (With more OpenMP threads than idle cores,
    # the tensor copies in collate run tens of times slower.)
    torch.set_num_threads(1)
    from docrec.data.loading import keep_freed_memory

    keep_freed_memory()  # as each loader worker does
    if args.cv2_threads is not None:
        import cv2

        cv2.setNumThreads(args.cv2_threads)
    tmp: list = []
    pages = load_pages(args, tmp)
    args.cache_dir = None
    if args.cache:
        tmp.append(tempfile.TemporaryDirectory())
        args.cache_dir = tmp[-1].name
    charset = Charset.build(ln.text for p in pages for ln in p.lines)
    ds = loaders(pages, charset, args, 0).dataset
    result: dict = {"manifest": str(args.manifest), "pages": len(pages), "long_side": args.long_side,
                    "crop": args.crop, "crop_tries": args.crop_tries, "batch": args.batch, "augment": args.augment,
                    "cpus": os.cpu_count(), "cache": args.cache,
                    "cv2_threads": args.cv2_threads,
                    "load_avg": os.getloadavg()}
    sizes = {(p.width, p.height) for p in pages}
    print(f"{len(pages)} pages from {args.manifest} (e.g. {min(sizes)[0]}x{min(sizes)[1]}), "
          f"long side {args.long_side}, crop {args.crop}, batch {args.batch}, augment={args.augment}, "
          f"cache {'on' if args.cache else 'off'}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)

    if args.profile:
        prof = cProfile.Profile()
        n = min(len(ds), args.profile_pages)
        prof.enable()
        for start in range(0, n, args.batch):
            collate([ds[i] for i in range(start, min(start + args.batch, n))])
        prof.disable()
        for key in ("tottime", "cumulative"):
            print(f"\n--- cProfile of {n} pages (getitem + collate), by {key}")
            pstats.Stats(prof, stream=sys.stdout).sort_stats(key).print_stats(22)

    ds[0]  # imports and first-call set-up are not throughput
    if args.cache:  # fill the cache: decoding and storing, once per page
        c0 = time.process_time()
        for i in range(1, len(ds)):
            ds[i]
        cold = (time.process_time() - c0) / max(len(ds) - 1, 1) * 1000
        result["cache_fill_cpu_ms_per_page"] = cold
        print(f"page cache: first pass {cold:.1f} CPU ms/page (decoding and storing); the figures below read "
              "pages back from it", flush=True)
    sp = single_process(ds, collate, len(ds), args.batch)
    result["single_process"] = sp
    print(f"\nsingle process: dataset[i] {sp['getitem_ms']:.1f} ms/page (median {sp['getitem_median_ms']:.1f}), "
          f"collate {sp['collate_ms']:.1f} ms/page -> {sp['pages_per_s']:.1f} pages/s; "
          f"{sp['cpu_ms_per_page']:.1f} CPU ms/page -> {sp['pages_per_cpu_s']:.1f} pages per CPU-second", flush=True)

    st = stages(ds, len(ds))
    result["stages_cpu_ms"] = st
    print("CPU ms per page by stage (best of 3 passes): "
          + ", ".join(f"{key} {st[key]:.1f}" for key in ("decode", "augment", "targets", "rest", "total")), flush=True)

    print("\n(CPU ms/page: the workers' CPU time per page, and the main process's for receiving batches)")
    print(f"{'workers':>8} {'pages/s':>9} {'per worker':>11} {'start-up s':>11} {'worker CPU ms':>14} "
          f"{'main CPU ms':>12}")
    result["workers"] = []
    for w in args.workers:
        r = throughput(loaders(pages, charset, args, w))
        r["workers"] = w
        r["pages_per_s_per_worker"] = r["pages_per_s"] / max(w, 1) if r["pages_per_s"] else None
        result["workers"].append(r)
        wcpu = r["worker_cpu_ms_per_page"]
        print(f"{w:>8} {r['pages_per_s']:>9.1f} {r['pages_per_s_per_worker']:>11.1f} {r['first_batch_s']:>11.2f} "
              f"{format(wcpu, '>14.1f') if wcpu else format('-', '>14')} {r['main_cpu_ms_per_page']:>12.1f}",
              flush=True)

    if args.step_ms:
        print(f"\ndata-wait share of an epoch ({len(pages)} pages, step simulated by sleep)")
        print(f"{'workers':>8} {'step ms':>8} {'wait share':>11} {'mean wait ms':>13} {'start-up s':>11}")
        result["wait"] = []
        for step_ms in args.step_ms:
            for w in args.workers:
                r = wait_share(loaders(pages, charset, args, w), step_ms / 1000)
                r.update(workers=w, step_ms=step_ms)
                result["wait"].append(r)
                share = f"{r['wait_share']:.1%}" if r["wait_share"] is not None else "-"
                print(f"{w:>8} {step_ms:>8.0f} {share:>11} {r['mean_wait_ms']:>13.1f} {r['startup_s']:>11.2f}",
                      flush=True)

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    for t in tmp:
        t.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
