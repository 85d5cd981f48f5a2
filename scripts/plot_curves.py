"""Learning curves of a run as one PNG, read from its TensorBoard events.

    python scripts/plot_curves.py RUN_DIR --out docs/cpu_curves.png [--label NAME]

Panels: validation (EMA weights) detection F1, recognition CER of both decoders on
ground-truth lines, end-to-end F1, and the training losses; the x axis is wall-clock
minutes since the run's first event (what a user waits), the top axis the step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

PANELS = [
    ("detection F1 (val, EMA)", ["val/ema/det_f1"], (0.0, 1.0)),
    ("recognition CER on GT lines (val, EMA)", ["val/ema/cer", "val/ema/cer_ctc", "val/ema/cer_attention"], (0.0, 1.6)),
    ("end-to-end F1 (val, EMA)", ["val/ema/e2e_f1"], (0.0, 1.0)),
    ("training losses", ["train/loss_seg", "train/loss_core", "train/loss_ctc", "train/loss_rec"], None),
]


def load_scalars(run_dir: Path) -> dict[str, list[tuple[float, int, float]]]:
    """tag -> [(wall time, step, value)] from every events file under ``run_dir``."""
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [(e.wall_time, e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def plot(scalars: dict, out: Path, label: str = "") -> None:
    """Write the four panels to ``out``."""
    t0 = min(v[0][0] for v in scalars.values() if v)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 3.6))
    for ax, (title, tags, ylim) in zip(axes, PANELS):
        for tag in tags:
            if tag not in scalars:
                continue
            pts = scalars[tag]
            mins = [(w - t0) / 60 for w, _, _ in pts]
            name = tag.split("/")[-1]
            ax.plot(mins, [v for _, _, v in pts], marker="o" if tag.startswith("val/") else None,
                    markersize=3, linewidth=1.2, label=name)
            if tag.startswith("val/"):
                w, s, v = pts[-1]
                ax.annotate(f"{v:.3f} (step {s})", ((w - t0) / 60, v), fontsize=7, xytext=(-60, 6),
                            textcoords="offset points")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("minutes")
        ax.set_xlim(left=0)
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if label:
        fig.suptitle(label, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="a run directory (its tb/ folder holds the events)")
    ap.add_argument("--out", type=Path, default=Path("curves.png"), help="PNG to write (default curves.png)")
    ap.add_argument("--label", default="", help="figure title")
    args = ap.parse_args(argv)
    tb_dir = args.run_dir / "tb" if (args.run_dir / "tb").is_dir() else args.run_dir
    scalars = load_scalars(tb_dir)
    if not scalars:
        raise SystemExit(f"{tb_dir}: no TensorBoard scalars found")
    plot(scalars, args.out, args.label)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
