"""Training: :func:`build_run` sets a run up, :func:`optimizer_step` takes one step,
:func:`validate` measures and keeps the best checkpoints, and :func:`train` is the loop.

A :class:`Run` holds what one training run needs; :meth:`Run.checkpoint` is what a checkpoint
saves and :func:`restore` what ``resume`` reads back (the weights, EMA, optimizer, schedule,
scaler, top-k list, :class:`Progress` counters and RNG states). ``init_from`` reads weights only
(:func:`init_weights`), so a fine-tune starts at step 0 with a fresh optimizer.
"""

from __future__ import annotations

import itertools
import logging
import math
import resource
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from docrec.data.cache import cache_usage
from docrec.data.dataset import collate, normalize
from docrec.engine import checkpoint as ckpt
from docrec.engine import tb
from docrec.engine.config import abs_path, check_config
from docrec.engine.data import PageSplits, load_splits, make_loaders
from docrec.engine.init_from import apply_init, grow_charset
from docrec.engine.precise_bn import recalibrate_bn
from docrec.engine.runtime import (
    Runtime,
    all_reduce_mean,
    broadcast_str,
    cpu_speed_note,
    hydra_choices,
    peak_bf16_flops,
    seed_everything,
    setup,
)
from docrec.engine.sampler import EpochBatchSampler
from docrec.engine.validate import run_validation
from docrec.models import DocRecModel, build_model
from docrec.models.charset import Charset

log = logging.getLogger("docrec")


SPEED_STEPS = 5  # steps timed (after the first) for the speed and ETA note on a CPU
_EARLY = 1000  # stop code of early stopping when ranks agree on stopping (signals are below 100)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite steps, out of memory); the message says what to do."""


def _no_decay(module: torch.nn.Module, name: str, p: torch.nn.Parameter) -> bool:
    """Norms, biases, embeddings and learned positional tables: decaying them only shrinks lookups."""
    return p.ndim <= 1 or isinstance(module, torch.nn.Embedding) or name.endswith("_pos") or "pos_embed" in name


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms, biases, embeddings and positional parameters. With
    ``cfg.backbone_lr_scale`` other than 1, the backbone's parameters get groups of their own at
    ``lr * backbone_lr_scale`` (a fine-tune keeps its pretrained features and moves its heads).

    PyTorch's fused AdamW (a kernel per device over all tensors) where the parameters live on a CPU or a
    CUDA device, instead of its default loop over the ~280 tensors of the default model: on the CPU a step
    of the optimizer takes 17-22 ms instead of 72-86 (31 M parameters, one thread)."""
    scale = float(cfg.get("backbone_lr_scale", 1.0))
    backbone = getattr(model, "backbone", None)
    slow = {id(p) for p in backbone.parameters()} if scale != 1.0 and backbone is not None else set()
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {(d, b): [] for b in (False, True) for d in (True, False)}
    seen = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:  # a shared (tied) parameter goes in one group
                seen.add(id(p))
                groups[not _no_decay(module, name, p), id(p) in slow].append(p)
    params = [p for ps in groups.values() for p in ps]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    param_groups = [{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr": cfg.lr * (scale if b else 1.0)}
                    for (decay, b), ps in groups.items() if ps or not b]
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """``optimizer.load_state_dict(saved)``, keeping this optimizer's kernel choice (fused or not).

    A checkpoint's groups carry the flags of the machine that wrote it (before fused AdamW, none);
    the state is cast for the kernel named while loading (fused: each step count on its parameter's
    device), so the flags are set before, not after."""
    kernel = [{k: g.get(k) for k in ("fused", "foreach")} for g in optimizer.param_groups]
    optimizer.load_state_dict({**saved, "param_groups": [{**g, **k} for g, k in zip(saved["param_groups"], kernel)]})


def lr_lambda(warmup: int, total: int, floor: float):
    """Linear warmup to 1, then cosine to ``floor``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    return f


