"""The reader's own stage (``trainer.stage=reader``): the recognition head trained alone, on the lines
of a bank of fused maps computed once.

A page step spends most of its time in the backbone and reads only the lines its crops hold: a 256-px
band of a handwritten page holds 3-4, so an hour of page steps on 2 CPU cores reads a few hundred
handwritten lines ~20 times each, and the reader does not even fit the pages it trains on
(docs/results.md "The reader's own stage"). In this stage the backbone, the neck and the segmentation
head are frozen (a page fine-tune before it has moved them): the fused maps of ``bank_batches`` loader
batches (augmented as the data config says) are computed once, in eval mode as inference sees them,
and each step reads the lines of ``crops_per_step`` crops drawn from the bank, each line through fresh
box noise (``model.recognition.quad_jitter`` / ``quad_grow``). Every ``refresh_every`` steps the next
loader batch replaces the bank's oldest, so the crops and their augmentation keep changing.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from docrec.data.dataset import pad_images, to_model_input
from docrec.engine.runtime import Runtime

log = logging.getLogger(__name__)

#: The per-line targets the reader needs; the per-pixel masks are not kept in the bank.
LINE_TARGETS = ("line_quads", "line_tokens", "line_kinds", "line_fold_case")
#: The loader epochs the bank is first filled from: far past any run's own epochs, so its crops are not
#: the ones the training loop draws (the sampler and the dataset draw per seed and epoch).
BANK_EPOCHS = 1_000_000
#: The parts that do not train in this stage.
FROZEN_PARTS = ("backbone", "neck", "seg_head")


def freeze_all_but_reader(model: torch.nn.Module) -> int:
    """``requires_grad`` off for the backbone, the neck and the segmentation head; returns the
    parameters left to train (the recognition head's)."""
    for name in FROZEN_PARTS:
        getattr(model, name).requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class FeatureBank:
    """Crops (the loader's uint8 images, their line targets) and their fused maps, oldest first.

    ``add`` runs the frozen network over a loader batch (eval mode, no gradients, autocast) and keeps
    each crop's map in ``dtype`` (bfloat16: half the memory, and the RoI sampler reads in float32);
    past ``capacity`` crops the oldest are dropped. ``draw`` stacks ``k`` random crops as a batch
    :meth:`docrec.models.DocRecModel.forward` takes with ``fused=``.
    """

    def __init__(self, model: torch.nn.Module, rt: Runtime, capacity: int, dtype: torch.dtype = torch.bfloat16,
                 ) -> None:
        if capacity < 1:
            raise ValueError(f"the bank must hold at least one crop, got capacity {capacity}")
        self.model, self.rt, self.capacity, self.dtype = model, rt, capacity, dtype
        self.images: deque[Tensor] = deque(maxlen=capacity)
        self.maps: deque[Tensor] = deque(maxlen=capacity)
        self.targets: deque[dict[str, Tensor]] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self.maps)

    @property
    def lines(self) -> int:
        """Lines in the crops the bank holds."""
        return sum(int(t["line_quads"].shape[0]) for t in self.targets)

    @torch.no_grad()
    def add(self, batch) -> None:
        """One loader batch ``(images, targets, metas)`` into the bank."""
        images, targets = batch[0], batch[1]
        x, _ = to_model_input(images, None, self.rt.device, self.rt.channels_last)
        was_training = self.model.training
        self.model.eval()  # every block runs, BN on its running statistics: the maps inference reads
        try:
            with self.rt.autocast():
                fused = self.model.fused_map(x)
        finally:
            self.model.train(was_training)
        for i, t in enumerate(targets):
            self.images.append(images[i])
            self.maps.append(fused[i].to("cpu", self.dtype).contiguous())  # host memory, on any device
            self.targets.append({k: t[k] for k in LINE_TARGETS if k in t})

    def draw(self, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, list[dict], Tensor]:
        """``k`` crops drawn without replacement (all of them if the bank holds fewer): uint8 images
        [k, 3, H, W] padded white as the loader pads, their line targets, and their maps [k, C, h, w] in
        float32 (what the RoI sampler reads; converted in the one copy that stacks them), padded with zeros
        (right and bottom, as the model pads its input: a pixel keeps its map cell)."""
        n = len(self.maps)
        pick = torch.randperm(n, generator=generator)[: min(k, n)].tolist()
        images = pad_images([self.images[i] for i in pick])
        maps = [self.maps[i] for i in pick]
        h, w = max(m.shape[-2] for m in maps), max(m.shape[-1] for m in maps)
        fused = torch.zeros((len(maps), maps[0].shape[0], h, w), dtype=torch.float32)
        for j, m in enumerate(maps):
            fused[j, :, : m.shape[-2], : m.shape[-1]] = m
        return images, [self.targets[i] for i in pick], fused

    def fill(self, batches: Iterator, stop: Callable[[], bool] = lambda: False) -> None:
        """Add loader batches from ``batches`` until the bank is full, they run out, or ``stop()`` says so
        (a SIGTERM while a CPU fills the bank for minutes)."""
        while len(self.maps) < self.capacity and not stop():
            batch = next(batches, None)
            if batch is None:
                return
            self.add(batch)


def reader_batches(bank: FeatureBank, loader_batches: Iterator, crops_per_step: int, refresh_every: int,
                   skip: int = 0) -> Iterator[tuple[Tensor, list[dict], list, Tensor]]:
    """Micro-batches ``(images, targets, metas, fused)`` drawn from ``bank``, ``refresh_every`` per loader
    batch of ``loader_batches`` (the epoch's), which then replaces the bank's oldest crops; ends with the
    epoch's batches. ``skip``: micro-batches of this epoch already trained (a resumed run), whose loader
    batches the caller's sampler has skipped: the first refresh comes after the rest of their group."""
    count = skip % refresh_every
    for batch in loader_batches:
        while count < refresh_every:
            images, targets, fused = bank.draw(crops_per_step)
            yield images, targets, [], fused.to(bank.rt.device, non_blocking=True)
            count += 1
        bank.add(batch)
        count = 0


def fill_from_epochs(bank: FeatureBank, loader: torch.utils.data.DataLoader, sampler, first_epoch: int,
                     stop: Callable[[], bool] = lambda: False) -> None:
    """Fill ``bank`` from the loader's epochs ``first_epoch``, ``first_epoch + 1``... (the sampler's and the
    dataset's draws are pure functions of the seed and the epoch: epochs the training loop never reaches
    give the bank its own crops and augmentations, the same after a resume)."""
    epoch = first_epoch
    while len(bank) < bank.capacity and not stop():
        before = len(bank)
        sampler.set_epoch(epoch)
        loader.dataset.set_epoch(epoch)
        bank.fill(iter(loader), stop)
        if len(bank) == before and not stop():
            raise RuntimeError("the training loader gave no batch to fill the reader's bank with")
        epoch += 1
