"""What a run shows: the start-up and end screens, the progress bar and TensorBoard scalars of each
logged step, the CPU speed note, the data checks, the FLOPs behind the MFU scalar and the
hyperparameters beside the final metrics."""

from __future__ import annotations

import logging
import resource
import time
from typing import TYPE_CHECKING

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from docrec.data.cache import cache_usage
from docrec.data.dataset import collate, to_model_input
from docrec.engine import checkpoint as ckpt
from docrec.engine import tb
from docrec.engine.config import abs_path
from docrec.engine.runtime import all_reduce_mean, cpu_speed_note, hydra_choices

if TYPE_CHECKING:  # the trainer imports this module
    from docrec.engine.trainer import Run, StepStats

log = logging.getLogger("docrec")

SPEED_STEPS = 5  # steps timed (after the first) for the speed and ETA note on a CPU


def _peak_mem_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class Meter:
    """Throughput between two logged steps: pages, time busy in steps, time waiting for the loader."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t0, self.pages, self.steps, self.wait, self.busy = time.perf_counter(), 0, 0, 0.0, 0.0

    def add(self, stats: StepStats, seconds: float) -> None:
        self.steps += 1
        self.pages += stats.pages
        self.wait += stats.wait_s
        self.busy += seconds


class SpeedNote:
    """On a CPU with a GPU-sized config: after the first step (allocation, warm-up), time
    ``SPEED_STEPS`` steps of this process and print the measured speed, the ETA and what to use instead."""

    def __init__(self) -> None:
        self.steps, self.t0 = 0, 0.0

    def tick(self, run: Run, bar: tqdm) -> None:
        self.steps += 1
        if self.steps == 1:
            self.t0 = time.perf_counter()
        elif self.steps == 1 + SPEED_STEPS and run.rt.is_main:
            note = cpu_speed_note(run.rt, (time.perf_counter() - self.t0) / SPEED_STEPS,
                                  run.cfg.trainer.max_steps - run.progress.step, hydra_choices("experiment"))
            if note:
                bar.write(note)
                log.info(note)


def log_step(run: Run, stats: StepStats, meter: Meter, bar: tqdm) -> None:
    """Progress bar and TensorBoard scalars of the step just taken; resets the meter."""
    step, rt = run.progress.step, run.rt
    loss = all_reduce_mean(torch.tensor(stats.total, device=rt.device), rt).item()
    rate = meter.pages / max(time.perf_counter() - meter.t0, 1e-9)
    bar.set_postfix(loss=f"{loss:.3f}", pages_s=f"{rate:.1f}")
    if (w := run.writer) is not None:
        w.add_scalar("train/loss", loss, step)
        for k, v in stats.losses.items():
            w.add_scalar(f"train/loss_{k}", v, step)
        w.add_scalar("train/lr", run.scheduler.get_last_lr()[0], step)
        w.add_scalar("train/grad_norm", stats.grad_norm, step)
        w.add_scalar("train/pages_per_s", rate, step)
        w.add_scalar("train/data_wait_share", meter.wait / max(meter.busy, 1e-9), step)
        w.add_scalar("train/peak_mem_gib", _peak_mem_gib(rt.device), step)
        w.add_scalar("train/effective_depth", run.raw.backbone.effective_depth, step)
        w.add_scalar("train/skipped_steps", run.progress.skipped_steps, step)
        if run.step_flops and run.peak_flops:  # model FLOP utilisation of this GPU (CUDA only)
            w.add_scalar("train/mfu", run.step_flops * meter.steps / max(meter.busy, 1e-9) / run.peak_flops, step)
    meter.reset()


def announce(run: Run, resumed: bool) -> None:
    """Start-up screen and, for a new run, the schedule, config and data checks in TensorBoard."""
    if not run.rt.is_main:
        return
    schedule = run.raw.backbone.schedule()
    health = data_health(run.splits, run.charset)
    n_params = sum(p.numel() for p in run.raw.parameters())
    _print_start(run.rt, run.cfg, run.splits, n_params, schedule, run.charset, run.run_dir, resumed,
                 run.progress.step, health)
    if run.writer is not None and run.progress.step == 0:
        run.writer.add_text("model/stochastic_depth_schedule", tb.schedule_table(schedule))
        run.writer.add_text("config", "```yaml\n" + OmegaConf.to_yaml(run.cfg) + "\n```")
        for k, v in health.items():
            run.writer.add_scalar(f"data/{k}", v, 0)


def close_writer(run: Run, metrics: dict[str, float]) -> None:
    """The run's hyperparameters beside its final metrics (TensorBoard HPARAMS), then close."""
    if run.writer is None:
        return
    cfg = run.cfg
    final = {f"hparam/{k.replace('/', '_')}": v for k, v in metrics.items()
             if k.split("/")[-1] in ("cer", "wer", "det_f1", "e2e_f1", "bow_f1", "page_cer", "seg_miou")}
    hp = {"p_min": cfg.model.backbone.p_min, "lr": cfg.optim.lr, "batch_size": cfg.data.batch_size,
          "long_side": cfg.data.long_side, "read_scale": cfg.data.get("read_scale", 1.0),
          "backbone": cfg.model.backbone.name, "seed": cfg.seed,
          "ema_decay": cfg.trainer.ema.decay, "label_smoothing": cfg.model.label_smoothing,
          "steps": run.progress.step}
    tb.write_hparams(run.writer, hp, final or {"hparam/steps": float(run.progress.step)})
    run.writer.close()