class _StopFlag:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint at the next step boundary and exits."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old = {s: signal.signal(s, self._set) for s in (signal.SIGTERM, signal.SIGINT)}

    def _set(self, signum, frame) -> None:
        self.signal = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _peak_mem_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


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

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["kinds"] = list(cfg.data.kinds)
    model_cfg["region_kinds"] = list(cfg.data.get("region_kinds") or [])
    model_cfg["backbone"]["seed"] = cfg.seed
    raw = build_model(model_cfg, charset)
    if init:
        init_weights(raw, init, cfg, model_cfg, charset, rt)
    raw = raw.to(rt.device)
    if rt.channels_last:
        raw = raw.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(raw, decay=cfg.trainer.ema.decay, use_warmup=cfg.trainer.ema.warmup) \
        if cfg.trainer.ema.enabled else None
    optimizer = build_optimizer(raw, cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.optim.warmup_steps, cfg.trainer.max_steps, cfg.optim.min_lr_ratio))
    run = Run(cfg, rt, run_dir, splits, charset, train_loader, val_loader, sampler, raw, raw, ema, optimizer,
              scheduler, torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16"),
              ckpt.TopK(run_dir / "checkpoints", cfg.trainer.save_top_k, cfg.trainer.monitor_mode))
    if resume:
        restore(run, resume)
    if rt.is_main:
        torn = ckpt.remove_partial(run.ckpt_dir)
        if torn:
            log.info("removed %d partial checkpoint file(s) a killed run left in %s", len(torn), run.ckpt_dir)
    run.peak_flops = peak_bf16_flops(rt.device)
    if run.peak_flops:  # counted in eager mode, before compilation hides the operators
        run.step_flops = measure_step_flops(run) * cfg.trainer.grad_accum
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


def measure_step_flops(run: Run) -> float:
    """FLOPs of one micro-batch's forward and backward (the first pages of the training set),
    counted by ``FlopCounterMode``; the model's buffers, gradients and the RNG states are left as
    they were, so a run (or a resumed one) trains exactly as without the count."""
    from torch.utils.flop_counter import FlopCounterMode

    rng, buffers = ckpt.rng_state(), {k: v.clone() for k, v in run.raw.named_buffers()}
    ds = run.train_loader.dataset
    images, targets, _ = collate([ds[i] for i in range(min(run.cfg.data.batch_size, len(ds)))])
    images, targets = _on_device(images, targets, run.rt)
    run.raw.set_step(run.progress.step)
    with FlopCounterMode(display=False) as counter, run.rt.autocast():
        sum(run.raw(images, targets).values()).backward()
    run.raw.zero_grad(set_to_none=True)
    with torch.no_grad():
        for k, v in run.raw.named_buffers():
            v.copy_(buffers[k])
    ckpt.set_rng_state(rng)
    return float(counter.get_total_flops())


