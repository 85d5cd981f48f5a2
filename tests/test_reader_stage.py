"""trainer.stage=reader: the recognition head trained alone on a bank of fused maps computed once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from docrec.data.dataset import normalize
from docrec.data.targets import build_targets
from docrec.engine import checkpoint as ckpt
from docrec.engine.config import ConfigError, check_config
from docrec.engine.reader_stage import FROZEN_PARTS, FeatureBank, freeze_all_but_reader, reader_batches
from docrec.engine.runtime import setup
from docrec.engine.trainer import train
from docrec.models import DocRecModel, build_model
from docrec.text import Charset
from tests.conftest import REPO, compose_cfg
from tests.test_model import KINDS, PAGES, TINY, render
from tests.test_train import TINY as TINY_RUN
from tests.test_train import _data, _run


def _tiny(**recognition) -> tuple[DocRecModel, Charset]:
    """test_model's tiny network (recognition settings overridden) and the charset of its pages."""
    charset = Charset.build([t for spec in PAGES for t, _, _ in spec])
    torch.manual_seed(0)
    return build_model({**TINY, "recognition": {**TINY["recognition"], **recognition}}, charset), charset


def _loader_batch(charset, pages=PAGES):
    """What the loader gives: uint8 images [B, 3, H, W], targets, metas."""
    images, targets = [], []
    for spec in pages:
        img, lines = render(spec)
        images.append(torch.from_numpy(img).permute(2, 0, 1))
        targets.append(build_targets(lines, img.shape[0], img.shape[1], KINDS, charset, max_len=16))
    return torch.stack(images), targets, [{}] * len(pages)


def test_reading_losses_from_a_given_map_are_the_page_forwards():
    model, charset = _tiny(pixel_stem=8)  # with a pixel stem: the page images are read beside the given map
    images, targets, _ = _loader_batch(charset)
    x = normalize(images)
    model.eval()  # no box noise, no line cap, no dropped blocks: both paths read the same boxes
    with torch.no_grad():
        full = model(x, targets)
        reader = model(x, targets, fused=model.fused_map(x))
    assert set(reader) == {"rec", "ctc"} and {"seg", "core"} <= set(full)
    for k in reader:
        torch.testing.assert_close(reader[k], full[k])


def test_the_bank_keeps_eval_maps_draws_padded_batches_and_drops_its_oldest():
    tiny_model, charset = _tiny()
    rt = setup("cpu", "fp32", False)
    tiny_model.train()  # the bank computes its maps in eval mode whatever the model's mode, and restores it
    bank = FeatureBank(tiny_model, rt, capacity=3)
    first = _loader_batch(charset)
    bank.add(first)
    assert len(bank) == 2 and bank.lines == sum(len(p) for p in PAGES) and tiny_model.training
    tiny_model.eval()
    with torch.no_grad():
        want = tiny_model.fused_map(normalize(first[0]))
    torch.testing.assert_close(bank.maps[0].float(), want[0], atol=0.05, rtol=0.02)  # kept in bfloat16
    assert bank.maps[0].dtype == torch.bfloat16 and set(bank.targets[0]) <= {
        "line_quads", "line_tokens", "line_kinds", "line_fold_case"}  # no per-pixel masks held
    # A smaller crop: a draw pads images white and maps with zeros to the largest.
    small = _loader_batch(charset, [PAGES[1]])
    small = (small[0][:, :, :96, :160].contiguous(), small[1], small[2])
    bank.add(small)
    assert len(bank) == 3
    bank.add(_loader_batch(charset, [PAGES[1]]))  # over capacity: the oldest crop (the first page) goes
    assert len(bank) == 3 and bank.images[0].shape[-2:] == (128, 256) and bank.images[1].shape[-2:] == (96, 160)
    assert bank.lines == 3 * len(PAGES[1])  # the lines of the crops held, not of every crop ever added
    images, targets, fused = bank.draw(8, torch.Generator().manual_seed(0))
    assert images.shape == (3, 3, 128, 256) and images.dtype == torch.uint8 and len(targets) == 3
    assert fused.shape[0] == 3 and fused.shape[-2:] == want.shape[-2:] and fused.dtype == torch.float32
    i = next(j for j, im in enumerate(images) if (im[:, 96:, :] == 255).all() and (im[:, :, 160:] == 255).all())
    assert (fused[i, :, 24:, :] == 0).all() and (fused[i, :, :, 40:] == 0).all()


def test_reader_batches_refresh_the_bank_once_per_group_and_resume_mid_group():
    tiny_model, charset = _tiny()
    rt = setup("cpu", "fp32", False)
    bank = FeatureBank(tiny_model, rt, capacity=4)
    bank.fill(iter([_loader_batch(charset)] * 2))
    assert len(bank) == 4
    added = []
    bank_add = bank.add
    bank.add = lambda b: (added.append(b), bank_add(b))
    loader = [_loader_batch(charset) for _ in range(3)]
    out = list(reader_batches(bank, iter(loader), crops_per_step=2, refresh_every=3))
    assert len(out) == 9 and len(added) == 3  # 3 micro-batches per loader batch, each batch added after its group
    images, targets, _, fused = out[0]
    assert images.shape[0] == 2 and fused.dtype == torch.float32 and len(targets) == 2
    # Resumed after 7 micro-batches of this epoch: the sampler skipped 7 // 3 = 2 batches, and the
    # group of the third has 2 micro-batches to go.
    added.clear()
    assert len(list(reader_batches(bank, iter(loader[2:]), crops_per_step=2, refresh_every=3, skip=7))) == 2
    assert len(added) == 1


