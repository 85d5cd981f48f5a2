"""Training-step throughput of the composite model with different backbones / stochastic-depth variants.

    python scripts/bench_train_step.py [--device cpu|cuda] [--res 1024] [--batch 16] [--steps 20]
        [--warmup 3] [--json PATH] [--variants baseline droppath_p0.8 docrec_p1.0 ...]
    python scripts/bench_train_step.py --device cuda --memory [--json PATH]     # largest batch that fits
    python scripts/bench_train_step.py --flops [--res N --batch N]    # forward FLOPs per part, p_min bound

A step is the trainer's own ``docrec.engine.trainer.optimizer_step``: normalise the uint8 images
on the device, forward in train mode with all losses (segmentation, line cores, recognition on
the lines' quads), backward, gradient clipping, AdamW step and its one loss read-back (EMA and
logging left out: :func:`bench_run` gives it a run without them). On
CUDA: bf16 autocast and channels_last, as the trainer's ``auto`` settings; on CPU: fp32.

Variants (every one has the same FPN and heads, built from ``configs/model/default.yaml``):

- ``baseline``: torchvision's ResNet-50 run as torchvision runs it (``IntermediateLayerGetter``
  returning layer1..layer4 = C2..C5), no stochastic depth: the reference for the ratios.
- ``droppath_p0.8``: timm's ``resnet50(drop_path_rate=0.2, features_only=True)``: per-sample
  DropPath with the same linear schedule (keep 1.0 -> 0.8); every block is computed, then masked.
- ``docrec_pX``: docrec's backbone (``build_backbone``) with p_min = X: dropped blocks are skipped.
- ``docrec_p0.8_compiled``: docrec_p0.8 after ``DocRecModel.compile_regions()`` (per block/head).

Variants run interleaved (one step of each in turn, the order rotated every round), so drifts
in machine load hit all of them alike; the docrec variants see the same drop pattern at the
same step (seeded by step), and every variant the same line subset (``torch.manual_seed(step)``).
Step time is the median over ``--steps`` rounds after ``--warmup`` steps per variant: CUDA
events on the GPU (the device is synchronised after each step), ``perf_counter`` on the CPU.

``peak_mem_gib``: peak memory of one step as a process training only this variant would see
it: the variant's weights, gradients and AdamW state, plus the rise above the memory held
before the step. On CUDA from ``torch.cuda.max_memory_allocated`` (allocator-level, without
the CUDA context); on CPU from the process's RSS high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs`` before each step, after ``malloc_trim``): approximate, since the
allocator keeps some freed memory; null where the high-water mark cannot be reset.

Synthetic batch: a res x res page per sample with ``--lines-per-512`` (default 25) text lines
per 512 pixels of page height, each a slightly rotated box of random width with a random
string of about one character per half line height (at most 158 characters); targets from
``docrec.data.targets.build_targets``. ``--line-mix form`` (the default): a form page, 80 %
short fields (5-20 % of the page width) and 20 % long lines (60-90 %); ``uniform``: every
width 20-80 % of the page.

Model settings beside the variants: ``--neck light|fpn`` (``model.neck``; default the config's)
and ``--bucket-ratio R`` (``model.recognition.width_groups``; 0 reads every line padded to the
batch's widest, as before packed reading). The model trains on
at most ``max_lines_per_batch`` (128) lines per batch, as configured.

``--memory`` (CUDA only): for each ``--memory-res`` (1024 1536) the largest batch whose step
fits (doubling, then bisection; ``torch.OutOfMemoryError`` caught, cache emptied between
tries), worst case: every block runs and 128 lines are read. Then the peak memory of the
default training config (configs/data/synthetic.yaml long_side x batch_size, square pages).

Beside each docrec variant the table gives its speed-up over ``docrec_p1.0`` (``x p1.0``), the
FLOPs bound of that speed-up (``--flops``' expected saving of its p_min: the whole step, or the
backbone with ``--backbone-only``) and the share of the bound realised ((x - 1) / (bound - 1));
on CUDA also the model FLOP utilisation (MFU: 3 x the forward FLOPs per step, less the expected
skipped blocks, over the median step time, as a share of the card's dense bf16 peak,
``docrec.engine.runtime.PEAK_BF16``).

``--flops``: forward GFLOPs of the backbone (per block), neck and heads on the benchmark batch,
and the speed-up that skipping blocks can give at each p_min if time followed FLOPs: what the
measured ratios should be compared with.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from docrec.data.dataset import normalize
from docrec.data.targets import build_targets
from docrec.engine.config import compose_train_config
from docrec.engine.optim import build_optimizer
from docrec.engine.runtime import Runtime, peak_bf16_flops, setup
from docrec.engine.trainer import Progress, optimizer_step
from docrec.models import Charset, DocRecModel, build_model

REPO = Path(__file__).resolve().parents[1]
KINDS = ["printed", "handwritten", "form_field"]
VARIANTS = ("baseline", "droppath_p0.8", "docrec_p1.0", "docrec_p0.8", "docrec_p0.5", "docrec_p0.8_compiled")
GIB = 2**30


# --------------------------------------------------------------------------------------- models


class FeatureTrunk(nn.Module):
    """A foreign ResNet trunk as DocRecModel expects a backbone: a dict C2..C5, and ``set_step``."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out = self.body(x)
        feats = out.values() if isinstance(out, dict) else out
        return dict(zip(("c2", "c3", "c4", "c5"), feats))

    def set_step(self, step: int) -> None:
        """No per-step state: torchvision has no stochastic depth here, timm draws per sample."""


