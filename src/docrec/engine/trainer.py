"""Training: :func:`build_run` sets a run up, :func:`optimizer_step` takes one step,
:func:`validate` measures and keeps the best checkpoints, and :func:`train` is the loop.

A :class:`Run` holds what one training run needs; :meth:`Run.checkpoint` is what a checkpoint
saves and :func:`restore` what ``resume`` reads back (the weights, EMA, optimizer, schedule,
scaler, top-k list, :class:`Progress` counters and RNG states). ``init_from`` reads weights only
(:func:`docrec.engine.init_from.init_weights`), so a fine-tune starts at step 0 with a fresh optimizer.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from docrec.data.dataset import to_model_input
from docrec.data.loading import PageSplits, load_splits, make_loaders
from docrec.data.sampler import EpochBatchSampler
from docrec.engine import checkpoint as ckpt
from docrec.engine import report, tb
from docrec.engine.config import abs_path, check_config
from docrec.engine.init_from import grow_charset, init_weights
from docrec.engine.optim import build_optimizer, load_optimizer_state, lr_lambda
from docrec.engine.precise_bn import recalibrate_bn
from docrec.engine.reader_stage import (
    BANK_EPOCHS,
    FeatureBank,
    fill_from_epochs,
    freeze_all_but_reader,
    reader_batches,
)
from docrec.engine.runtime import (
    Runtime,
    StopFlag,
    StopReason,
    agree_to_stop,
    broadcast_str,
    peak_bf16_flops,
    seed_everything,
    setup,
)
from docrec.engine.validate import run_validation
from docrec.models import DocRecModel, build_model
from docrec.text import Charset

log = logging.getLogger("docrec")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite steps, out of memory); the message says what to do."""


class TrainingOutOfMemory(TrainingError, torch.OutOfMemoryError):
    """Out of GPU memory in a step, with what to lower: still a ``torch.OutOfMemoryError`` to whoever
    catches those (``scripts/bench_train_step.py``'s memory search)."""


