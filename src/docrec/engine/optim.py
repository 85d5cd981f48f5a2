"""The optimizer and its schedule: AdamW groups (no decay on norms, biases, embeddings, positions;
the backbone's own learning rate when asked), warmup + cosine, and loading a saved state."""

from __future__ import annotations

import math

import torch


def _no_decay(module: torch.nn.Module, name: str, p: torch.nn.Parameter) -> bool:
    """Norms, biases, embeddings and learned positional tables: decaying them only shrinks lookups."""
    return p.ndim <= 1 or isinstance(module, torch.nn.Embedding) or name.endswith("_pos") or "pos_embed" in name


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms, biases, embeddings and positional parameters. With
    ``cfg.backbone_lr_scale`` other than 1, the backbone's parameters get groups of their own at
    ``lr * backbone_lr_scale`` (a fine-tune keeps its pretrained features and moves its heads).

    PyTorch's fused AdamW (one kernel per device over all tensors) where the parameters live on a CPU
    or a CUDA device: several times faster than its loop over the model's tensors (docs/benchmarks.md)."""
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
