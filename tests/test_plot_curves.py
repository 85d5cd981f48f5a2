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


def test_a_folder_without_events_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no TensorBoard scalars"):
        main([str(tmp_path)])