#: Command-line settings of the model and the synthetic pages (``main`` sets them).
SETTINGS: dict = {"neck": None, "line_mix": "form", "width_groups": None, "pixel_stem": None}


def model_config(p_min: float = 1.0) -> dict:
    """configs/model/default.yaml with the given keep probability (and ``--neck``, ``--bucket-ratio``)."""
    cfg = OmegaConf.to_container(compose_train_config().model, resolve=True)
    cfg["kinds"] = KINDS
    cfg["backbone"]["p_min"] = p_min
    cfg["neck"] = SETTINGS["neck"] or cfg["neck"]
    if SETTINGS["width_groups"] is not None:
        cfg["recognition"]["width_groups"] = SETTINGS["width_groups"]
    if SETTINGS["pixel_stem"] is not None:
        cfg["recognition"]["pixel_stem"] = SETTINGS["pixel_stem"]
    return cfg


def build_variant(name: str, charset: Charset) -> DocRecModel:
    """The composite model of one variant (same seed, so the FPN and heads start identical)."""
    torch.manual_seed(0)
    if name.startswith("docrec_p"):
        p_min = float(name.removeprefix("docrec_p").removesuffix("_compiled"))
        return build_model(model_config(p_min), charset)
    model = build_model(model_config(1.0), charset)
    if name == "baseline":
        import torchvision
        from torchvision.models._utils import IntermediateLayerGetter

        tv = torchvision.models.resnet50(weights=None)
        layers = {f"layer{i}": f"c{i + 1}" for i in range(1, 5)}
        model.backbone = FeatureTrunk(IntermediateLayerGetter(tv, return_layers=layers))
    elif name.startswith("droppath_p"):
        import timm

        keep = float(name.removeprefix("droppath_p"))
        body = timm.create_model("resnet50", pretrained=False, drop_path_rate=1.0 - keep,
                                 features_only=True, out_indices=(1, 2, 3, 4))
        model.backbone = FeatureTrunk(body)
    else:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return model


# ----------------------------------------------------------------------------- synthetic batch


def bench_charset() -> Charset:
    """Printable ASCII plus a few accented letters: about the synthetic set's vocabulary size."""
    return Charset(sorted({chr(c) for c in range(32, 127)} | set("àâçéèêëîïôûüÄÖÜßäöü€£°")))


