"""TensorBoard output: page drawings, GT-vs-prediction tables, schedule, hparams, chart layout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

KIND_COLORS = {"printed": (30, 110, 230), "handwritten": (220, 40, 40), "form_field": (20, 160, 60)}


def draw_lines(image: np.ndarray, lines: Sequence[dict], title: str = "") -> np.ndarray:
    """Line polygons coloured by kind, with their text, drawn on a copy of ``image`` (HWC RGB)."""
    out = image.copy()
    for ln in lines:
        color = KIND_COLORS.get(ln.get("kind", ""), (140, 60, 200))
        pts = np.asarray(ln["polygon"], np.float32).round().astype(np.int32)
        cv2.polylines(out, [pts], True, color, 2)
        if ln.get("text"):
            x, y = int(pts[:, 0].min()), max(int(pts[:, 1].min()) - 3, 10)
            cv2.putText(out, ln["text"][:60], (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    if title:
        cv2.putText(out, title, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2, cv2.LINE_AA)
    return out


def side_by_side(image: np.ndarray, gt_lines: Sequence[dict], pred_lines: Sequence[dict]) -> np.ndarray:
    """Ground truth left, prediction right, lines coloured by kind with their text (HWC uint8)."""
    return np.concatenate([draw_lines(image, gt_lines, "ground truth"), draw_lines(image, pred_lines, "prediction")], axis=1)


def lines_table(pairs: Sequence[tuple[str, str]], limit: int = 30) -> str:
    """Markdown table of ground-truth vs predicted line text."""
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ") or " "
    rows = ["| ground truth | prediction |", "|---|---|"]
    rows += [f"| {esc(g)} | {esc(p)} |" for g, p in pairs[:limit]]
    return "\n".join(rows)


def schedule_table(schedule: Sequence[dict]) -> str:
    """Markdown table of the stochastic-depth schedule."""
    rows = ["| block | stage | keep prob | always runs |", "|---|---|---|---|"]
    rows += [f"| {s['index']} | {s['stage']} | {s['keep_prob']:.3f} | {'yes' if s['always_run'] else ''} |"
             for s in schedule]
    return "\n".join(rows)


def custom_layout() -> dict:
    """Custom-scalars layout grouping the charts."""
    return {
        "losses": {"train": ["Multiline", [r"train/loss.*"]]},
        "validation": {
            "CER (raw vs EMA)": ["Multiline", [r"val/.*/cer$"]],
            "F1 (raw vs EMA)": ["Multiline", [r"val/.*/(det|e2e)_f1$"]],
            "segmentation IoU": ["Multiline", [r"val/.*/seg_miou$"]],
        },
        "throughput": {
            "pages/s": ["Multiline", [r"train/pages_per_s"]],
            "data wait": ["Multiline", [r"train/data_wait_share"]],
            "depth": ["Multiline", [r"train/effective_depth"]],
        },
    }


def write_hparams(writer: SummaryWriter, hparams: dict, metrics: dict) -> None:
    """HPARAMS tab entry in the run's own event file, so a sweep's runs compare side by side."""
    clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
    exp, ssi, sei = hparams_summary(clean, metrics)
    fw = writer._get_file_writer()
    for s in (exp, ssi, sei):
        fw.add_summary(s)
    for k, v in metrics.items():
        writer.add_scalar(k, v)


def open_writer(run_dir: Path, flush_secs: int = 30) -> SummaryWriter:
    writer = SummaryWriter(str(run_dir / "tb"), flush_secs=flush_secs)
    writer.add_custom_scalars(custom_layout())
    return writer
