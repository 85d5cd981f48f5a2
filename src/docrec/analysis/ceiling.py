"""The ceiling of the training targets: how well a model that predicted them perfectly would detect lines.

    python scripts/target_ceiling.py --format pagexml ../shared/realdata/joseph_hooker_htr --lenient
        [--long-side 2048] [--kind handwritten] [--max-pages N] [--json ceiling.json]

Each page is scaled and its targets built exactly as for validation in training
(``PageDataset(..., train=False)``); the class mask becomes one-hot class probabilities and
the core mask the core probability; :func:`docrec.postprocess.lines_from_maps` turns them
into lines, which are matched to the page's ground-truth lines (IoU >= 0.5) as validation
matches a model's. Printed: pages, GT lines, found lines, detection P/R/F1, and the share of
GT lines whose core is in pieces (more than one core component lies mostly inside the
line), overall and per kind; the last line is ``det_f1 X.XXX``. The design asks for
``det_f1 >= 0.97`` on every real set (DESIGN.md, "Targets are judged by their ceiling").
"""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np

from docrec.data.dataset import PageDataset
from docrec.metrics import PageEvaluator
from docrec.postprocess import lines_from_maps
from docrec.text import IGNORE_INDEX, Charset

KINDS = ("printed", "handwritten")  # configs/data/synthetic.yaml: data.kinds (form fields are regions)


def perfect_maps(targets: dict, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities [C,H,W], core probability [H,W]) that a perfect model would predict."""
    cm = targets["class_mask"].numpy().copy()
    cm[cm == IGNORE_INDEX] = 0
    class_prob = np.eye(num_classes, dtype=np.float32)[cm].transpose(2, 0, 1)
    core = targets["core_mask"].numpy()
    # core_mask is 0/1 (float), or uint8 with IGNORE_INDEX for pixels the loss skips: not core.
    core_prob = ((core >= 0.5) & (core != IGNORE_INDEX)).astype(np.float32)
    return class_prob, core_prob


def split_lines(core_prob: np.ndarray, gt_lines: list[dict]) -> list[bool]:
    """For each GT line: does more than one core component lie (mostly) inside its polygon?"""
    n, labels = cv2.connectedComponents((core_prob > 0.5).astype(np.uint8), connectivity=4)
    sizes = np.bincount(labels.ravel(), minlength=n)
    out = []
    for line in gt_lines:
        mask = np.zeros(core_prob.shape, np.uint8)
        cv2.fillPoly(mask, [np.round(np.asarray(line["polygon"], np.float32)).astype(np.int32)], 1)
        inside = np.bincount(labels[mask > 0], minlength=n)
        inside[0] = 0
        out.append(int((inside * 2 > sizes).sum()) > 1)
    return out


def ceiling(pages, long_side: int) -> dict:
    """Figures of the targets' ceiling over ``pages`` (see the module docstring)."""
    charset = Charset.build(ln.text for p in pages for ln in p.lines)
    data = PageDataset(pages, charset, KINDS, long_side, train=False)
    evaluator = PageEvaluator()
    split, per_kind = Counter(), Counter()
    for i in range(len(data)):
        _, targets, meta = data[i]
        class_prob, core_prob = perfect_maps(targets, len(KINDS) + 1)
        found = lines_from_maps(class_prob, core_prob)
        pred = [{"polygon": poly, "kind": KINDS[kind], "text": ""} for poly, kind, _ in found]
        gt = [dict(g, text="") for g in meta["gt_lines"]]
        evaluator.update(pred, gt)
        for g, is_split in zip(gt, split_lines(core_prob, gt)):
            split[None] += is_split
            split[g["kind"]] += is_split
            per_kind[g["kind"]] += 1
    m = evaluator.compute()
    out = {"pages": int(m["n_pages"]), "gt_lines": int(m["n_gt_lines"]), "found_lines": int(m["n_pred_lines"]),
           "det_precision": m["det_precision"], "det_recall": m["det_recall"], "det_f1": m["det_f1"],
           "split_share": split[None] / max(int(m["n_gt_lines"]), 1), "kinds": {}}
    for kind in sorted(per_kind):
        out["kinds"][kind] = {"gt_lines": per_kind[kind], "split_share": split[kind] / per_kind[kind],
                              **{k: m[f"det_{k}/{kind}"] for k in ("precision", "recall", "f1")
                                 if f"det_{k}/{kind}" in m}}
    return out


def report(r: dict) -> str:
    """The figures as text, ending with ``det_f1 X.XXX``."""
    rows = [f"pages {r['pages']}, GT lines {r['gt_lines']}, found lines {r['found_lines']}",
            (f"det P {r['det_precision']:.3f}  R {r['det_recall']:.3f}  F1 {r['det_f1']:.3f}  "
             f"split cores {r['split_share']:.1%}")]
    for kind, k in r["kinds"].items():
        figures = "  ".join(f"{name[0].upper()} {k[name]:.3f}" for name in ("precision", "recall", "f1") if name in k)
        rows.append(f"  {kind:<12} {k['gt_lines']:>6} lines  {figures}  split cores {k['split_share']:.1%}")
    rows.append(f"det_f1 {r['det_f1']:.3f}")
    return "\n".join(rows)