def test_filling_stops_when_told():
    tiny_model, charset = _tiny()
    bank = FeatureBank(tiny_model, setup("cpu", "fp32", False), capacity=100)
    bank.fill(iter([_loader_batch(charset)] * 10), stop=lambda: len(bank) >= 4)
    assert len(bank) == 4


def test_the_reader_stage_trains_the_recognition_head_alone():
    tiny_model, _ = _tiny()
    n = freeze_all_but_reader(tiny_model)
    assert n == sum(p.numel() for p in tiny_model.rec_head.parameters())
    for part in FROZEN_PARTS:
        assert not any(p.requires_grad for p in getattr(tiny_model, part).parameters())


@pytest.mark.parametrize("override, match", [
    ("trainer.stage=heads", "trainer.stage must be pages"),
    ("trainer.reader.crops_per_step=0", "trainer.reader.crops_per_step must be >= 1"),
    ("trainer.reader.bank_batches=2.5", "trainer.reader.bank_batches must be an integer"),
])
def test_bad_reader_settings_are_named(override, match):
    cfg = compose_cfg(["experiment=smoke", "trainer.stage=reader", override, "data.path=x.jsonl"])
    with pytest.raises(ConfigError, match=match):
        check_config(cfg)


def test_reader_stage_refuses_precise_bn():
    cfg = compose_cfg(["experiment=smoke", "trainer.stage=reader", "trainer.precise_bn_batches=2",
                       "data.path=x.jsonl"])
    with pytest.raises(ConfigError, match="precise_bn_batches .* keeps frozen"):
        check_config(cfg)


def _page_run(toy_data, run_dir):
    """A 2-step page run of the toy data: the run a reader stage starts from."""
    train(compose_cfg([*TINY_RUN, *_data(toy_data), "trainer.max_steps=2", "trainer.val_every=2"]), run_dir)
    return run_dir


@pytest.mark.slow
def test_a_reader_stage_after_a_page_run_moves_only_the_reader_and_resumes(toy_data, tmp_path):
    pages = _page_run(toy_data, tmp_path / "pages")
    start = ckpt.load(pages / "checkpoints" / "last.pt")["model"]
    reader = tmp_path / "reader"
    args = [*TINY_RUN, *_data(toy_data), "experiment=[smoke,reader]", f"init_from={pages}",
            "trainer.reader.bank_batches=3", "trainer.reader.crops_per_step=3", "trainer.reader.refresh_every=2",
            "trainer.val_every=4", "trainer.ckpt_every=2"]
    metrics = train(compose_cfg([*args, "trainer.max_steps=4"]), reader)
    assert "val/ema/cer" in metrics
    state = ckpt.load(reader / "checkpoints" / "last.pt")
    assert state["step"] == 4 and state["config"]["trainer"]["stage"] == "reader"
    moved = {k for k, v in state["model"].items() if v.is_floating_point() and not torch.equal(v, start[k])}
    assert moved and all(k.startswith("rec_head.") for k in moved)
    assert any(k.startswith(("rec_head.pixel_stem.", "rec_head.encoder.")) for k in moved)
    # A resumed reader stage refills its bank and goes on to the new end.
    train(compose_cfg([*args, "trainer.max_steps=6", f"resume={reader}"]), reader)
    end = ckpt.load(reader / "checkpoints" / "last.pt")
    assert end["step"] == 6
    assert all(torch.equal(end["model"][k], start[k]) for k in start if k.split(".")[0] in FROZEN_PARTS)


@pytest.mark.slow
def test_sigterm_while_the_bank_fills_saves_and_leaves_no_process(toy_data, tmp_path):
    pages = _page_run(toy_data, tmp_path / "pages")
    reader = tmp_path / "reader"
    # A bank far larger than the toy data: it would fill for many epochs; SIGTERM comes while it does.
    proc = _run([*TINY_RUN, *_data(toy_data), "experiment=[smoke,reader]", f"init_from={pages}",
                 "trainer.reader.bank_batches=100000", "data.num_workers=1", f"hydra.run.dir={reader}"])
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "trainer.stage=reader" in line:
            time.sleep(2.0)  # into the filling
            os.killpg(proc.pid, signal.SIGTERM)  # the group: the main process and its loader worker
            break
    out = "".join(lines) + proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, out
    assert "stopped by SIGTERM at step 0" in out and "reader bank:" in out
    assert ckpt.load(reader / "checkpoints" / "last.pt")["step"] == 0
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # nothing of the run's group is left


@pytest.mark.slow
def test_the_reader_stage_under_ddp_on_cpu(toy_data, tmp_path):
    pages = _page_run(toy_data, tmp_path / "pages")
    run_dir = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(REPO / "train.py"),
         *TINY_RUN, *_data(toy_data), "experiment=[smoke,reader]", f"init_from={pages}", "trainer.max_steps=3",
         "trainer.val_every=3", "trainer.reader.bank_batches=2", "trainer.reader.crops_per_step=2",
         "trainer.reader.refresh_every=1", f"hydra.run.dir={run_dir}"],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
        check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "world=2" in out and out.count("reader bank:") == 1  # logged by rank 0
    state = ckpt.load(run_dir / "checkpoints" / "last.pt")
    start = ckpt.load(pages / "checkpoints" / "last.pt")["model"]
    assert state["step"] == 3
    moved = {k for k, v in state["model"].items() if v.is_floating_point() and not torch.equal(v, start[k])}
    assert moved and all(k.startswith("rec_head.") for k in moved)
