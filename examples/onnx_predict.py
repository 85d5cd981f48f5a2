"""Read a page with an exported docrec model: onnxruntime, NumPy, OpenCV and Pillow, no training code.

    python scripts/export.py --checkpoint outputs/.../checkpoints/best.pt --output exported/
    python examples/onnx_predict.py exported/ page.png [--json page.json] [--decoder {attention,ctc}]

The pipeline: resize the long side, pad to a multiple of 32 with white, normalise ->
segmentation.onnx -> lines_from_maps (Python/OpenCV post-processing) -> a rotated quad per
line -> encoder.onnx -> text per line, read by the model's decoder (``export.json``'s
``decoder``; ``--decoder`` overrides it): ``attention``, a greedy loop over decoder_step.onnx,
or ``ctc``, the best path over the encoder's CTC log-probabilities (NumPy, no loop). It gives
what ``DocRecModel.forward`` gives for the same checkpoint (tests/test_export.py checks it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from PIL import Image

# docrec's geometry and post-processing are NumPy + OpenCV (not ONNX) and import no torch:
# used here as they are, not copied (tests/test_export.py::test_example_runs_without_torch).
from docrec.decoding import beam_read
from docrec.geometry import centre_read, line_quad, shift_across
from docrec.images import scaled_size
from docrec.postprocess import line_regions, lines_from_maps

DECODERS = ("attention", "ctc")


class OnnxPageReader:
    """The three exported graphs and their metadata: page image (RGB uint8) in, lines with text out.

    ``decoder`` ("attention" or "ctc") overrides the exported model's ``decoder`` (exports that
    predate the CTC head have none and read with the attention decoder).
    """

    def __init__(self, model_dir: str | Path, providers: list[str] | None = None, chunk: int = 64,
                 decoder: str | None = None) -> None:
        folder = Path(model_dir)
        self.meta = json.loads((folder / "export.json").read_text(encoding="utf-8"))
        self.decoder = decoder or self.meta.get("decoder", "attention")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        charset = json.loads((folder / self.meta["files"]["charset"]).read_text(encoding="utf-8"))
        self.chars, self.n_special = charset["chars"], len(charset["specials"])
        providers = providers or ["CPUExecutionProvider"]
        self.seg, self.enc, self.dec = (
            ort.InferenceSession(str(folder / self.meta["files"][k]), providers=providers)
            for k in ("segmentation", "encoder", "decoder_step")
        )
        self.tokens = self.meta["tokens"]
        self.chunk = chunk
        if self.decoder == "ctc" and "ctc_log_probs" not in {o.name for o in self.enc.get_outputs()}:
            raise ValueError(f"{folder}: this export's encoder has no ctc_log_probs output (re-export it)")
        if self.decoder == "attention" and self.meta.get("format_version", 1) < 2:
            raise ValueError(f"{folder}: export format {self.meta.get('format_version', 1)} has a decoder step "
                             "without a key/value cache; re-export it with scripts/export.py")

    def preprocess(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """Normalised [1, 3, H, W] float32 (long side scaled, padded right/bottom to 32) and the scale."""
        h, w = rgb.shape[:2]
        scale = self.meta["long_side"] / max(h, w)
        size = scaled_size(w, h, self.meta["long_side"])
        # As training and predict.py resample: shrinking with PIL's BOX filter (docrec.images.read_image),
        # enlarging with OpenCV's INTER_LINEAR (albumentations' LongestMaxSize).
        if size[0] < w:
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
        elif size[0] > w:
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
        d = self.meta["size_divisor"]
        pad_h, pad_w = -rgb.shape[0] % d, -rgb.shape[1] % d
        rgb = cv2.copyMakeBorder(rgb, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(self.meta["pad_value"],) * 3)
        mean = np.asarray(self.meta["mean"], np.float32) * 255
        std = np.asarray(self.meta["std"], np.float32) * 255
        x = (rgb.astype(np.float32) - mean) / std
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), scale

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(class probabilities [C, H, W], core probabilities [H, W], region probabilities [R, H, W],
        fused map [1, F, H/4, W/4])."""
        class_prob, core_prob, region_prob, fused = self.seg.run(None, {"image": image})
        return class_prob[0], core_prob[0], region_prob[0], fused

    def read(self, fused: np.ndarray, quads: np.ndarray, image: np.ndarray | None = None) -> list[tuple[str, float]]:
        """Read line quads [N, 4, 2] (TL TR BR BL, pixels of the network input) with the reader's decoder:
        (text, confidence) each. ``image``: the network input given to :meth:`segment`, which a reader
        with a pixel stem (``export.json``'s ``pixel_stem``) reads too."""
        out: list[tuple[str, float]] = []
        for start in range(0, len(quads), self.chunk):
            out += self._read_chunk(fused, quads[start : start + self.chunk].astype(np.float32), image)
        return out

    def _read_chunk(self, fused: np.ndarray, quads: np.ndarray, image: np.ndarray | None) -> list[tuple[str, float]]:
        feeds = {"fused": fused, "quads": quads}
        if self.meta.get("pixel_stem", False):
            if image is None:
                raise ValueError("this export's reader has a pixel stem: read(fused, quads, image) needs the image")
            feeds["image"] = image
        if self.decoder == "ctc":
            # Each box read at every one of the export's read_shifts (across its line, in line heights),
            # the reads' probabilities averaged (RecognitionHead.ctc_greedy).
            shifts = self.meta.get("read_shifts", [0.0])
            # With rescoring, the decoder reads the candidates from the box as found (the shift nearest 0).
            rescoring = self.meta.get("ctc_beam", 1) > 1 and self.meta.get("rescore", 0.0) > 0
            centre = centre_read(shifts)
            runs = [self.enc.run(["ctc_log_probs", "memory_padding"]
                                 + (["cross_keys", "cross_values"] if rescoring and i == centre else []),
                                 {**feeds, "quads": shift_across(quads, s)}) for i, s in enumerate(shifts)]
            columns = runs[0][1]
            log_probs = np.logaddexp.reduce(np.stack([r[0] for r in runs]), axis=0) - np.log(len(runs))
            # model.recognition.ctc_frames frames per column: each column's padding holds for its frames.
            padding = np.repeat(columns, log_probs.shape[1] // columns.shape[1], axis=1)
            if self.meta.get("ctc_beam", 1) > 1:
                return self.ctc_beam_search(log_probs, padding, columns, runs[centre][2:] if rescoring else None)
            return self.ctc_best_path(log_probs, padding)
        padding, cross_k, cross_v = self.enc.run(["memory_padding", "cross_keys", "cross_values"], feeds)
        width = int((~padding).sum(axis=1).max())  # columns past the widest line are padding for every line
        padding = np.ascontiguousarray(padding[:, :width])
        cross_k, cross_v = (np.ascontiguousarray(c[..., :width, :]) for c in (cross_k, cross_v))
        n = len(quads)
        pad_id, bos_id, eos_id = self.tokens["pad"], self.tokens["bos"], self.tokens["eos"]
        max_len = self.meta["max_len"]
        ys = np.full((n, max_len), pad_id, np.int64)
        ys[:, 0] = bos_id
        logp_sum, steps = np.zeros(n, np.float32), np.zeros(n, np.float32)
        columns = (~padding).sum(axis=1)  # a line stops after as many characters as it has columns
        # The decoder's key/value cache grows by one position per step; a finished line leaves the batch.
        past_k = past_v = np.zeros((*cross_k.shape[:3], 0, cross_k.shape[-1]), np.float32)
        active, token = np.arange(n), ys[:, 0]
        for t in range(1, max_len):
            if len(active) == 0:
                break
            log_probs, past_k, past_v = self.dec.run(None, {
                "cross_keys": cross_k, "cross_values": cross_v, "memory_padding": padding, "token": token,
                "past_keys": past_k, "past_values": past_v})
            token = log_probs.argmax(axis=1)
            ys[active, t] = token
            logp_sum[active] += log_probs[np.arange(len(active)), token]
            steps[active] += 1
            going = (token != eos_id) & (steps[active] <= columns[active])
            if not going.all():
                active, token, padding = active[going], token[going], padding[going]
                past_k, past_v, cross_k, cross_v = (c[:, going] for c in (past_k, past_v, cross_k, cross_v))
        conf = np.exp(logp_sum / np.maximum(steps, 1.0))
        return [(self.decode_ids(row), float(c)) for row, c in zip(ys, conf)]

    def ctc_best_path(self, log_probs: np.ndarray, padding: np.ndarray) -> list[tuple[str, float]]:
        """CTC best path of log-probabilities [N, W, V] (padding [N, W], True = pad): (text, confidence) per line.

        The most likely symbol per column (the blank's log-probability lowered by the export's
        ``blank_penalty`` first), repeats merged, blanks (PAD) dropped, as
        ``RecognitionHead.ctc_greedy``; the confidence is the geometric mean of the chosen
        columns' probabilities over the valid columns.
        """
        scores = log_probs.copy()
        scores[..., self.tokens["pad"]] -= self.meta.get("blank_penalty", 0.0)
        sym = scores.argmax(axis=-1)
        best = np.take_along_axis(log_probs, sym[..., None], axis=-1)[..., 0]
        valid = ~padding
        conf = np.exp((best * valid).sum(axis=1) / np.maximum(valid.sum(axis=1), 1))
        keep = valid & (sym != self.tokens["pad"])
        keep[:, 1:] &= sym[:, 1:] != sym[:, :-1]
        return [(self.decode_ids(s[k]), float(c)) for s, k, c in zip(sym, keep, conf)]

    def ctc_beam_search(self, log_probs: np.ndarray, padding: np.ndarray, columns: np.ndarray,
                        cross: list[np.ndarray] | None) -> list[tuple[str, float]]:
        """CTC prefix beam search (``export.json``'s ``ctc_beam`` wide, the blank lowered by ``blank_penalty``)
        over log-probabilities [N, W, V] (frame padding [N, W]), the candidates rescored by the attention
        decoder when ``rescore`` > 0 (from ``cross``, one read's cross keys and values, ``columns`` their
        padding), as ``RecognitionHead.ctc_beam_search``: (text, confidence) per line."""
        def attention(owner: list[int], texts: list[tuple[int, ...]]) -> list[float]:
            cross_k, cross_v = cross
            return self.sequence_log_probs(cross_k[:, owner], cross_v[:, owner], columns[owner], texts).tolist()

        read = beam_read(log_probs, (~padding).sum(axis=1).tolist(), self.tokens["pad"], self.meta["ctc_beam"],
                         self.meta.get("blank_penalty", 0.0), self.meta.get("rescore", 0.0), attention)
        return [(self.decode_ids(text), conf) for text, conf in read]

    def sequence_log_probs(self, cross_k: np.ndarray, cross_v: np.ndarray, padding: np.ndarray,
                           texts: list[tuple[int, ...]]) -> np.ndarray:
        """The attention decoder's log-probability of each text (EOS appended) read from its line's cross
        keys and values [L, M, H, S, d], token by token over decoder_step.onnx (teacher-forced)."""
        bos, eos, pad = self.tokens["bos"], self.tokens["eos"], self.tokens["pad"]
        length = min(max(len(t) for t in texts) + 2, self.meta["max_len"])
        tokens = np.full((len(texts), length), pad, np.int64)
        for m, text in enumerate(texts):
            row = [bos, *text[: length - 2], eos]
            tokens[m, : len(row)] = row
        total = np.zeros(len(texts))
        past_k = past_v = np.zeros((*cross_k.shape[:3], 0, cross_k.shape[-1]), np.float32)
        for t in range(length - 1):
            log_probs, past_k, past_v = self.dec.run(None, {
                "cross_keys": cross_k, "cross_values": cross_v, "memory_padding": padding, "token": tokens[:, t],
                "past_keys": past_k, "past_values": past_v})
            target = tokens[:, t + 1]
            total += np.where(target != pad, log_probs[np.arange(len(texts)), target], 0.0)
        return total

    def decode_ids(self, ids) -> str:
        """Text up to the first EOS; PAD/BOS skipped, UNK shown as U+FFFD."""
        chars = []
        for i in ids:
            i = int(i)
            if i == self.tokens["eos"]:
                break
            if i == self.tokens["unk"]:
                chars.append("\ufffd")
            elif i >= self.n_special:
                chars.append(self.chars[i - self.n_special])
        return "".join(chars)

    def __call__(self, rgb: np.ndarray) -> list[dict]:
        """Lines of a page: polygon (pixels of ``rgb``), kind, text, confidence and detection score."""
        image, scale = self.preprocess(rgb)
        class_prob, core_prob, region_prob, fused = self.segment(image)
        detections = lines_from_maps(class_prob, core_prob, **self.meta["postprocess"])
        regions = line_regions([poly for poly, _, _ in detections], region_prob)
        if not detections:
            return []
        quads = np.stack([line_quad(poly) for poly, _, _ in detections])
        reads = self.read(fused, quads, image)
        height, width = rgb.shape[:2]
        lines = []
        for (poly, kind, score), (text, conf), r in zip(detections, reads, regions):
            poly = np.stack([(poly[:, 0] / scale).clip(0, width), (poly[:, 1] / scale).clip(0, height)], axis=1)
            lines.append({"polygon": poly.round(1).tolist(), "kind": self.meta["kinds"][kind], "text": text,
                          "confidence": round(conf, 4), "score": round(score, 4),
                          "region": None if r is None else self.meta["region_kinds"][r]})
        return lines


def read_rgb(path: Path) -> np.ndarray:
    """RGB uint8, EXIF orientation ignored (as docrec's reader, which decodes with PIL)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise SystemExit(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", type=Path, help="folder written by scripts/export.py")
    ap.add_argument("image", type=Path, help="page image")
    ap.add_argument("--json", type=Path, help="write the lines as JSON here (default: print them)")
    ap.add_argument("--decoder", choices=DECODERS, default=None,
                    help="how to read lines (default: the exported model's decoder, attention for older exports)")
    args = ap.parse_args(argv)
    reader = OnnxPageReader(args.model_dir, decoder=args.decoder)
    rgb = read_rgb(args.image)
    lines = reader(rgb)
    record = {"image": str(args.image), "width": rgb.shape[1], "height": rgb.shape[0], "lines": lines}
    if args.json:
        args.json.write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
    else:
        for ln in lines:
            print(f"{ln['kind']:<12} {ln['confidence']:.3f}  {ln['text']}")
    print(f"{args.image}: {len(lines)} lines", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
