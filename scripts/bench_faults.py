"""Kill trials: a short run is killed with SIGKILL at random moments and while it writes a checkpoint,
resumed to the end each time and compared with the same run left alone; then the readers' fuzzers at
a larger scale.

    python scripts/bench_faults.py [--trials 20] [--write-kills 4] [--steps 16] [--ckpt-every 2]
        [--workers 1] [--seed 0] [--data DIR] [--out DIR] [--fuzz-scale 4] [--json PATH]

The run is ``experiment=smoke`` made smaller (ResNet-18, 256 px pages, a 64-wide reader) on
``--pages`` generated pages, ``deterministic=true``, one loader worker, a validation half-way, a
checkpoint every ``--ckpt-every`` steps. First it runs untouched (the reference). Each trial then:

1. starts the same run in a fresh folder and kills its main process with SIGKILL (what the OOM
   killer does), either at a moment drawn uniformly over the reference's training time (``random``)
   or the instant the k-th checkpoint's temporary file appears in ``checkpoints/`` (``in-write``:
   ``torch.save`` is writing it);
2. 3 s later lists the processes it had started (loader workers) that are still alive: there must
   be none;
3. reads ``checkpoints/last.pt`` (it must load), notes the step it holds and the last step the
   progress bar had shown (the steps lost: at most one checkpoint interval);
4. resumes with ``resume=<folder>`` to the last step and compares every tensor of the final weights
   and EMA weights with the reference's (bit-exact: deterministic CPU run).

The table has a row per trial and a summary; the exit status is 1 when any trial failed. Then
``tests/test_fuzz_readers.py`` runs with ``DOCREC_FUZZ_SCALE=--fuzz-scale`` (that many times the
examples ``make test`` runs per reader; 0 skips it). Figures depend on the machine's load only for
the seconds columns.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from docrec.engine import checkpoint as ckpt
from docrec.engine.runtime import alive_pids, child_pids

#: The run under test: small enough for seconds a step on a laptop CPU, with every part of a real run.
RUN = ["experiment=smoke", "model.backbone.name=resnet18", "data.long_side=256", "model.fpn_channels=64",
       "model.recognition.d_model=64", "model.recognition.dim_feedforward=128",
       "model.recognition.encoder_layers=1", "model.recognition.decoder_layers=1", "deterministic=true",
       "trainer.log_every=1", "data.batch_size=2", "logger.enabled=true"]
PROGRESS = re.compile(r"train:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")


@dataclass
class Trial:
    kind: str  # random | in-write
    killed_at_s: float  # seconds after the start
    seen_step: int  # last step the progress bar showed before the kill
    ckpt_step: int  # step held by last.pt after the kill (-1: none written yet)
    lost_steps: int
    left_behind: int  # processes the killed run started that were still alive 3 s later
    tmp_left: int  # partial checkpoint files the kill left in checkpoints/ (the resumed run removes them)
    resumed: bool
    exact: bool
    note: str = ""


def run_args(data: Path, run_dir: Path, a: argparse.Namespace) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), *RUN, f"data.path={data / 'train.jsonl'}",
            f"data.val_path={data / 'val.jsonl'}", f"data.num_workers={a.workers}",
            f"trainer.max_steps={a.steps}", f"trainer.ckpt_every={a.ckpt_every}",
            f"trainer.val_every={max(1, a.steps // 2)}", f"hydra.run.dir={run_dir}"]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def last_step_seen(log: Path) -> int:
    steps = [int(m.group(1)) for m in PROGRESS.finditer(log.read_text(errors="replace"))]
    return max(steps, default=0)


def weights(path: Path) -> dict[str, torch.Tensor]:
    state = ckpt.load(path)
    out = {f"model.{k}": v for k, v in state["model"].items()}
    out.update({f"ema.{k}": v for k, v in (state.get("ema") or {}).items() if isinstance(v, torch.Tensor)})
    return out


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str:
    """'' when equal, else what differs."""
    if a.keys() != b.keys():
        return f"keys differ: {sorted(a.keys() ^ b.keys())[:3]}"
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    return f"{len(diff)} tensors differ, e.g. {diff[0]}" if diff else ""


def reference(data: Path, out: Path, a: argparse.Namespace) -> tuple[Path, float, float, float]:
    """The untouched run: its last.pt, the seconds at which its first and last steps showed, its duration."""
    run_dir = out / "reference"
    log = out / "reference.log"
    t0 = time.time()
    first = last = None
    with open(log, "w") as fh:
        proc = subprocess.Popen(run_args(data, run_dir, a), cwd=REPO, env=env(), stdout=fh,
                                stderr=subprocess.STDOUT)
        while proc.poll() is None:
            step = last_step_seen(log)
            if first is None and step >= 1:
                first = time.time() - t0
            if last is None and step >= a.steps:
                last = time.time() - t0
            time.sleep(0.05)
    if proc.returncode != 0:
        sys.exit(f"the reference run failed ({proc.returncode}); see {log}")
    total = time.time() - t0
    return run_dir / "checkpoints" / "last.pt", first or 0.0, last or total, total


def kill_trial(kind: str, when: float, data: Path, out: Path, index: int, ref: dict[str, torch.Tensor],
               a: argparse.Namespace) -> Trial:
    run_dir = out / f"trial{index:02d}"
    log = out / f"trial{index:02d}.log"
    folder = run_dir / "checkpoints"
    started: set[int] = set()
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(run_args(data, run_dir, a), cwd=REPO, env=env(), stdout=fh,
                                stderr=subprocess.STDOUT)
        seen_tmp: set[str] = set()
        while proc.poll() is None:
            started |= child_pids(proc.pid)
            if kind == "random" and time.time() - t0 >= when:
                break
            if kind == "in-write" and folder.is_dir():
                seen_tmp |= {p.name for p in folder.glob(".last.pt.*.tmp")}
                if len(seen_tmp) >= when:
                    break
            time.sleep(0.001 if kind == "in-write" else 0.02)
        killed_at = time.time() - t0
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(3)
    left = alive_pids(started)
    for pid in left:  # leave the machine clean for the next trial, whatever the result
        os.kill(pid, signal.SIGKILL)
    seen = last_step_seen(log)
    tmp_left = len(list(folder.glob(".*.tmp"))) if folder.is_dir() else 0
    last = folder / "last.pt"
    try:
        ckpt_step = int(ckpt.load(last)["step"]) if last.exists() else -1
    except ckpt.CheckpointError as exc:
        return Trial(kind, killed_at, seen, -2, seen, len(left), tmp_left, False, False, f"last.pt unreadable: {exc}")
    note = ("the run had ended before the kill" if finished else
            "killed before its first checkpoint: started over" if ckpt_step < 0 else "")
    resume_log = out / f"trial{index:02d}.resume.log"
    args = run_args(data, run_dir, a) + ([f"resume={run_dir}"] if ckpt_step >= 0 else [])
    with open(resume_log, "w") as fh:
        code = subprocess.run(args, cwd=REPO, env=env(), stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    text = resume_log.read_text(errors="replace")
    resumed = code == 0 and (ckpt_step < 0 or f"resumed at step {ckpt_step}" in text)
    diff = same(ref, weights(last)) if resumed else f"resume failed ({code}); see {resume_log}"
    if resumed and list(folder.glob(".*.tmp")):
        diff = diff or "partial checkpoint files remain after the resume"
    return Trial(kind, killed_at, seen, ckpt_step, max(0, seen - max(ckpt_step, 0)), len(left), tmp_left,
                 resumed, not diff, diff or note)


def table(trials: list[Trial], ckpt_every: int) -> str:
    rows = ["| # | kill | at s | step seen | last.pt step | lost | left behind | tmp left | resumed | exact |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for i, t in enumerate(trials):
        rows.append(f"| {i} | {t.kind} | {t.killed_at_s:.1f} | {t.seen_step} | {t.ckpt_step} | {t.lost_steps} | "
                    f"{t.left_behind} | {t.tmp_left} | {'yes' if t.resumed else 'NO'} | "
                    f"{'yes' if t.exact else 'NO'} |" + (f" {t.note}" if t.note else ""))
    ok = [t for t in trials if t.resumed and t.exact and not t.left_behind]
    rows.append("")
    rows.append(f"{len(trials)} trials ({sum(t.kind == 'random' for t in trials)} random, "
                f"{sum(t.kind == 'in-write' for t in trials)} during a checkpoint write): "
                f"{sum(t.resumed for t in trials)} resumed, {sum(t.exact for t in trials)} bit-exact, "
                f"{sum(t.left_behind for t in trials)} processes left behind, "
                f"at most {max((t.lost_steps for t in trials), default=0)} steps lost "
                f"(checkpoint every {ckpt_every}); {len(trials) - len(ok)} failed")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="kills at random moments")
    ap.add_argument("--write-kills", type=int, default=4, help="kills while a checkpoint is being written")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--ckpt-every", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--pages", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, help="a folder with train.jsonl and val.jsonl (default: generated)")
    ap.add_argument("--out", type=Path, help="where the runs go (default: a temporary folder, removed)")
    ap.add_argument("--fuzz-scale", type=int, default=4)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if a.trials + a.write_kills < 1 or a.steps < 2 * a.ckpt_every:
        ap.error("need at least one trial and --steps >= 2 * --ckpt-every")
    out = a.out or Path(tempfile.mkdtemp(prefix="docrec-faults-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        data = a.data
        if data is None:
            from docrec.synth.generate import generate
            data = out / "data"
            generate(data, pages=a.pages, seed=a.seed, scale=0.35, progress=False)
        ref_path, first, last, total = reference(data, out, a)
        ref = weights(ref_path)
        print(f"reference: {total:.1f} s, steps 1-{a.steps} shown between {first:.1f} and {last:.1f} s", flush=True)
        rng = np.random.default_rng(a.seed)
        # Random moments while it trains; in-write kills from the 2nd checkpoint on (a last.pt to keep).
        plan = [("random", float(rng.uniform(first, last))) for _ in range(a.trials)]
        plan += [("in-write", 2 + k % max(1, a.steps // a.ckpt_every - 2)) for k in range(a.write_kills)]
        trials = []
        for i, (kind, when) in enumerate(plan):
            trials.append(kill_trial(kind, when, data, out, i, ref, a))
            t = trials[-1]
            print(f"trial {i} {kind}: killed at {t.killed_at_s:.1f} s, last.pt step {t.ckpt_step}, lost "
                  f"{t.lost_steps}, left behind {t.left_behind}, resumed {t.resumed}, exact {t.exact} {t.note}",
                  flush=True)
        report = table(trials, a.ckpt_every)
        print(report)
        failed = any(not (t.resumed and t.exact) or t.left_behind for t in trials)
        fuzz = None
        if a.fuzz_scale > 0:
            t0 = time.time()
            res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                  "tests/test_fuzz_readers.py"], cwd=REPO, capture_output=True, text=True,
                                 env={**os.environ, "DOCREC_FUZZ_SCALE": str(a.fuzz_scale)}, check=False)
            summary = (res.stdout.strip().splitlines() or ["(no output)"])[-1]
            fuzz = {"scale": a.fuzz_scale, "seconds": round(time.time() - t0, 1), "summary": summary,
                    "ok": res.returncode == 0}
            print(f"fuzzed readers at {a.fuzz_scale}x the examples of make test: {summary} "
                  f"({fuzz['seconds']:.0f} s)")
            failed |= res.returncode != 0
        if a.json:
            a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()},
                                          "reference_s": total, "trials": [asdict(t) for t in trials],
                                          "fuzz": fuzz}, indent=1))
        return int(failed)
    finally:
        if a.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