def synthetic_page(res: int, lines_per_512: float, charset: Charset, rng: np.random.Generator,
                   max_len: int = 160) -> tuple[Tensor, dict[str, Tensor]]:
    """A res x res uint8 page [3, H, W] and its targets, with ``lines_per_512 * res / 512`` text lines."""
    n = max(1, round(lines_per_512 * res / 512))
    pitch = res / (n + 1)
    height = max(3.0, 0.6 * pitch)
    chars = charset.chars
    lines = []
    for i in range(n):
        cy = pitch * (i + 1)
        if SETTINGS["line_mix"] == "form":
            w = (rng.uniform(0.05, 0.2) if rng.random() < 0.8 else rng.uniform(0.6, 0.9)) * res
        else:
            w = rng.uniform(0.2, 0.8) * res
        x0 = rng.uniform(0.05 * res, max(0.05 * res, 0.95 * res - w))
        a = np.deg2rad(rng.uniform(-2, 2))
        u, v = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
        c = np.array([x0 + w / 2, cy])
        poly = np.stack([c - u * w / 2 - v * height / 2, c + u * w / 2 - v * height / 2,
                         c + u * w / 2 + v * height / 2, c - u * w / 2 + v * height / 2]).astype(np.float32)
        n_chars = int(np.clip(w / (0.5 * height), 1, max_len - 2))
        text = "".join(rng.choice(chars, n_chars))
        lines.append((poly, text, KINDS[i % len(KINDS)]))
    image = torch.from_numpy(rng.integers(0, 256, (3, res, res), dtype=np.uint8))
    return image, build_targets(lines, res, res, KINDS, charset, max_len)


def synthetic_batch(res: int, batch: int, lines_per_512: float, charset: Charset, device: torch.device,
                    distinct: int = 4) -> tuple[Tensor, list[dict[str, Tensor]]]:
    """``batch`` pages (``distinct`` different ones, repeated), images and targets on ``device``."""
    rng = np.random.default_rng(0)
    pages = [synthetic_page(res, lines_per_512, charset, rng) for _ in range(min(distinct, batch))]
    pages = [pages[i % len(pages)] for i in range(batch)]
    images = torch.stack([p[0] for p in pages]).to(device)
    targets = [{k: v.to(device) for k, v in p[1].items()} for p in pages]
    return images, targets


# ----------------------------------------------------------------------------------- the step


class BackboneLoss(nn.Module):
    """The backbone alone under a stand-in loss on C2..C5 (what stochastic depth can speed up),
    called as the trainer calls the model: ``(images, targets) -> losses``."""

    def __init__(self, model: DocRecModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, targets=None) -> dict[str, Tensor]:
        return {"stand_in": sum(f.float().square().mean() for f in self.model.backbone(images).values())}


def bench_run(model: DocRecModel, opt: torch.optim.Optimizer, rt: Runtime, clip: float | None,
              backbone_only: bool = False) -> SimpleNamespace:
    """What :func:`docrec.engine.trainer.optimizer_step` reads of a ``Run``, for one variant: its model
    and optimizer, one micro-batch a step, a constant learning rate, no EMA (the trainer's loss
    scaling: on for fp16 only)."""
    cfg = OmegaConf.create({"trainer": {"grad_accum": 1, "max_bad_steps": 10**9}, "optim": {"grad_clip": clip},
                            "data": {"batch_size": "the benchmark's", "long_side": "--res", "crop": None}})
    return SimpleNamespace(cfg=cfg, rt=rt, progress=Progress(), raw=model,
                           model=BackboneLoss(model) if backbone_only else model, optimizer=opt,
                           scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0),
                           scaler=torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16"),
                           ema=None, ckpt_dir=Path("(no checkpoints in a benchmark)"))


def train_step(run: SimpleNamespace, images_u8: Tensor, targets: list[dict[str, Tensor]], step: int) -> None:
    """One step of the trainer's own :func:`~docrec.engine.trainer.optimizer_step` at ``step``: the same
    line subset and jitter for every variant at this step (``torch.manual_seed(step)``)."""
    run.progress.step = step
    torch.manual_seed(step)
    optimizer_step(run, iter([(images_u8, targets)]))


