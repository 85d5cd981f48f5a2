"""Evaluate a checkpoint on any supported dataset: metrics table, metrics.json, per-page results.

    python scripts/evaluate.py checkpoint=outputs/.../checkpoints/best.pt data=funsd data.path=/data/funsd/testing_data

With ``data.sources`` (data=mixed) every source is read and a table is printed over all of them, then
one per source; metrics.json holds the overall figures and, under ``sources``, each source's.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from docrec.data.dataset import PageDataset, collate
from docrec.data.loading import data_sources, loader_workers, read_pages, worker_dies_with
from docrec.engine.runtime import setup
from docrec.engine.validate import run_validation
from docrec.inference import line_scaled_long_sides, load_model, reading_max_line_height
from docrec.settings import abs_path

log = logging.getLogger("docrec.evaluate")


def metrics_table(metrics: dict[str, float], kinds: list[str]) -> str:
    """Rows: metrics; columns: all lines, then each line kind."""
    names = ["det_precision", "det_recall", "det_f1", "e2e_precision", "e2e_recall", "e2e_f1", "e2e_cer",
             "e2e_cer_gt_quads",
             "cer", "cer_ctc", "cer_attention", "wer", "line_acc", "len_ratio", "kind_acc", "baseline_dev",
             "bow_precision", "bow_recall", "bow_f1", "page_cer"]
    cols = ["all", *kinds]
    w = max(len(n) for n in names) + 1
    out = [f"{'metric':<{w}}" + "".join(f"{c:>13}" for c in cols)]
    for n in names:
        cells = [metrics.get(n if c == "all" else f"{n}/{c}") for c in cols]
        if all(v is None for v in cells):
            continue
        out.append(f"{n:<{w}}" + "".join(f"{v:>13.4f}" if v is not None else f"{'-':>13}" for v in cells))
    seg = [k for k in metrics if k.startswith(("seg_iou/", "region_iou/"))]
    for k in ["seg_miou", *seg]:
        out.append(f"{k:<{w + 13}}{metrics[k]:>13.4f}")
    out.append(f"{'pages':<{w}}{metrics.get('n_pages', 0):>13.0f}   gt lines {metrics.get('n_gt_lines', 0):.0f}, "
               f"predicted lines {metrics.get('n_pred_lines', 0):.0f}")
    return "\n".join(out)


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    rt = setup(cfg.device, cfg.precision, "auto")
    model, charset, train_cfg = load_model(abs_path(cfg.checkpoint), cfg.weights, rt.device, cfg.decoder,
                                           OmegaConf.to_container(cfg.postprocess), cfg.blank_penalty,
                                           cfg.read_shifts)
    kinds = list(train_cfg["data"]["kinds"])
    d = cfg.data
    sources = data_sources(d)
    # One source: the data group itself; several (data.sources): each read alike, then reported apart.
    pages, groups, read_from, n_skipped = [], [], [], 0
    for i, src in enumerate(sources or [d]):
        key = f"data.sources.{i}" if sources else "data"
        path = src.val_path if cfg.split == "val" and src.val_path else src.path
        if path is None:
            raise SystemExit(f"{key}.path is required for data={src.format} (pass {key}.path=...)")
        skipped: list[tuple[str, str]] = []
        read = read_pages(src, path, cfg.max_pages, skipped)
        pages += read
        groups += [src.name] * len(read) if sources else []
        n_skipped += len(skipped)
        read_from.append(f"{src.name}={src.format}:{path} ({len(read)} pages)" if sources
                         else f"{src.format}:{path}")
    long_side = cfg.long_side or train_cfg["data"]["long_side"]
    region_kinds = list(model.region_kinds)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)

    def pages_loader(long_sides=None) -> DataLoader:
        ds = PageDataset(pages, charset, kinds, long_side, train=False, max_len=train_cfg["data"]["max_len"],
                         max_pixels=d.max_pixels, region_kinds=region_kinds, long_sides=long_sides)
        return DataLoader(ds, batch_size=d.val_batch_size, num_workers=loader_workers(d.num_workers),
                          collate_fn=collate, worker_init_fn=worker_dies_with(os.getpid()))

    loader = pages_loader()
    # max_line_height: a first pass finds each page's lines; pages with taller lines are read smaller.
    max_line_height = reading_max_line_height(cfg.max_line_height, train_cfg)
    sides = line_scaled_long_sides(model, loader, rt, long_side, max_line_height)
    if sides:
        loader = pages_loader(sides)
        log.info("max_line_height=%s: %d of %d pages read at a smaller long side (%d-%d)", max_line_height,
                 len(sides), len(pages), min(sides.values()), max(sides.values()))
    result = run_validation(model, loader, rt, kinds, num_samples=0, keep_pages=True,
                            groups=groups if sources else None)
    table = metrics_table(result.metrics, kinds + region_kinds)
    print(f"docrec evaluate | {cfg.checkpoint} ({cfg.weights} weights) on {', '.join(read_from)}, "
          f"{len(pages)} pages, {n_skipped} skipped, long side {long_side}"
          + (f" ({len(sides)} pages smaller: max_line_height={max_line_height})" if sides else "")
          + f"\n{table}")
    for name, metrics in result.groups.items():
        print(f"\nsource {name}\n{metrics_table(metrics, kinds + region_kinds)}")
    summary = {**result.metrics, "sources": result.groups} if sources else result.metrics
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    with open(out_dir / "pages.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(page, ensure_ascii=False) + "\n" for page in result.pages)
    print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'pages.jsonl'}")


if __name__ == "__main__":
    main()
