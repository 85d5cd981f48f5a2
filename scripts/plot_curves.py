"""Learning curves of a run as one PNG, read from its TensorBoard events.

    python scripts/plot_curves.py RUN_DIR --out docs/cpu_curves.png [--label NAME]
    python scripts/plot_curves.py RUN_A RUN_B --names light fpn --x step --out docs/neck_curves.png

Panels: validation (EMA weights) detection F1, recognition CER of both decoders on
ground-truth lines, end-to-end F1, and the training losses; the x axis is wall-clock
minutes since the run's first event (what a user waits), or with ``--x step`` the step. Several
runs share the panels (one line style per run), to compare them at equal minutes or steps.
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


STYLES = ["-", "--", ":", "-."]


def plot(runs: list[tuple[str, dict]], out: Path, label: str = "", x: str = "minutes") -> None:
    """Write the four panels to ``out``: each run's curves, one colour per tag and one line style per run.

    ``x``: ``minutes`` since each run's first event (what a user waits) or ``step`` (runs compared at
    equal steps).
    """
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 3.6))
    for r, (name, scalars) in enumerate(runs):
        t0 = min(v[0][0] for v in scalars.values() if v)
        for ax, (_, tags, _) in zip(axes, PANELS):
            for colour, tag in enumerate(tags):
                if tag not in scalars:
                    continue
                pts = scalars[tag]
                xs = [(w - t0) / 60 if x == "minutes" else s for w, s, _ in pts]
                short = tag.split("/")[-1]
                ax.plot(xs, [v for _, _, v in pts], STYLES[r % len(STYLES)], color=f"C{colour}",
                        marker="o" if tag.startswith("val/") else None, markersize=3, linewidth=1.2,
                        label=f"{name}: {short}" if len(runs) > 1 else short)
                if tag.startswith("val/"):
                    _, s, v = pts[-1]
                    ax.annotate(f"{v:.3f} (step {s})", (xs[-1], v), fontsize=7, xytext=(-60, 6 - 12 * r),
                                textcoords="offset points")
    for ax, (title, _, ylim) in zip(axes, PANELS):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(x)
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
    ap.add_argument("run_dir", type=Path, nargs="+", help="run directories (each one's tb/ folder holds its events)")
    ap.add_argument("--names", nargs="+", help="a legend name per run (default: the folders' names)")
    ap.add_argument("--x", choices=["minutes", "step"], default="minutes", help="x axis (default minutes)")
    ap.add_argument("--out", type=Path, default=Path("curves.png"), help="PNG to write (default curves.png)")
    ap.add_argument("--label", default="", help="figure title")
    args = ap.parse_args(argv)
    names = args.names or [d.name for d in args.run_dir]
    if len(names) != len(args.run_dir):
        raise SystemExit(f"--names gives {len(names)} names for {len(args.run_dir)} runs")
    runs = []
    for name, run_dir in zip(names, args.run_dir):
        tb_dir = run_dir / "tb" if (run_dir / "tb").is_dir() else run_dir
        scalars = load_scalars(tb_dir)
        if not scalars:
            raise SystemExit(f"{tb_dir}: no TensorBoard scalars found")
        runs.append((name, scalars))
    plot(runs, args.out, args.label, args.x)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
