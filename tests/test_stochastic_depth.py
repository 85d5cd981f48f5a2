"""Stochastic depth: schedule, real skipping (FLOPs, gradients, BN), scaling, DDP agreement, compile."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from docrec.models import build_backbone, keep_probs
from docrec.models.stochastic_depth import scaled_residual_sum

ARTICLE_TABLE = {0: 1.000, 3: 0.960, 5: 0.933, 8: 0.893, 11: 0.853, 13: 0.827, 15: 0.800}


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters, so that equalities mean something."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def _torchvision_features(tv: torchvision.models.ResNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    out = {}
    for i, name in enumerate(("layer1", "layer2", "layer3", "layer4")):
        x = getattr(tv, name)(x)
        out[f"c{i + 2}"] = x
    return out


def _freeze_bn(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


@pytest.fixture(scope="module")
def resnet50_pair(tmp_path_factory):
    """A torchvision ResNet-50 with random BN statistics and the backbone loaded from its weights file."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet50()
    _randomize_bn(tv)
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    return tv, path


def test_schedule_matches_article_table():
    bb = build_backbone("resnet50", p_min=0.8)
    sched = bb.schedule()
    assert len(sched) == 16
    for l, p in ARTICLE_TABLE.items():
        assert round(sched[l]["keep_prob"], 3) == p
    assert [r["index"] for r in sched if r["always_run"]] == [0, 3, 7, 13]
    assert [r["stage"] for r in sched].count("layer3") == 6
    assert sched[15]["name"] == "layer4.2"


def test_always_run_blocks_are_found_by_structure_not_index():
    # ResNet-18's layer1 keeps its width, so its first block has no downsample.
    sched = build_backbone("resnet18", p_min=0.8).schedule()
    assert len(sched) == 8
    assert [r["index"] for r in sched if r["always_run"]] == [2, 4, 6]


def test_keep_probs_bounds():
    assert keep_probs(16, 1.0) == [1.0] * 16
    assert keep_probs(1, 0.5) == [1.0]
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            keep_probs(16, bad)


def test_empirical_keep_rates_follow_schedule():
    bb = build_backbone("resnet50", p_min=0.8, seed=3)
    steps = 2000
    runs = torch.tensor([bb.sample_decisions(s) for s in range(steps)], dtype=torch.float64)
    rates = runs.mean(dim=0)
    for row, rate in zip(bb.schedule(), rates.tolist()):
        if row["always_run"]:
            assert rate == 1.0
        else:
            assert abs(rate - row["keep_prob"]) < 0.03, (row, rate)
    # Decisions are per step for the whole batch, and some steps really are shallower.
    assert runs.sum(dim=1).min() < 16


def test_same_seed_and_step_give_same_decisions_on_every_instance():
    a, b = build_backbone("resnet18", p_min=0.5, seed=7), build_backbone("resnet18", p_min=0.5, seed=7)
    other = build_backbone("resnet18", p_min=0.5, seed=8)
    da = [a.sample_decisions(s) for s in range(200)]
    assert da == [b.sample_decisions(s) for s in range(200)]
    assert da != [other.sample_decisions(s) for s in range(200)]
    # Through forward: set_step on each "rank" (different global RNG state) gives the same blocks.
    x = torch.randn(2, 3, 32, 32)
    for step in (5, 11, 12):
        torch.manual_seed(step)
        a.train().set_step(step)
        a(x)
        torch.manual_seed(1000 + step)
        b.train().set_step(step)
        b(x)
        assert a.last_executed == b.last_executed
        assert a.last_executed == [i for i, r in enumerate(a.sample_decisions(step)) if r]


def test_step_counter_advances_without_set_step():
    bb = build_backbone("resnet18", p_min=0.3, seed=1).train()
    x = torch.randn(2, 3, 32, 32)
    for step in range(4):
        bb(x)
        assert bb.last_executed == [i for i, r in enumerate(bb.sample_decisions(step)) if r]
        assert bb.effective_depth == len(bb.last_executed)
    bb.set_step(100)
    bb(x)
    assert bb.last_executed == [i for i, r in enumerate(bb.sample_decisions(100)) if r]


def test_state_dict_keys_are_torchvision_keys():
    tv_keys = {k for k in torchvision.models.resnet50().state_dict() if not k.startswith("fc.")}
    assert set(build_backbone("resnet50").state_dict()) == tv_keys


