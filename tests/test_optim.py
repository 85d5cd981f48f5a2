"""Optimizer parameter groups: which parameters are decayed."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from docrec.engine.optim import build_optimizer, load_optimizer_state
from docrec.models import Charset, build_model
from tests.test_model import TINY

OPTIM = OmegaConf.create({"lr": 1e-3, "weight_decay": 0.05, "betas": [0.9, 0.999]})


def _decay_of(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    """id(parameter) -> the weight decay of its group."""
    return {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.embed = nn.Embedding(10, 4)
        self.token_pos = nn.Parameter(torch.zeros(8, 4))
        self.pos_embed = nn.Parameter(torch.zeros(1, 8, 4))
        self.norm = nn.LayerNorm(4)
        self.proj = nn.Linear(4, 4)


def test_embeddings_positions_norms_and_biases_are_not_decayed():
    toy = _Toy()
    decay = _decay_of(build_optimizer(toy, OPTIM))
    assert len(decay) == len(list(toy.parameters()))  # every parameter in exactly one group
    for p in (toy.embed.weight, toy.token_pos, toy.pos_embed, toy.norm.weight, toy.norm.bias, toy.conv.bias,
              toy.proj.bias):
        assert decay[id(p)] == 0.0
    assert decay[id(toy.conv.weight)] == decay[id(toy.proj.weight)] == 0.05


def test_model_embedding_and_positional_parameters_are_not_decayed():
    model = build_model(TINY, Charset.build(["abc"]))
    decay = _decay_of(build_optimizer(model, OPTIM))
    assert len(decay) == sum(1 for p in model.parameters() if p.requires_grad)
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    assert embeddings
    for m in embeddings:
        assert all(decay[id(p)] == 0.0 for p in m.parameters())
    for name, p in model.named_parameters():
        if name.endswith("_pos") or "pos_embed" in name:
            assert decay[id(p)] == 0.0, name
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(decay[id(m.weight)] == 0.05 for m in convs)


def test_the_optimizer_is_fused_and_resumes_a_state_saved_by_the_loop_kernel():
    torch.manual_seed(0)
    toy = _Toy()
    opt = build_optimizer(toy, OPTIM)
    assert all(g["fused"] for g in opt.param_groups)
    # A state written by AdamW's default loop (checkpoints from before), three steps in.
    loop_model = _Toy()
    loop_model.load_state_dict(toy.state_dict())
    loop = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]} for g in
                              build_optimizer(loop_model, OPTIM).param_groups], lr=1e-3)
    assert not any(g["fused"] for g in loop.param_groups)
    grads = [[torch.randn_like(p) for p in loop_model.parameters()] for _ in range(4)]

    def step(model, optimizer, gs):
        for p, g in zip(model.parameters(), gs):
            p.grad = g.clone()
        optimizer.step()

    for gs in grads[:3]:
        step(loop_model, loop, gs)
    toy.load_state_dict(loop_model.state_dict())
    load_optimizer_state(opt, copy.deepcopy(loop.state_dict()))  # as read back from a checkpoint
    assert all(g["fused"] for g in opt.param_groups)
    step(loop_model, loop, grads[3])
    step(toy, opt, grads[3])
    for a, b in zip(toy.parameters(), loop_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_backbone_learns_at_its_own_rate_when_asked_and_every_parameter_has_one_group():
    model = build_model(TINY, Charset.build(["ab"]))
    same = build_optimizer(model, OPTIM)
    assert len(same.param_groups) == 2 and {g["lr"] for g in same.param_groups} == {1e-3}
    opt = build_optimizer(model, OmegaConf.merge(OPTIM, {"backbone_lr_scale": 0.1}))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert len(lr_of) == sum(1 for p in model.parameters() if p.requires_grad)
    assert {lr_of[id(p)] for p in model.backbone.parameters() if p.requires_grad} == {1e-4}
    assert {lr_of[id(p)] for p in model.rec_head.parameters()} == {1e-3}
    assert _decay_of(opt) == _decay_of(same)  # the same decay per parameter
    # The schedule scales every group alike: the ratio holds at every step.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    sched.step()
    assert sorted({g["lr"] for g in opt.param_groups}) == [pytest.approx(5e-5), pytest.approx(5e-4)]