def state_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> int:
    """Bytes of the weights, the gradients held now and the optimizer state (buffers included)."""
    total = sum(t.numel() * t.element_size() for t in model.parameters())
    total += sum(t.numel() * t.element_size() for t in model.buffers())
    total += sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    for s in opt.state.values():
        total += sum(v.numel() * v.element_size() for v in s.values() if torch.is_tensor(v))
    return total


class CpuMemory:
    """RSS high-water mark of this process, reset per measurement (Linux ``clear_refs``)."""

    def __init__(self) -> None:
        try:
            self._libc = ctypes.CDLL("libc.so.6")
        except OSError:
            self._libc = None
        self.available = self._reset()

    @staticmethod
    def _status(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def _reset(self) -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def begin(self) -> int:
        gc.collect()
        if self._libc is not None:
            self._libc.malloc_trim(0)
        self._reset()
        return self._status("VmRSS")

    def peak(self) -> int:
        return self._status("VmHWM")


class Timer:
    """Wall time of a step: CUDA events (device synchronised after) or perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self._start, self._end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> float:
        """Seconds since start()."""
        if self.cuda:
            self._end.record()
            torch.cuda.synchronize()
            return self._start.elapsed_time(self._end) / 1000
        return time.perf_counter() - self._t0


# ----------------------------------------------------------------------------------- throughput


def benchmark(args: argparse.Namespace, rt: Runtime) -> dict:
    """Interleaved median step time, pages/s and peak memory of each variant."""
    charset = bench_charset()
    images, targets = synthetic_batch(args.res, args.batch, args.lines_per_512, charset, rt.device)
    n_lines = sum(int(t["line_quads"].shape[0]) for t in targets)
    print(f"batch: {args.batch} x {args.res}x{args.res}, {n_lines} lines "
          f"({n_lines / args.batch:.0f}/page; the model reads at most 128 per step)", flush=True)
    optim_cfg = OmegaConf.load(REPO / "configs" / "optim" / "adamw.yaml")
    cpu_mem = CpuMemory() if rt.device.type == "cpu" else None

    runs: dict[str, dict] = {}
    for name in args.variants:
        row: dict = {"variant": name, "times": [], "peaks": [], "blocks": [], "note": None}
        runs[name] = row
        try:
            model = build_variant(name, charset).to(rt.device)
            if rt.channels_last:
                model = model.to(memory_format=torch.channels_last)
            model.train()
            opt = build_optimizer(model, optim_cfg)
            if name.endswith("_compiled"):
                model.compile_regions()
            run = bench_run(model, opt, rt, optim_cfg.grad_clip, args.backbone_only)
            t0 = time.perf_counter()
            for s in range(args.warmup):
                train_step(run, images, targets, s)
            if rt.device.type == "cuda":
                torch.cuda.synchronize()
            row["warmup_s"] = time.perf_counter() - t0
            row["model"], row["opt"], row["run"] = model, opt, run
            print(f"  {name}: built, {args.warmup} warm-up steps in {row['warmup_s']:.1f} s", flush=True)
        except Exception as exc:  # noqa: BLE001 - a variant that cannot run here (no compiler, OOM) is reported
            row["note"] = f"n/a: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            print(f"  {name}: {row['note']}", flush=True)
            row.pop("model", None)
            gc.collect()

    live = [n for n in args.variants if "model" in runs[n]]
    timer = Timer(rt.device)
    for i in range(args.steps):
        step = args.warmup + i
        order = live[i % len(live):] + live[: i % len(live)] if live else []
        for name in order:
            row = runs[name]
            model, opt = row["model"], row["opt"]
            if rt.device.type == "cuda":
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            elif cpu_mem is not None and cpu_mem.available:
                base = cpu_mem.begin()
            own = state_bytes(model, opt)
            timer.start()
            try:
                train_step(row["run"], images, targets, step)
            except torch.OutOfMemoryError:
                row["note"] = f"n/a: out of memory at step {step}"
                print(f"  {name}: {row['note']}", flush=True)
                live.remove(name)
                del row["model"], row["opt"], row["run"], model, opt
                gc.collect()
                torch.cuda.empty_cache()
                continue
            row["times"].append(timer.stop())
            if rt.device.type == "cuda":
                row["peaks"].append(torch.cuda.max_memory_allocated() - base + own)
            elif cpu_mem is not None and cpu_mem.available:
                row["peaks"].append(cpu_mem.peak() - base + own)
            bb = getattr(model.backbone, "last_executed", None)
            if bb is not None:
                row["blocks"].append(len(bb))
        if (i + 1) % max(1, args.steps // 5) == 0:
            print(f"  round {i + 1}/{args.steps}", flush=True)

    rows = []
    base_rate = None
    for name in args.variants:
        r = runs[name]
        out = {"variant": name, "pages_per_s": None, "ratio_to_baseline": None, "peak_mem_gib": None,
               "median_step_ms": None, "iqr_step_ms": None, "steps": len(r["times"]),
               "mean_blocks_run": statistics.fmean(r["blocks"]) if r["blocks"] else None,
               "warmup_s": r.get("warmup_s"), "note": r["note"],
               "step_ms": [round(t * 1000, 1) for t in r["times"]]}
        if r["times"] and not (r["note"] or "").startswith("n/a"):
            med = statistics.median(r["times"])
            q = statistics.quantiles(r["times"], n=4) if len(r["times"]) >= 2 else [med, med, med]
            out.update(pages_per_s=args.batch / med, median_step_ms=med * 1000, iqr_step_ms=(q[2] - q[0]) * 1000,
                       peak_mem_gib=max(r["peaks"]) / GIB if r["peaks"] else None)
        if name == "baseline":
            base_rate = out["pages_per_s"]
        rows.append(out)
    for out in rows:
        if base_rate and out["pages_per_s"]:
            out["ratio_to_baseline"] = out["pages_per_s"] / base_rate
    add_flop_bounds(args, rt, rows)
    return {"device": describe(rt.device), "part": "backbone" if args.backbone_only else "model",
            "res": args.res, "batch": args.batch, "steps": args.steps,
            "warmup": args.warmup, "lines_per_page": n_lines / args.batch,
            "precision": rt.precision, "channels_last": rt.channels_last,
            "torch": torch.__version__, "rows": rows}


def add_flop_bounds(args: argparse.Namespace, rt: Runtime, rows: list[dict]) -> None:
    """Beside each docrec variant's measured speed-up over docrec_p1.0: the FLOPs bound (skipped
    blocks' expected FLOPs removed, time following FLOPs) and the share of it realised; on CUDA the
    model FLOP utilisation (3 x forward FLOPs per step, less the expected skipped FLOPs, over the
    step time, as a share of the card's bf16 peak)."""
    flops = flop_breakdown(args)
    total = flops["forward_gflops"]["backbone" if args.backbone_only else "total"]
    ref = next((r["pages_per_s"] for r in rows if r["variant"] == "docrec_p1.0" and r["pages_per_s"]), None)
    peak = peak_bf16_flops(rt.device)
    for r in rows:
        r.update(flops_bound=None, bound_realised=None, mfu=None)
        saved = 0.0
        if r["variant"].startswith("docrec_p"):
            saved = expected_saving(flops, float(r["variant"].removeprefix("docrec_p").removesuffix("_compiled")))
            r["flops_bound"] = total / (total - saved)
            if ref and r["pages_per_s"]:
                measured = r["pages_per_s"] / ref
                r["speedup_vs_p1"] = measured
                if r["flops_bound"] > 1.0:
                    r["bound_realised"] = (measured - 1.0) / (r["flops_bound"] - 1.0)
        if peak and r["median_step_ms"]:
            r["mfu"] = 3 * (total - saved) * 1e9 / (r["median_step_ms"] / 1000) / peak


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def print_table(result: dict) -> None:
    print(f"\n{result['part']}: {result['device']}, {result['res']}x{result['res']}, batch {result['batch']}, "
          f"{result['precision']}, median of {result['steps']} interleaved steps after {result['warmup']} warm-up")
    head = (f"{'variant':<22} {'pages/s':>8} {'x base':>7} {'step ms':>8} {'IQR ms':>7} {'blocks':>6} {'peak GiB':>8}"
            f" {'x p1.0':>7} {'FLOPs bound':>11} {'realised':>8} {'MFU':>6}")
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        if r["pages_per_s"] is None:
            print(f"{r['variant']:<22} {r['note']}")
            continue

        def f(v, spec):
            return format(v, spec) if v is not None else "-"
        print(f"{r['variant']:<22} {r['pages_per_s']:>8.2f} {f(r['ratio_to_baseline'], '>7.3f')} "
              f"{r['median_step_ms']:>8.0f} {r['iqr_step_ms']:>7.0f} {f(r['mean_blocks_run'], '>6.1f')} "
              f"{f(r['peak_mem_gib'], '>8.2f')} {f(r.get('speedup_vs_p1'), '>7.3f')} "
              f"{f(r.get('flops_bound'), '>11.3f')} {f(r.get('bound_realised'), '>8.0%')} {f(r.get('mfu'), '>6.1%')}")


# ----------------------------------------------------------------------------------- memory


def _fits(model: DocRecModel, opt, rt: Runtime, res: int, batch: int, charset: Charset, lines_per_512: float,
          clip) -> float | None:
    """Peak GiB of a step at this batch (the AdamW state already allocated), or None on out-of-memory."""
    images = targets = None
    try:
        images, targets = synthetic_batch(res, batch, lines_per_512, charset, rt.device)
        torch.cuda.reset_peak_memory_stats()
        for s in range(1 if opt.state else 2):  # the first step allocates the optimizer state
            train_step(bench_run(model, opt, rt, clip), images, targets, s)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / GIB
    except torch.OutOfMemoryError:
        return None
    finally:
        opt.zero_grad(set_to_none=True)
        del images, targets
        gc.collect()
        torch.cuda.empty_cache()


def memory_search(args: argparse.Namespace, rt: Runtime) -> dict:
    """Largest batch per resolution (worst case: every block runs), and the default config's peak."""
    charset = bench_charset()
    optim_cfg = OmegaConf.load(REPO / "configs" / "optim" / "adamw.yaml")
    data_cfg = OmegaConf.load(REPO / "configs" / "data" / "synthetic.yaml")
    model = build_model(model_config(float(OmegaConf.load(REPO / "configs" / "model" / "default.yaml")
                                           .backbone.p_min)), charset).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_blocks = model.backbone.num_blocks
    model.backbone.sample_decisions = lambda step: [True] * n_blocks  # worst case for memory
    model.train()
    opt = build_optimizer(model, optim_cfg)
    total = torch.cuda.get_device_properties(rt.device).total_memory / GIB
    out: dict = {"device": describe(rt.device), "total_gib": total, "precision": rt.precision,
                 "note": "square pages, every block runs, at most 128 lines read per batch", "max_batch": []}
    for res in args.memory_res:
        t0 = time.perf_counter()
        good, good_peak, bad = 0, None, None
        b = 1
        while b <= args.max_batch:  # doubling
            peak = _fits(model, opt, rt, res, b, charset, args.lines_per_512, optim_cfg.grad_clip)
            print(f"  res {res} batch {b}: {'OOM' if peak is None else f'{peak:.1f} GiB'}", flush=True)
            if peak is None:
                bad = b
                break
            good, good_peak, b = b, peak, b * 2
        while bad is not None and bad - good > 1:  # bisection
            mid = (good + bad) // 2
            peak = _fits(model, opt, rt, res, mid, charset, args.lines_per_512, optim_cfg.grad_clip)
            print(f"  res {res} batch {mid}: {'OOM' if peak is None else f'{peak:.1f} GiB'}", flush=True)
            if peak is None:
                bad = mid
            else:
                good, good_peak = mid, peak
        out["max_batch"].append({"res": res, "max_batch": good, "peak_gib_at_max": good_peak,
                                 "capped": bad is None, "search_s": time.perf_counter() - t0})
    res, batch = int(data_cfg.long_side), int(data_cfg.batch_size)
    peak = _fits(model, opt, rt, res, batch, charset, args.lines_per_512, optim_cfg.grad_clip)
    out["default_config"] = {"res": res, "batch": batch, "peak_gib": peak}
    return out


def print_memory(result: dict) -> None:
    print(f"\n{result['device']} ({result['total_gib']:.0f} GiB), {result['precision']}; {result['note']}")
    for r in result["max_batch"]:
        peak = f"{r['peak_gib_at_max']:.1f} GiB" if r["peak_gib_at_max"] is not None else "-"
        cap = " (search cap reached)" if r["capped"] else ""
        print(f"  {r['res']}x{r['res']}: largest batch {r['max_batch']}{cap}, peak {peak}")
    d = result["default_config"]
    peak = f"{d['peak_gib']:.1f} GiB" if d["peak_gib"] is not None else "OOM"
    print(f"  default config ({d['res']}x{d['res']}, batch {d['batch']}): peak {peak}")


# ----------------------------------------------------------------------------------- FLOPs


def flop_breakdown(args: argparse.Namespace) -> dict:
    """Forward GFLOPs of backbone blocks, neck and heads on the benchmark batch, and what p_min can save.

    The expected saving of a p_min is sum over droppable blocks of (1 - p_l) x the block's
    FLOPs: an upper bound of the step's speed-up when time follows FLOPs (backward ~ 2x forward
    everywhere, so the forward shares stand for the whole step; the optimizer is not counted).
    """
    from torch.utils.flop_counter import FlopCounterMode


    def gflops(fn) -> float:
        with FlopCounterMode(display=False) as fc:
            fn()
        return fc.get_total_flops() / 1e9

    charset = bench_charset()
    # Image parts on one page times the batch; the recognition head on the batch's lines, capped
    # at max_lines_per_batch as in training (so a batch of 16 pages at 1024 stays cheap to count).
    images, targets = synthetic_batch(args.res, args.batch, args.lines_per_512, charset, torch.device("cpu"))
    model = build_variant("docrec_p1.0", charset).train()
    x = normalize(images[:1])
    bb = model.backbone
    n = args.batch
    with torch.no_grad():
        stem = n * gflops(lambda: bb.conv1(x))
        h = bb.maxpool(bb.relu(bb.bn1(bb.conv1(x))))
        blocks = []
        for entry in bb.schedule():
            block = bb.get_submodule(entry["name"])
            blocks.append(n * gflops(lambda b=block, inp=h: b(inp)))
            h = block(h)
        feats = bb(x)
        neck = n * gflops(lambda: model.neck(feats))
        fused = model.neck(feats)
        seg = n * gflops(lambda: model.seg_head(fused))
        quads, budget = [], model.max_lines_per_batch
        for t in targets:
            quads.append(t["line_quads"][:budget])
            budget -= len(quads[-1])
        tokens = model._pad_tokens([t["line_tokens"][: len(q)] for t, q in zip(targets, quads)], x.device)
        fused = fused.expand(n, -1, -1, -1)
        pages = x.expand(n, -1, -1, -1)  # the page pixels, which a reader with a pixel stem reads
        rec = gflops(lambda: model.rec_head.loss(fused, quads, tokens, images=pages))
    backbone = stem + sum(blocks)
    total = backbone + neck + seg + rec
    droppable = [not e["always_run"] for e in bb.schedule()]
    out = {"res": args.res, "batch": args.batch, "lines": len(torch.cat(quads)),
           "forward_gflops": {"backbone": backbone, "neck": neck, "seg_head": seg, "rec_head": rec, "total": total},
           "block_gflops": blocks, "droppable": droppable, "p_min": []}
    for p_min in (1.0, 0.8, 0.5):
        saved = expected_saving(out, p_min)
        out["p_min"].append({"p_min": p_min, "expected_backbone_saving": saved / backbone,
                             "expected_step_ratio": total / (total - saved)})
    return out


def expected_saving(flops: dict, p_min: float) -> float:
    """Forward GFLOPs that skipping saves on average at ``p_min``: sum over droppable blocks of
    (1 - keep probability) x the block's FLOPs (``flops`` from :func:`flop_breakdown`)."""
    from docrec.models import keep_probs

    blocks = flops["block_gflops"]
    keep = keep_probs(len(blocks), p_min)
    return sum((1 - k) * f for k, f, d in zip(keep, blocks, flops["droppable"]) if d)


def print_flops(r: dict) -> None:
    g, cfg = r["forward_gflops"], model_config()
    print(f"\nforward GFLOPs, {r['batch']} x {r['res']}x{r['res']}, {r['lines']} lines read "
          f"({SETTINGS['line_mix']} widths, neck {cfg['neck']}, width groups x{cfg['recognition']['width_groups'] or 'inf'}):")
    for k in ("backbone", "neck", "seg_head", "rec_head"):
        print(f"  {k:<9} {g[k]:8.1f}  {g[k] / g['total']:6.1%}")
    print(f"  {'total':<9} {g['total']:8.1f}")
    for p in r["p_min"]:
        print(f"  p_min {p['p_min']:.1f}: expected backbone FLOPs saved {p['expected_backbone_saving']:5.1%}, "
              f"step speed-up bound x{p['expected_step_ratio']:.3f} vs all blocks")


# ----------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto (default)")
    ap.add_argument("--res", type=int, default=1024, help="page side in pixels (square pages)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20, help="timed rounds (one step of each variant per round)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first (compilation)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, metavar="VARIANT",
                    help=f"subset of: {' '.join(VARIANTS)}")
    ap.add_argument("--lines-per-512", type=float, default=25.0, help="text lines per 512 px of page height")
    ap.add_argument("--threads", type=int,
                    help="torch CPU threads (default: torch's choice); on a CPU shared with other jobs use 1: "
                         "OpenMP threads that wait for a busy core make steps 2x slower and 10x noisier")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--backbone-only", action="store_true",
                    help="time the backbone alone (forward, stand-in loss, backward, AdamW): the part skipping speeds up")
    ap.add_argument("--memory", action="store_true", help="CUDA: largest batch per --memory-res instead")
    ap.add_argument("--memory-res", type=int, nargs="+", default=[1024, 1536])
    ap.add_argument("--flops", action="store_true", help="forward FLOPs per component and p_min bound instead")
    ap.add_argument("--max-batch", type=int, default=256, help="--memory: stop doubling here")
    ap.add_argument("--neck", choices=["light", "fpn"], help="model.neck (default: configs/model/default.yaml's)")
    ap.add_argument("--line-mix", choices=["form", "uniform"], default="form",
                    help="line widths of the synthetic pages: form (many short, a few long) or uniform")
    ap.add_argument("--pixel-stem", type=int, default=None, metavar="C",
                    help="model.recognition.pixel_stem (default: the model's); 0: none")
    ap.add_argument("--bucket-ratio", type=float, default=None,
                    help="recognition width-group ratio (default: the model's); 0: one group padded to the widest")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    SETTINGS.update(neck=args.neck, line_mix=args.line_mix, pixel_stem=args.pixel_stem)
    if args.bucket_ratio is not None:
        SETTINGS["width_groups"] = args.bucket_ratio
    if args.threads:
        torch.set_num_threads(args.threads)
    rt = setup(args.device, "auto", "auto")
    if args.flops:
        result = flop_breakdown(args)
        print_flops(result)
    elif args.memory:
        if rt.device.type != "cuda":
            print("--memory needs a CUDA device", file=sys.stderr)
            return 2
        result = memory_search(args, rt)
        print_memory(result)
    else:
        if "baseline" not in args.variants:
            args.variants = ["baseline", *args.variants]
        result = benchmark(args, rt)
        print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=lambda o: None if isinstance(o, float)
                                        and not math.isfinite(o) else str(o)))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