def test_wrong_weights_file_is_refused(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(ValueError, match="r18.pth"):
        build_backbone("resnet50", weights=path)


def test_eval_equals_torchvision(resnet50_pair):
    tv, path = resnet50_pair
    x = torch.randn(2, 3, 64, 64)
    tv.eval()
    with torch.no_grad():
        ref = _torchvision_features(tv, x)
        for scaling in ("inverted", "none"):
            bb = build_backbone("resnet50", p_min=0.8, scaling=scaling, weights=path).eval()
            out = bb(x)
            for k in ref:
                torch.testing.assert_close(out[k], ref[k], atol=1e-5, rtol=0)
        # The original paper's rule scales branches at evaluation: a different function.
        bb = build_backbone("resnet50", p_min=0.8, scaling="test_time", weights=path).eval()
        assert (bb(x)["c5"] - ref["c5"]).abs().max() > 1e-3


def test_train_without_drops_equals_torchvision_train(resnet50_pair):
    tv, path = resnet50_pair
    tv = copy.deepcopy(tv).train()
    bb = build_backbone("resnet50", p_min=1.0, weights=path).train()
    x = torch.randn(2, 3, 64, 64)
    ref, out = _torchvision_features(tv, x), bb(x)
    assert bb.effective_depth == 16
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], atol=1e-5, rtol=0)
    # Same batch statistics went into the running averages.
    tv_state = tv.state_dict()
    for k, v in bb.state_dict().items():
        torch.testing.assert_close(v, tv_state[k], atol=1e-6, rtol=0)


def test_forward_skips_and_scales_like_an_edited_torchvision_net(resnet50_pair):
    """Train mode with frozen BN == torchvision with dropped blocks removed and kept branches x 1/p."""
    tv, path = resnet50_pair
    bb = build_backbone("resnet50", p_min=0.5, weights=path).train()
    _freeze_bn(bb)
    step = next(s for s in range(100) if sum(bb.sample_decisions(s)) <= 13)
    run = bb.sample_decisions(step)
    edited = copy.deepcopy(tv).eval()
    blocks = [(layer, i) for layer in ("layer1", "layer2", "layer3", "layer4")
              for i in range(len(getattr(edited, layer)))]
    for (layer, i), row, kept, scale in zip(blocks, bb.schedule(), run, bb.branch_scales()):
        block = getattr(edited, layer)[i]
        if not kept:
            getattr(edited, layer)[i] = torch.nn.Identity()
        elif not row["always_run"]:
            # The branch ends in an affine BN: scaling its output == scaling its weight and bias.
            assert scale == pytest.approx(1 / row["keep_prob"])
            block.bn3.weight.data *= scale
            block.bn3.bias.data *= scale
    x = torch.randn(2, 3, 64, 64)
    bb.set_step(step)
    with torch.no_grad():
        out, ref = bb(x), _torchvision_features(edited, x)
    assert bb.last_executed == [i for i, r in enumerate(run) if r]
    # Scaling the BN weight rounds differently from scaling its output: compare relative to the range.
    torch.testing.assert_close(out["c5"], ref["c5"], atol=1e-5 * float(ref["c5"].abs().max()), rtol=1e-5)


@pytest.mark.parametrize(("scaling", "unbiased"), [("inverted", True), ("test_time", True), ("none", False)])
def test_expected_training_output_equals_eval_output(scaling, unbiased):
    """E over keep/drop of a block's residual sum x + s*F(x) equals its eval value (BN frozen).

    The sum is taken before the block's final ReLU: after it, Jensen's inequality makes
    the training expectation larger wherever the two outcomes straddle zero.
    """
    torch.manual_seed(0)
    bb = build_backbone("resnet18", p_min=0.5, scaling=scaling)
    _randomize_bn(bb)
    l = 7  # layer4.1, keep probability 0.5
    p = bb.schedule()[l]["keep_prob"]
    assert p == pytest.approx(0.5)
    block = bb.layer4[1]
    bb.train()
    s_train = bb.branch_scales()[l]
    bb.eval()
    s_eval = bb.branch_scales()[l]
    x = torch.relu(torch.randn(2, 512, 4, 4))  # a block's input is the previous block's ReLU output
    with torch.no_grad():
        kept = scaled_residual_sum(block, x, torch.tensor(s_train))
        expected = p * kept + (1 - p) * x  # dropped: the identity
        evaluated = scaled_residual_sum(block, x, torch.tensor(s_eval))
    assert torch.allclose(expected, evaluated, atol=1e-5) == unbiased


