"""Evaluate a checkpoint on any supported dataset: metrics table, metrics.json, per-page results.

    python scripts/evaluate.py checkpoint=outputs/.../checkpoints/best.pt data=funsd data.path=/data/funsd/testing_data

With ``data.sources`` (data=mixed) every source is read and a table is printed over all of them, then
one per source; metrics.json holds the overall figures and, under ``sources``, each source's.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from docrec.data.loading import data_sources
from docrec.engine.runtime import setup
from docrec.engine.validate import run_validation
from docrec.inference import (
    evaluation_loader,
    evaluation_pages,
    load_model,
    reading_long_side_of,
    reading_max_line_height,
)
from docrec.settings import abs_path


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
                                           cfg.read_shifts, cfg.ctc_beam, cfg.rescore)
    kinds = list(train_cfg["data"]["kinds"])
    d = cfg.data
    sources = data_sources(d)
    pages, groups, read_from, n_skipped = evaluation_pages(d, cfg.split, cfg.max_pages)
    long_side = reading_long_side_of(cfg.long_side, train_cfg)
    region_kinds = list(model.region_kinds)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    max_line_height = reading_max_line_height(cfg.max_line_height, train_cfg)
    loader, sides = evaluation_loader(pages, model, charset, train_cfg, d, rt, long_side, max_line_height)
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
