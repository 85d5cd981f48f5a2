"""ResNet backbone with real stochastic depth: a dropped residual block is not executed at all.

Wraps a torchvision ResNet (its modules and state_dict keys are kept as they are). The
blocks are every residual block of layer1..layer4 in forward order, l = 0..L-1, with keep
probability ``p_l = 1 - l / (L - 1) * (1 - p_min)``. Blocks with a ``downsample`` module
always run. One decision per block per training step for the whole batch, drawn from a
generator seeded by (seed, step), so every DDP rank drops the same blocks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops import FrozenBatchNorm2d

SCALINGS = ("inverted", "none", "test_time")
STAGES = ("layer1", "layer2", "layer3", "layer4")


def keep_probs(num_blocks: int, p_min: float) -> list[float]:
    """The linear schedule ``p_l = 1 - l / (L - 1) * (1 - p_min)`` (p_min is a KEEP probability)."""
    if not 0.0 < p_min <= 1.0:
        raise ValueError(f"p_min is a keep probability in (0, 1], got {p_min}")
    if num_blocks == 1:
        return [1.0]
    return [1.0 - l / (num_blocks - 1) * (1.0 - p_min) for l in range(num_blocks)]


def residual_branch(block: nn.Module, x: Tensor) -> Tensor:
    """F(x) of a torchvision BasicBlock/Bottleneck: its convolutions without shortcut and final ReLU."""
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    if isinstance(block, Bottleneck):
        out = block.bn3(block.conv3(block.relu(out)))
    elif not isinstance(block, BasicBlock):
        raise TypeError(f"unsupported residual block {type(block).__name__}")
    return out


def scaled_residual_sum(block: nn.Module, x: Tensor, scale: Tensor) -> Tensor:
    """``x + scale * F(x)``: the block's output before its final ReLU (identity shortcut only)."""
    return x + residual_branch(block, x) * scale


def _scaled_block(block: nn.Module, x: Tensor, scale: Tensor) -> Tensor:
    # scale is a 0-d tensor, not a float, so a compiled region never specialises on its value.
    return block.relu(scaled_residual_sum(block, x, scale))


def _stem(net: StochasticDepthResNet, x: Tensor) -> Tensor:
    return net.maxpool(net.relu(net.bn1(net.conv1(x))))


def _generator_seed(seed: int, step: int) -> int:
    # A stable hash (unlike Python's hash()) so that every process derives the same stream.
    digest = hashlib.blake2b(f"{int(seed)}:{int(step)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class StochasticDepthResNet(nn.Module):
    """A torchvision ResNet trunk (no avgpool/fc) returning C2..C5, with block-level stochastic depth."""

    def __init__(self, resnet: ResNet, p_min: float = 0.8, scaling: str = "inverted", seed: int = 0) -> None:
        super().__init__()
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        # The same attribute names as torchvision, so its state_dict keys (minus fc) load as they are.
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.p_min, self.scaling, self.seed = float(p_min), scaling, int(seed)

        self._blocks: list[nn.Module] = []
        self._stage_of: list[int] = []
        for s, name in enumerate(STAGES):
            for block in getattr(self, name):
                self._blocks.append(block)
                self._stage_of.append(s)
        # A block whose shortcut is not the identity cannot be skipped (shapes would not match).
        self._always_run = [
            b.downsample is not None and not isinstance(b.downsample, nn.Identity) for b in self._blocks
        ]
        self._keep = keep_probs(len(self._blocks), self.p_min)
        droppable = [not a for a in self._always_run]
        train_scale = [1.0 / p if (d and scaling == "inverted") else 1.0 for p, d in zip(self._keep, droppable)]
        eval_scale = [p if (d and scaling == "test_time") else 1.0 for p, d in zip(self._keep, droppable)]
        self.register_buffer("_train_scale", torch.tensor(train_scale), persistent=False)
        self.register_buffer("_eval_scale", torch.tensor(eval_scale), persistent=False)
        # Where the scale is exactly 1 the block's own forward (in-place shortcut add) is used: no extra multiply.
        self._unit = {True: [v == 1.0 for v in train_scale], False: [v == 1.0 for v in eval_scale]}

        self.out_channels = {f"c{s + 2}": self._width(getattr(self, name)[-1]) for s, name in enumerate(STAGES)}
        self._next_step = 0
        self._run_stem = _stem
        self._run_scaled = _scaled_block
        #: Indices of the blocks that ran in the last training forward (for logging).
        self.last_executed: list[int] = list(range(len(self._blocks)))

    @staticmethod
    def _width(block: nn.Module) -> int:
        return (block.bn3 if isinstance(block, Bottleneck) else block.bn2).weight.shape[0]

    @property
    def num_blocks(self) -> int:
        """L, the number of residual blocks."""
        return len(self._blocks)

    @property
    def effective_depth(self) -> int:
        """Number of blocks that ran in the last training forward."""
        return len(self.last_executed)

    def schedule(self) -> list[dict]:
        """Per block: index, stage, name, nominal keep probability and whether it always runs."""
        names = [f"{STAGES[s]}.{i}" for s in range(len(STAGES)) for i in range(len(getattr(self, STAGES[s])))]
        return [
            {"index": l, "stage": STAGES[self._stage_of[l]], "name": names[l],
             "keep_prob": self._keep[l], "always_run": self._always_run[l]}
            for l in range(self.num_blocks)
        ]

    def branch_scales(self) -> list[float]:
        """Multiplier of each block's residual branch in the current mode (train or eval)."""
        return (self._train_scale if self.training else self._eval_scale).tolist()

    def set_step(self, step: int) -> None:
        """The global step of the next training forward; the counter advances by one after each."""
        self._next_step = int(step)

    def sample_decisions(self, step: int) -> list[bool]:
        """Which blocks run at this step (True = run); a pure function of (seed, step)."""
        gen = torch.Generator().manual_seed(_generator_seed(self.seed, step))
        u = torch.rand(self.num_blocks, generator=gen, dtype=torch.float64).tolist()
        return [a or ui < p for a, ui, p in zip(self._always_run, u, self._keep)]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """C2..C5 feature maps (strides 4, 8, 16, 32)."""
        x = self._run_stem(self, x)
        if self.training:
            run = self.sample_decisions(self._next_step)
            self._next_step += 1
            scales = self._train_scale
            self.last_executed = [l for l, r in enumerate(run) if r]
        else:
            run = [True] * self.num_blocks
            scales = self._eval_scale
        unit = self._unit[self.training]
        feats: dict[str, Tensor] = {}
        for l, block in enumerate(self._blocks):
            if self._always_run[l] or (run[l] and unit[l]):
                x = block(x)
            elif run[l]:
                x = self._run_scaled(block, x, scales[l])
            # A dropped block is skipped entirely: x passes through the identity shortcut.
            if l == self.num_blocks - 1 or self._stage_of[l + 1] != self._stage_of[l]:
                feats[f"c{self._stage_of[l] + 2}"] = x
        return feats

    def compile_blocks(self, **compile_kwargs) -> None:
        """Regional compilation: each block (and the stem) separately; drop decisions stay in eager Python."""
        # The blocks of one function share one Dynamo cache: 4 stage shapes x train/eval x
        # grad/no-grad variants exceed the default limit of 8, after which Dynamo silently
        # falls back to eager.
        cfg = torch._dynamo.config
        limit = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"  # torch < 2.6
        setattr(cfg, limit, max(getattr(cfg, limit), 32))
        self._run_scaled = torch.compile(_scaled_block, **compile_kwargs)
        for block in self._blocks:
            block.compile(**compile_kwargs)  # in place (state_dict keys unchanged); used where the scale is 1
        self._run_stem = torch.compile(_stem, **compile_kwargs)

    def load_torchvision_weights(self, path: str | Path) -> None:
        """Load a torchvision ResNet state_dict from a local file (the classifier ``fc.*`` is ignored)."""
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"{path}: expected a state_dict, got {type(state).__name__}")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{path}: not a matching torchvision ResNet state_dict ({exc})") from None


