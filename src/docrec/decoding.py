"""CTC decoding that needs no torch: the prefix beam search of the reader (``RecognitionHead.ctc_beam_search``)
and of the ONNX example (``examples/onnx_predict.py``), one implementation for both."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) of two Python floats (-inf allowed): the beam search's inner loop."""
    if a < b:
        a, b = b, a
    return a if b == -math.inf else a + math.log1p(math.exp(b - a))


def ctc_prefix_beam(log_probs: np.ndarray, blank: int, beam: int,
                    min_log_prob: float = math.log(1e-4)) -> list[tuple[tuple[int, ...], float]]:
    """CTC prefix beam search (Hannun et al. 2014) over one line's frames ``log_probs`` [T, V]: the
    ``beam`` most likely label sequences and their log-probabilities (every alignment summed),
    best first.

    Each prefix keeps two scores, the frames so far ending in a blank and ending in its last symbol,
    so that a repeated symbol counts twice only across a blank. Per frame only the ``beam`` most
    likely symbols above ``min_log_prob`` extend the prefixes (the blank always does).
    """
    neg = -math.inf
    table = np.asarray(log_probs, dtype=np.float64)
    k = min(beam, table.shape[-1])
    top_s = np.argpartition(-table, k - 1, axis=-1)[:, :k]  # each frame's k most likely symbols, any order
    top_p = np.take_along_axis(table, top_s, axis=-1)
    top_s, top_p, table = top_s.tolist(), top_p.tolist(), table.tolist()
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, neg)}  # prefix -> (ends in blank, in symbol)
    for row, probs, top in zip(table, top_p, top_s):
        symbols = [s for s, lp in zip(top, probs) if s != blank and lp >= min_log_prob]
        p_blank = row[blank]
        nxt: dict[tuple[int, ...], list[float]] = {}
        for prefix, (pb, pnb) in beams.items():
            total = _logaddexp(pb, pnb)
            entry = nxt.setdefault(prefix, [neg, neg])
            entry[0] = _logaddexp(entry[0], total + p_blank)
            last = prefix[-1] if prefix else None
            if last is not None:  # the last symbol held over this frame
                entry[1] = _logaddexp(entry[1], pnb + row[last])
            for s in symbols:
                grown = nxt.setdefault(prefix + (s,), [neg, neg])
                # after the same symbol, a new one only across a blank
                grown[1] = _logaddexp(grown[1], (pb if s == last else total) + row[s])
        ranked = sorted(((k, v) for k, v in nxt.items() if max(v) > neg), key=lambda kv: _logaddexp(*kv[1]),
                        reverse=True)[:beam]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    return [(k, _logaddexp(*v)) for k, v in beams.items()]


Candidates = list[tuple[tuple[int, ...], float]]


def choose_candidates(nbest: Sequence[Candidates], rescore: float = 0.0,
                      attention: Callable[[list[int], list[tuple[int, ...]]], Sequence[float]] | None = None,
                      ) -> list[tuple[tuple[int, ...], float]]:
    """Each line's chosen (text, CTC log-probability) among its beam's candidates ``nbest[i]``: the likeliest
    by CTC, or with ``rescore`` > 0 by ``(1 - rescore) x CTC + rescore x attention`` log-probability, where
    ``attention(owner, texts)`` scores every candidate at once (``owner[m]``: the line of ``texts[m]``).
    The first of equal scores wins."""
    if rescore > 0:
        owner = [i for i, cands in enumerate(nbest) for _ in cands]
        scored = iter(attention(owner, [text for cands in nbest for text, _ in cands]))
        scores = [[(1 - rescore) * ctc + rescore * next(scored) for _, ctc in cands] for cands in nbest]
    else:
        scores = [[ctc for _, ctc in cands] for cands in nbest]
    return [cands[max(range(len(row)), key=row.__getitem__)] for cands, row in zip(nbest, scores)]


def beam_read(log_probs: np.ndarray, frames: Sequence[int], blank: int, beam: int, blank_penalty: float = 0.0,
              rescore: float = 0.0,
              attention: Callable[[list[int], list[tuple[int, ...]]], Sequence[float]] | None = None,
              ) -> list[tuple[tuple[int, ...], float]]:
    """The CTC reading by beam search of lines' log-probabilities [N, W, V] (line ``i`` has ``frames[i]``
    frames): the blank lowered by ``blank_penalty``, each line's ``beam`` likeliest texts
    (:func:`ctc_prefix_beam`), one chosen (:func:`choose_candidates`); per line (text, confidence), the
    confidence being the chosen text's CTC probability per frame (geometric mean)."""
    scores = np.array(log_probs, dtype=np.float32)
    scores[..., blank] -= blank_penalty
    nbest = [ctc_prefix_beam(s[:t], blank, beam) for s, t in zip(scores, frames)]
    chosen = choose_candidates(nbest, rescore, attention)
    return [(text, math.exp(ctc / max(int(t), 1))) for (text, ctc), t in zip(chosen, frames)]