#: The metrics a validation's log lines show (all of them go to TensorBoard).
HEADLINE = ("cer", "cer_ctc", "cer_attention", "wer", "det_f1", "e2e_f1", "bow_f1", "page_cer", "seg_miou")


def headline(metrics: dict[str, float]) -> str:
    """The headline metrics over all sources (``val/<weights>/<metric>``)."""
    keys = [k for k in metrics if k.count("/") == 2 and k.split("/")[-1] in HEADLINE]
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in keys)


def by_source(metrics: dict[str, float]) -> list[str]:
    """One line per weights and source of a mixed run (``val/<weights>/<source>/<metric>``), in the
    order validation wrote them: ``"ema funsd: cer=0.2231, det_f1=0.7712, ..."``."""
    rows: dict[str, list[str]] = {}
    for k, v in metrics.items():
        parts = k.split("/")
        if len(parts) == 4 and parts[0] == "val" and parts[3] in HEADLINE:
            rows.setdefault(f"{parts[1]} {parts[2]}", []).append(f"{parts[3]}={v:.4f}")
    return [f"{name}: {', '.join(values)}" for name, values in rows.items()]


def data_health(splits, charset) -> dict[str, int]:
    """Counts of what the data holds that training treats specially (reported, never silent)."""
    pages = splits.train + splits.val
    lines = [ln for p in pages for ln in p.lines]
    return {"skipped_pages": len(splits.skipped),
            "pages_without_lines": sum(1 for p in pages if not p.lines),
            "empty_text_lines": sum(1 for ln in lines if not ln.text),
            "val_chars_outside_charset": sum(charset.count_unknown(ln.text) for p in splits.val for ln in p.lines)}


def _print_start(rt, cfg, splits, n_params, schedule, charset, run_dir, resumed, step, health) -> None:
    keep = " ".join(f"{s['keep_prob']:.2f}{'*' if s['always_run'] else ''}" for s in schedule)
    epoch_pages = cfg.data.get("epoch_pages") or len(splits.train)
    ramp = cfg.data.get("weight_ramp")

    def share(name: str, s) -> str:
        w, total = getattr(s, name), sum(getattr(t, name) for t in splits.sources)
        return f"{w:g} ({w / total:.0%} of draws)"

    sources = ""
    for s in splits.sources:
        to = f" -> {share('weight_end', s)} over steps {ramp[0]}-{ramp[1]}" if ramp else ""
        sources += f"  source    {s.name}: {s.n_train} train / {s.n_val} val pages, weight {share('weight', s)}{to}\n"
    print(
        f"docrec | device {rt.device} ({rt.precision}, channels_last={rt.channels_last}, world={rt.world_size})\n"
        f"  data      {f'{len(splits.sources)} sources' if splits.sources else cfg.data.format}: "
        f"{f'epochs of {epoch_pages} draws, ' if splits.sources else ''}"
        f"{len(splits.train)} train / {len(splits.val)} val pages, "
        f"{len(splits.skipped)} skipped; charset {len(charset)} symbols\n"
        f"{sources}"
        f"{_cache_line(cfg.data.get('cache_dir'))}"
        f"  checks    {health['pages_without_lines']} pages without lines (background only), "
        f"{health['empty_text_lines']} lines without text (segmented, not read), "
        f"{health['val_chars_outside_charset']} validation characters outside the charset (read as UNK)\n"
        f"  model     {cfg.model.backbone.name}, {n_params / 1e6:.1f} M parameters, p_min={cfg.model.backbone.p_min}\n"
        f"  depth     keep probabilities (* = downsample block, always runs): {keep}\n"
        f"  run dir   {run_dir}{f'  (resumed at step {step})' if resumed else ''}",
        flush=True,
    )


def _cache_line(cache_dir) -> str:
    """The start-up line of the page cache (``data.cache_dir``), or nothing when it is off."""
    if not cache_dir:
        return ""
    root = abs_path(str(cache_dir))
    entries, size = cache_usage(root)
    return f"  cache     {root}: {entries} decoded pages stored ({size / 2**30:.2f} GiB)\n"


def print_end(reason, step, metrics, best, cfg, ckpt_dir, run_dir) -> None:
    print(
        f"docrec | {reason} at step {step}\n"
        f"  final     {headline(metrics) or 'no validation data'}\n"
        + "".join(f"  source    {row}\n" for row in by_source(metrics)) +
        f"  best      {cfg.trainer.monitor} = {best}\n"
        f"  checkpoints {ckpt_dir}\n"
        f"  watch     tensorboard --logdir {run_dir}",
        flush=True,
    )


def measure_step_flops(run: Run) -> float:
    """FLOPs of one micro-batch's forward and backward (the first pages of the training set),
    counted by ``FlopCounterMode``; the model's buffers, gradients and the RNG states are left as
    they were, so a run (or a resumed one) trains exactly as without the count."""
    from torch.utils.flop_counter import FlopCounterMode

    rng, buffers = ckpt.rng_state(), {k: v.clone() for k, v in run.raw.named_buffers()}
    ds = run.train_loader.dataset
    images, targets, _ = collate([ds[i] for i in range(min(run.cfg.data.batch_size, len(ds)))])
    images, targets = to_model_input(images, targets, run.rt.device, run.rt.channels_last)
    run.raw.set_step(run.progress.step)
    with FlopCounterMode(display=False) as counter, run.rt.autocast():
        sum(run.raw(images, targets).values()).backward()
    run.raw.zero_grad(set_to_none=True)
    with torch.no_grad():
        for k, v in run.raw.named_buffers():
            v.copy_(buffers[k])
    ckpt.set_rng_state(rng)
    return float(counter.get_total_flops())
