"""Start a new run from a checkpoint's weights (``init_from``): fine-tuning, with charset growth.

``resume`` continues a run exactly (optimizer, schedule, step, sampler); ``init_from`` only takes
the weights and starts at step 0 with a fresh optimizer and schedule, on other data if need be:

- the run's charset is the checkpoint's followed by the symbols that only the new data has, so
  every known symbol keeps its id, its embedding and its classifier rows (CTC and attention);
  new symbols get fresh rows;
- line kinds and region kinds are matched by name: the segmentation outputs of a kind both
  know are copied, a new kind gets a fresh output, a kind the run lacks is dropped;
- anything else must have the same shape: a checkpoint of another architecture is refused
  with the config keys that differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from omegaconf import OmegaConf
from torch import nn

from docrec.engine.config import ConfigError
from docrec.models.fpn import LEGACY_NECK
from docrec.text import Charset, normalize

#: Model settings that change the shape or meaning of weights (``model.<key>``).
ARCHITECTURE_KEYS = (
    "backbone.name", "neck", "fpn_channels", "segmentation.hidden", "recognition.d_model", "recognition.nhead",
    "recognition.conv_layers", "recognition.encoder_layers", "recognition.decoder_layers",
    "recognition.dim_feedforward", "recognition.roi_height", "recognition.max_len", "recognition.token_norm",
    "recognition.ctc_frames",
)
#: What a key missing from a checkpoint's model config meant when it was written.
LEGACY_DEFAULTS = {"neck": LEGACY_NECK, "recognition.token_norm": False, "recognition.ctc_frames": 1}
#: Tensors with one row per charset symbol.
VOCAB_TENSORS = ("rec_head.embed.weight", "rec_head.classifier.weight", "rec_head.classifier.bias",
                 "rec_head.ctc_head.weight", "rec_head.ctc_head.bias")
#: Tensors with one row per segmentation output (background, kinds, core, region kinds).
SEG_TENSORS = ("seg_head.out.weight", "seg_head.out.bias")


@dataclass
class InitReport:
    """What ``init_from`` did with each tensor of the checkpoint and of the new model."""

    loaded: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    new_symbols: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def names(xs: list[str]) -> str:
            return f": {', '.join(xs[:6])}{' ...' if len(xs) > 6 else ''}" if xs else ""
        symbols = "".join(self.new_symbols[:40]) + (" ..." if len(self.new_symbols) > 40 else "")
        return (f"{len(self.loaded)} tensors loaded, {len(self.reshaped)} reshaped{names(self.reshaped)}, "
                f"{len(self.new)} new{names(self.new)}, {len(self.dropped)} dropped{names(self.dropped)}; "
                f"{len(self.new_symbols)} new symbols" + (f" ({symbols!r})" if self.new_symbols else ""))


def grow_charset(old: Charset, texts: Iterable[str]) -> tuple[Charset, list[str]]:
    """The checkpoint's charset followed by the symbols of ``texts`` it lacks (sorted): known ids stay."""
    known = set(old.chars)
    extra = sorted({ch for t in texts for ch in normalize(t)} - known)
    return Charset([*old.chars, *extra]), extra


def _select(cfg: Mapping, dotted: str):
    for part in dotted.split("."):
        if not isinstance(cfg, Mapping) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def check_architecture(source: str, ckpt_model: Mapping, run_model: Mapping) -> None:
    """Refuse a checkpoint whose model settings differ from the run's in a weight-shaping key."""
    diffs = []
    for key in ARCHITECTURE_KEYS:
        a, b = (LEGACY_DEFAULTS.get(key) if v is None else v for v in (_select(ckpt_model, key), _select(run_model, key)))
        if a != b:
            diffs.append(f"model.{key}: {a} (checkpoint) vs {b} (this run)")
    if diffs:
        raise ConfigError(f"init_from={source}: the checkpoint is another architecture; "
                          f"{'; '.join(diffs)}. Use the same model settings (e.g. the same experiment=)")


def _seg_outputs(kinds: Sequence[str], region_kinds: Sequence[str]) -> list[str]:
    return ["background", *kinds, "<core>", *(f"region:{r}" for r in region_kinds)]


def transfer(model: nn.Module, weights: Mapping[str, torch.Tensor], source: str,
             old_charset: Charset, new_charset: Charset,
             old_kinds: Sequence[str], new_kinds: Sequence[str],
             old_regions: Sequence[str], new_regions: Sequence[str]) -> InitReport:
    """Copy ``weights`` into ``model`` (which already holds a fresh initialisation); returns the report."""
    report = InitReport()
    n_old = len(old_charset)
    if new_charset.chars[: len(old_charset.chars)] != old_charset.chars:
        raise ConfigError(f"init_from={source}: the run's charset does not extend the checkpoint's")
    old_out, new_out = _seg_outputs(old_kinds, old_regions), _seg_outputs(new_kinds, new_regions)
    seg_pairs = [(old_out.index(name), i) for i, name in enumerate(new_out) if name in old_out]
    target = model.state_dict()
    with torch.no_grad():
        for name, value in target.items():
            if name not in weights:
                report.new.append(name)
                continue
            src = weights[name]
            if name in VOCAB_TENSORS and src.shape[0] == n_old and src.shape[1:] == value.shape[1:]:
                value[:n_old] = src.to(value.dtype)
                (report.loaded if value.shape == src.shape else report.reshaped).append(name)
            elif name in SEG_TENSORS and src.shape[0] == len(old_out) and src.shape[1:] == value.shape[1:]:
                for a, b in seg_pairs:
                    value[b] = src[a].to(value.dtype)
                (report.loaded if old_out == new_out else report.reshaped).append(name)
            elif src.shape == value.shape:
                value.copy_(src.to(value.dtype))
                report.loaded.append(name)
            else:
                raise ConfigError(f"init_from={source}: tensor {name} has shape {tuple(src.shape)} in the "
                                  f"checkpoint and {tuple(value.shape)} in this model")
    model.load_state_dict(target)
    report.dropped = [k for k in weights if k not in target]
    report.new_symbols = new_charset.chars[len(old_charset.chars):]
    return report


def apply_init(model: nn.Module, state: Mapping, source: str, weights: str, run_model: Mapping,
               run_data: Mapping, charset: Charset) -> InitReport:
    """Check ``state`` (a loaded checkpoint) against the run and copy its ``weights`` (ema | raw) into ``model``."""
    if weights not in ("ema", "raw"):
        raise ConfigError(f"init_weights must be ema or raw, got {weights!r}")
    ckpt_cfg = state["config"]
    check_architecture(source, ckpt_cfg["model"], run_model)
    sd = state["ema"] if weights == "ema" and state.get("ema") is not None else state["model"]
    return transfer(model, sd, source, Charset.from_dict(state["charset"]), charset,
                    list(ckpt_cfg["data"]["kinds"]), list(run_data["kinds"]),
                    list(ckpt_cfg["data"].get("region_kinds") or []), list(run_data.get("region_kinds") or []))


def init_weights(model: nn.Module, init: dict, cfg, model_cfg: dict, charset: Charset, rt) -> None:
    """``init_from``: the checkpoint's weights (grown to the run's charset and kinds); prints the load report."""
    loaded = apply_init(model, init, str(cfg.init_from), cfg.get("init_weights", "ema"), model_cfg,
                        OmegaConf.to_container(cfg.data, resolve=True), charset)
    if rt.is_main:
        print(f"docrec | init_from {cfg.init_from} ({cfg.get('init_weights', 'ema')} weights, step "
              f"{init['step']} of that run): {loaded.summary()}", flush=True)
