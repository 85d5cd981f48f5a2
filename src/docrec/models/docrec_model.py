"""The composite network: backbone -> neck (fused stride-4 map) -> segmentation head and recognition head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from docrec.geometry import line_quads
from docrec.models.recognition import DECODER_LOSS, RecognitionHead
from docrec.models.roi import jitter_quads
from docrec.models.segmentation import SegmentationHead, class_and_core_probs, segmentation_losses
from docrec.models.stochastic_depth import StochasticDepthResNet
from docrec.postprocess import line_regions, lines_from_maps
from docrec.text import Charset

#: Inputs are padded (right/bottom) to a multiple of the backbone's total stride.
SIZE_DIVISOR = 32


class DocRecModel(nn.Module):
    """Page in, lines (polygon, kind, text, confidence) out; named losses when targets are given.

    Images are RGB [B, 3, H, W], ImageNet-normalised floats (``docrec.data.dataset.normalize``,
    applied on the device by the caller); the model pads them to a multiple of 32. Targets
    are one dict per image as made by :func:`docrec.data.targets.build_targets`.
    """

    def __init__(
        self,
        backbone: StochasticDepthResNet,
        neck: nn.Module,
        seg_head: SegmentationHead,
        rec_head: RecognitionHead,
        charset: Charset,
        kinds: Sequence[str],
        region_kinds: Sequence[str] = (),
        loss_weights: dict[str, float] | None = None,
        label_smoothing: float = 0.1,
        max_lines_per_batch: int = 128,
        quad_jitter: float = 0.05,
        quad_grow: Sequence[float] = (0.0, 0.0),
        quad_shear: float = 0.0,
        line_stretch: float = 0.0,
        reads_per_line: int = 1,
        postprocess: dict | None = None,
    ) -> None:
        super().__init__()
        self.backbone, self.neck, self.seg_head, self.rec_head = backbone, neck, seg_head, rec_head
        self.charset = charset
        self.kinds = list(kinds)
        self.region_kinds = list(region_kinds)
        self.loss_weights = {"seg": 1.0, "core": 1.0, "rec": 1.0, "ctc": 1.0, "region": 1.0, **(loss_weights or {})}
        # Recognition branches with weight 0 are not computed (nor read in validation).
        self.rec_branches = tuple(k for k in ("rec", "ctc") if self.loss_weights[k] != 0)
        if not self.rec_branches:
            raise ValueError("loss_weights.rec and loss_weights.ctc are both 0: nothing would learn to read")
        branch = DECODER_LOSS[rec_head.decoder_kind]
        if branch not in self.rec_branches:
            raise ValueError(f"recognition.decoder={rec_head.decoder_kind} reads with a head that does not train "
                             f"(loss_weights.{branch}=0)")
        if "rec" not in self.rec_branches:  # no attention decoder trained to rescore with: the beam's CTC text
            rec_head.rescore = 0.0
        if reads_per_line < 1:
            raise ValueError(f"reads_per_line must be >= 1, got {reads_per_line}")
        self.reads_per_line = reads_per_line
        self.label_smoothing = label_smoothing
        self.max_lines_per_batch = max_lines_per_batch
        self.quad_jitter = quad_jitter
        self.quad_grow = (float(quad_grow[0]), float(quad_grow[1]))
        if not 0.0 <= quad_shear <= 1.0 or not 0.0 <= line_stretch < 1.0:
            raise ValueError(f"quad_shear must be in [0, 1] and line_stretch in [0, 1), got {quad_shear} and "
                             f"{line_stretch}")
        self.quad_shear, self.line_stretch = float(quad_shear), float(line_stretch)
        self.postprocess = dict(postprocess or {})
        # For the lines of pages whose labels ignore case (SROIE's are all capitals whatever the
        # receipt prints): each letter's other case, merged with it in their reading loss.
        self.register_buffer("case_partner", torch.tensor(charset.case_partners(), dtype=torch.long),
                             persistent=False)

    def set_step(self, step: int) -> None:
        """Global training step, which (with the seed) decides the dropped backbone blocks."""
        self.backbone.set_step(step)

    def compile_regions(self, **compile_kwargs) -> None:
        """Compile each backbone block, the neck and the heads separately (regional compilation)."""
        self.backbone.compile_blocks(**compile_kwargs)
        self.neck.compile(**compile_kwargs)
        self.seg_head.compile(**compile_kwargs)
        # Line count, RoI width and prefix length vary per batch: compile those shapes dynamic.
        stem = [self.rec_head.pixel_stem] if self.rec_head.pixel_stem is not None else []
        for m in (*stem, self.rec_head.encoder, self.rec_head.decoder):
            m.compile(**{"dynamic": True, **compile_kwargs})

    def fused_map(self, images: Tensor) -> Tensor:
        """The stride-4 map both heads read, of normalised ``images``: padded to a multiple of 32 (zeros: the
        mean colour), then backbone and neck (the export and the reader's own stage call it too)."""
        x = images
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % SIZE_DIVISOR, -w % SIZE_DIVISOR
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.neck(self.backbone(x))

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None,
                fused: Tensor | None = None) -> dict | list[dict]:
        """With targets: weighted losses {seg, core, rec, ctc}. Without: one prediction dict per image.

        With targets and ``fused`` (the images' fused map, computed earlier: the reader's own stage,
        :mod:`docrec.engine.reader_stage`), the reading losses {rec, ctc} alone, from that map: backbone,
        neck and segmentation head do not run."""
        if targets is None:
            with torch.no_grad():  # predictions (polygons, text) are never differentiated
                return self._predict(*self._maps(images), images=images)
        if fused is not None:
            return self._weighted(self._rec_losses(fused, targets, images))
        return self._losses(*self._maps(images), targets, images=images)

    def _maps(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Fused map, class, core and region logits (the logits cropped to the unpadded input)."""
        h, w = images.shape[-2:]
        fused = self.fused_map(images)
        logits = self.seg_head(fused)
        if logits[0].shape[-2:] != (h, w):  # cropping when nothing is cut would cost a zero-filled gradient
            logits = tuple(x[..., :h, :w] for x in logits)
        return fused, *logits

    def _losses(
        self, fused: Tensor, class_logits: Tensor, core_logits: Tensor, region_logits: Tensor,
        targets: list[dict[str, Tensor]], images: Tensor | None = None,
    ) -> dict[str, Tensor]:
        dev = fused.device
        class_mask = torch.stack([t["class_mask"] for t in targets]).to(dev, non_blocking=True).long()
        core_mask = torch.stack([t["core_mask"] for t in targets]).to(dev, non_blocking=True)
        region_mask = (torch.stack([t["region_mask"] for t in targets]).to(dev, non_blocking=True)
                       if self.region_kinds else None)
        losses = segmentation_losses(class_logits, core_logits, class_mask, core_mask, region_logits, region_mask)
        losses.update(self._rec_losses(fused, targets, images))
        return self._weighted(losses)

    def _weighted(self, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: v * self.loss_weights[k] for k, v in losses.items()}

    def _rec_losses(self, fused: Tensor, targets: list[dict[str, Tensor]],
                    images: Tensor | None = None) -> dict[str, Tensor]:
        """Unweighted reading losses {rec, ctc} of the targets' lines, read from ``fused``."""
        dev = fused.device
        losses: dict[str, Tensor] = {}
        quads = [t["line_quads"].to(dev, torch.float32) for t in targets]
        tokens = [t["line_tokens"] for t in targets]
        folds = [t.get("line_fold_case", torch.zeros(len(tok), dtype=torch.bool)) for t, tok in zip(targets, tokens)]
        if self.training:
            k = self.reads_per_line
            quads, tokens, folds = self._cap_lines(self.max_lines_per_batch // k, quads, tokens, folds)
            # Each line read k times, each time through its own box noise: more reading signal per
            # page for the price of the head alone (the backbone has already run).
            quads = [jitter_quads(q.repeat(k, 1, 1), self.quad_jitter, self.quad_grow, self.quad_shear) for q in quads]
            tokens = [t.repeat(k, 1) for t in tokens]
            folds = [f.repeat(k) for f in folds]
        n_lines = sum(q.shape[0] for q in quads)
        if n_lines:
            fold = torch.cat(folds).cpu()  # host flags (to_model_input leaves them there): no device sync
            case_free = (fold.to(dev, non_blocking=True), self.case_partner) if bool(fold.any()) else None
            losses.update(self.rec_head.loss(fused, quads, self._pad_tokens(tokens, dev), self.label_smoothing,
                                             self.rec_branches, images=images, case_free=case_free,
                                             stretch=self.line_stretch if self.training else 0.0))
        else:
            # Zero, but through every head parameter: DDP without find_unused_parameters
            # (p_min = 1) expects a gradient for each of them in every step.
            zero = sum(p.sum() for p in self.rec_head.parameters()).float() * 0.0
            losses.update({k: zero for k in self.rec_branches})
        return losses

    def _cap_lines(self, cap: int, quads: list[Tensor], *per_line: list[Tensor]) -> tuple[list[Tensor], ...]:
        """A random subset of at most ``cap`` lines, to bound the head's memory: the same lines of
        ``quads`` and of each list in ``per_line`` (their tokens, flags...), image by image."""
        counts = [q.shape[0] for q in quads]
        total = sum(counts)
        if total <= cap:
            return (quads, *per_line)
        chosen = torch.zeros(total, dtype=torch.bool)
        chosen[torch.randperm(total)[: max(cap, 1)]] = True
        keep = chosen.split(counts)
        return tuple([x[k.to(x.device)] for x, k in zip(xs, keep)] for xs in (quads, *per_line))

    def _pad_tokens(self, tokens: list[Tensor], device: torch.device) -> Tensor:
        """Concatenate the images' token rows, PAD-extended to a common length (capped at max_len)."""
        t = min(max(x.shape[1] for x in tokens if x.shape[0]), self.rec_head.max_len)
        rows = [F.pad(x[:, :t], (0, t - min(x.shape[1], t)), value=self.charset.pad_id) for x in tokens]
        return torch.cat(rows).to(device, non_blocking=True)

    def _predict(self, fused: Tensor, class_logits: Tensor, core_logits: Tensor, region_logits: Tensor,
                 images: Tensor | None = None) -> list[dict]:
        class_maps, (detections,) = self._detections(class_logits, core_logits)
        region_np = region_logits.float().sigmoid().cpu().numpy()
        quads = [torch.from_numpy(line_quads([p for p, _, _ in d])) for d in detections]
        reads = self._read(fused, quads, images=images)
        out = []
        for b, dets in enumerate(detections):
            in_region = line_regions([p for p, _, _ in dets], region_np[b])
            lines = [
                {"polygon": poly.tolist(), "kind": self.kinds[kind], "text": text, "confidence": conf,
                 "score": score, "region": None if r is None else self.region_kinds[r]}
                for (poly, kind, score), (text, conf), r in zip(dets, reads[b], in_region)
            ]
            out.append({"lines": lines, "class_map": class_maps[b],
                        "region_map": torch.from_numpy(region_np[b] > 0.5)})
        return out

    def _detections(self, class_logits: Tensor, core_logits: Tensor, settings: Sequence[Mapping] = ({},)
                    ) -> tuple[Tensor, list[list[list]]]:
        """Class maps [B, H, W] (CPU) and, for each of ``settings`` (overrides of ``postprocess``; ``{}``: as
        configured), each image's lines (polygon, kind index, score) from the logits; the probabilities once."""
        class_prob, core_prob = class_and_core_probs(class_logits, core_logits)
        class_np, core_np = class_prob.cpu().numpy(), core_prob.cpu().numpy()
        return class_prob.argmax(dim=1).cpu(), [
            [lines_from_maps(class_np[b], core_np[b], **{**self.postprocess, **setting}) for b in range(len(class_np))]
            for setting in settings]

    @torch.no_grad()
    def detect(self, images: Tensor) -> list[list[np.ndarray]]:
        """Eval-mode line polygons of each image (input pixels), without reading them: the cheap first
        pass of reading a page at the scale of its lines (:func:`docrec.inference.line_scaled_long_sides`)."""
        return self.detect_each(images, [{}])[0]

    @torch.no_grad()
    def detect_each(self, images: Tensor, settings: Sequence[Mapping]) -> list[list[list[np.ndarray]]]:
        """:meth:`detect` at each of ``settings`` (overrides of ``postprocess``, e.g. ``{"min_score": 0.7}``) from one
        forward pass: polygons [setting][image] (``scripts/sweep_postprocess.py``)."""
        _, class_logits, core_logits, _ = self._maps(images)
        _, by_setting = self._detections(class_logits, core_logits, settings)
        return [[[poly for poly, _, _ in dets] for dets in per_image] for per_image in by_setting]

    @torch.no_grad()
    def predict_and_read(
        self, images: Tensor, quads: list[Tensor], decoders: Sequence[str] = ("attention",)
    ) -> tuple[list[dict], dict[str, list[list[tuple[str, float]]]]]:
        """Eval-mode predictions and the reading of given quads by each decoder, from one backbone pass (validation)."""
        fused, *logits = self._maps(images)
        return (self._predict(fused, *logits, images=images),
                {d: self._read(fused, quads, d, images) for d in decoders})

    @torch.no_grad()
    def recognize(self, images: Tensor, quads: list[Tensor]) -> list[list[tuple[str, float]]]:
        """Read given line quads ([N, 4, 2] per image, TL TR BR BL in pixels): (text, confidence) each.

        Meant for eval mode (CER on ground-truth lines); in train mode blocks would be dropped.
        """
        return self._read(self.fused_map(images), quads, images=images)

    def _read(self, fused: Tensor, quads: list[Tensor], decoder: str | None = None,
              images: Tensor | None = None) -> list[list[tuple[str, float]]]:
        """Read all lines in chunks of ``max_lines_per_batch`` (the head's decoder unless one is given;
        ``images``, the normalised pages, for a head with a pixel stem)."""
        owners = [(b, i) for b, q in enumerate(quads) for i in range(q.shape[0])]
        out: list[list[tuple[str, float]]] = [[("", 0.0)] * q.shape[0] for q in quads]
        chunk = max(self.max_lines_per_batch, 1)
        for start in range(0, len(owners), chunk):
            part = owners[start : start + chunk]
            per_image = [
                torch.stack([quads[b][i] for b, i in part if b == img]).float().to(fused.device)
                if any(b == img for b, _ in part) else fused.new_zeros((0, 4, 2), dtype=torch.float32)
                for img in range(len(quads))
            ]
            ids, conf = self.rec_head.read(fused, per_image, decoder, images=images)
            for (b, i), row, c in zip(part, ids, conf.tolist()):
                out[b][i] = (self.charset.decode(row), c)
        return out
