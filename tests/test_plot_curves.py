"""scripts/plot_curves.py: a run's TensorBoard scalars become one PNG of learning curves."""

from __future__ import annotations

import cv2
import pytest
from torch.utils.tensorboard import SummaryWriter

from scripts.plot_curves import load_scalars, main


def test_curves_are_drawn_from_the_events(tmp_path):
    writer = SummaryWriter(str(tmp_path / "run" / "tb"))
    for step in range(0, 100, 10):
        writer.add_scalar("train/loss_ctc", 5.0 - step / 25, step)
        writer.add_scalar("train/loss_rec", 3.0 - step / 50, step)
    for step, f1, cer in ((40, 0.5, 0.9), (80, 0.9, 0.3)):
        writer.add_scalar("val/ema/det_f1", f1, step)
        writer.add_scalar("val/ema/cer", cer, step)
    writer.close()
    scalars = load_scalars(tmp_path / "run" / "tb")
    assert [s for _, s, _ in scalars["val/ema/cer"]] == [40, 80]
    assert scalars["val/ema/det_f1"][-1][2] == pytest.approx(0.9)
    out = tmp_path / "curves.png"
    assert main([str(tmp_path / "run"), "--out", str(out), "--label", "test"]) == 0
    img = cv2.imread(str(out))
    assert img is not None and img.shape[1] > 3 * img.shape[0]  # four panels side by side


def test_two_runs_share_the_panels_at_equal_steps(tmp_path, monkeypatch):
    import scripts.plot_curves as pc

    for name, cer in (("a", 0.4), ("b", 0.6)):
        writer = SummaryWriter(str(tmp_path / name / "tb"))
        for step in (40, 80):
            writer.add_scalar("val/ema/cer", cer + 0.1 * (step == 40), step)
        writer.close()
    drawn = []
    real_plot = pc.plot
    monkeypatch.setattr(pc, "plot", lambda runs, out, label, x: drawn.append((runs, x)) or real_plot(runs, out, label, x))
    out = tmp_path / "both.png"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--names", "light", "fpn", "--x", "step",
                 "--out", str(out)]) == 0
    (runs, x), = drawn
    assert x == "step" and [n for n, _ in runs] == ["light", "fpn"]
    assert [v for _, _, v in runs[1][1]["val/ema/cer"]] == pytest.approx([0.7, 0.6])
    assert cv2.imread(str(out)) is not None
    with pytest.raises(SystemExit, match="2 runs"):
        main([str(tmp_path / "a"), str(tmp_path / "b"), "--names", "one"])


def test_a_folder_without_events_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no TensorBoard scalars"):
        main([str(tmp_path)])
