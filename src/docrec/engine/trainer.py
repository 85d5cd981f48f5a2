"""The training loop: one function, readable top to bottom (nanoGPT-style)."""

from __future__ import annotations

import itertools
import logging
import math
import resource
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from docrec.data.dataset import normalize
from docrec.engine import checkpoint as ckpt
from docrec.engine import tb
from docrec.engine.config import abs_path, check_config
from docrec.engine.data import load_splits, make_loaders
from docrec.engine.init_from import apply_init, grow_charset
from docrec.engine.precise_bn import recalibrate_bn
from docrec.engine.runtime import all_reduce_mean, broadcast_str, cpu_speed_note, seed_everything, setup
from docrec.engine.validate import run_validation
from docrec.models import build_model
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
    """AdamW; no weight decay on norms, biases, embeddings and positional parameters."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:  # a shared (tied) parameter goes in one group
                seen.add(id(p))
                (no_decay if _no_decay(module, name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


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


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, float]:
    """Train per ``cfg``, writing checkpoints and TensorBoard events under ``run_dir``; returns final metrics."""
    check_config(cfg)
    rt = setup(cfg.trainer.device, cfg.trainer.precision, cfg.trainer.channels_last)
    run_dir = Path(broadcast_str(str(Path(run_dir).absolute()), rt))
    ckpt_dir = run_dir / "checkpoints"
    seed_everything(cfg.seed + rt.rank, cfg.deterministic)

    resume = init = None
    if cfg.resume:
        resume = ckpt.load(abs_path(str(cfg.resume)))
    elif cfg.get("init_from"):  # resuming a fine-tune continues it; init_from only starts one
        init = ckpt.load(abs_path(str(cfg.init_from)), prefer="best")

    # ---- data (strict mode fails here, before anything is trained)
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

    # ---- model, EMA, optimizer
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["kinds"] = list(cfg.data.kinds)
    model_cfg["region_kinds"] = list(cfg.data.get("region_kinds") or [])
    model_cfg["backbone"]["seed"] = cfg.seed
    model = build_model(model_cfg, charset)
    if init:
        report = apply_init(model, init, str(cfg.init_from), cfg.get("init_weights", "ema"), model_cfg,
                            OmegaConf.to_container(cfg.data, resolve=True), charset)
        if rt.is_main:
            print(f"docrec | init_from {cfg.init_from} ({cfg.get('init_weights', 'ema')} weights, step "
                  f"{init['step']} of that run): {report.summary()}", flush=True)
    model = model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(model, decay=cfg.trainer.ema.decay, use_warmup=cfg.trainer.ema.warmup) \
        if cfg.trainer.ema.enabled else None
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.optim.warmup_steps, cfg.trainer.max_steps, cfg.optim.min_lr_ratio))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16")
    topk = ckpt.TopK(ckpt_dir, cfg.trainer.save_top_k, cfg.trainer.monitor_mode)
    step, epoch, batch_in_epoch, bad_steps, skipped_steps = 0, 0, 0, 0, 0
    best, stale_vals = None, 0
    if resume:
        model.load_state_dict(resume["model"])
        if ema is not None and resume.get("ema") is not None:
            ema.module.load_state_dict(resume["ema"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        topk.load_state_dict(resume["topk"])
        step, epoch, batch_in_epoch = resume["step"], resume["epoch"], resume["batch_in_epoch"]
        skipped_steps, best, stale_vals = resume["skipped_steps"], resume["best"], resume["stale_vals"]
        ckpt.set_rng_state(resume["rng"])
    if cfg.trainer.compile:
        model.compile_regions()
    raw = model
    if rt.distributed:
        # Dropped blocks leave parameters without gradients in some steps; a recognition branch
        # with loss weight 0 (e.g. the attention decoder in experiment=cpu) in every step.
        model = DDP(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                    find_unused_parameters=cfg.model.backbone.p_min < 1.0 or len(raw.rec_branches) < 2)

    writer = tb.open_writer(run_dir, cfg.logger.flush_secs) if rt.is_main and cfg.logger.enabled else None
    n_params = sum(p.numel() for p in raw.parameters())
    schedule = raw.backbone.schedule()
    if rt.is_main:
        health = data_health(splits, charset)
        _print_start(rt, cfg, splits, n_params, schedule, charset, run_dir, resume is not None, step, health)
        if writer is not None and step == 0:
            writer.add_text("model/stochastic_depth_schedule", tb.schedule_table(schedule))
            writer.add_text("config", "```yaml\n" + OmegaConf.to_yaml(cfg) + "\n```")
            for k, v in health.items():
                writer.add_scalar(f"data/{k}", v, 0)

    def state() -> dict:
        return {"model": raw.state_dict(), "ema": ema.module.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                "skipped_steps": skipped_steps, "best": best, "stale_vals": stale_vals, "topk": topk.state_dict(),
                "rng": ckpt.rng_state(), "charset": charset.to_dict(),
                "config": OmegaConf.to_container(cfg, resolve=True)}

    def save_last() -> Path | None:
        return ckpt.save_atomic(state(), ckpt_dir / "last.pt") if rt.is_main else None

    def validate() -> dict[str, float]:
        nonlocal best, stale_vals
        metrics: dict[str, float] = {}
        if rt.is_main and len(val_loader.dataset):
            n_bn = cfg.trainer.precise_bn_batches
            bn_data = list(itertools.islice(train_loader, n_bn)) if n_bn else []  # kept on the host until used
            raw_model = raw if cfg.trainer.val_raw or ema is None else None
            for name, m in (("raw", raw_model), ("ema", ema.module if ema is not None else None)):
                if m is None:
                    continue
                if bn_data:
                    with rt.autocast():
                        recalibrate_bn(m, (_on_device(images, targets, rt) for images, targets, _ in bn_data))
                res = run_validation(m, val_loader, rt, list(cfg.data.kinds), cfg.trainer.num_val_images,
                                     groups=splits.val_source_names())
                # Overall figures keep their tags (trainer.monitor, early stopping); each source's beside them.
                scalars = {f"val/{name}/{k}": v for k, v in res.metrics.items()}
                for source, source_metrics in res.groups.items():
                    scalars.update({f"val/{name}/{source}/{k}": v for k, v in source_metrics.items()})
                metrics.update(scalars)
                if writer is not None:
                    for k, v in scalars.items():
                        writer.add_scalar(k, v, step)
                    for i, (img, gt, pred) in enumerate(res.samples):
                        writer.add_image(f"val_{name}/page_{i}", tb.side_by_side(img, gt, pred), step,
                                         dataformats="HWC")
                    writer.add_text(f"val_{name}/lines", tb.lines_table(res.text_pairs), step)
            value = metrics.get(cfg.trainer.monitor)
            if value is not None and not math.isnan(value):
                delta = cfg.trainer.early_stop.min_delta
                improved = best is None or (value > best + delta if cfg.trainer.monitor_mode == "max"
                                            else value < best - delta)
                stale_vals = 0 if improved else stale_vals + 1
                snapshot = state()
                if best is None or topk.better(value, best):
                    best = value
                    snapshot["best"] = best
                    ckpt.save_atomic(snapshot, ckpt_dir / "best.pt")
                topk.add(value, step, snapshot)
            log.info("step %d validation: %s", step, _fmt(metrics))
        if rt.distributed:
            torch.distributed.barrier()
        return metrics

    # ---- the loop
    stop = _StopFlag()
    accum = cfg.trainer.grad_accum
    bar = tqdm(total=cfg.trainer.max_steps, initial=step, disable=not rt.is_main, dynamic_ncols=True,
               desc="train")
    metrics: dict[str, float] = {}
    reason = "finished"
    validated_at = -1
    steps_run, t_speed = 0, 0.0
    t_log, pages_since, wait_since, busy_since = time.perf_counter(), 0, 0.0, 0.0
    model.train()
    try:
        while step < cfg.trainer.max_steps:
            if cfg.trainer.max_epochs is not None and epoch >= cfg.trainer.max_epochs:
                break
            sampler.set_epoch(epoch, skip=batch_in_epoch * cfg.data.batch_size)
            train_loader.dataset.set_epoch(epoch)
            it = iter(train_loader)
            done_epoch = False
            while step < cfg.trainer.max_steps and stop.signal is None:
                t0 = time.perf_counter()
                losses_sum: dict[str, float] = {}
                n_micro = 0
                optimizer.zero_grad(set_to_none=True)
                for micro in range(accum):
                    tw = time.perf_counter()
                    try:
                        images, targets, _ = next(it)
                    except StopIteration:
                        done_epoch = True
                        break
                    wait_since += time.perf_counter() - tw
                    images, targets = _on_device(images, targets, rt)
                    raw.set_step(step)  # same drop decisions on every rank and micro-batch of this step
                    sync = model.no_sync() if rt.distributed and micro < accum - 1 else nullcontext()
                    try:
                        with sync:
                            with rt.autocast():
                                losses = model(images, targets)
                                loss = sum(losses.values()) / accum
                            scaler.scale(loss).backward()
                    except torch.OutOfMemoryError:
                        raise TrainingError(
                            f"out of GPU memory at step {step} with data.batch_size={cfg.data.batch_size} and "
                            f"data.long_side={cfg.data.long_side} (crop {cfg.data.crop}); lower them (or raise "
                            f"trainer.grad_accum). The last checkpoint is kept in {ckpt_dir}") from None
                    for k, v in losses.items():
                        losses_sum[k] = losses_sum.get(k, 0.0) + v.detach()
                    n_micro += 1
                    pages_since += images.shape[0] * rt.world_size
                if n_micro == 0:
                    break
                scaler.unscale_(optimizer)
                clip = cfg.optim.grad_clip
                grad_norm = torch.nn.utils.clip_grad_norm_(raw.parameters(), clip if clip else float("inf"))
                # One device-to-host transfer per step: the skip decision needs these values anyway.
                *loss_vals, grad_norm = torch.stack([*(v.float() for v in losses_sum.values()), grad_norm.float()]).tolist()
                losses_sum = dict(zip(losses_sum, loss_vals))
                total = sum(loss_vals) / n_micro
                finite = math.isfinite(total) and math.isfinite(grad_norm)
                if finite or scaler.is_enabled():
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    if ema is not None:
                        ema.update(raw, step=step)
                    bad_steps = 0
                else:
                    # Skipped: the weights stay as they were; N in a row stops the run.
                    skipped_steps += 1
                    bad_steps += 1
                    optimizer.zero_grad(set_to_none=True)
                    log.warning("step %d: non-finite loss or gradients (loss=%s), step skipped", step, total)
                    if bad_steps >= cfg.trainer.max_bad_steps:
                        last = ckpt_dir / "last.pt"
                        raise TrainingError(
                            f"{bad_steps} non-finite steps in a row (last at step {step}); stopping. Last good "
                            f"checkpoint: {last if last.exists() else 'none written yet'}")
                step += 1
                batch_in_epoch += n_micro
                busy_since += time.perf_counter() - t0
                bar.update(1)
                steps_run += 1  # in this process: the first step (allocation, warm-up) is not timed
                if steps_run == 1:
                    t_speed = time.perf_counter()
                elif steps_run == 1 + SPEED_STEPS and rt.is_main:
                    note = cpu_speed_note(rt, (time.perf_counter() - t_speed) / SPEED_STEPS,
                                          cfg.trainer.max_steps - step)
                    if note:
                        bar.write(note)
                        log.info(note)
                if step % cfg.trainer.log_every == 0 or step == cfg.trainer.max_steps:
                    dt = time.perf_counter() - t_log
                    loss_t = all_reduce_mean(torch.tensor(total, device=rt.device), rt).item()
                    rate = pages_since / max(dt, 1e-9)
                    bar.set_postfix(loss=f"{loss_t:.3f}", pages_s=f"{rate:.1f}")
                    if writer is not None:
                        writer.add_scalar("train/loss", loss_t, step)
                        for k, v in losses_sum.items():
                            writer.add_scalar(f"train/loss_{k}", v / n_micro, step)
                        writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                        writer.add_scalar("train/grad_norm", grad_norm, step)
                        writer.add_scalar("train/pages_per_s", rate, step)
                        writer.add_scalar("train/data_wait_share", wait_since / max(busy_since, 1e-9), step)
                        writer.add_scalar("train/peak_mem_gib", _peak_mem_gib(rt.device), step)
                        writer.add_scalar("train/effective_depth", raw.backbone.effective_depth, step)
                        writer.add_scalar("train/skipped_steps", skipped_steps, step)
                    t_log, pages_since, wait_since, busy_since = time.perf_counter(), 0, 0.0, 0.0
                if step % cfg.trainer.val_every == 0 and step < cfg.trainer.max_steps:
                    metrics, validated_at = validate(), step
                    if cfg.trainer.early_stop.enabled and stale_vals >= cfg.trainer.early_stop.patience:
                        reason = f"early stop: {cfg.trainer.monitor} did not improve in {stale_vals} validations"
                        stop.signal = -1
                if rt.distributed:
                    # Ranks must stop at the same step (a signal may reach them at different times;
                    # early stopping is decided on rank 0), or the others hang in the next all-reduce.
                    code = 0 if stop.signal is None else (_EARLY if stop.signal == -1 else stop.signal)
                    flag = torch.tensor([code], device=rt.device)
                    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                    if stop.signal is None and int(flag) != 0:
                        stop.signal = -1 if int(flag) == _EARLY else int(flag)
                if step % cfg.trainer.ckpt_every == 0:
                    save_last()
            if stop.signal is not None:
                break
            if done_epoch:
                epoch, batch_in_epoch = epoch + 1, 0
                save_last()
        if stop.signal is not None and stop.signal != -1:
            reason = f"stopped by {signal.Signals(stop.signal).name}"
            path = save_last()
            if rt.is_main:
                log.warning("%s at step %d: checkpoint saved to %s; continue with resume=%s", reason, step, path,
                            run_dir)
        else:
            if validated_at != step:
                metrics = validate()
            save_last()
    finally:
        bar.close()
        stop.restore()
        if writer is not None:
            final = {f"hparam/{k.replace('/', '_')}": v for k, v in metrics.items()
                     if k.split("/")[-1] in ("cer", "wer", "det_f1", "e2e_f1", "seg_miou")}
            hp = {"p_min": cfg.model.backbone.p_min, "lr": cfg.optim.lr, "batch_size": cfg.data.batch_size,
                  "long_side": cfg.data.long_side, "backbone": cfg.model.backbone.name, "seed": cfg.seed,
                  "ema_decay": cfg.trainer.ema.decay, "label_smoothing": cfg.model.label_smoothing, "steps": step}
            tb.write_hparams(writer, hp, final or {"hparam/steps": float(step)})
            writer.close()
    if rt.is_main:
        _print_end(reason, step, metrics, best, cfg, ckpt_dir, run_dir)
    return metrics


def _fmt(metrics: dict[str, float]) -> str:
    """The headline metrics over all sources (``val/<weights>/<metric>``)."""
    keys = [k for k in metrics if k.count("/") == 2 and k.split("/")[-1] in (
        "cer", "cer_ctc", "cer_attention", "wer", "det_f1", "e2e_f1", "seg_miou")]
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
        f"  checks    {health['pages_without_lines']} pages without lines (background only), "
        f"{health['empty_text_lines']} lines without text (segmented, not read), "
        f"{health['val_chars_outside_charset']} validation characters outside the charset (read as UNK)\n"
        f"  model     {cfg.model.backbone.name}, {n_params / 1e6:.1f} M parameters, p_min={cfg.model.backbone.p_min}\n"
        f"  depth     keep probabilities (* = downsample block, always runs): {keep}\n"
        f"  run dir   {run_dir}{f'  (resumed at step {step})' if resumed else ''}",
        flush=True,
    )


def _print_end(reason, step, metrics, best, cfg, ckpt_dir, run_dir) -> None:
    print(
        f"docrec | {reason} at step {step}\n"
        f"  final     {_fmt(metrics) or 'no validation data'}\n"
        f"  best      {cfg.trainer.monitor} = {best}\n"
        f"  checkpoints {ckpt_dir}\n"
        f"  watch     tensorboard --logdir {run_dir}",
        flush=True,
    )
