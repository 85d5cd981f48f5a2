"""Recognition head: RoI tokens of each line -> transformer encoder -> character transformer decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from docrec.models.roi import sample_quads


class RecognitionHead(nn.Module):
    """Reads each line from the fused map: quad RoI (height x proportional width), encoder, decoder.

    The RoI is ``roi_height`` samples high and ``aspect x roi_height`` wide (square cells),
    at most ``roi_max_width``; its height is folded into the channels, so the decoder
    cross-attends over one token per column. Dropout lives only in the decoder.
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
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        roi_height: int = 8,
        roi_max_width: int = 256,
        max_len: int = 160,
        stride: int = 4,
    ) -> None:
        super().__init__()
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.roi_height, self.roi_max_width, self.max_len, self.stride = roi_height, roi_max_width, max_len, stride
        # Depthwise 3x3 for local context, then one conv that folds the height: one token per column.
        # A full 3x3 here cost more than the whole backbone (every RoI is as wide as the widest line).
        self.roi_proj = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels),
            nn.GELU(),
            nn.Conv2d(in_channels, d_model, (roi_height, 1)),
        )
        self.memory_pos = nn.Parameter(torch.randn(roi_max_width, d_model) * 0.02)
        enc = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(enc, encoder_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.token_pos = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        dec = nn.TransformerDecoderLayer(
            d_model, nhead, dim_feedforward, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(dec, decoder_layers, norm=nn.LayerNorm(d_model))
        self.classifier = nn.Linear(d_model, vocab_size)

    def encode(self, fused: Tensor, quads: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Memory tokens [N, W, d] and their padding mask [N, W] (True = padding) for image b's ``quads[b]``."""
        rois, valid = sample_quads(fused, quads, self.stride, self.roi_height, self.roi_max_width)
        x = self.roi_proj(rois.to(fused.dtype)).squeeze(2).transpose(1, 2)
        x = x + self.memory_pos[: x.shape[1]]
        padding = ~valid
        return self.encoder(x, src_key_padding_mask=padding), padding

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

    def loss(self, fused: Tensor, quads: list[Tensor], tokens: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """Teacher-forced character cross-entropy of lines ``tokens`` [N, T] (BOS ... EOS PAD)."""
        memory, padding = self.encode(fused, quads)
        logits = self.decode(memory, padding, tokens[:, :-1])
        return F.cross_entropy(
            logits.float().flatten(0, 1), tokens[:, 1:].flatten(),
            ignore_index=self.pad_id, label_smoothing=label_smoothing,
        )

    @torch.no_grad()
    def greedy(self, fused: Tensor, quads: list[Tensor], max_len: int | None = None) -> tuple[Tensor, Tensor]:
        """Greedy decoding: token ids [N, <=max_len] (BOS first) and a confidence per line.

        The confidence is the geometric mean of the chosen tokens' probabilities, EOS included.
        """
        max_len = min(max_len or self.max_len, self.max_len)
        memory, padding = self.encode(fused, quads)
        n = memory.shape[0]
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
            done |= nxt == self.eos_id
        return ys, torch.exp(logp_sum / steps.clamp(min=1.0))