def init_weights(model: DocRecModel, init: dict, cfg: DictConfig, model_cfg: dict, charset: Charset, rt) -> None:
    """``init_from``: the checkpoint's weights (grown to the run's charset and kinds); prints the load report."""
    report = apply_init(model, init, str(cfg.init_from), cfg.get("init_weights", "ema"), model_cfg,
                        OmegaConf.to_container(cfg.data, resolve=True), charset)
    if rt.is_main:
        print(f"docrec | init_from {cfg.init_from} ({cfg.get('init_weights', 'ema')} weights, step "
              f"{init['step']} of that run): {report.summary()}", flush=True)


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
                    recalibrate_bn(m, (_on_device(images, targets, rt) for images, targets, _ in bn_data))
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
        log.info("step %d validation: %s", pr.step, _fmt(metrics))
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
        images, targets = _on_device(batch[0], batch[1], rt)
        raw.set_step(pr.step)  # same drop decisions on every rank and micro-batch of this step
        sync = run.model.no_sync() if rt.distributed and micro < accum - 1 else nullcontext()
        try:
            with sync, rt.autocast():
                losses = run.model(images, targets)
                loss = sum(losses.values()) / accum
            run.scaler.scale(loss).backward()
        except torch.OutOfMemoryError:
            raise TrainingError(
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


def _agree_to_stop(run: Run, stop: _StopFlag) -> None:
    """DDP: ranks stop at the same step (a signal may reach them at different times; early
    stopping is decided on rank 0), or the others hang in the next all-reduce."""
    code = 0 if stop.signal is None else (_EARLY if stop.signal == -1 else stop.signal)
    flag = torch.tensor([code], device=run.rt.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if stop.signal is None and int(flag) != 0:
        stop.signal = -1 if int(flag) == _EARLY else int(flag)


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, float]:
    """Train per ``cfg``, writing checkpoints and TensorBoard events under ``run_dir``; returns final metrics."""
    run = build_run(cfg, run_dir)
    pr, tr = run.progress, cfg.trainer
    _announce(run, resumed=bool(cfg.resume))
    stop, meter, metrics = _StopFlag(), Meter(), {}
    bar = tqdm(total=tr.max_steps, initial=pr.step, disable=not run.rt.is_main, dynamic_ncols=True, desc="train")
    reason, validated_at, speed = "finished", -1, SpeedNote()
    run.model.train()
    try:
        while pr.step < tr.max_steps and stop.signal is None:
            if tr.max_epochs is not None and pr.epoch >= tr.max_epochs:
                break
            run.sampler.set_epoch(pr.epoch, skip=pr.batch_in_epoch)
            run.train_loader.dataset.set_epoch(pr.epoch)
            batches = iter(run.train_loader)
            while pr.step < tr.max_steps and stop.signal is None:
                t0 = time.perf_counter()
                if (stats := optimizer_step(run, batches)) is None:
                    break
                meter.add(stats, time.perf_counter() - t0)
                bar.update(1)
                speed.tick(run, bar)
                if pr.step % tr.log_every == 0 or pr.step == tr.max_steps:
                    log_step(run, stats, meter, bar)
                if pr.step % tr.val_every == 0 and pr.step < tr.max_steps:
                    metrics, validated_at = validate(run), pr.step
                    if tr.early_stop.enabled and pr.stale_vals >= tr.early_stop.patience:
                        reason = f"early stop: {tr.monitor} did not improve in {pr.stale_vals} validations"
                        stop.signal = -1
                if run.rt.distributed:
                    _agree_to_stop(run, stop)
                if pr.step % tr.ckpt_every == 0:
                    run.save_last()
            else:
                continue  # max_steps reached or a stop signal: the outer test ends the loop
            pr.epoch, pr.batch_in_epoch = pr.epoch + 1, 0  # the loader ran dry: the epoch is done
            run.save_last()
        if stop.signal is not None and stop.signal != -1:
            reason = f"stopped by {signal.Signals(stop.signal).name}"
            path = run.save_last()
            if run.rt.is_main:
                log.warning("%s at step %d: checkpoint saved to %s; continue with resume=%s", reason, pr.step,
                            path, run.run_dir)
        else:
            if validated_at != pr.step:
                metrics = validate(run)
            run.save_last()
    finally:
        bar.close()
        stop.restore()
        _close_writer(run, metrics)
    if run.rt.is_main:
        _print_end(reason, pr.step, metrics, pr.best, cfg, run.ckpt_dir, run.run_dir)
    return metrics


def _announce(run: Run, resumed: bool) -> None:
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


def _close_writer(run: Run, metrics: dict[str, float]) -> None:
    """The run's hyperparameters beside its final metrics (TensorBoard HPARAMS), then close."""
    if run.writer is None:
        return
    cfg = run.cfg
    final = {f"hparam/{k.replace('/', '_')}": v for k, v in metrics.items()
             if k.split("/")[-1] in ("cer", "wer", "det_f1", "e2e_f1", "bow_f1", "page_cer", "seg_miou")}
    hp = {"p_min": cfg.model.backbone.p_min, "lr": cfg.optim.lr, "batch_size": cfg.data.batch_size,
          "long_side": cfg.data.long_side, "backbone": cfg.model.backbone.name, "seed": cfg.seed,
          "ema_decay": cfg.trainer.ema.decay, "label_smoothing": cfg.model.label_smoothing,
          "steps": run.progress.step}
    tb.write_hparams(run.writer, hp, final or {"hparam/steps": float(run.progress.step)})
    run.writer.close()


def _fmt(metrics: dict[str, float]) -> str:
    """The headline metrics over all sources (``val/<weights>/<metric>``)."""
    keys = [k for k in metrics if k.count("/") == 2 and k.split("/")[-1] in (
        "cer", "cer_ctc", "cer_attention", "wer", "det_f1", "e2e_f1", "bow_f1", "page_cer", "seg_miou")]
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in keys)


def _on_device(images: torch.Tensor, targets: list[dict], rt) -> tuple[torch.Tensor, list[dict]]:
    """A loader batch as the model takes it: normalised images and targets on the training device."""
    images = normalize(images.to(rt.device, non_blocking=True))
    if rt.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, [{k: v.to(rt.device, non_blocking=True) for k, v in t.items()} for t in targets]


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
    weight_sum = sum(s.weight for s in splits.sources)
    epoch_pages = cfg.data.get("epoch_pages") or len(splits.train)
    sources = "".join(f"  source    {s.name}: {s.n_train} train / {s.n_val} val pages, weight {s.weight:g} "
                      f"({s.weight / weight_sum:.0%} of draws)\n" for s in splits.sources)
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


def _print_end(reason, step, metrics, best, cfg, ckpt_dir, run_dir) -> None:
    print(
        f"docrec | {reason} at step {step}\n"
        f"  final     {_fmt(metrics) or 'no validation data'}\n"
        f"  best      {cfg.trainer.monitor} = {best}\n"
        f"  checkpoints {ckpt_dir}\n"
        f"  watch     tensorboard --logdir {run_dir}",
        flush=True,
    )