@dataclass
class Progress:
    """Where a run stands: the counters a checkpoint restores beside the weights and optimizer state."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch already trained (the sampler skips them on resume)
    skipped_steps: int = 0  # non-finite steps skipped so far
    best: float | None = None  # best value of trainer.monitor
    stale_vals: int = 0  # validations without improvement (early stopping)
    bad_steps: int = 0  # non-finite steps in a row (not saved: a resumed run starts from a good step)

    SAVED = ("step", "epoch", "batch_in_epoch", "skipped_steps", "best", "stale_vals")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.SAVED}

    @classmethod
    def from_dict(cls, state: dict) -> Progress:
        return cls(**{k: state[k] for k in cls.SAVED})


@dataclass
class Run:
    """Everything one training run holds; :meth:`checkpoint` is what ``last.pt`` / ``best.pt`` save."""

    cfg: DictConfig
    rt: Runtime
    run_dir: Path
    splits: PageSplits
    charset: Charset
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    sampler: EpochBatchSampler  # the training loader's batches; set_epoch(epoch, skip=batches) resumes
    raw: DocRecModel  # the model itself (``model`` is its DDP wrapper when distributed)
    model: torch.nn.Module
    ema: ModelEmaV3 | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    topk: ckpt.TopK
    writer: object | None = None  # TensorBoard SummaryWriter on the main rank
    progress: Progress = field(default_factory=Progress)
    bank: FeatureBank | None = None  # trainer.stage=reader: the fused maps the recognition head reads
    step_flops: float | None = None  # FLOPs of one training step on this GPU (CUDA only; for MFU)
    peak_flops: float | None = None  # the card's dense bf16 peak FLOP/s

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def checkpoint(self) -> dict:
        return {"model": self.raw.state_dict(), "ema": self.ema.module.state_dict() if self.ema is not None else None,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), **self.progress.to_dict(), "topk": self.topk.state_dict(),
                "rng": ckpt.rng_state(), "charset": self.charset.to_dict(),
                "config": OmegaConf.to_container(self.cfg, resolve=True)}

    def save_last(self) -> Path | None:
        return ckpt.save_atomic(self.checkpoint(), self.ckpt_dir / "last.pt") if self.rt.is_main else None


@dataclass
class StepStats:
    """One optimizer step: mean losses over its micro-batches, total, gradient norm, pages and loader wait."""

    losses: dict[str, float]
    total: float
    grad_norm: float
    pages: int
    wait_s: float


def build_run(cfg: DictConfig, run_dir: str | Path) -> Run:
    """Data, charset, model (``init_from`` weights or a ``resume``d state), EMA, optimizer, writer."""
    check_config(cfg)
    rt = setup(cfg.trainer.device, cfg.trainer.precision, cfg.trainer.channels_last)
    run_dir = Path(broadcast_str(str(Path(run_dir).absolute()), rt))
    seed_everything(cfg.seed + rt.rank, cfg.deterministic)
    resume = ckpt.load(abs_path(str(cfg.resume))) if cfg.resume else None
    # Resuming a fine-tune continues it; init_from only starts one.
    init = ckpt.load(abs_path(str(cfg.init_from)), prefer="best") if not resume and cfg.get("init_from") else None

    # Data first: strict mode fails here, before anything is built.
    splits = load_splits(cfg.data)
    texts = (ln.text for p in splits.train for ln in p.lines)
    if resume:
        charset = Charset.from_dict(resume["charset"])
    elif init:  # the checkpoint's symbols keep their ids; the data's new ones are appended
        charset, _ = grow_charset(Charset.from_dict(init["charset"]), texts)
    else:
        charset = Charset.build(texts)
    train_loader, val_loader, sampler = make_loaders(splits, charset, cfg.data, cfg.augment, cfg.seed,
                                                     rt.rank, rt.world_size)
    if cfg.trainer.max_steps is None:  # sized by the data (epoch 0's batches); the checkpoint's config records it
        n_batches = len(sampler.batches())
        cfg.trainer.max_steps = schedule_steps(cfg.trainer.max_epochs, n_batches, cfg.trainer.grad_accum)
        log.info("trainer.max_steps=null: %d epochs (trainer.max_epochs) of %d batches -> %d steps",
                 cfg.trainer.max_epochs, n_batches, cfg.trainer.max_steps)

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)  # kinds and seed interpolate data's and seed
    raw = build_model(model_cfg, charset)
    if init:
        init_weights(raw, init, cfg, model_cfg, charset, rt)
    raw = raw.to(rt.device)
    if rt.channels_last:
        raw = raw.to(memory_format=torch.channels_last)
    reader = cfg.trainer.stage == "reader"
    if reader:
        n_train = freeze_all_but_reader(raw)
        log.info("trainer.stage=reader: backbone, neck and segmentation head frozen; %d parameters of the "
                 "recognition head train", n_train)
    ema = ModelEmaV3(raw, decay=cfg.trainer.ema.decay, use_warmup=cfg.trainer.ema.warmup) \
        if cfg.trainer.ema.enabled else None
    optimizer = build_optimizer(raw, cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.optim.warmup_steps, cfg.trainer.max_steps, cfg.optim.min_lr_ratio))
    run = Run(cfg=cfg, rt=rt, run_dir=run_dir, splits=splits, charset=charset, train_loader=train_loader,
              val_loader=val_loader, sampler=sampler, raw=raw, model=raw, ema=ema, optimizer=optimizer,
              scheduler=scheduler, scaler=torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16"),
              topk=ckpt.TopK(run_dir / "checkpoints", cfg.trainer.save_top_k, cfg.trainer.monitor_mode))
    if resume:
        restore(run, resume)
    if rt.is_main:
        torn = ckpt.remove_partial(run.ckpt_dir)
        if torn:
            log.info("removed %d partial checkpoint file(s) a killed run left in %s", len(torn), run.ckpt_dir)
    if reader:
        run.bank = FeatureBank(raw, rt, cfg.trainer.reader.bank_batches * cfg.data.batch_size)
    run.peak_flops = None if reader else peak_bf16_flops(rt.device)  # a page step's FLOPs: not this stage's
    if run.peak_flops:  # counted in eager mode, before compilation hides the operators
        run.step_flops = report.measure_step_flops(run) * cfg.trainer.grad_accum
    if cfg.trainer.compile:
        raw.compile_regions()
    if rt.distributed:
        # Dropped blocks leave parameters without gradients in some steps; a recognition branch
        # with loss weight 0 (e.g. the attention decoder in experiment=cpu) in every step.
        run.model = DDP(raw, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                        find_unused_parameters=cfg.model.backbone.p_min < 1.0 or len(raw.rec_branches) < 2)
    if rt.is_main and cfg.logger.enabled:
        run.writer = tb.open_writer(run_dir, cfg.logger.flush_secs)
    return run


def schedule_steps(epochs: int, batches_per_epoch: int, grad_accum: int) -> int:
    """Optimizer steps in ``epochs`` epochs of ``batches_per_epoch`` micro-batches: an epoch's last,
    short accumulation is a step of its own (:func:`optimizer_step`)."""
    return epochs * math.ceil(batches_per_epoch / grad_accum)


def restore(run: Run, state: dict) -> None:
    """``resume``: weights, EMA, optimizer, schedule, scaler, top-k, counters and RNG exactly as saved."""
    run.raw.load_state_dict(state["model"])
    if run.ema is not None and state.get("ema") is not None:
        run.ema.module.load_state_dict(state["ema"])
    load_optimizer_state(run.optimizer, state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.topk.load_state_dict(state["topk"])
    run.progress = Progress.from_dict(state)
    ckpt.set_rng_state(state["rng"])


def validate(run: Run) -> dict[str, float]:
    """Validate the raw and/or EMA weights (main rank), log them, keep best/top-k checkpoints."""
    cfg, rt, pr = run.cfg, run.rt, run.progress
    metrics: dict[str, float] = {}
    if rt.is_main and len(run.val_loader.dataset):
        n_bn = cfg.trainer.precise_bn_batches
        bn_data = list(itertools.islice(run.train_loader, n_bn)) if n_bn else []  # kept on the host until used
        models = {"raw": run.raw if cfg.trainer.val_raw or run.ema is None else None,
                  "ema": run.ema.module if run.ema is not None else None}
        for name, m in models.items():
            if m is None:
                continue
            if bn_data:
                with rt.autocast():
                    recalibrate_bn(m, (to_model_input(images, targets, rt.device, rt.channels_last) for images, targets, _ in bn_data))
            res = run_validation(m, run.val_loader, rt, list(cfg.data.kinds), cfg.trainer.num_val_images,
                                 groups=run.splits.val_source_names())
            # Overall figures keep their tags (trainer.monitor, early stopping); each source's beside them.
            scalars = {f"val/{name}/{k}": v for k, v in res.metrics.items()}
            for source, source_metrics in res.groups.items():
                scalars.update({f"val/{name}/{source}/{k}": v for k, v in source_metrics.items()})
            metrics.update(scalars)
            if run.writer is not None:
                for k, v in scalars.items():
                    run.writer.add_scalar(k, v, pr.step)
                for i, (img, gt, pred) in enumerate(res.samples):
                    run.writer.add_image(f"val_{name}/page_{i}", tb.side_by_side(img, gt, pred), pr.step,
                                         dataformats="HWC")
                run.writer.add_text(f"val_{name}/lines", tb.lines_table(res.text_pairs), pr.step)
        value = metrics.get(cfg.trainer.monitor)
        if value is not None and not math.isnan(value):
            delta = cfg.trainer.early_stop.min_delta
            improved = pr.best is None or (value > pr.best + delta if cfg.trainer.monitor_mode == "max"
                                           else value < pr.best - delta)
            pr.stale_vals = 0 if improved else pr.stale_vals + 1
            snapshot = run.checkpoint()
            if pr.best is None or run.topk.better(value, pr.best):
                pr.best = snapshot["best"] = value
                ckpt.save_atomic(snapshot, run.ckpt_dir / "best.pt")
            run.topk.add(value, pr.step, snapshot)
        log.info("step %d validation: %s", pr.step, report.headline(metrics))
        for row in report.by_source(metrics):  # a mixed run: each source's figures (a fine-tune's real pages)
            log.info("step %d validation, %s", pr.step, row)
    if rt.distributed:
        torch.distributed.barrier()
    return metrics


def optimizer_step(run: Run, batches) -> StepStats | None:
    """Forward/backward over ``trainer.grad_accum`` micro-batches of ``batches``, then one optimizer step.

    None when the epoch ended before a micro-batch. A non-finite step is skipped (the weights
    stay); ``trainer.max_bad_steps`` of them in a row stop the run.
    """
    cfg, rt, pr, raw = run.cfg, run.rt, run.progress, run.raw
    accum = cfg.trainer.grad_accum
    losses_sum: dict[str, torch.Tensor] = {}
    n_micro = pages = 0
    wait = 0.0
    run.optimizer.zero_grad(set_to_none=True)
    for micro in range(accum):
        tw = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            break
        wait += time.perf_counter() - tw
        images, targets = to_model_input(batch[0], batch[1], rt.device, rt.channels_last)
        fused = batch[3] if len(batch) > 3 else None  # the reader stage's maps (reader_stage.reader_batches)
        raw.set_step(pr.step)  # same drop decisions on every rank and micro-batch of this step
        sync = run.model.no_sync() if rt.distributed and micro < accum - 1 else nullcontext()
        try:
            with sync, rt.autocast():
                # fused= only in the reader stage: other models (the backbone-only benchmark) take (images, targets)
                losses = run.model(images, targets) if fused is None else run.model(images, targets, fused=fused)
                loss = sum(losses.values()) / accum
            run.scaler.scale(loss).backward()
        except torch.OutOfMemoryError:
            raise TrainingOutOfMemory(
                f"out of GPU memory at step {pr.step} with data.batch_size={cfg.data.batch_size} and "
                f"data.long_side={cfg.data.long_side} (crop {cfg.data.crop}); lower them (or raise "
                f"trainer.grad_accum). The last checkpoint is kept in {run.ckpt_dir}") from None
        for k, v in losses.items():
            losses_sum[k] = losses_sum.get(k, 0.0) + v.detach()
        n_micro += 1
        pages += images.shape[0] * rt.world_size
    if n_micro == 0:
        return None
    run.scaler.unscale_(run.optimizer)
    clip = cfg.optim.grad_clip
    grad_norm = torch.nn.utils.clip_grad_norm_(raw.parameters(), clip if clip else float("inf"))
    # One device-to-host transfer per step: the skip decision needs these values anyway.
    *loss_vals, grad_norm = torch.stack([*(v.float() for v in losses_sum.values()), grad_norm.float()]).tolist()
    total = sum(loss_vals) / n_micro
    if (math.isfinite(total) and math.isfinite(grad_norm)) or run.scaler.is_enabled():
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update(raw, step=pr.step)
        pr.bad_steps = 0
    else:
        pr.skipped_steps += 1
        pr.bad_steps += 1
        run.optimizer.zero_grad(set_to_none=True)
        log.warning("step %d: non-finite loss or gradients (loss=%s), step skipped", pr.step, total)
        if pr.bad_steps >= cfg.trainer.max_bad_steps:
            last = run.ckpt_dir / "last.pt"
            raise TrainingError(
                f"{pr.bad_steps} non-finite steps in a row (last at step {pr.step}); stopping. Last good "
                f"checkpoint: {last if last.exists() else 'none written yet'}")
    pr.step += 1
    pr.batch_in_epoch += n_micro
    return StepStats({k: v / n_micro for k, v in zip(losses_sum, loss_vals)}, total, grad_norm, pages, wait)


@dataclass
class Loop:
    """The state of :func:`train`'s loop that its epochs share."""

    stop: StopFlag
    bar: tqdm
    meter: report.Meter = field(default_factory=report.Meter)
    speed: report.SpeedNote = field(default_factory=report.SpeedNote)
    metrics: dict[str, float] = field(default_factory=dict)  # of the latest validation
    validated_at: int = -1  # its step


