"""ONNX export of a trained model: segmentation, line encoder (+ CTC head) and one decoder step, plus charset and metadata.

The network is cut where its shapes stop being static tensor programs:

- ``segmentation.onnx``: normalised image [1, 3, H, W] (H, W multiples of 32) -> class
  probabilities [1, C, H, W], core probabilities [1, H, W], region probabilities [1, R, H, W]
  and the fused stride-4 map.
- post-processing stays in Python: :func:`docrec.postprocess.lines_from_maps`
  (connected components, distance transforms, contours: OpenCV, not ONNX) and
  :func:`docrec.geometry.line_quad` turn the maps into line quads.
- ``encoder.onnx``: fused map [1, F, h, w] + quads [N, 4, 2] (input pixels) (+ the normalised image
  [1, 3, H, W] given to ``segmentation.onnx``, input ``image``, for a model with a pixel stem:
  ``export.json``'s ``pixel_stem``) -> memory
  [N, roi_max_width, d], its padding mask, the CTC head's log-probabilities
  ``ctc_log_probs`` [N, roi_max_width * ctc_frames, V] (blank = PAD; a column's padding holds for its
  ``model.recognition.ctc_frames`` frames) and every decoder layer's
  cross-attention keys and values ``cross_keys``/``cross_values`` [L, N, H, roi_max_width, d/H],
  all from one encoder pass. PyTorch
  cuts the RoI to the widest line of the batch, a data-dependent shape; here every line gets
  ``roi_max_width`` columns, the extra ones masked, which leaves the valid tokens unchanged.
- ``decoder_step.onnx``: one incremental step with a key/value cache, as
  :meth:`RecognitionHead.decode_step`: (cross_keys, cross_values, memory padding, the last token
  [N], ``past_keys``/``past_values`` [L, N, H, t, d/H] of the t tokens before it; t = 0 at BOS)
  -> log-probabilities of the next token [N, V] (PAD and BOS excluded, as in greedy decoding)
  and ``present_keys``/``present_values`` [L, N, H, t+1, d/H] for the next step. The greedy
  loop is Python (``examples/onnx_predict.py``); export format 1 had no cache (the whole
  prefix in, every step).

Which of the two reads lines is the model's ``decoder_kind`` (``export.json``'s ``decoder``):
``attention`` runs the greedy loop over ``decoder_step.onnx``; ``ctc`` needs only the encoder
(best path over the valid columns, repeats merged, blanks dropped: NumPy in the example).

``export.json`` holds what a runtime needs besides the graphs (pre-processing, kinds, token
ids, decoder, post-processing settings); ``charset.json`` the vocabulary.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.export import Dim

from docrec.data.augment import WHITE
from docrec.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from docrec.inference import load_model, reading_long_side_of
from docrec.models.docrec_model import SIZE_DIVISOR, DocRecModel
from docrec.models.recognition import RecognitionHead
from docrec.models.roi import roi_widths, sample_rois
from docrec.text import SPECIALS, Charset

FORMAT_VERSION = 2  # 2: decoder_step.onnx with a key/value cache; the encoder gives the cross-attention cache
DEFAULT_OPSET = 18
SEGMENTATION_FILE, ENCODER_FILE, DECODER_FILE = "segmentation.onnx", "encoder.onnx", "decoder_step.onnx"
CHARSET_FILE, META_FILE = "charset.json", "export.json"

log = logging.getLogger(__name__)


class SegmentationGraph(nn.Module):
    """Image -> (class probabilities, core probabilities, fused map): ``DocRecModel`` up to post-processing."""

    def __init__(self, model: DocRecModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        fused, class_logits, core_logits, region_logits = self.model._maps(image)
        return (torch.softmax(class_logits.float(), dim=1), core_logits.float().sigmoid(),
                region_logits.float().sigmoid(), fused)


class EncoderGraph(nn.Module):
    """Fused map of one image + its line quads -> memory [N, roi_max_width, d], padding [N, roi_max_width],
    CTC log-probabilities [N, roi_max_width, V] and the decoder's cross-attention cache.

    :meth:`RecognitionHead.encode` with the RoI width fixed at ``roi_max_width`` (see the module doc),
    then :meth:`RecognitionHead.ctc_log_probs` and :meth:`RecognitionHead.cross_cache` of its memory
    (columns past a line's width are padding).
    """

    def __init__(self, head: RecognitionHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, fused: Tensor, quads: Tensor, image: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        head = self.head
        width = head.roi_max_width
        widths = roi_widths(quads, head.stride, width, per_column=head.roi_column_samples)
        rois = sample_rois(fused, quads, widths, width, head.stride, head.roi_height, head.roi_oversample)
        valid = torch.arange(width, device=quads.device)[None] < widths[:, None]
        pixels = None
        if head.pixel_stem is not None:  # RecognitionHead.line_pixels of one image (the stem masks the padding)
            k = head.pixel_stem.samples_per_column
            pixels = sample_rois(image, quads, widths * k, width * k, 1, head.pixel_stem.height)
        memory, padding = head.memory(rois * valid[:, None, None, :], valid, pixels)
        return (memory, padding, head.ctc_log_probs(memory), *head.cross_cache(memory))


class DecoderStepGraph(nn.Module):
    """:meth:`RecognitionHead.decode_step` with log-probabilities out, PAD and BOS at -inf."""

    def __init__(self, head: RecognitionHead) -> None:
        super().__init__()
        self.head = head
        banned = torch.zeros(head.classifier.out_features, dtype=torch.bool)
        banned[[head.pad_id, head.bos_id]] = True
        self.register_buffer("banned", banned, persistent=False)

    def forward(self, cross_keys: Tensor, cross_values: Tensor, memory_padding: Tensor, token: Tensor,
                past_keys: Tensor, past_values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits, keys, values = self.head.decode_step(token, past_keys, past_values, cross_keys, cross_values,
                                                     memory_padding)
        return logits.float().masked_fill(self.banned, float("-inf")).log_softmax(-1), keys, values


def _export(module: nn.Module, args: tuple, path: Path, names: tuple[list[str], list[str]],
            dynamic_shapes: dict, opset: int) -> None:
    inputs, outputs = names
    with warnings.catch_warnings():
        # Axes that share one Dim (the line count of several inputs) are reported one by one.
        warnings.filterwarnings("ignore", message=r".*will not be used, since it shares the same shape constraints")
        program = torch.onnx.export(
            module.eval(), args, dynamo=True, opset_version=opset, input_names=inputs, output_names=outputs,
            dynamic_shapes=dynamic_shapes, external_data=False, verbose=False,
        )
        program.save(str(path))


def export_model(model: DocRecModel, out_dir: str | Path, long_side: int, opset: int = DEFAULT_OPSET) -> dict:
    """Write the three ONNX graphs, ``charset.json`` and ``export.json`` to ``out_dir``; returns the metadata.

    The model is switched to eval mode and float32 in place. ``long_side`` is the page size
    the runtime should scale to (the checkpoint's reading long side: ``data.long_side`` x ``data.read_scale``).
    """
    if opset < 17:
        raise ValueError(f"opset {opset} is too old: GridSample and LayerNormalization need 17 or later")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    head = model.rec_head
    # Example inputs only fix ranks and dtypes; every size marked dynamic below stays symbolic.
    # Sizes > 1 so that no dynamic dimension is specialised to the 0/1 cases.
    image = torch.zeros(1, 3, 2 * SIZE_DIVISOR, 3 * SIZE_DIVISOR)
    h32, w32 = Dim("h32", min=1, max=1024), Dim("w32", min=1, max=1024)
    log.info("exporting %s", SEGMENTATION_FILE)
    _export(SegmentationGraph(model), (image,), out / SEGMENTATION_FILE,
            (["image"], ["class_prob", "core_prob", "region_prob", "fused"]),
            {"image": {2: SIZE_DIVISOR * h32, 3: SIZE_DIVISOR * w32}}, opset)

    with torch.no_grad():
        fused = model.fused_map(image)
    quads = torch.tensor([[[4, 4], [60, 4], [60, 20], [4, 20]], [[8, 30], [90, 32], [89, 50], [7, 48]]],
                         dtype=torch.float32)
    n_lines = Dim("lines", min=1, max=4096)
    log.info("exporting %s", ENCODER_FILE)
    stem = head.pixel_stem is not None
    enc_args = (fused, quads, image) if stem else (fused, quads)
    enc_shapes = {"fused": {2: Dim("fused_h", min=1), 3: Dim("fused_w", min=1)}, "quads": {0: n_lines}}
    if stem:
        enc_shapes["image"] = {2: Dim("image_h", min=2), 3: Dim("image_w", min=2)}
    _export(EncoderGraph(head), enc_args, out / ENCODER_FILE,
            (["fused", "quads", "image"][: len(enc_args)],
             ["memory", "memory_padding", "ctc_log_probs", "cross_keys", "cross_values"]),
            enc_shapes, opset)

    with torch.no_grad():
        _, padding, _, cross_k, cross_v = EncoderGraph(head).eval()(*enc_args)
        token = torch.tensor([head.bos_id, head.bos_id])
        # Two tensors: one object passed twice would be traced as one input serving both.
        past_k, past_v = (cross_k.new_zeros((*cross_k.shape[:3], 2, cross_k.shape[-1])) for _ in range(2))
    memory_len = Dim("memory_len", min=1, max=head.roi_max_width)
    past_len = Dim("past_len", min=0, max=head.max_len)
    log.info("exporting %s", DECODER_FILE)
    _export(DecoderStepGraph(head), (cross_k, cross_v, padding, token, past_k, past_v), out / DECODER_FILE,
            (["cross_keys", "cross_values", "memory_padding", "token", "past_keys", "past_values"],
             ["log_probs", "present_keys", "present_values"]),
            {"cross_keys": {1: n_lines, 3: memory_len}, "cross_values": {1: n_lines, 3: memory_len},
             "memory_padding": {0: n_lines, 1: memory_len}, "token": {0: n_lines},
             "past_keys": {1: n_lines, 3: past_len}, "past_values": {1: n_lines, 3: past_len}}, opset)

    charset: Charset = model.charset
    (out / CHARSET_FILE).write_text(json.dumps(charset.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    meta = {
        "format_version": FORMAT_VERSION,
        "opset": opset,
        "files": {"segmentation": SEGMENTATION_FILE, "encoder": ENCODER_FILE, "decoder_step": DECODER_FILE,
                  "charset": CHARSET_FILE},
        "kinds": list(model.kinds),
        "region_kinds": list(model.region_kinds),
        "classes": ["background", *model.kinds],
        "long_side": int(long_side),
        "size_divisor": SIZE_DIVISOR,
        "pad_value": WHITE,
        # normalised = (rgb_uint8 - 255 * mean) / (255 * std), RGB order
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "fused_stride": head.stride,
        "roi_max_width": head.roi_max_width,
        "roi_column_samples": head.roi_column_samples,
        # True: encoder.onnx reads the normalised page image too (its input "image"). Absent in older exports.
        "pixel_stem": stem,
        "max_len": head.max_len,
        # The decoder's key/value cache: past_keys/past_values are [layers, lines, heads, t, head_dim].
        "decoder_cache": {"layers": int(cross_k.shape[0]), "heads": int(cross_k.shape[2]),
                          "head_dim": int(cross_k.shape[-1])},
        # How lines are read: "attention" (greedy loop over decoder_step.onnx) or "ctc" (best path over
        # encoder.onnx's ctc_log_probs, blank = the "pad" token). Absent in older exports: attention.
        "decoder": head.decoder_kind,
        # ctc: the blank's log-probability is lowered by this before each frame's best symbol is taken
        # (RecognitionHead.ctc_greedy). Absent in older exports: 0.
        "blank_penalty": head.blank_penalty,
        # ctc: encoder.onnx is run once per shift with every quad moved across its line by that many line
        # heights (docrec.geometry.shift_across), and the runs' ctc_log_probs averaged as probabilities
        # (RecognitionHead.read). Absent in older exports: [0.0], one run.
        "read_shifts": list(head.read_shifts),
        # ctc: 1 = best path; N >= 2 = prefix beam search keeping N texts (docrec.decoding.ctc_prefix_beam),
        # each candidate's score (1 - rescore) x CTC + rescore x the attention decoder's log-probability of it
        # (teacher-forced over decoder_step.onnx, EOS included; RecognitionHead.ctc_beam_search).
        # Absent in older exports: 1 and 0.
        "ctc_beam": head.ctc_beam,
        "rescore": head.rescore,
        "tokens": {name.strip("<>"): SPECIALS.index(name) for name in SPECIALS},
        "postprocess": dict(model.postprocess),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return meta


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, weights: str = "ema",
                      long_side: int | None = None, opset: int = DEFAULT_OPSET) -> dict:
    """Load a checkpoint (file or run dir) on the CPU and :func:`export_model` it."""
    model, _, cfg = load_model(checkpoint, weights, "cpu")
    return export_model(model, out_dir, reading_long_side_of(long_side, cfg), opset)
