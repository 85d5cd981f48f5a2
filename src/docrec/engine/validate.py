"""Validation pass: predictions and recognition on ground-truth lines -> docrec.metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from docrec.data.dataset import to_model_input
from docrec.engine.runtime import Runtime
from docrec.geometry import line_quads
from docrec.metrics import ConfusionMatrix, PageEvaluator, corpus_cer
from docrec.models.recognition import DECODER_LOSS, DECODERS
from docrec.postprocess import estimate_baseline


@dataclass
class ValResult:
    """Metrics plus a few drawn samples for TensorBoard."""

    metrics: dict[str, float]
    samples: list[tuple[np.ndarray, list[dict], list[dict]]] = field(default_factory=list)
    text_pairs: list[tuple[str, str]] = field(default_factory=list)
    pages: list[dict] = field(default_factory=list)  # per-page metrics and predictions (keep_pages=True)
    groups: dict[str, dict[str, float]] = field(default_factory=dict)  # the metrics of each source (``groups``)


def _to_page(polygon, scale: float) -> list[list[float]]:
    """Scaled-image coordinates back to the original page's pixels."""
    return [[round(float(x) / scale, 1), round(float(y) / scale, 1)] for x, y in polygon]


class _Tally:
    """Everything validation counts over a set of pages; ``metrics()`` gives the flat dict."""

    def __init__(self, classes: list[str], decoders: Sequence[str], region_kinds: list[str]) -> None:
        self.evaluator = PageEvaluator(class_names=classes)
        self.other_pairs: dict[str, list[tuple[str, str]]] = {d: [] for d in decoders}
        self.region_kinds = region_kinds
        self.region_cm = [ConfusionMatrix(2) for _ in region_kinds]  # per region kind: outside / inside

    def add(self, page_eval: PageEvaluator, other_pairs: dict[str, list[tuple[str, str]]],
            region_masks: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Add one page: its evaluator, other decoders' (read, gt) pairs, (pred, gt) masks per region kind."""
        self.evaluator.merge(page_eval)
        for d, pairs in other_pairs.items():
            self.other_pairs[d] += pairs
        for cm, (pred, gt) in zip(self.region_cm, region_masks):
            cm.update(pred, gt)

    def metrics(self) -> dict[str, float]:
        out = self.evaluator.compute()
        for d, pairs in self.other_pairs.items():
            if pairs:
                out[f"cer_{d}"] = corpus_cer(pairs)
        for kind, cm in zip(self.region_kinds, self.region_cm):
            iou = float(cm.iou()[1])
            if not np.isnan(iou):
                out[f"region_iou/{kind}"] = iou
        return out


@torch.no_grad()
def run_validation(model: torch.nn.Module, loader, rt: Runtime, kinds: list[str], num_samples: int = 4,
                   keep_pages: bool = False, groups: Sequence[str] | None = None) -> ValResult:
    """Evaluate ``model`` (raw or EMA, unwrapped) over ``loader``; restores its train/eval mode.

    ``groups`` names the group (source) of each page of the loader's dataset: the metrics of each group
    come in ``ValResult.groups``, from the same pass.
    """
    was_training = model.training
    model.eval()
    classes = ["background", *kinds]
    result = ValResult(metrics={})
    # The configured decoder gives every metric; the other one is read too, for its CER (`cer_<decoder>`).
    # A decoder whose loss has weight 0 was never trained: it is not read.
    main = model.rec_head.decoder_kind
    decoders = (main, *(d for d in DECODERS if d != main and DECODER_LOSS[d] in model.rec_branches))
    region_kinds = list(model.region_kinds)
    total = _Tally(classes, decoders[1:], region_kinds)
    tallies = {name: _Tally(classes, decoders[1:], region_kinds) for name in dict.fromkeys(groups or ())}
    for images_u8, targets, metas in loader:
        images, _ = to_model_input(images_u8, None, rt.device, rt.channels_last)
        # Quads of every GT line (empty texts too), so recognition outputs align with gt_lines.
        quads = [torch.from_numpy(line_quads([ln["polygon"] for ln in m["gt_lines"]])).to(rt.device) for m in metas]
        with rt.autocast():
            preds, reads_by = model.predict_and_read(images, quads, decoders)
        reads = reads_by[main]
        for i, (pred, target, meta) in enumerate(zip(preds, targets, metas)):
            gt_texts = [ln["text"] for ln in meta["gt_lines"]]
            if any(ln.get("baseline") for ln in meta["gt_lines"]):  # score baselines where the GT has them
                gray = cv2.cvtColor(images_u8[i].permute(1, 2, 0).numpy(), cv2.COLOR_RGB2GRAY)
                for ln in pred["lines"]:
                    ln["baseline"] = estimate_baseline(gray, ln["polygon"])
            rec_texts = [text for text, _ in reads[i]]
            fold = meta.get("fold_case", False)  # the page's transcriptions ignore case: so does every score
            other_pairs = {d: [(text.casefold(), gt.casefold()) if fold else (text, gt)
                               for (text, _), gt in zip(reads_by[d][i], gt_texts)] for d in decoders[1:]}
            region_masks = []
            if region_kinds:
                pred_regions = pred["region_map"].numpy()
                gt_regions = target["region_mask"].numpy()[: pred_regions.shape[1], : pred_regions.shape[2]]
                region_masks = [(pred_regions[r].astype(np.uint8), (gt_regions == r + 1).astype(np.uint8))
                                for r in range(len(region_kinds))]
            page_eval = PageEvaluator(class_names=classes)
            page_eval.update(pred["lines"], meta["gt_lines"], pred["class_map"].cpu().numpy(),
                             target["class_mask"].numpy(), rec_texts, fold_case=fold)
            total.add(page_eval, other_pairs, region_masks)
            group = groups[meta["index"]] if groups is not None else None
            if group is not None:
                tallies[group].add(page_eval, other_pairs, region_masks)
            if keep_pages:
                record = {"source": meta["source"], "image": meta["image"], "scale": round(meta["scale"], 6),
                          "metrics": page_eval.compute(),
                          "lines": [{**ln, "polygon": _to_page(ln["polygon"], meta["scale"])}
                                    for ln in pred["lines"]],
                          # length_px: the width along the reading direction of the box the reader samples.
                          "gt_recognition": [{"gt": g, "pred": p, "length_px": round(float(w), 1)} for g, p, w in
                                             zip(gt_texts, rec_texts, (quads[i][:, 1] - quads[i][:, 0]).norm(dim=1))]}
                result.pages.append(record if group is None else {"source_name": group, **record})
            if len(result.samples) < num_samples:
                result.samples.append((images_u8[i].permute(1, 2, 0).numpy(), meta["gt_lines"], pred["lines"]))
            if len(result.text_pairs) < 40:
                result.text_pairs += list(zip(gt_texts, rec_texts))
    result.metrics = total.metrics()
    result.groups = {name: tally.metrics() for name, tally in tallies.items()}
    model.train(was_training)
    return result