#: Backbone normalisation: trained BatchNorm, or BatchNorm frozen to its loaded statistics.
NORMS = ("batch", "frozen")

#: What ``frozen_stages=k`` freezes: the first k of these, in order from the input.
FROZEN_STAGES = (("conv1", "bn1"), *((stage,) for stage in STAGES))


def build_backbone(
    name: str = "resnet50",
    p_min: float = 0.8,
    scaling: str = "inverted",
    seed: int = 0,
    weights: str | Path | None = None,
    norm: str = "batch",
    frozen_stages: int = 0,
) -> StochasticDepthResNet:
    """A torchvision ResNet (random init, or ImageNet weights from a local file) with stochastic depth.

    ``norm="frozen"`` builds it with torchvision's ``FrozenBatchNorm2d``: the statistics and
    affine terms of every backbone BN stay those of the loaded weights (ImageNet, or a
    checkpoint through ``init_from``), as torchvision's detection models do, since 2-4 pages
    per GPU give noisy batch statistics. ``frozen_stages`` also stops the gradients of the
    stem (1), and of layer1 (2), layer2 (3), layer3 (4) and layer4 (5) after it: the low-level
    filters transfer as they are, and 5 trains only the neck and the heads on the pretrained
    features (no backward pass through the backbone at all).
    """
    factory = getattr(torchvision.models, name, None)
    if factory is None or not name.startswith(("resnet", "resnext", "wide_resnet")):
        raise ValueError(f"unknown torchvision ResNet {name!r}")
    if norm not in NORMS:
        raise ValueError(f"backbone norm must be one of {NORMS}, got {norm!r}")
    if isinstance(frozen_stages, bool) or frozen_stages not in range(len(FROZEN_STAGES) + 1):
        raise ValueError(f"frozen_stages must be 0 (none) to {len(FROZEN_STAGES)} (the stem and layer1-4: the whole "
                         f"backbone), got {frozen_stages!r}")
    kwargs = {"norm_layer": FrozenBatchNorm2d} if norm == "frozen" else {}
    backbone = StochasticDepthResNet(factory(weights=None, **kwargs), p_min=p_min, scaling=scaling, seed=seed)
    if weights:
        backbone.load_torchvision_weights(weights)
    for stage in FROZEN_STAGES[:frozen_stages]:
        for module in stage:
            getattr(backbone, module).requires_grad_(False)
    return backbone
