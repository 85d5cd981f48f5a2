"""Precise BatchNorm: re-estimate running statistics of the network as it runs at evaluation.

Training drops stochastic-depth blocks, so the running statistics of every BN layer after a
dropped block were gathered on inputs that evaluation (every block running) never produces.
Recomputing them over a few training batches with the evaluation-time network removes that
mismatch (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def recalibrate_bn(model: nn.Module, batches: Iterable[tuple]) -> int:
    """Replace BN running statistics by their plain average over ``batches``; returns how many were used.

    Each batch is a tuple of positional arguments of ``model`` (already on its device). The
    model runs without gradients in eval mode (every stochastic-depth block, evaluation branch
    scales, no dropout) except its BN layers, which normalise with the batch's statistics and
    accumulate them with ``momentum=None`` (a cumulative average, every batch weighted equally).
    Modes and momenta are restored; with no batches, or on an error, the old statistics are kept.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    modes = [(m, m.training) for m in model.modules()]
    saved = [(bn.momentum, {k: v.clone() for k, v in bn.state_dict().items()}) for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    n, done = 0, False
    try:
        with torch.no_grad():
            for batch in batches:
                model(*batch)
                n += 1
        done = True
    finally:
        for m, training in modes:
            m.training = training
        for bn, (momentum, state) in zip(bns, saved):
            bn.momentum = momentum
            if n == 0 or not done:  # nothing seen, or interrupted (e.g. out of memory): keep the old ones
                bn.load_state_dict(state)
    return n
