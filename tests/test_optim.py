"""Optimizer parameter groups: which parameters are decayed."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf
from torch import nn

from docrec.engine.trainer import build_optimizer
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
