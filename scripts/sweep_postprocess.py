"""Choose line finding on your pages: detection F1 of a checkpoint at every ``core_threshold`` x ``min_score``.

    python scripts/sweep_postprocess.py checkpoint=RUN data=pagexml data.path=/data/val_pages

Pages are read and resized as ``scripts/evaluate.py`` reads them (any data config, ``data.sources`` too,
``max_line_height`` alike); each page's segmentation maps are computed once and
:func:`docrec.postprocess.lines_from_maps` is run at every setting, the lines matched to the ground truth at
IoU 0.5 as evaluate matches them, so a row's F1 is what ``evaluate.py postprocess.core_threshold=...
postprocess.min_score=...`` reports. Prints a table (best first, the checkpoint's own setting marked), writes
``sweep.json`` into the run dir, and the overrides that pass the best setting to evaluate and predict. Choose on
pages you will not report on.
"""

from __future__ import annotations

import inspect
import itertools
import json
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from docrec.data.dataset import to_model_input
from docrec.engine.config import check_number
from docrec.engine.runtime import setup
from docrec.inference import (
    evaluation_loader,
    evaluation_pages,
    load_model,
    reading_long_side_of,
    reading_max_line_height,
)
from docrec.metrics import detection_prf, match_lines
from docrec.postprocess import lines_from_maps
from docrec.settings import ConfigError, abs_path


def settings(core_thresholds, min_scores) -> list[dict[str, float]]:
    """Every (core_threshold, min_score) pair, each a probability in [0, 1]."""
    for key, values in (("core_thresholds", core_thresholds), ("min_scores", min_scores)):
        if not list(values):
            raise ConfigError(f"{key} must list at least one value")
        for v in values:
            check_number(v, key, 0.0, 1.0)
    return [{"core_threshold": float(c), "min_score": float(m)}
            for c, m in itertools.product(core_thresholds, min_scores)]


def sweep(model, loader, rt, grid: list[dict[str, float]]) -> list[dict[str, float]]:
    """Detection counts and precision / recall / F1 of each setting of ``grid`` over ``loader``'s pages."""
    counts = [[0, 0, 0] for _ in grid]  # matched, predicted, ground-truth lines
    for images_u8, _, metas in loader:
        images, _ = to_model_input(images_u8, None, rt.device, rt.channels_last)
        with rt.autocast():
            found_by = model.detect_each(images, grid)  # [setting][image]: one forward pass for every setting
        for b, meta in enumerate(metas):
            gt = [ln["polygon"] for ln in meta["gt_lines"]]
            for count, found_in in zip(counts, found_by):
                found = found_in[b]
                count[0] += len(match_lines(found, gt))
                count[1] += len(found)
                count[2] += len(gt)
    rows = []
    for (matched, n_pred, n_gt), setting in zip(counts, grid):
        p, r, f1 = detection_prf(matched, n_pred, n_gt)
        rows.append({**setting, "precision": p, "recall": r, "f1": f1, "matched": matched, "pred": n_pred, "gt": n_gt})
    return rows


@hydra.main(version_base="1.3", config_path="../configs", config_name="sweep_postprocess")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    grid = settings(cfg.core_thresholds, cfg.min_scores)
    rt = setup(cfg.device, cfg.precision, "auto")
    model, charset, train_cfg = load_model(abs_path(cfg.checkpoint), cfg.weights, rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    pages, _, read_from, n_skipped = evaluation_pages(cfg.data, cfg.split, cfg.max_pages)
    long_side = reading_long_side_of(cfg.long_side, train_cfg)
    loader, _ = evaluation_loader(pages, model, charset, train_cfg, cfg.data, rt, long_side,
                                  reading_max_line_height(cfg.max_line_height, train_cfg))
    rows = sorted(sweep(model, loader, rt, grid), key=lambda r: (-r["f1"], r["core_threshold"], r["min_score"]))
    defaults = inspect.signature(lines_from_maps).parameters  # a checkpoint without the key: the function's own
    own = {k: float(model.postprocess.get(k, defaults[k].default)) for k in ("core_threshold", "min_score")}
    print(f"docrec sweep_postprocess | {cfg.checkpoint} ({cfg.weights} weights) on {', '.join(read_from)}, "
          f"{len(pages)} pages, {n_skipped} skipped, long side {long_side}")
    print(f"{'core_threshold':>14} {'min_score':>9} {'precision':>9} {'recall':>7} {'det_f1':>7}")
    for r in rows:
        mark = "  <- the checkpoint's" if all(r[k] == own[k] for k in own) else ""
        print(f"{r['core_threshold']:>14.2f} {r['min_score']:>9.2f} {r['precision']:>9.4f} {r['recall']:>7.4f} "
              f"{r['f1']:>7.4f}{mark}")
    best = rows[0]
    print(f"best: postprocess.core_threshold={best['core_threshold']} postprocess.min_score={best['min_score']} "
          f"(evaluate.py / predict.py; model.postprocess.* in a new training run)")
    (out_dir / "sweep.json").write_text(json.dumps({"checkpoint_setting": own, "rows": rows}, indent=1))
    print(f"wrote {out_dir / 'sweep.json'}")


if __name__ == "__main__":
    main()
