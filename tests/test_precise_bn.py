"""Precise BN: running statistics re-estimated with the evaluation-time network."""

from __future__ import annotations

import torch
from torch import nn

from docrec.engine.precise_bn import recalibrate_bn
from docrec.models.stochastic_depth import STAGES, build_backbone


def _wrong_bn_model() -> nn.Sequential:
    model = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(2, momentum=0.1))
    model[1].running_mean.fill_(100.0)
    model[1].running_var.fill_(100.0)
    return model.train()


def test_running_stats_become_the_average_of_the_batch_statistics():
    model = _wrong_bn_model()
    # Batch means [1, 2] and [5, 6]; unbiased variances [2, 8] in both.
    batches = [(torch.tensor([[0.0, 0.0], [2.0, 4.0]]),), (torch.tensor([[4.0, 4.0], [6.0, 8.0]]),)]
    assert recalibrate_bn(model, batches) == 2
    bn = model[1]
    # Exact only if dropout was off: just the BN layers run in training mode.
    torch.testing.assert_close(bn.running_mean, torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(bn.running_var, torch.tensor([2.0, 8.0]))
    assert int(bn.num_batches_tracked) == 2
    assert bn.momentum == 0.1 and model.training and model[0].training


def test_no_batches_keeps_the_old_statistics_and_modes():
    model = _wrong_bn_model().eval()
    assert recalibrate_bn(model, []) == 0
    assert torch.equal(model[1].running_mean, torch.full((2,), 100.0))
    assert not model.training and not model[1].training


def test_every_stochastic_depth_block_runs_during_recalibration():
    torch.manual_seed(0)
    net = build_backbone("resnet18", p_min=0.1, seed=0).train()
    calls = [0] * net.num_blocks
    for i, block in enumerate(b for stage in STAGES for b in getattr(net, stage)):
        block.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    net.set_step(0)
    batches = [(torch.randn(2, 3, 64, 64),) for _ in range(3)]
    assert recalibrate_bn(net, batches) == 3
    assert calls == [3] * net.num_blocks
    # Every BN layer, including those of droppable blocks, averaged exactly the three batches.
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(int(bn.num_batches_tracked) == 3 for bn in bns)
    assert net.training and all(bn.training for bn in bns)
    assert net._next_step == 0  # the drop schedule of training is untouched
    # In training mode with p_min = 0.1 some blocks would have been skipped.
    assert not all(net.sample_decisions(0))
