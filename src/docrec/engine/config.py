"""Start-up checks of the composed config: every error names the key."""

from __future__ import annotations

import math
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from docrec.data.loading import data_sources
from docrec.models.recognition import check_read_shifts
from docrec.settings import ConfigError, abs_path

__all__ = ["CONFIG_DIR", "ConfigError", "abs_path", "check_config", "compose_train_config", "data_sources"]


#: The repository's configs/ (train.yaml and its groups).
CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"


def compose_train_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The training config as ``python train.py OVERRIDES`` composes it (Hydra's compose API, for
    tests, scripts and benchmarks that build parts of a run outside ``train.py``)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _get(cfg: DictConfig, key: str):
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except Exception:  # noqa: BLE001 - MissingMandatoryValue and friends
        raise ConfigError(f"{key} is required but not set (pass {key}=...)") from None


def _number(cfg, key, lo=None, hi=None, lo_open=False, integer=False, where=None):
    v = _get(cfg, key)
    if where:  # cfg is a part of the config found at ``where``: name the key in full
        key = f"{where}.{key}"
    return check_number(v, key, lo, hi, lo_open, integer)


def check_number(v, key, lo=None, hi=None, lo_open=False, integer=False):
    """``v`` if it is a finite number (an integer if asked) within the bounds, else a ConfigError naming ``key``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise ConfigError(f"{key} must be {'an integer' if integer else 'a number'}, got {v!r}")
    if not math.isfinite(v):
        raise ConfigError(f"{key} must be a finite number, got {v}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ConfigError(f"{key} must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise ConfigError(f"{key} must be <= {hi}, got {v}")
    return v


def check_config(cfg: DictConfig) -> None:
    """Fail at start-up on values that would only break hours later."""
    _number(cfg, "model.backbone.p_min", 0.0, 1.0, lo_open=True)
    for key in ("data.batch_size", "data.val_batch_size", "data.long_side", "data.max_len",
                "trainer.grad_accum", "trainer.val_every", "trainer.log_every",
                "trainer.ckpt_every"):
        _number(cfg, key, 1, integer=True)
    max_epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    if max_epochs is not None:
        _number(cfg, "trainer.max_epochs", 1, integer=True)
    if OmegaConf.select(cfg, "trainer.max_steps") is not None:
        _number(cfg, "trainer.max_steps", 1, integer=True)
    elif max_epochs is None:
        raise ConfigError("trainer.max_steps=null sizes the schedule by trainer.max_epochs, which is null too: "
                          "set one of them (trainer.max_epochs=N: N epochs of the training data)")
    if _get(cfg, "data.num_workers") != "auto":
        _number(cfg, "data.num_workers", 0, integer=True)
    _number(cfg, "trainer.precise_bn_batches", 0, integer=True)
    stage = OmegaConf.select(cfg, "trainer.stage", default="pages")
    if stage not in ("pages", "reader"):
        raise ConfigError(f"trainer.stage must be pages (the whole network) or reader (the recognition head alone), "
                          f"got {stage!r}")
    if stage == "reader":
        for key in ("bank_batches", "crops_per_step", "refresh_every"):
            _number(cfg, f"trainer.reader.{key}", 1, integer=True)
        if _get(cfg, "trainer.precise_bn_batches"):
            raise ConfigError("trainer.precise_bn_batches re-estimates the backbone's BN statistics, which "
                              "trainer.stage=reader keeps frozen: set it to 0")
    if OmegaConf.select(cfg, "data.aspect_ratio_group_factor") is not None:
        _number(cfg, "data.aspect_ratio_group_factor", 0, integer=True)
    _number(cfg, "data.val_fraction", 0.0, 0.9)
    if OmegaConf.select(cfg, "data.max_line_height") is not None:
        _number(cfg, "data.max_line_height", 0, lo_open=True)
    if OmegaConf.select(cfg, "data.read_scale") is not None:
        _number(cfg, "data.read_scale", 0.25, 4.0)
    _number(cfg, "optim.lr", 0.0, lo_open=True)
    _number(cfg, "optim.weight_decay", 0.0)
    _number(cfg, "optim.backbone_lr_scale", 0.0)
    _number(cfg, "optim.warmup_steps", 0, integer=True)
    _number(cfg, "trainer.ema.decay", 0.0, 1.0)
    _number(cfg, "model.label_smoothing", 0.0, 0.999)
    if _get(cfg, "data.crop") is not None:
        crop = _get(cfg, "data.crop")
        if len(crop) != 2 or any(not isinstance(c, int) or c < 32 or c % 32 for c in crop):
            raise ConfigError(f"data.crop must be [h, w], multiples of 32 and >= 32, got {list(crop)}")
    rec = OmegaConf.select(cfg, "model.recognition") or {}
    if "blank_penalty" in rec:  # null too: refused
        _number(cfg, "model.recognition.blank_penalty", 0.0)
    if "read_shifts" in rec:
        check_read_shifts(_get(cfg, "model.recognition.read_shifts"), "model.recognition.read_shifts")
    if "ctc_beam" in rec:
        _number(cfg, "model.recognition.ctc_beam", 1, integer=True)
    if "rescore" in rec:
        _number(cfg, "model.recognition.rescore", 0.0, 1.0)
        if rec.rescore > 0 and rec.get("ctc_beam", 1) < 2:
            raise ConfigError(f"model.recognition.rescore={rec.rescore} scores the CTC beam's candidates: "
                              f"it needs model.recognition.ctc_beam >= 2, got {rec.get('ctc_beam', 1)}")
    decoder = OmegaConf.select(cfg, "model.recognition.decoder", default="attention")
    if decoder not in ("attention", "ctc"):
        raise ConfigError(f"model.recognition.decoder must be attention or ctc, got {decoder!r}")
    if _get(cfg, "trainer.monitor_mode") not in ("max", "min"):
        raise ConfigError(f"trainer.monitor_mode must be max or min, got {cfg.trainer.monitor_mode!r}")
    if not list(_get(cfg, "data.kinds")):
        raise ConfigError("data.kinds must list at least one kind")
    for key, data_key in (("model.kinds", "data.kinds"), ("model.region_kinds", "data.region_kinds")):
        if list(OmegaConf.select(cfg, key) or []) != list(OmegaConf.select(cfg, data_key) or []):
            raise ConfigError(f"{key} follows {data_key} (configs/model/default.yaml interpolates it): set "
                              f"{data_key} instead, got {key}={list(OmegaConf.select(cfg, key) or [])}")
    epoch_pages = OmegaConf.select(cfg, "data.epoch_pages")
    if epoch_pages is not None:
        _number(cfg, "data.epoch_pages", 1, integer=True)
    sources = data_sources(cfg.data)
    if not sources:
        _check_paths(cfg.data, "data")
        return
    ramp = OmegaConf.select(cfg, "data.weight_ramp")
    if ramp is not None and not (OmegaConf.is_list(ramp) and len(ramp) == 2
                                 and all(isinstance(v, int) and not isinstance(v, bool) for v in ramp)
                                 and 0 <= ramp[0] <= ramp[1]):
        raise ConfigError(f"data.weight_ramp must be [start_step, end_step] with 0 <= start <= end (the steps over "
                          f"which each source's weight goes to its weight_end), or null; got {ramp}")
    names: set[str] = set()
    for i, src in enumerate(sources):
        key = f"data.sources[{i}]"
        name = src.name
        if not isinstance(name, str) or not _SOURCE_NAME.fullmatch(name):
            raise ConfigError(f"{key}.name must be a non-empty name of letters, digits, '_', '.' or '-' "
                              f"(it names TensorBoard tags), got {name!r}")
        if name in names:
            raise ConfigError(f"{key}.name={name}: another source has this name")
        names.add(name)
        if ramp is None:
            _number(src, "weight", 0.0, lo_open=True, where=key)
            if cfg.data.sources[i].get("weight_end") is not None:
                raise ConfigError(f"{key}.weight_end={src.weight_end} needs data.weight_ramp=[start_step,end_step] "
                                  f"(the steps over which the weight goes from {src.weight} to it)")
        else:
            _number(src, "weight", 0.0, where=key)
            _number(src, "weight_end", 0.0, where=key)
            if src.weight + src.weight_end <= 0:
                raise ConfigError(f"{key}: weight and weight_end are both 0, so the source is never drawn")
        _number(src, "val_fraction", 0.0, 0.9, where=key)
        _check_paths(src, key)
    for end in ("weight", "weight_end"):
        total = sum(src[end] for src in sources)
        if total <= 0:
            raise ConfigError(f"data.sources: every source's {end} is 0, so nothing is drawn "
                              f"{'before' if end == 'weight' else 'after'} data.weight_ramp")
        for i, src in enumerate(sources):
            if epoch_pages is not None and 0 < epoch_pages * src[end] / total < 1:
                raise ConfigError(f"data.sources[{i}].{end}={src[end]}: less than one of data.epoch_pages="
                                  f"{epoch_pages} draws per epoch; raise the weight or data.epoch_pages")


def _check_paths(data_cfg, prefix: str) -> None:
    """``path`` is set and exists, ``val_path`` exists when set; errors name ``prefix.path``."""
    for name in ("path", "val_path"):
        key = f"{prefix}.{name}"
        p = OmegaConf.select(data_cfg, name)  # None when unset or ???
        if p is None and name == "path":
            raise ConfigError(f"{key} is required but not set (pass {key.replace('[', '.').replace(']', '')}=...)")
        if p is None:
            continue
        if not abs_path(str(p)).exists():
            hint = " (run `make data` to generate the synthetic set)" if "synthetic" in str(p) else ""
            raise ConfigError(f"{key}={p}: no such file or folder{hint}")
