"""Build the composite model from plain config values (``configs/model/default.yaml``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from docrec.models.docrec_model import DocRecModel
from docrec.models.fpn import FUSED_STRIDE, LEGACY_NECK, build_neck
from docrec.models.recognition import RecognitionHead
from docrec.models.segmentation import SegmentationHead
from docrec.models.stochastic_depth import build_backbone
from docrec.text import Charset

#: Recognition settings that belong to the training step, not to the head's architecture.
_REC_TRAINING_KEYS = ("max_lines_per_batch", "quad_jitter", "quad_grow", "quad_shear", "line_stretch", "reads_per_line")


def build_model(model_cfg: Mapping[str, Any], charset: Charset) -> DocRecModel:
    """DocRecModel from a dict/DictConfig; a missing key takes the constructor's default.

    Compilation is the trainer's switch (``trainer.compile`` -> :meth:`DocRecModel.compile_regions`),
    applied after a checkpoint is loaded.
    """
    cfg = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else dict(model_cfg)
    kinds = list(cfg.get("kinds", ["printed", "handwritten"]))
    backbone = build_backbone(**cfg.get("backbone", {}))
    neck = build_neck(cfg.get("neck", LEGACY_NECK), backbone.out_channels, cfg.get("fpn_channels", 256))
    region_kinds = list(cfg.get("region_kinds", []))
    seg_head = SegmentationHead(neck.out_channels, 1 + len(kinds), stride=FUSED_STRIDE, num_regions=len(region_kinds),
                                **cfg.get("segmentation", {}))
    rec_cfg = dict(cfg.get("recognition", {}))
    training = {k: rec_cfg.pop(k) for k in _REC_TRAINING_KEYS if k in rec_cfg}
    rec_head = RecognitionHead(
        neck.out_channels, len(charset), pad_id=charset.pad_id, bos_id=charset.bos_id, eos_id=charset.eos_id,
        stride=FUSED_STRIDE, **rec_cfg,
    )
    model = DocRecModel(
        backbone, neck, seg_head, rec_head, charset, kinds, region_kinds,
        loss_weights=cfg.get("loss_weights"),
        label_smoothing=cfg.get("label_smoothing", 0.1),
        postprocess=cfg.get("postprocess"),
        **training,
    )
    return model
