"""Recognition head: RoI tokens of each line -> transformer encoder -> CTC and a character transformer decoder."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from docrec.models.roi import sample_quads

#: How a line is read at inference: the attention decoder (greedy) or the CTC head (one parallel pass).
DECODERS = ("attention", "ctc")
#: The loss (``loss_weights`` key) that trains each decoder.
DECODER_LOSS = {"attention": "rec", "ctc": "ctc"}


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
        self.decoder_kind = decoder
        # Depthwise 3x3 for local context, then one conv that folds the height: one token per column.
        # A full 3x3 here cost more than the whole backbone (every RoI is as wide as the widest line).
        self.roi_proj = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels),
            nn.GELU(),
            nn.Conv2d(in_channels, d_model, (roi_height, 1)),
        )
        self.local = nn.ModuleList(LocalMixer(d_model) for _ in range(conv_layers))
        self.register_buffer("memory_pos", sinusoidal_positions(roi_max_width, d_model), persistent=False)
        enc = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(enc, encoder_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.ctc_head = nn.Linear(d_model, vocab_size)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.token_pos = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        dec = nn.TransformerDecoderLayer(
            d_model, nhead, dim_feedforward, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(dec, decoder_layers, norm=nn.LayerNorm(d_model))
        self.classifier = nn.Linear(d_model, vocab_size)

    def memory(self, rois: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """RoI features [N, C, roi_height, W] + validity [N, W] -> memory [N, W, d], padding mask (True = pad)."""
        x = self.roi_proj(rois).squeeze(2).transpose(1, 2)
        for mixer in self.local:
            x = mixer(x, valid)
        x = x + self.memory_pos[: x.shape[1]].to(x.dtype)
        padding = ~valid
        return self.encoder(x, src_key_padding_mask=padding), padding

    def encode(self, fused: Tensor, quads: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Memory tokens [N, W, d] and their padding mask [N, W] (True = padding) for image b's ``quads[b]``."""
        rois, valid = sample_quads(fused, quads, self.stride, self.roi_height, self.roi_max_width,
                                   self.roi_oversample, self.roi_column_samples)
        return self.memory(rois.to(fused.dtype), valid)

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
        """Per-column log-probabilities [N, W, V] of the CTC head (blank = PAD)."""
        return self.ctc_head(memory).float().log_softmax(-1)

    def loss(self, fused: Tensor, quads: list[Tensor], tokens: Tensor, label_smoothing: float = 0.0,
             branches: tuple[str, ...] = ("rec", "ctc")) -> dict[str, Tensor]:
        """Teacher-forced character cross-entropy (``rec``) and CTC (``ctc``) of lines ``tokens`` [N, T].

        ``tokens`` rows are BOS text EOS PAD...; CTC reads the text alone, per character
        (mean over lines of the loss divided by the text length). A line whose text needs
        more columns than its RoI has contributes zero CTC loss (``zero_infinity``).
        Only the ``branches`` asked for are computed (a branch with loss weight 0 costs nothing).
        """
        memory, padding = self.encode(fused, quads)
        out: dict[str, Tensor] = {}
        if "rec" in branches:
            logits = self.decode(memory, padding, tokens[:, :-1])
            out["rec"] = F.cross_entropy(
                logits.float().flatten(0, 1), tokens[:, 1:].flatten(),
                ignore_index=self.pad_id, label_smoothing=label_smoothing,
            )
        if "ctc" in branches:
            text = tokens[:, 1:]
            is_char = (text != self.pad_id) & (text != self.eos_id)
            target_lengths = is_char.sum(1)
            targets = text.masked_fill(~is_char, self.pad_id)
            log_probs = self.ctc_log_probs(memory).transpose(0, 1)  # [W, N, V]
            out["ctc"] = F.ctc_loss(log_probs, targets, (~padding).sum(1), target_lengths, blank=self.pad_id,
                                    reduction="mean", zero_infinity=True)
        return out

    @torch.no_grad()
    def read(self, fused: Tensor, quads: list[Tensor], decoder: str | None = None,
             max_len: int | None = None) -> tuple[list[list[int]], Tensor]:
        """Token ids per line (for ``Charset.decode``) and a confidence each, by the configured (or given) decoder."""
        memory, padding = self.encode(fused, quads)
        if (decoder or self.decoder_kind) == "ctc":
            return self.ctc_greedy(memory, padding)
        ids, conf = self.greedy(memory, padding, max_len)
        return ids.tolist(), conf

    def ctc_greedy(self, memory: Tensor, padding: Tensor) -> tuple[list[list[int]], Tensor]:
        """Best path: the most likely symbol per column, repeats merged, blanks removed (no loop over steps).

        The confidence is the geometric mean of the best path's column probabilities.
        """
        logp = self.ctc_log_probs(memory)
        best, sym = logp.max(-1)
        valid = ~padding
        conf = torch.exp((best * valid).sum(1) / valid.sum(1).clamp(min=1))
        keep = valid & (sym != self.pad_id)
        keep[:, 1:] &= sym[:, 1:] != sym[:, :-1]
        rows = [s[k].tolist() for s, k in zip(sym, keep)]
        return rows, conf

    def greedy(self, memory: Tensor, padding: Tensor, max_len: int | None = None) -> tuple[Tensor, Tensor]:
        """Greedy attention decoding: token ids [N, <=max_len] (BOS first) and a confidence per line.

        The confidence is the geometric mean of the chosen tokens' probabilities, EOS included.
        A line stops after as many characters as it has RoI columns (the most CTC could read
        from it), so an unsure decoder does not run every line to ``max_len``.
        """
        max_len = min(max_len or self.max_len, self.max_len)
        n = memory.shape[0]
        columns = (~padding).sum(1)
        ys = torch.full((n, 1), self.bos_id, dtype=torch.long, device=memory.device)
        logp_sum = torch.zeros(n, device=memory.device)
        steps = torch.zeros(n, device=memory.device)
        done = torch.zeros(n, dtype=torch.bool, device=memory.device)
        for _ in range(max_len - 1):
            if n == 0 or bool(done.all()):
                break
            logits = self.decode(memory, padding, ys)[:, -1].float()
            logits[:, [self.pad_id, self.bos_id]] = float("-inf")
            best, nxt = logits.log_softmax(-1).max(-1)
            nxt = nxt.masked_fill(done, self.pad_id)
            logp_sum += best.masked_fill(done, 0.0)
            steps += (~done).float()
            ys = torch.cat([ys, nxt[:, None]], dim=1)
            done |= (nxt == self.eos_id) | (steps > columns)
        return ys, torch.exp(logp_sum / steps.clamp(min=1.0))