def train_one_epoch(run: Run, loop: Loop) -> bool:
    """Steps over the rest of this epoch: logging, validation (and early stopping), checkpoints.
    True when the loader ran dry (the epoch is done); False when the run reached
    ``trainer.max_steps`` or was told to stop."""
    pr, tr = run.progress, run.cfg.trainer
    # The reader stage trains refresh_every micro-batches per loader batch it takes (each refreshes its bank).
    per_batch = tr.reader.refresh_every if run.bank is not None else 1
    run.sampler.set_epoch(pr.epoch, skip=pr.batch_in_epoch // per_batch)
    run.train_loader.dataset.set_epoch(pr.epoch)
    batches = iter(run.train_loader)
    if run.bank is not None:
        batches = reader_batches(run.bank, batches, tr.reader.crops_per_step, per_batch, skip=pr.batch_in_epoch)
    while pr.step < tr.max_steps and loop.stop.reason is StopReason.NONE:
        t0 = time.perf_counter()
        if (stats := optimizer_step(run, batches)) is None:
            return True
        loop.meter.add(stats, time.perf_counter() - t0)
        loop.bar.update(1)
        loop.speed.tick(run, loop.bar)
        if pr.step % tr.log_every == 0 or pr.step == tr.max_steps:
            report.log_step(run, stats, loop.meter, loop.bar)
        if pr.step % tr.val_every == 0 and pr.step < tr.max_steps:
            loop.metrics, loop.validated_at = validate(run), pr.step
            if tr.early_stop.enabled and pr.stale_vals >= tr.early_stop.patience:
                loop.stop.reason = StopReason.EARLY_STOP
        if run.rt.distributed:
            agree_to_stop(loop.stop, run.rt)
        if pr.step % tr.ckpt_every == 0:
            run.save_last()
    return False


def fill_bank(run: Run, loop: Loop) -> None:
    """The reader stage's bank, filled before the first step; a SIGTERM stops the filling (then the run saves
    and exits), and under DDP the ranks agree on stopping before any step."""
    t0 = time.perf_counter()
    fill_from_epochs(run.bank, run.train_loader, run.sampler, BANK_EPOCHS,
                     stop=lambda: loop.stop.reason is not StopReason.NONE)
    if run.rt.distributed:
        agree_to_stop(loop.stop, run.rt)
    if run.rt.is_main:
        log.info("reader bank: %d crops (%d lines), their maps computed in %.0f s", len(run.bank), run.bank.lines,
                 time.perf_counter() - t0)


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, float]:
    """Train per ``cfg``, writing checkpoints and TensorBoard events under ``run_dir``; returns final metrics.

    Ends at ``trainer.max_steps`` (or ``trainer.max_epochs``), on early stopping, or on SIGTERM/SIGINT
    (a checkpoint, and the command that resumes)."""
    run = build_run(cfg, run_dir)
    pr, tr = run.progress, cfg.trainer
    report.announce(run, resumed=bool(cfg.resume))
    loop = Loop(StopFlag(), tqdm(total=tr.max_steps, initial=pr.step, disable=not run.rt.is_main,
                                 dynamic_ncols=True, desc="train"))
    run.model.train()
    try:
        if run.bank is not None:
            fill_bank(run, loop)
        while pr.step < tr.max_steps and loop.stop.reason is StopReason.NONE:
            if tr.max_epochs is not None and pr.epoch >= tr.max_epochs:
                break
            if train_one_epoch(run, loop):
                pr.epoch, pr.batch_in_epoch = pr.epoch + 1, 0
                run.save_last()
        reason = loop.stop.reason
        if reason in (StopReason.SIGINT, StopReason.SIGTERM):
            path = run.save_last()
            if run.rt.is_main:
                log.warning("stopped by %s at step %d: checkpoint saved to %s; continue with resume=%s",
                            reason.name, pr.step, path, run.run_dir)
        else:
            if loop.validated_at != pr.step:
                loop.metrics = validate(run)
            run.save_last()
    finally:
        loop.bar.close()
        loop.stop.restore()
        report.close_writer(run, loop.metrics)
    if run.rt.is_main:
        said = {StopReason.NONE: "finished", StopReason.EARLY_STOP:
                f"early stop: {tr.monitor} did not improve in {pr.stale_vals} validations"}
        report.print_end(said.get(reason, f"stopped by {reason.name}"), pr.step, loop.metrics, pr.best, cfg,
                         run.ckpt_dir, run.run_dir)
    return loop.metrics