def test_dropped_blocks_get_no_gradient_and_keep_their_bn_statistics():
    torch.manual_seed(0)
    bb = build_backbone("resnet18", p_min=0.3, seed=2).train()
    sched = bb.schedule()
    step = next(
        s for s in range(200)
        if not all(bb.sample_decisions(s)) and sum(bb.sample_decisions(s)) >= 5
    )
    run = bb.sample_decisions(step)
    blocks = [b for layer in (bb.layer1, bb.layer2, bb.layer3, bb.layer4) for b in layer]
    before = [copy.deepcopy(b.state_dict()) for b in blocks]
    bb.set_step(step)
    out = bb(torch.randn(2, 3, 32, 32))
    (out["c5"].sum() + out["c3"].sum()).backward()
    for l, (block, kept) in enumerate(zip(blocks, run)):
        grads = [p.grad for p in block.parameters()]
        after = block.state_dict()
        if kept:
            assert all(g is not None and g.abs().sum() > 0 for g in grads), l
            assert not torch.equal(after["bn1.running_mean"], before[l]["bn1.running_mean"])
        else:
            assert not sched[l]["always_run"]
            assert all(g is None for g in grads), l
            for k, v in after.items():
                assert torch.equal(v, before[l][k]), (l, k)


def _block_flops(bb, x: torch.Tensor) -> list[int]:
    """Forward FLOPs of each block alone, at the input it sees in a full forward."""
    inputs = []
    blocks = [b for layer in (bb.layer1, bb.layer2, bb.layer3, bb.layer4) for b in layer]
    hooks = [b.conv1.register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach())) for b in blocks]
    with torch.no_grad():
        bb.eval()(x)
    for h in hooks:
        h.remove()
    flops = []
    for block, inp in zip(blocks, inputs):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            block(inp)
        flops.append(counter.get_total_flops())
    return flops


def _train_flops(bb, x: torch.Tensor, step: int) -> int:
    bb.train().set_step(step)
    with FlopCounterMode(display=False) as counter:
        bb(x)
    return counter.get_total_flops()


def test_dropped_blocks_cost_no_flops():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    full_net = build_backbone("resnet50", p_min=1.0)
    sd_net = build_backbone("resnet50", p_min=0.5, seed=0)
    full = _train_flops(full_net, x, 0)
    per_block = _block_flops(sd_net, x)
    droppable_flops = sum(f for f, r in zip(per_block, sd_net.schedule()) if not r["always_run"])
    assert droppable_flops > 0.5 * full  # the test can tell skipping from masking
    steps = 40
    measured = []
    for step in range(steps):
        run = sd_net.sample_decisions(step)
        flops = _train_flops(sd_net, x, step)
        # Exactly the dropped blocks' FLOPs are missing, step by step.
        assert flops == full - sum(f for f, r in zip(per_block, run) if not r)
        measured.append(flops)
    predicted_saving = sum((1 - r["keep_prob"]) * f for f, r in zip(per_block, sd_net.schedule())
                           if not r["always_run"])
    mean = sum(measured) / steps
    assert abs(mean - (full - predicted_saving)) < 0.05 * (full - predicted_saving)
    # The saving itself, over more steps than are worth running: the accounting above is exact
    # per step, so the decisions alone give each step's FLOPs.
    sampled = [sum(f for f, r in zip(per_block, sd_net.sample_decisions(s)) if not r) for s in range(2000)]
    assert abs(sum(sampled) / len(sampled) - predicted_saving) < 0.05 * predicted_saving


def test_compiled_blocks_match_eager_without_recompiling_per_drop_pattern():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    eager = build_backbone("resnet18", p_min=0.4, seed=5)
    compiled = copy.deepcopy(eager)
    compiled.compile_blocks(backend="eager")
    assert set(compiled.state_dict()) == set(eager.state_dict())
    x = torch.randn(2, 3, 64, 64)
    # Warm up on a step where every block runs, so every block shape has been compiled once.
    warm = next(s for s in range(500) if all(eager.sample_decisions(s)))
    patterns = set()
    for i, step in enumerate([warm, *range(12)]):
        eager.train().set_step(step)
        compiled.train().set_step(step)
        torch.testing.assert_close(compiled(x)["c5"], eager(x)["c5"], atol=1e-5, rtol=1e-5)
        if i == 0:
            graphs_after_warmup = counters["stats"]["unique_graphs"]
        patterns.add(tuple(compiled.last_executed))
    assert len(patterns) > 3
    assert counters["stats"]["unique_graphs"] == graphs_after_warmup
    torch._dynamo.reset()
