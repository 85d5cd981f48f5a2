"""Faults a long run meets: kill -9, hostile or broken files, data quirks that must be reported."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from docrec.data.loading import load_splits
from docrec.engine import checkpoint as ckpt
from docrec.engine.report import data_health
from docrec.engine.runtime import alive_pids, child_pids
from docrec.formats import load
from docrec.images import image_size, read_image
from docrec.pages import DataError
from docrec.text import Charset
from tests.conftest import REPO, compose_cfg
from tests.test_train import TINY, _data

pytestmark = pytest.mark.slow


def test_kill_9_leaves_a_loadable_checkpoint_and_resume_continues(toy_data, tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, str(REPO / "train.py"), *TINY, *_data(toy_data), "trainer.max_steps=40",
            "trainer.ckpt_every=1", "trainer.val_every=1000", f"hydra.run.dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and ckpt.load(last)["step"] >= 2:
            break
        time.sleep(0.1)
    time.sleep(0.7)  # land somewhere inside a later step or save
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    # A torn temp file may remain; it is never taken for a checkpoint.
    (run / "checkpoints" / ".last.pt.partial.tmp").write_bytes(b"\x80\x02torn")
    state = ckpt.load(last)
    step = state["step"]
    assert step >= 2
    res = subprocess.run([*args, "trainer.max_steps=" + str(step + 2), f"resume={run}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"resumed at step {step}" in res.stdout
    assert ckpt.load(last)["step"] == step + 2
    assert not list(last.parent.glob(".*.tmp")), "the resumed run removes the partial checkpoint files"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc (prctl PR_SET_PDEATHSIG)")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "term"])
def test_a_killed_run_leaves_no_loader_worker_behind(toy_data, tmp_path, sig):
    run = tmp_path / "run"
    args = [sys.executable, str(REPO / "train.py"), *TINY, *_data(toy_data), "data.num_workers=2",
            "trainer.max_steps=400", "trainer.ckpt_every=1", "trainer.val_every=1000", f"hydra.run.dir={run}"]
    proc = subprocess.Popen(args, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    workers: set[int] = set()
    while time.time() < deadline and proc.poll() is None and not (last.exists() and len(workers) >= 2):
        workers |= child_pids(proc.pid)
        time.sleep(0.2)
    assert len(workers) >= 2, "the run never started its loader workers"
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0)
    time.sleep(3)  # PyTorch's own watchdog looks every 5 s, and never while a worker is blocked on its pipe
    assert not alive_pids(workers), f"loader workers left behind: {sorted(alive_pids(workers))}"


def test_a_worker_whose_parent_is_gone_exits_at_once():
    # A child told that its parent is another pid (one that died before the call) must exit, not live on.
    script = "import os; from docrec.data.loading import die_with_parent; die_with_parent(os.getppid() + 10**6); print(1)"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 1 and run.stdout == ""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc (prctl PR_SET_PDEATHSIG)")
@pytest.mark.parametrize("dies_with_parent", [True, False])
def test_a_child_that_ignores_sigterm_dies_with_its_killed_parent_only_when_asked(tmp_path, dies_with_parent):
    # A blocked loader worker in miniature: it ignores SIGTERM and never looks at its parent. Without
    # die_with_parent it outlives a parent killed with SIGKILL (the control); with it, it dies at once.
    ready = tmp_path / "ready"
    child = ("import os, signal, time\n"
             + ("from docrec.data.loading import die_with_parent\ndie_with_parent(os.getppid())\n" if dies_with_parent else "")
             + f"signal.signal(signal.SIGTERM, signal.SIG_IGN)\nopen({str(ready)!r}, 'w').close()\ntime.sleep(120)\n")
    parent = ("import subprocess, sys, time\n"
              f"c = subprocess.Popen([sys.executable, '-c', {child!r}])\nprint(c.pid, flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=REPO, stdout=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline())
    try:
        deadline = time.time() + 120
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert ready.exists()
        proc.kill()
        proc.wait(timeout=30)
        time.sleep(3)
        assert bool(alive_pids({pid})) is not dies_with_parent
    finally:
        if alive_pids({pid}):
            os.kill(pid, signal.SIGKILL)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (12000, 9000)).save(path)  # 108 MP, compresses to a few hundred KB
    with pytest.raises(DataError, match=r"bomb\.png: image has 12000x9000 = 108,000,000 pixels, above the cap"):
        image_size(path)
    assert image_size(path, max_pixels=200_000_000) == (12000, 9000)


def test_corrupt_image_body_fails_strict_and_is_skipped_lenient(toy_data, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(toy_data, data)
    img = data / "images" / "000.png"
    raw = bytearray(img.read_bytes())
    raw[100:400] = os.urandom(300)  # header and IEND intact, pixels garbage
    img.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"000\.png: corrupt or truncated image"):
        read_image(img)
    from docrec.data.dataset import PageDataset

    pages = load("manifest", data / "train.jsonl").pages  # header checks pass
    charset = Charset.build(ln.text for p in pages for ln in p.lines)
    kinds = ["printed", "handwritten", "form_field"]
    strict = PageDataset(pages, charset, kinds, 128, train=False)
    with pytest.raises(DataError, match="000.png"):
        strict[0]
    lenient = PageDataset(pages, charset, kinds, 128, train=False, strict=False)
    assert lenient[0][2]["source"] == pages[1].source


def test_page_size_mismatch_names_file(toy_data, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(toy_data, data)
    rows = (data / "train.jsonl").read_text().splitlines()
    rec = json.loads(rows[0])
    rec["width"] = 640
    rows[0] = json.dumps(rec)
    (data / "train.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl:1: declares a 640x240 page but image .*000\.png is 320x240"):
        load("manifest", data / "train.jsonl")
    res = load("manifest", data / "train.jsonl", strict=False)
    assert len(res.skipped) == 1 and len(res.pages) == len(rows) - 1


def test_data_quirks_are_counted(toy_data, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(toy_data, data)
    val = [json.loads(r) for r in (data / "val.jsonl").read_text().splitlines()]
    val[0]["lines"][0]["text"] = "Ωμέγα"  # not in the training charset
    val[0]["lines"][1]["text"] = ""
    val[1]["lines"] = []
    (data / "val.jsonl").write_text("\n".join(json.dumps(r) for r in val) + "\n")
    cfg = compose_cfg([*TINY, *_data(data)])
    splits = load_splits(cfg.data)
    charset = Charset.build(ln.text for p in splits.train for ln in p.lines)
    health = data_health(splits, charset)
    assert health == {"skipped_pages": 0, "pages_without_lines": 1, "empty_text_lines": 1,
                      "val_chars_outside_charset": 5}


def test_hostile_checkpoint_path_in_resume_is_refused(toy_data, tmp_path):
    from docrec.engine.trainer import train

    evil = tmp_path / "evil.pt"
    torch.save({"x": np.array([1, 2])}, evil)  # a numpy pickle: not loadable weights-only
    with pytest.raises(ckpt.CheckpointError, match="weights-only"):
        train(compose_cfg([*TINY, *_data(toy_data), f"resume={evil}"]), tmp_path / "run")
