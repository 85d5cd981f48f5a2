"""Recognition head: RoI tokens of each line -> transformer encoder -> CTC and a character transformer decoder."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from docrec.decoding import beam_read
from docrec.geometry import centre_read, shift_across
from docrec.models.roi import flatten_quads, roi_widths, sample_lines, width_buckets
from docrec.settings import ConfigError

#: How a line is read at inference: the attention decoder (greedy) or the CTC head (one parallel pass).
DECODERS = ("attention", "ctc")
#: Lines are read in groups whose widest is at most this many times their narrowest (padding <= 20 %).
WIDTH_GROUPS = 1.25
#: The loss (``loss_weights`` key) that trains each decoder.
DECODER_LOSS = {"attention": "rec", "ctc": "ctc"}
#: Candidate texts the attention decoder rescores in one pass (:meth:`RecognitionHead.sequence_log_probs`).
RESCORE_CHUNK = 256
#: How far the CTC reader may move a box across its line (in line heights): further, it reads the neighbour.
MAX_READ_SHIFT = 0.5


def check_read_shifts(shifts, key: str = "read_shifts") -> tuple[float, ...]:
    """``shifts`` as a tuple of floats if it is a non-empty list of finite numbers within
    +-:data:`MAX_READ_SHIFT`, else a ConfigError naming ``key``."""
    if isinstance(shifts, (str, bytes)) or not hasattr(shifts, "__iter__"):
        raise ConfigError(f"{key} must be a list of shifts in line heights (e.g. [-0.1, 0.0, 0.1]), got {shifts!r}")
    out = list(shifts)
    if not out:
        raise ConfigError(f"{key} must hold at least one shift ([0.0]: each box read once, as found)")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) > MAX_READ_SHIFT:
            raise ConfigError(f"{key} must be finite numbers within +-{MAX_READ_SHIFT} line heights, got {v!r}")
    return tuple(float(v) for v in out)


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """Fixed sine/cosine positions [length, dim] (Vaswani et al.): the same code for column j in any line."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class LocalMixer(nn.Module):
    """Residual 1-D convolution along the line (kernel 5, GELU): each column sees its neighbours.

    Attention alone learns locality slowly; CRNN's convolutions and SVTR's local mixing give
    it from the start, which is what lets CTC align columns to characters early.
    """

    def __init__(self, dim: int, kernel: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
        self.act = nn.GELU()

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """``x`` [N, W, d] with padding columns zeroed by ``valid`` [N, W] before mixing."""
        x = x * valid[..., None].to(x.dtype)
        return x + self.act(self.conv(x.transpose(1, 2))).transpose(1, 2)


class PixelStem(nn.Module):
    """A small CNN over the page's own pixels inside each line box: a token per reader column.

    The fused map has one column per 4 px, learned through the whole backbone; the stem sees
    the line at one sample per input pixel along it (4 samples a reader column) and ``height``
    rows across it, and two 2x2 poolings and a height-folding convolution bring it to the
    reader's columns. Its tokens are added to the RoI tokens: the reader gets the strokes of
    the glyphs directly, the fused map keeps the page's context.
    """

    def __init__(self, d_model: int, channels: int, height: int, samples_per_column: int) -> None:
        super().__init__()
        if samples_per_column != 4:
            raise ValueError(f"the pixel stem pools 4 samples into a reader column, got {samples_per_column}: "
                             "model.recognition.roi_column_samples must be 1 with it (or pixel_stem=0)")
        if height < 8 or height % 4:
            raise ValueError(f"pixel_stem_height must be a multiple of 4 and >= 8, got {height}")
        self.height, self.samples_per_column = height, samples_per_column
        c1, c2, c3 = channels, 2 * channels, 4 * channels

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.blocks = nn.ModuleList([nn.Sequential(*block(3, c1)), nn.Sequential(*block(c1, c2)),
                                     nn.Sequential(*block(c2, c3))])
        self.pool = nn.MaxPool2d(2)
        self.fold = nn.Conv2d(c3, d_model, (height // 4, 1))  # [1, W]: the height folded, one token per column

    def forward(self, pixels: Tensor, valid: Tensor) -> Tensor:
        """Line pixels [N, 3, height, 4W] and the columns' validity [N, W] -> tokens [N, W, d].

        The pixels and every block's output are zeroed past the line's end, so a column reads the
        same whatever the padding after its line (a width group's, or ``roi_max_width``'s in the
        ONNX graph) and whatever the sampler put there.
        """

        def masked(x: Tensor) -> Tensor:
            keep = valid.repeat_interleave(x.shape[-1] // valid.shape[-1], dim=1)
            return x * keep[:, None, None, :].to(x.dtype)

        x = masked(pixels)
        for i, block in enumerate(self.blocks):
            x = masked(block(self.pool(x) if i else x))
        return self.fold(x).squeeze(2).transpose(1, 2)


def ctc_best_symbols(log_probs: Tensor, blank: int, blank_penalty: float = 0.0) -> Tensor:
    """The best symbol per CTC frame [..., T] of ``log_probs`` [..., T, V], the blank's log-probability
    lowered by ``blank_penalty`` first (0: plain best path)."""
    if not blank_penalty:
        return log_probs.argmax(-1)
    penalty = torch.zeros(log_probs.shape[-1], dtype=log_probs.dtype, device=log_probs.device)
    penalty[blank] = blank_penalty
    return (log_probs - penalty).argmax(-1)


def merge_cases(log_p: Tensor, partner: Tensor, rows: Tensor) -> Tensor:
    """``log_p`` [..., V] with, where ``rows`` (broadcast over the leading dims) is True, each cased
    letter's log-probability replaced by that of either case (``logaddexp`` with ``partner[v]``'s).

    Only a label's column and the blank are ever read by the losses, so the merged rows need not
    sum to one: an upper-case label then costs nothing when the line is read in small letters.
    """
    cased = partner != torch.arange(len(partner), device=partner.device)
    merged = torch.logaddexp(log_p, log_p[..., partner])
    return torch.where(rows[..., None] & cased, merged, log_p)


class RecognitionHead(nn.Module):
    """Reads each line from the fused map: quad RoI, encoder, then a CTC head and an attention decoder.

    The RoI takes ``roi_column_samples`` samples per feature column along the line (at most ``roi_max_width``)
    and ``roi_height`` rows across it, each row averaging ``roi_oversample`` sub-rows; the
    height is folded into the channels, so there is one token per column, mixed with its
    neighbours by ``conv_layers`` residual 1-D convolutions before the transformer encoder. The CTC head on
    the encoder (blank = PAD) aligns image columns to characters from the first steps and
    teaches the encoder where each character is; the decoder cross-attends over the same
    tokens (joint CTC/attention training, as in ESPnet). Dropout lives only in the decoder.
    """

    def __init__(
        self,
        in_channels: int,
        vocab_size: int,
        pad_id: int,
        bos_id: int,
        eos_id: int,
        d_model: int = 256,
        nhead: int = 8,
        encoder_layers: int = 2,
        decoder_layers: int = 3,
        conv_layers: int = 2,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        roi_height: int = 8,
        roi_oversample: int = 2,
        roi_max_width: int = 256,
        roi_column_samples: int = 1,
        max_len: int = 160,
        stride: int = 4,
        decoder: str = "attention",
        token_norm: bool = False,
        ctc_frames: int = 1,
        width_groups: float = WIDTH_GROUPS,
        pixel_stem: int = 0,
        pixel_stem_height: int = 16,
        blank_penalty: float = 0.0,
        read_shifts: Sequence[float] = (0.0,),
        ctc_beam: int = 1,
        rescore: float = 0.0,
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"recognition decoder must be one of {DECODERS}, got {decoder!r}")
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.roi_height, self.roi_oversample = roi_height, roi_oversample
        self.roi_max_width, self.max_len, self.stride = roi_max_width, max_len, stride
        if roi_column_samples < 1:
            raise ValueError(f"roi_column_samples must be >= 1, got {roi_column_samples}")
        self.roi_column_samples = roi_column_samples
        if ctc_frames < 1:
            raise ValueError(f"ctc_frames must be >= 1, got {ctc_frames}")
        self.ctc_frames = ctc_frames
        if width_groups < 0 or 0 < width_groups < 1:
            raise ValueError(f"width_groups must be 0 (every line padded to the widest) or >= 1, got {width_groups}")
        self.width_groups = width_groups if width_groups > 0 else math.inf
        self.decoder_kind = decoder
        if not math.isfinite(blank_penalty) or blank_penalty < 0:
            raise ValueError(f"blank_penalty must be a log-probability >= 0, got {blank_penalty}")
        self.blank_penalty = float(blank_penalty)
        self.read_shifts = check_read_shifts(read_shifts)
        if isinstance(ctc_beam, bool) or not isinstance(ctc_beam, int) or ctc_beam < 1:
            raise ValueError(f"ctc_beam must be an integer >= 1 (1: best path), got {ctc_beam!r}")
        if not 0.0 <= rescore <= 1.0:
            raise ValueError(f"rescore must be in [0, 1] (the attention decoder's share of a line's score), got {rescore}")
        if rescore > 0 and ctc_beam < 2:
            raise ValueError(f"rescore={rescore} weighs the attention decoder over the CTC beam's candidates: "
                             f"it needs ctc_beam >= 2, got {ctc_beam}")
        self.ctc_beam, self.rescore = ctc_beam, float(rescore)
        # Depthwise 3x3 for local context, then one conv that folds the height: one token per column.
        # A full 3x3 here cost more than the whole backbone (every RoI is as wide as the widest line).
        self.roi_proj = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels),
            nn.GELU(),
            nn.Conv2d(in_channels, d_model, (roi_height, 1)),
        )
        # The page's pixels read by a small CNN of pixel_stem channels (0: none; checkpoints before the option).
        self.pixel_stem = (PixelStem(d_model, pixel_stem, pixel_stem_height, stride // roi_column_samples)
                           if pixel_stem > 0 else None)
        self.local = nn.ModuleList(LocalMixer(d_model) for _ in range(conv_layers))
        # At initialisation the RoI tokens have an RMS of ~0.2 against 0.71 for the fixed positions:
        # without a norm the encoder first sees mostly positions. False only for checkpoints written
        # before the option (a config without the key).
        self.token_norm = nn.LayerNorm(d_model) if token_norm else None
        self.register_buffer("memory_pos", sinusoidal_positions(roi_max_width, d_model), persistent=False)
        enc = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(enc, encoder_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        # CTC reads ctc_frames frames per column: at one column per 4 px, small print has ~2.4 columns per
        # character and CTC drops narrow ones ("i", "l", "r", "."); more frames cost a linear layer, not a
        # longer encoder (None for one frame: checkpoints written before the option).
        self.ctc_upsample = nn.Linear(d_model, d_model * ctc_frames) if ctc_frames > 1 else None
        self.ctc_head = nn.Linear(d_model, vocab_size)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.token_pos = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        dec = nn.TransformerDecoderLayer(
            d_model, nhead, dim_feedforward, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(dec, decoder_layers, norm=nn.LayerNorm(d_model))
        self.classifier = nn.Linear(d_model, vocab_size)

    def memory(self, rois: Tensor, valid: Tensor, pixels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """RoI features [N, C, roi_height, W] + validity [N, W] (+ the lines' pixels [N, 3, h, 4W] with a
        pixel stem) -> memory [N, W, d], padding mask (True = pad)."""
        x = self.roi_proj(rois).squeeze(2).transpose(1, 2)
        if self.pixel_stem is not None:
            if pixels is None:
                raise ValueError("this recognition head has a pixel stem: it reads lines from the page images too")
            x = x + self.pixel_stem(pixels.to(x.dtype), valid)
        for mixer in self.local:
            x = mixer(x, valid)
        if self.token_norm is not None:
            x = self.token_norm(x)
        x = x + self.memory_pos[: x.shape[1]].to(x.dtype)
        padding = ~valid
        return self.encoder(x, src_key_padding_mask=padding), padding

    def line_pixels(self, images: Tensor | tuple[Tensor, ...], quads: Tensor, owner: list[int], widths: Tensor,
                    width: int) -> Tensor:
        """The page pixels the stem reads: [N, 3, pixel_stem_height, 4 * width] from ``images`` (the batch
        [B, 3, H, W], normalised, or its ``float().split(1)``); the stem masks past each line's end."""
        stem = self.pixel_stem
        k = stem.samples_per_column
        if quads.shape[0] == 0:
            return quads.new_zeros((0, 3, stem.height, width * k))
        pixels, _ = sample_lines(images, quads, owner, widths * k, 1, stem.height, 1, width=width * k)
        return pixels

    def lines(self, fused: Tensor, quads: list[Tensor], stretch: float = 0.0) -> tuple[Tensor, list[int], Tensor]:
        """Image b's ``quads[b]`` -> all quads [N, 4, 2], their image index (host list) and RoI widths [N]
        (``stretch``: training's random scale of each width, :func:`roi_widths`)."""
        flat, images = flatten_quads(quads, fused.device)
        return flat, images, roi_widths(flat, self.stride, self.roi_max_width, per_column=self.roi_column_samples,
                                        stretch=stretch)

    def encode_lines(self, fused: Tensor, quads: Tensor, owner: list[int], widths: Tensor, *,
                     width: int | None = None, per_image: tuple[Tensor, ...] | None = None,
                     images: Tensor | tuple[Tensor, ...] | None = None) -> tuple[Tensor, Tensor]:
        """Memory [N, W, d] and padding [N, W] (True = pad) of lines ``quads`` of images ``owner`` (a host list);
        W = widest (``width`` as a host value spares :func:`sample_lines` a device-to-host transfer;
        ``per_image``, ``fused.float().split(1)``, spares it a split). ``images``: the normalised page
        images (or their ``float().split(1)``), which a head with a pixel stem reads too."""
        rois, valid = sample_lines(fused if per_image is None else per_image, quads, owner, widths, self.stride,
                                   self.roi_height, self.roi_oversample, width=width)
        pixels = None
        if self.pixel_stem is not None and images is not None:
            pixels = self.line_pixels(images, quads, owner, widths, rois.shape[-1])
        return self.memory(rois.to(fused.dtype), valid, pixels)

    def encoded_groups(self, fused: Tensor, quads: list[Tensor], images: Tensor | None = None,
                       shifts: Sequence[float] = (0.0,), stretch: float = 0.0):
        """Image b's ``quads[b]`` read in width groups (:func:`width_buckets`): yields each group's line
        indices (host list, ordered by image), the same indices on the device, its memories and padding:
        one memory per ``shifts`` entry, the group's boxes moved across their lines by that many line heights
        (a shift keeps each box's length, so the groups and the padding are the same for every shift).

        Two host-device transfers per call (the widths down, all groups' line indices up), none per group.
        ``stretch``: training's random scale of each line's width (:func:`roi_widths`).
        """
        flat, owner, widths = self.lines(fused, quads, stretch)
        w = widths.tolist()
        groups = [sorted(g) for g in width_buckets(w, self.width_groups)]  # by index = by image
        order = torch.tensor([i for g in groups for i in g], dtype=torch.long).to(fused.device)
        per_image = fused.float().split(1)  # once for all groups (see sample_lines)
        pages = images.float().split(1) if images is not None and self.pixel_stem is not None else None
        start = 0
        for group in groups:
            idx = order[start : start + len(group)]
            start += len(group)
            boxes, images_of, width = flat[idx], [owner[i] for i in group], max(w[i] for i in group)
            memories = []
            for shift in shifts:
                memory, padding = self.encode_lines(fused, shift_across(boxes, shift) if shift else boxes, images_of,
                                                    widths[idx], width=width, per_image=per_image, images=pages)
                memories.append(memory)
            yield group, idx, memories, padding

    def encode(self, fused: Tensor, quads: list[Tensor], images: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Memory tokens [N, W, d] and their padding mask [N, W] (True = padding) for image b's ``quads[b]``,
        every line padded to the widest (training and reading go by width groups instead)."""
        return self.encode_lines(fused, *self.lines(fused, quads), images=images)

    def decode(self, memory: Tensor, memory_padding: Tensor, tokens: Tensor) -> Tensor:
        """Next-token logits [N, T, V] for the prefix ``tokens`` [N, T] (causal)."""
        t = tokens.shape[1]
        x = self.embed(tokens) + self.token_pos[:t]
        causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).triu(1)
        out = self.decoder(
            x, memory, tgt_mask=causal, tgt_is_causal=True,
            tgt_key_padding_mask=tokens == self.pad_id, memory_key_padding_mask=memory_padding,
        )
        return self.classifier(out)

    def ctc_log_probs(self, memory: Tensor) -> Tensor:
        """Per-frame log-probabilities [N, W * ctc_frames, V] of the CTC head (blank = PAD); frames
        ``j * ctc_frames ... (j + 1) * ctc_frames - 1`` read column j, left to right."""
        if self.ctc_upsample is not None:
            memory = self.ctc_upsample(memory).unflatten(-1, (self.ctc_frames, -1)).flatten(1, 2)
        return self.ctc_head(memory).float().log_softmax(-1)

    def frame_padding(self, padding: Tensor) -> Tensor:
        """The column padding [N, W] (True = pad) for the CTC frames [N, W * ctc_frames]."""
        return padding.repeat_interleave(self.ctc_frames, dim=1) if self.ctc_frames > 1 else padding

    def loss(self, fused: Tensor, quads: list[Tensor], tokens: Tensor, label_smoothing: float = 0.0,
             branches: tuple[str, ...] = ("rec", "ctc"), images: Tensor | None = None,
             case_free: tuple[Tensor, Tensor] | None = None, stretch: float = 0.0) -> dict[str, Tensor]:
        """Teacher-forced character cross-entropy (``rec``) and CTC (``ctc``) of lines ``tokens`` [N, T].

        ``tokens`` rows are BOS text EOS PAD...; CTC reads the text alone, per character
        (mean over lines of the loss divided by the text length). A line whose text needs more
        frames than its RoI has (columns x ``ctc_frames``) contributes zero CTC loss (``zero_infinity``).
        Lines are read in width groups (:func:`width_buckets`), each padded to its own widest
        line and longest text; the losses are those of the whole batch at once.
        Only the ``branches`` asked for are computed (a branch with loss weight 0 costs nothing).
        ``images``: the normalised page images, which a head with a pixel stem reads too.
        ``case_free``: (Bool[N] lines, Long[V] each token's other case, :meth:`Charset.case_partners`):
        the flagged lines' labels ignore case, so both losses score a letter in either case as the
        label's (the two cases' probabilities summed, :func:`merge_cases`); None: every line as written.
        ``stretch``: each line read with its columns scaled by a random factor in [1 - stretch, 1 + stretch].
        """
        ce_sum = ctc_sum = fused.new_zeros((), dtype=torch.float32)
        n_tokens = 0
        lengths = (tokens != self.pad_id).sum(1).tolist()  # BOS text EOS per line: one transfer for all groups
        for group, idx, (memory,), padding in self.encoded_groups(fused, quads, images, stretch=stretch):
            tok = tokens[idx.to(tokens.device), : max(lengths[i] for i in group)]  # this group's longest text
            text = tok[:, 1:]
            fold = case_free[0][idx] if case_free is not None else None
            if "rec" in branches:
                logits = self.decode(memory, padding, tok[:, :-1]).float()
                if fold is None:
                    ce_sum = ce_sum + F.cross_entropy(logits.flatten(0, 1), text.flatten(), reduction="sum",
                                                      ignore_index=self.pad_id, label_smoothing=label_smoothing)
                else:  # F.cross_entropy's smoothed loss, with the label's probability merged over its cases
                    log_p = logits.log_softmax(-1)
                    label = merge_cases(log_p, case_free[1], fold[:, None]).gather(-1, text[..., None])[..., 0]
                    per_token = -(1 - label_smoothing) * label - label_smoothing * log_p.mean(-1)
                    ce_sum = ce_sum + per_token.masked_fill(text == self.pad_id, 0.0).sum()
                n_tokens += sum(lengths[i] - 1 for i in group)  # the targets: text and EOS
            if "ctc" in branches:
                is_char = (text != self.pad_id) & (text != self.eos_id)
                target_lengths = is_char.sum(1)
                log_probs = self.ctc_log_probs(memory).transpose(0, 1)  # [W, n, V]
                if fold is not None:
                    log_probs = merge_cases(log_probs, case_free[1], fold[None, :])
                per_line = F.ctc_loss(log_probs, text.masked_fill(~is_char, self.pad_id),
                                      (~padding).sum(1) * self.ctc_frames,
                                      target_lengths, blank=self.pad_id, reduction="none", zero_infinity=True)
                ctc_sum = ctc_sum + (per_line / target_lengths.clamp(min=1)).sum()
        out: dict[str, Tensor] = {}
        if "rec" in branches:
            out["rec"] = ce_sum / max(n_tokens, 1)
        if "ctc" in branches:
            out["ctc"] = ctc_sum / max(len(lengths), 1)
        return out

    @torch.no_grad()
    def read(self, fused: Tensor, quads: list[Tensor], decoder: str | None = None,
             max_len: int | None = None, images: Tensor | None = None) -> tuple[list[list[int]], Tensor]:
        """Token ids per line (for ``Charset.decode``) and a confidence each, by the configured (or given)
        decoder; lines are read in width groups, the results in the order of ``quads`` (``images``: as
        :meth:`loss`). The CTC reader reads each box at every one of ``read_shifts`` (:meth:`ctc_greedy`)."""
        n = sum(q.shape[0] for q in quads)
        ids: list[list[int]] = [[] for _ in range(n)]
        conf = torch.zeros(n, device=fused.device)
        ctc = (decoder or self.decoder_kind) == "ctc"
        for group, idx, memories, padding in self.encoded_groups(fused, quads, images,
                                                                 self.read_shifts if ctc else (0.0,)):
            if ctc:
                rows, c = (self.ctc_beam_search(memories, padding, centre_read(self.read_shifts))
                           if self.ctc_beam > 1 else self.ctc_greedy(memories, padding))
            else:
                out, c = self.greedy(memories[0], padding, max_len)
                rows = out.tolist()
            for i, row in zip(group, rows):
                ids[i] = row
            conf[idx] = c.float()
        return ids, conf

    def ctc_greedy(self, memory: Tensor | Sequence[Tensor], padding: Tensor) -> tuple[list[list[int]], Tensor]:
        """Best path: the most likely symbol per column, repeats merged, blanks removed (no loop over steps).

        ``memory``: the lines' memory [N, W, d], or several memories of the same lines (the same boxes
        moved across by ``read_shifts``), whose per-frame probabilities are averaged first: a box a few
        pixels off reads a different guess of the same characters, and their mean errs less than any one.
        The blank's log-probability is lowered by ``blank_penalty`` before each column's symbol is
        chosen: a reader unsure of a hand emits blanks (it falls silent); the penalty makes it write its
        best guess where the blank wins narrowly. The confidence is the geometric mean of the best path's
        column probabilities, unpenalised.
        """
        logp = self.mean_ctc_log_probs(memory)
        sym = ctc_best_symbols(logp, self.pad_id, self.blank_penalty)
        best = logp.gather(-1, sym.unsqueeze(-1)).squeeze(-1)
        valid = ~self.frame_padding(padding)
        conf = torch.exp((best * valid).sum(1) / valid.sum(1).clamp(min=1))
        keep = valid & (sym != self.pad_id)
        keep[:, 1:] &= sym[:, 1:] != sym[:, :-1]
        rows = [s[k].tolist() for s, k in zip(sym, keep)]
        return rows, conf

    def mean_ctc_log_probs(self, memory: Tensor | Sequence[Tensor]) -> Tensor:
        """Per-frame CTC log-probabilities [N, T, V] of one memory, or the mean probabilities of several
        reads of the same lines (:meth:`ctc_greedy`)."""
        reads = [self.ctc_log_probs(m) for m in ([memory] if isinstance(memory, Tensor) else memory)]
        return reads[0] if len(reads) == 1 else torch.logsumexp(torch.stack(reads), 0) - math.log(len(reads))

    def ctc_beam_search(self, memory: Tensor | Sequence[Tensor], padding: Tensor,
                        centre: int = 0) -> tuple[list[list[int]], Tensor]:
        """The CTC reading by prefix beam search (:func:`ctc_prefix_beam`, ``ctc_beam`` wide) instead of
        the best path: a line's text is the label sequence most likely over all its alignments, not the
        labels of its single most likely alignment.

        With ``rescore`` > 0 the beam's candidates are scored again by the attention decoder, which
        reads each candidate as a whole (teacher-forced, EOS included) from one memory, ``memory[centre]``
        (:meth:`read` passes the box as found, :func:`centre_read`; averaging all the reads cost one decoder
        pass each and read no better): a line's score is ``(1 - rescore) x CTC + rescore x attention`` log-probability
        (attention rescoring, as in WeNet). ``memory`` and ``padding`` as :meth:`ctc_greedy`, with the
        same ``blank_penalty`` on the blank; the confidence is the chosen text's CTC probability per frame
        (geometric mean, over the alignments the beam kept, with the blank so lowered).
        """
        memories = [memory] if isinstance(memory, Tensor) else list(memory)
        logp = self.mean_ctc_log_probs(memories)
        frames = (~self.frame_padding(padding)).sum(1).tolist()
        read = beam_read(logp.float().cpu().numpy(), frames, self.pad_id, self.ctc_beam, self.blank_penalty,
                         self.rescore, lambda owner, texts: self.sequence_log_probs(
                             memories[centre], padding, owner, texts).tolist())
        conf = torch.tensor([c for _, c in read], dtype=torch.float32, device=padding.device)
        return [list(text) for text, _ in read], conf

    def never_read(self, device: torch.device) -> Tensor:
        """[V] added to the decoder's logits before its softmax: -inf for PAD and BOS, which no line holds."""
        banned = torch.zeros(self.classifier.out_features, device=device)
        banned[[self.pad_id, self.bos_id]] = float("-inf")
        return banned

    @torch.no_grad()
    def sequence_log_probs(self, memory: Tensor, padding: Tensor, owner: Sequence[int],
                           texts: Sequence[Sequence[int]]) -> Tensor:
        """The attention decoder's log-probability [M] of each text ``texts[m]`` (token ids, EOS appended)
        read from line ``owner[m]`` of ``memory`` [N, W, d], teacher-forced, :data:`RESCORE_CHUNK` texts a
        pass; PAD and BOS are never read, as in :meth:`greedy`."""
        dev = padding.device
        if not texts:
            return torch.zeros(0, device=dev)
        length = min(max(len(t) for t in texts) + 2, self.max_len)
        tokens = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
        for m, text in enumerate(texts):
            row = [self.bos_id, *text[: length - 2], self.eos_id]
            tokens[m, : len(row)] = torch.tensor(row)
        tokens = tokens.to(dev)
        rows = torch.tensor(list(owner), dtype=torch.long, device=dev)
        target = tokens[:, 1:]
        banned = self.never_read(dev)
        total = torch.zeros(len(texts), device=dev)
        for start in range(0, len(texts), RESCORE_CHUNK):  # the decoder's attention maps stay small
            part = slice(start, start + RESCORE_CHUNK)
            logits = self.decode(memory[rows[part]], padding[rows[part]], tokens[part, :-1]).float() + banned
            per_token = logits.log_softmax(-1).gather(-1, target[part, :, None])[..., 0]
            total[part] = per_token.masked_fill(target[part] == self.pad_id, 0.0).sum(1)
        return total

    # ---- incremental decoding: each layer's keys and values are computed once per token and cached

    def _heads(self, x: Tensor) -> Tensor:
        """[N, T, d] -> [N, H, T, d/H]."""
        n, t, _ = x.shape
        h = self.decoder.layers[0].self_attn.num_heads
        return x.view(n, t, h, -1).transpose(1, 2)

    def cross_cache(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Each decoder layer's cross-attention keys and values of ``memory``: [L, N, H, S, d/H] each.

        They depend on the line alone, so greedy decoding computes them once, not once per character.
        """
        d = memory.shape[-1]
        ks, vs = [], []
        for layer in self.decoder.layers:
            w, b = layer.multihead_attn.in_proj_weight, layer.multihead_attn.in_proj_bias
            ks.append(self._heads(F.linear(memory, w[d:2 * d], b[d:2 * d])))
            vs.append(self._heads(F.linear(memory, w[2 * d:], b[2 * d:])))
        return torch.stack(ks), torch.stack(vs)

    def decode_step(self, token: Tensor, past_k: Tensor, past_v: Tensor, cross_k: Tensor, cross_v: Tensor,
                    memory_padding: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Logits [N, V] of the token after ``token`` [N], given the self-attention cache of the tokens
        before it (``past_k``/``past_v`` [L, N, H, t, d/H]) and :meth:`cross_cache`; returns the caches
        grown by ``token``'s keys and values.

        The same function as ``decode(memory, padding, prefix)[:, -1]`` for the prefix the cache
        holds (the decoder is causal and runs in eval mode: a position's keys never change), at the
        cost of one position instead of the whole prefix.
        """
        x = (self.embed(token) + self.token_pos[past_k.shape[3]])[:, None]  # [N, 1, d]
        attend = ~memory_padding[:, None, None, :]  # [N, 1, 1, S]
        new_k, new_v = [], []
        for i, layer in enumerate(self.decoder.layers):
            q, k, v = F.linear(layer.norm1(x), layer.self_attn.in_proj_weight,
                               layer.self_attn.in_proj_bias).chunk(3, dim=-1)
            new_k.append(torch.cat([past_k[i], self._heads(k)], dim=2))
            new_v.append(torch.cat([past_v[i], self._heads(v)], dim=2))
            a = F.scaled_dot_product_attention(self._heads(q), new_k[-1], new_v[-1])
            x = x + layer.self_attn.out_proj(a.transpose(1, 2).flatten(2))
            d = x.shape[-1]
            cross = layer.multihead_attn
            q = F.linear(layer.norm2(x), cross.in_proj_weight[:d], cross.in_proj_bias[:d])
            a = F.scaled_dot_product_attention(self._heads(q), cross_k[i], cross_v[i], attn_mask=attend)
            x = x + cross.out_proj(a.transpose(1, 2).flatten(2))
            x = x + layer.linear2(layer.activation(layer.linear1(layer.norm3(x))))
        return self.classifier(self.decoder.norm(x)[:, 0]), torch.stack(new_k), torch.stack(new_v)

    def greedy(self, memory: Tensor, padding: Tensor, max_len: int | None = None) -> tuple[Tensor, Tensor]:
        """Greedy attention decoding: token ids [N, <=max_len] (BOS first, PAD after a line's end) and a
        confidence per line.

        Incremental (:meth:`decode_step` with key/value caches), and a finished line leaves the
        batch, so the remaining steps cost only the lines still being read. The confidence is the
        geometric mean of the chosen tokens' probabilities, EOS included. A line stops after as
        many characters as it has RoI columns (the most CTC could read from it), so an unsure
        decoder does not run every line to ``max_len``.
        """
        max_len = min(max_len or self.max_len, self.max_len)
        n, dev = memory.shape[0], memory.device
        ys = torch.full((n, max_len), self.pad_id, dtype=torch.long, device=dev)
        ys[:, 0] = self.bos_id
        logp_sum = torch.zeros(n, device=dev)
        steps = torch.zeros(n, device=dev)
        banned = self.never_read(dev)
        cross_k, cross_v = self.cross_cache(memory)
        past_k = past_v = cross_k.new_zeros((*cross_k.shape[:3], 0, cross_k.shape[-1]))
        # The lines still being read, their running log-probability, and the columns each has; every
        # active line has taken the same t steps.
        active, token, columns = torch.arange(n, device=dev), ys[:, 0], (~padding).sum(1)
        run_logp = logp_sum.clone()
        length = 1
        for t in range(1, max_len):
            if active.numel() == 0:
                break
            logits, past_k, past_v = self.decode_step(token, past_k, past_v, cross_k, cross_v, padding)
            best, token = (logits.float() + banned).log_softmax(-1).max(-1)
            ys[active, t] = token
            run_logp += best
            length = t + 1
            going = (token != self.eos_id) & (columns >= t)
            if not bool(going.all()):
                ended = ~going
                logp_sum[active[ended]], steps[active[ended]] = run_logp[ended], float(t)
                active, token, padding, columns, run_logp = (x[going] for x in (active, token, padding, columns,
                                                                                 run_logp))
                past_k, past_v, cross_k, cross_v = (c[:, going] for c in (past_k, past_v, cross_k, cross_v))
        logp_sum[active], steps[active] = run_logp, float(length - 1)  # lines cut at max_len
        return ys[:, :length], torch.exp(logp_sum / steps.clamp(min=1.0))
