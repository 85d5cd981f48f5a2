"""Epoch-seeded, rank-sharded sampling that can resume in the middle of an epoch."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def _generator(*parts: int) -> torch.Generator:
    """A generator seeded by a tuple of integers (seed, epoch, source, pass ...), without small collisions."""
    h = 0
    for p in parts:
        h = (h * 1_000_003 + p + 1) % (2**61 - 1)
    return torch.Generator().manual_seed(h)


class _EpochSampler(Sampler[int]):
    """An epoch's order (a pure function of seed and epoch), padded, sharded over ranks, skippable."""

    def __init__(self, size: int, seed: int, rank: int, world_size: int) -> None:
        self.size, self.seed, self.rank, self.world = size, seed, rank, world_size
        self.epoch, self.skip = 0, 0
        self.per_rank = -(-size // world_size)  # pad by repeating so every rank has as many samples

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's order and drop its first ``skip`` samples of this rank."""
        self.epoch, self.skip = epoch, skip

    def order(self) -> list[int]:
        """The whole epoch's order, all ranks together (``size`` indices)."""
        raise NotImplementedError

    def indices(self, rank: int | None = None) -> list[int]:
        """A rank's full index list for the current epoch (this rank's by default)."""
        order = self.order()
        order += order[: self.per_rank * self.world - self.size]
        return order[self.rank if rank is None else rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip


class ResumableSampler(_EpochSampler):
    """Like DistributedSampler (order a pure function of seed and epoch), plus ``skip`` for exact resume."""

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        super().__init__(size, seed, rank, world_size)
        self.shuffle = shuffle

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return torch.randperm(self.size, generator=g).tolist()


class WeightedSourceSampler(_EpochSampler):
    """Draws from several sources (consecutive index ranges of one dataset) by weight; resumable like the above.

    An epoch is ``epoch_pages`` draws. Source ``s`` gets ``C_s(e + 1) - C_s(e)`` of epoch ``e``'s draws, with
    ``C_s(e) = floor(e n W_s + u) - floor(e n W_{s-1} + u)`` (``W`` the cumulative weight shares, ``u`` a
    random offset of the run): every epoch has exactly ``n`` draws, a source's count after any number of
    epochs is within 1 of its share, and it is known in closed form, so any epoch is built without the
    ones before it. The epoch's source slots are shuffled; each source fills its slots from its own stream
    of permutations (a fresh one per pass over it), so every page of a source is drawn before any is
    drawn again, across epoch boundaries too.

    A page drawn in the source's k-th pass is yielded as ``index + k * total``, ``total`` the pages of all
    sources: PageDataset reads ``index % total`` and seeds augmentation with the full value, so repeats of
    a page within an epoch are augmented differently.

    A curriculum: with ``end_weights`` and ``ramp = (a, b)`` (in pages drawn by all ranks together),
    source ``s`` weighs ``weights[s]`` until draw ``a``, then linearly more or less, ``end_weights[s]``
    from draw ``b`` on; an epoch takes the weights of the draw it starts at, so they change at epoch
    boundaries. The counts become ``C_s(e) = floor(M_s(e) + u) - floor(M_{s-1}(e) + u)`` with ``M`` the
    sum over the epochs before ``e`` of ``n W(k)``: still exact per epoch, within 1 of the schedule's
    share, and a pure function of the epoch. A weight may be 0 at one end (a source that enters or
    leaves).
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], epoch_pages: int | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1, end_weights: Sequence[float] | None = None,
                 ramp: tuple[int, int] | None = None) -> None:
        if len(sizes) != len(weights) or not sizes:
            raise ValueError(f"need one weight per source, got sizes {list(sizes)} and weights {list(weights)}")
        if (end_weights is None) != (ramp is None):
            raise ValueError("a curriculum needs both end_weights and ramp")
        ends = list(weights) if end_weights is None else list(end_weights)
        if len(ends) != len(sizes) or any(n < 1 for n in sizes):
            raise ValueError(f"need pages and one end weight per source, got sizes {list(sizes)}, end "
                             f"weights {ends}")
        both = list(zip(weights, ends))
        if ramp is None and any(not w > 0 for w in weights):
            raise ValueError(f"every source needs a weight > 0, got weights {list(weights)}")
        if any(not (a >= 0 and b >= 0 and a + b > 0) for a, b in both) or not (sum(weights) > 0 and sum(ends) > 0):
            raise ValueError(f"weights must be >= 0, every source above 0 at one end of the ramp and every end "
                             f"above 0 in total, got {list(weights)} -> {ends}")
        if ramp is not None and not 0 <= ramp[0] <= ramp[1]:
            raise ValueError(f"the ramp must be two draw counts 0 <= start <= end, got {ramp}")
        n = epoch_pages or sum(sizes)
        self.weights, self.end_weights, self.ramp = list(weights), ends, ramp
        for ws in (weights, ends):
            shares = self._shares(ws)
            if any(0 < n * p < 1 for p in shares):
                raise ValueError(f"an epoch of {n} pages gives some source less than one page at weights "
                                 f"{list(ws)}: raise data.epoch_pages or that source's weight")
        self.shares = self._shares(weights)
        super().__init__(n, seed, rank, world_size)
        self.sizes = list(sizes)
        self.offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self.total = sum(sizes)
        self._cum = self._cumulative(self.shares)
        self._u = torch.rand(1, generator=_generator(seed, 1)).item()

    @staticmethod
    def _shares(weights: Sequence[float]) -> list[float]:
        total = math.fsum(weights)
        return [w / total for w in weights]

    @staticmethod
    def _cumulative(shares: Sequence[float]) -> list[float]:
        cum = [math.fsum(shares[: i + 1]) for i in range(len(shares))]
        return [0.0, *cum[:-1], 1.0]  # the last exactly 1: the counts of an epoch sum to n

    def weights_at(self, epoch: int) -> list[float]:
        """The sources' weights in ``epoch`` (those at the draw it starts at)."""
        if self.ramp is None:
            return list(self.weights)
        a, b = self.ramp
        t = epoch * self.size
        f = 1.0 if t >= b else 0.0 if t <= a else (t - a) / (b - a)
        return [w + (e - w) * f for w, e in zip(self.weights, self.end_weights)]

    def drawn(self, epoch: int) -> list[int]:
        """Draws of each source in all epochs before ``epoch``."""
        if self.ramp is None:
            t = epoch * self.size
            mass = [t * c for c in self._cum]
        else:  # constant weights before and after the ramp: a loop over the ramp's epochs only
            n, (a, b) = self.size, self.ramp
            k0 = min(epoch, a // n + 1)  # epochs starting at or before draw a
            k1 = min(epoch, max(k0, -(-b // n)))  # the first epoch starting at or after draw b
            start, end = self._cum, self._cumulative(self._shares(self.end_weights))
            ramp = [self._cumulative(self._shares(self.weights_at(k))) for k in range(k0, k1)]
            mass = [math.fsum([k0 * n * start[i], *(n * c[i] for c in ramp), (epoch - k1) * n * end[i]])
                    for i in range(len(start))]
            mass[-1] = float(epoch * n)  # exactly: every epoch has n draws
        edges = [math.floor(m + self._u) for m in mass]
        return [b - a for a, b in itertools.pairwise(edges)]

    def _stream(self, source: int, start: int, count: int) -> list[int]:
        """Positions ``start .. start + count - 1`` of a source's stream of permutations, as dataset indices."""
        size, out = self.sizes[source], []
        pos = start
        while pos < start + count:
            k, j = divmod(pos, size)
            perm = torch.randperm(size, generator=_generator(self.seed, 2, source, k)).tolist()
            take = perm[j : j + start + count - pos]
            base = self.offsets[source] + k * self.total
            out += [base + i for i in take]
            pos += len(take)
        return out

    def order(self) -> list[int]:
        before, after = self.drawn(self.epoch), self.drawn(self.epoch + 1)
        streams = [iter(self._stream(s, a, b - a)) for s, (a, b) in enumerate(zip(before, after))]
        slots = torch.repeat_interleave(torch.arange(len(streams)), torch.tensor(after) - torch.tensor(before))
        slots = slots[torch.randperm(self.size, generator=_generator(self.seed, 3, self.epoch))].tolist()
        return [next(streams[s]) for s in slots]  # each source's draws in its stream's order


def aspect_groups(aspects: Sequence[float], factor: int) -> list[int]:
    """Each page's aspect-ratio bin (width / height), with the edges of torchvision's detection
    references: ``2 ** linspace(-1, 1, 2 * factor + 1)``, so 2 * factor bins between 1:2 and 2:1
    plus one below and one above (factor 3: receipts, A4 portrait, square, landscape apart)."""
    if factor < 1:
        raise ValueError(f"data.aspect_ratio_group_factor must be >= 1 to group (0 turns it off), got {factor}")
    edges = 2.0 ** np.linspace(-1, 1, 2 * factor + 1)
    return np.digitize(np.asarray(aspects, np.float64), edges).tolist()


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of an epoch sampler, resumable by batch count, optionally grouped by aspect ratio.

    Without ``groups`` a batch is the next ``batch_size`` indices of the rank (what a DataLoader
    with ``batch_size`` and ``sampler`` does). With ``groups`` (one group id per page, see
    :func:`aspect_groups`) a batch holds pages of one group only, as torchvision's
    ``GroupedBatchSampler`` builds them: indices go to their group's buffer in sampler order and a
    full buffer is a batch; each group's remainder is a last, smaller batch. So whole portrait
    and landscape pages (or receipts and forms) are not padded to one square.

    The batches are a pure function of seed and epoch, so ``set_epoch(epoch, skip)`` resumes
    after ``skip`` batches exactly. Grouped, the ranks' batch counts can differ: every rank builds
    every rank's batches (cheap: index lists) and pads its own list to the longest by repeating
    its first batches, so all ranks take the same number of steps per epoch. The index of a weighted sampler's repeat pass
    (``index + k * pages``) takes the group of its page.
    """

    def __init__(self, sampler: _EpochSampler, batch_size: int, groups: Sequence[int] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler, self.batch_size = sampler, batch_size
        self.groups = list(groups) if groups is not None else None
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's batches and drop the first ``skip`` of them (the ones already trained)."""
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def _batches_of(self, indices: list[int]) -> list[list[int]]:
        bs = self.batch_size
        if self.groups is None:
            return [indices[i : i + bs] for i in range(0, len(indices), bs)]
        buffers: dict[int, list[int]] = {}
        out = []
        for i in indices:
            buf = buffers.setdefault(self.groups[i % len(self.groups)], [])
            buf.append(i)
            if len(buf) == bs:
                out.append(buf[:])
                buf.clear()
        return out + [b for b in buffers.values() if b]  # remainders, in the order their groups appeared

    def batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch, none skipped."""
        mine = self._batches_of(self.sampler.indices())
        if self.groups is not None and self.sampler.world > 1:
            longest = max(len(self._batches_of(self.sampler.indices(r))) for r in range(self.sampler.world))
            mine = [mine[i % len(mine)] for i in range(longest)] if mine else mine
        return mine

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches()[self.skip :])

    def __len__(self) -> int:
        return max(len(self.batches()) - self.skip, 0)
