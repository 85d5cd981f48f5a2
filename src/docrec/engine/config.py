"""Start-up checks of the composed config: every error names the key."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf


def abs_path(path: str) -> Path:
    """A config path made absolute against the launch directory (Hydra's original cwd)."""
    try:
        return Path(to_absolute_path(path))
    except ValueError:  # outside a Hydra app (tests, scripts)
        return Path(path).absolute()


class ConfigError(ValueError):
    """An impossible or missing config value; the message names the key."""


def _get(cfg: DictConfig, key: str):
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except Exception:  # noqa: BLE001 - MissingMandatoryValue and friends
        raise ConfigError(f"{key} is required but not set (pass {key}=...)") from None


def _number(cfg, key, lo=None, hi=None, lo_open=False, integer=False):
    v = _get(cfg, key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise ConfigError(f"{key} must be {'an integer' if integer else 'a number'}, got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ConfigError(f"{key} must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise ConfigError(f"{key} must be <= {hi}, got {v}")
    return v


def check_config(cfg: DictConfig) -> None:
    """Fail at start-up on values that would only break hours later."""
    _number(cfg, "model.backbone.p_min", 0.0, 1.0, lo_open=True)
    for key in ("data.batch_size", "data.val_batch_size", "data.long_side", "data.max_len",
                "trainer.max_steps", "trainer.grad_accum", "trainer.val_every", "trainer.log_every",
                "trainer.ckpt_every"):
        _number(cfg, key, 1, integer=True)
    _number(cfg, "data.num_workers", 0, integer=True)
    _number(cfg, "trainer.precise_bn_batches", 0, integer=True)
    _number(cfg, "data.val_fraction", 0.0, 0.9)
    _number(cfg, "optim.lr", 0.0, lo_open=True)
    _number(cfg, "optim.weight_decay", 0.0)
    _number(cfg, "optim.warmup_steps", 0, integer=True)
    _number(cfg, "trainer.ema.decay", 0.0, 1.0)
    _number(cfg, "model.label_smoothing", 0.0, 0.999)
    if _get(cfg, "data.crop") is not None:
        crop = _get(cfg, "data.crop")
        if len(crop) != 2 or any(not isinstance(c, int) or c < 32 or c % 32 for c in crop):
            raise ConfigError(f"data.crop must be [h, w], multiples of 32 and >= 32, got {list(crop)}")
    decoder = OmegaConf.select(cfg, "model.recognition.decoder", default="attention")
    if decoder not in ("attention", "ctc"):
        raise ConfigError(f"model.recognition.decoder must be attention or ctc, got {decoder!r}")
    if _get(cfg, "trainer.monitor_mode") not in ("max", "min"):
        raise ConfigError(f"trainer.monitor_mode must be max or min, got {cfg.trainer.monitor_mode!r}")
    if not list(_get(cfg, "data.kinds")):
        raise ConfigError("data.kinds must list at least one kind")
    for key in ("data.path", "data.val_path"):
        p = _get(cfg, key)
        if p is None and key == "data.path":
            raise ConfigError("data.path is required but not set (pass data.path=...)")
        if p is None:
            continue
        if not abs_path(str(p)).exists():
            hint = " (run `make data` to generate the synthetic set)" if "synthetic" in str(p) else ""
            raise ConfigError(f"{key}={p}: no such file or folder{hint}")
