"""scripts/bench_train_step.py times the trainer's own optimizer_step, and its table comes out on a CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from docrec.engine.runtime import setup
from tests.conftest import REPO, load_script


def _bench():
    return load_script("scripts/bench_train_step.py")


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def test_a_benchmark_step_is_an_optimizer_step_of_the_trainer():
    bench = _bench()
    rt = setup("cpu", "fp32", False)
    charset = bench.bench_charset()
    model = bench.build_variant("docrec_p1.0", charset).train()
    opt = bench.build_optimizer(model, bench.OmegaConf.load(REPO / "configs" / "optim" / "adamw.yaml"))
    images, targets = bench.synthetic_batch(128, 1, 25.0, charset, rt.device)
    run = bench.bench_run(model, opt, rt, clip=1.0)
    before = _weights(model)
    bench.train_step(run, images, targets, step=7)
    after = _weights(model)
    assert run.progress.step == 8  # optimizer_step counted it
    assert any(not torch.equal(before[k], after[k]) for k in before)  # and AdamW moved the weights


def test_backbone_only_steps_train_the_backbone_alone():
    bench = _bench()
    rt = setup("cpu", "fp32", False)
    charset = bench.bench_charset()
    model = bench.build_variant("docrec_p1.0", charset).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    images, targets = bench.synthetic_batch(128, 1, 25.0, charset, rt.device)
    before = _weights(model)
    bench.train_step(bench.bench_run(model, opt, rt, clip=None, backbone_only=True), images, targets, step=0)
    after = _weights(model)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("backbone.") for k in moved)


def test_the_benchmark_prints_its_table_on_a_cpu(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_train_step.py"), "--device", "cpu", "--res", "128",
         "--batch", "1", "--steps", "2", "--warmup", "1", "--variants", "docrec_p1.0", "docrec_p0.5",
         "--json", str(out)],
        # A guard against a hang, not a speed target: ~40 s idle, past 300 s beside a training run on 2 cores.
        check=False, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "docrec_p0.5" in proc.stdout
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"baseline", "docrec_p1.0", "docrec_p0.5"}  # the reference of the ratios is always run
    assert all(r["steps"] == 2 and r["pages_per_s"] > 0 for r in rows.values())
    assert rows["docrec_p0.5"]["mean_blocks_run"] < rows["docrec_p1.0"]["mean_blocks_run"]
