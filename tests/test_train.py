"""The training application end to end on CPU: smoke run, TensorBoard tags, exact resume, SIGTERM, faults."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from docrec.data.cache import cache_usage
from docrec.engine import checkpoint as ckpt
from docrec.engine.trainer import TrainingError, train
from docrec.pages import DataError
from tests.conftest import REPO, compose_cfg

pytestmark = pytest.mark.slow

# Tiny but complete: resnet18, 256-px pages, validation, EMA and checkpoints all exercised.
TINY = ["experiment=smoke", "model.backbone.name=resnet18", "data.long_side=256", "data.num_workers=0",
        "model.recognition.d_model=64", "model.recognition.dim_feedforward=128", "model.fpn_channels=64",
        "model.recognition.encoder_layers=1", "model.recognition.decoder_layers=1"]


def _data(toy: Path) -> list[str]:
    return [f"data.path={toy / 'train.jsonl'}", f"data.val_path={toy / 'val.jsonl'}"]


def _tags(run_dir: Path) -> EventAccumulator:
    ea = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    ea.Reload()
    return ea


def test_smoke_run_writes_checkpoints_and_every_dashboard(toy_data, tmp_path):
    cfg = compose_cfg([*TINY, *_data(toy_data), "trainer.max_steps=6", "trainer.val_every=3",
                       "trainer.log_every=2", "trainer.ckpt_every=2"])
    metrics = train(cfg, tmp_path)
    assert {"val/raw/cer", "val/ema/cer", "val/ema/e2e_f1", "val/raw/seg_miou"} <= set(metrics)
    names = {p.name for p in (tmp_path / "checkpoints").iterdir()}
    assert {"last.pt", "best.pt"} <= names and any(n.startswith("step") for n in names)
    state = ckpt.load(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 6 and state["ema"] is not None and state["charset"]
    assert state["config"]["model"]["backbone"]["name"] == "resnet18"
    ea = _tags(tmp_path)
    scalars = set(ea.Tags()["scalars"])
    for tag in ("train/loss", "train/loss_seg", "train/loss_core", "train/loss_rec", "train/lr", "train/grad_norm",
                "train/pages_per_s", "train/data_wait_share", "train/peak_mem_gib", "train/effective_depth"):
        assert tag in scalars, tag
    for name in ("raw", "ema"):
        for metric in ("seg_miou", "det_f1", "e2e_f1", "cer", "wer"):
            assert f"val/{name}/{metric}" in scalars
    assert any("ema" in t and "iou" in t for t in scalars)
    assert {"val_raw/page_0", "val_ema/page_0"} <= set(ea.Tags()["images"])
    tensors = set(ea.Tags()["tensors"])
    assert "model/stochastic_depth_schedule/text_summary" in tensors and "val_ema/lines/text_summary" in tensors
    assert "custom_scalars__config__" in tensors
    hp = ea.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hp and "hparam/val_ema_cer" in scalars
    start = HParamsPluginData.FromString(hp["_hparams_/session_start_info"]).session_start_info.hparams
    assert start["long_side"].number_value == cfg.data.long_side and start["read_scale"].number_value == 1.0
    assert start["backbone"].string_value == "resnet18"
    # Effective depth is the number of residual blocks run: between the always-run ones and all 8.
    depth = [e.value for e in ea.Scalars("train/effective_depth")]
    assert all(3 <= d <= 8 for d in depth)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return ckpt.load(path)["model"]


def _run(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # Its own process group, signalled as a whole like a cluster scheduler does (loader workers included).
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            **kw)


def test_sigterm_saves_and_resume_is_exact(toy_data, tmp_path):
    common = [*TINY, *_data(toy_data), "deterministic=true", "trainer.max_steps=10", "trainer.val_every=5",
              "trainer.ckpt_every=1", "trainer.log_every=1", "data.batch_size=2", "data.num_workers=1"]
    full = _run([*common, f"hydra.run.dir={tmp_path / 'full'}"])
    part = _run([*common, f"hydra.run.dir={tmp_path / 'part'}"])
    last = tmp_path / "part" / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and part.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    os.killpg(part.pid, signal.SIGTERM)  # the whole group: main process and its loader workers
    out, _ = part.communicate(timeout=240)
    assert part.returncode == 0, out
    assert "stopped by SIGTERM" in out and "resume=" in out
    stopped_at = ckpt.load(last)["step"]
    assert 1 <= stopped_at < 10, out
    resumed = _run([*common, f"hydra.run.dir={tmp_path / 'part'}", f"resume={tmp_path / 'part'}"])
    out2, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out2
    assert f"resumed at step {stopped_at}" in out2
    out_full, _ = full.communicate(timeout=300)
    assert full.returncode == 0, out_full
    a, b = _weights(tmp_path / "full" / "checkpoints" / "last.pt"), _weights(last)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume (stopped at step {stopped_at})"


def test_non_finite_steps_are_skipped_then_stop(toy_data, tmp_path, monkeypatch):
    from docrec.models.docrec_model import DocRecModel

    original = DocRecModel.forward
    calls = []

    def nan_after_two(self, images, targets=None):
        out = original(self, images, targets)
        if targets is not None:
            calls.append(1)
            if len(calls) > 2:
                out = {k: v * float("nan") for k, v in out.items()}
        return out

    monkeypatch.setattr(DocRecModel, "forward", nan_after_two)
    cfg = compose_cfg([*TINY, *_data(toy_data), "trainer.max_steps=20", "trainer.val_every=100",
                       "trainer.ckpt_every=2", "trainer.max_bad_steps=3", "trainer.log_every=1"])
    with pytest.raises(TrainingError, match=r"3 non-finite steps in a row \(last at step \d+\).*last\.pt"):
        train(cfg, tmp_path)
    state = ckpt.load(tmp_path / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert "train/skipped_steps" in set(_tags(tmp_path).Tags()["scalars"])


def test_a_null_max_steps_sizes_the_schedule_by_epochs_of_the_data(toy_data, tmp_path):
    # 6 training pages (the toy set holds 2 more for validation) in batches of 2: 3 batches an epoch
    cfg = compose_cfg([*TINY, *_data(toy_data), "trainer.max_steps=null", "trainer.max_epochs=2",
                       "trainer.grad_accum=2", "trainer.val_every=100", "trainer.log_every=1", "optim.warmup_steps=1"])
    train(cfg, tmp_path)
    state = ckpt.load(tmp_path / "checkpoints" / "last.pt")
    assert state["config"]["trainer"]["max_steps"] == 2 * 2  # ceil(3 batches / 2 accumulated) per epoch
    # the run ends at the last batch of its second epoch (epoch index 1, all 3 batches trained)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 1, 3)
    lrs = [e.value for e in _tags(tmp_path).Scalars("train/lr")]
    assert lrs[-1] == pytest.approx(cfg.optim.lr * cfg.optim.min_lr_ratio, rel=1e-3)  # the schedule ends with the run


def test_out_of_memory_names_batch_and_resolution(toy_data, tmp_path, monkeypatch):
    from docrec.models.docrec_model import DocRecModel

    def oom(self, images, targets=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(DocRecModel, "forward", oom)
    cfg = compose_cfg([*TINY, *_data(toy_data), "trainer.max_steps=4"])
    with pytest.raises(TrainingError, match=r"out of GPU memory.*data\.batch_size=2.*data\.long_side=256") as err:
        train(cfg, tmp_path)
    assert isinstance(err.value, torch.OutOfMemoryError)  # still one to whoever catches those (the memory benchmark)


def test_strict_mode_fails_before_training(toy_data, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(toy_data, bad)
    img = bad / "images" / "000.png"
    img.write_bytes(img.read_bytes()[:200])  # truncated
    over = [*TINY, f"data.path={bad / 'train.jsonl'}", "data.val_path=null", "trainer.max_steps=2",
            "trainer.val_every=100"]
    with pytest.raises(DataError, match=r"000\.png: truncated PNG"):
        train(compose_cfg(over), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
    train(compose_cfg([*over, "data.strict=false"]), tmp_path / "run2")
    assert _tags(tmp_path / "run2").Scalars("data/skipped_pages")[0].value == 1


def _finish(proc: subprocess.Popen, timeout: int = 400) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def test_sweep_over_p_min_gives_one_run_dir_each(toy_data, tmp_path):
    out = _finish(_run(["-m", *TINY, *_data(toy_data), "model.backbone.p_min=0.7,1.0", "trainer.max_steps=2",
                        "trainer.val_every=100", f"hydra.sweep.dir={tmp_path}"]))
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and (p / "tb").is_dir())
    assert [r.name for r in runs] == ["0_p_min=0.7", "1_p_min=1.0"], out
    for run, p_min in zip(runs, (0.7, 1.0)):
        assert ckpt.load(run / "checkpoints" / "last.pt")["config"]["model"]["backbone"]["p_min"] == p_min
        ea = _tags(run)
        assert "_hparams_/session_start_info" in ea.PluginTagToContent("hparams")
        assert "hparam/val_ema_cer" in ea.Tags()["scalars"]


def test_ddp_two_processes_on_cpu(toy_data, tmp_path):
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(REPO / "train.py"),
         *TINY, *_data(toy_data), "trainer.max_steps=40", "trainer.val_every=2", "trainer.log_every=1",
         # Early stopping is decided on rank 0: the other rank must stop at the same step, not hang.
         "trainer.early_stop.enabled=true", "trainer.early_stop.patience=1", "trainer.monitor=val/raw/e2e_f1",
         # Both ranks share one page cache: entries written atomically, whichever rank comes first.
         f"data.cache_dir={tmp_path / 'pages'}", f"hydra.run.dir={run_dir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "world=2" in out and out.count("docrec | early stop") == 1  # summaries from rank 0 only
    # Rank 1 may store pages before rank 0 prints its summary: the count is not fixed.
    assert len(re.findall(rf"cache     {re.escape(str(tmp_path / 'pages'))}: \d+ decoded pages stored", out)) == 1
    assert cache_usage(tmp_path / "pages")[0] == 8 and not list((tmp_path / "pages").rglob("*.tmp"))
    assert "did not improve in 1 validations at step 4" in out
    assert len(list((run_dir / "tb").iterdir())) == 1  # one writer
    assert ckpt.load(run_dir / "checkpoints" / "last.pt")["step"] == 4


def test_early_stopping_on_a_metric_that_does_not_improve(toy_data, tmp_path, capsys):
    # Nothing is read exactly after a few steps, so e2e_f1 stays 0: patience 1 stops at the 2nd validation.
    cfg = compose_cfg([*TINY, *_data(toy_data), "trainer.max_steps=40", "trainer.val_every=2",
                       "trainer.early_stop.enabled=true", "trainer.early_stop.patience=1",
                       "trainer.monitor=val/raw/e2e_f1"])
    train(cfg, tmp_path)
    out = capsys.readouterr().out
    assert "early stop: val/raw/e2e_f1 did not improve in 1 validations at step 4" in out
    assert ckpt.load(tmp_path / "checkpoints" / "last.pt")["step"] == 4


def test_precise_bn_recalibrates_raw_and_ema_before_validation(toy_data, tmp_path, monkeypatch):
    from torch.nn.modules.batchnorm import _BatchNorm

    from docrec.engine import trainer as trainer_module
    calls: list[dict[str, int]] = []  # per recalibration: how often each BN layer ran in it
    real = trainer_module.recalibrate_bn

    def counting(model, batches):
        seen: dict[str, int] = {}
        hooks = [m.register_forward_hook(lambda *_, name=name: seen.__setitem__(name, seen.get(name, 0) + 1))
                 for name, m in model.named_modules() if isinstance(m, _BatchNorm)]
        try:
            return real(model, batches)
        finally:
            for h in hooks:
                h.remove()
            calls.append(seen)

    monkeypatch.setattr(trainer_module, "recalibrate_bn", counting)
    cfg = compose_cfg([*TINY, *_data(toy_data), "trainer.max_steps=3", "trainer.val_every=100",
                       "trainer.precise_bn_batches=2"])
    train(cfg, tmp_path)
    state = ckpt.load(tmp_path / "checkpoints" / "last.pt")
    assert len(calls) == 2  # raw, then EMA, before the one validation
    for weights, seen in zip((state["model"], state["ema"]), calls):
        tracked = {k.removesuffix(".num_batches_tracked"): int(v) for k, v in weights.items()
                   if k.endswith("num_batches_tracked")}
        # Reset, then exactly the recalibration's own calls (3 training steps would count more): once per
        # batch for the page's layers, once per width group of lines for the reader's pixel stem.
        assert tracked and tracked == seen, (tracked, seen)
        assert {v for k, v in tracked.items() if not k.startswith("rec_head.pixel_stem.")} == {2}
        assert any(k.startswith("rec_head.pixel_stem.") for k in tracked)


def test_step_flops_are_counted_without_touching_the_run(toy_data, tmp_path):
    """The MFU scalar's FLOPs count (CUDA runs): a forward + backward leaving buffers, gradients and RNG as they were."""
    from docrec.engine.report import measure_step_flops
    from docrec.engine.trainer import build_run
    run = build_run(compose_cfg([*TINY, *_data(toy_data), "logger.enabled=false"]), tmp_path / "run")
    buffers = {k: v.clone() for k, v in run.raw.named_buffers()}
    rng = torch.get_rng_state()
    flops = measure_step_flops(run)
    assert flops > 1e8
    assert all(torch.equal(v, buffers[k]) for k, v in run.raw.named_buffers())
    assert all(p.grad is None for p in run.raw.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert run.peak_flops is None and run.step_flops is None  # no GPU: nothing counted, no MFU scalar


def test_card_peaks_for_mfu(monkeypatch):
    from docrec.engine.runtime import peak_bf16_flops
    assert peak_bf16_flops(torch.device("cpu")) is None
    for name, peak in (("NVIDIA H200", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 80GB HBM3", 989e12),
                       ("Some Other GPU", None)):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, n=name: n)
        assert peak_bf16_flops(torch.device("cuda", 0)) == peak
