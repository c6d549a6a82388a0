"""Which rows go in which batch: the read plan of :meth:`LatentDataset.iter_batches`, from row counts alone.

Reading whole row ranges is what makes the reader fast, so shuffling happens at two levels:

1. **blocks**: every group's rows are cut into contiguous blocks of at most ``block_rows``
   rows; each epoch permutes the blocks (seeded by ``(seed, epoch)``) and deals them
   round-robin to the ranks, so ranks read disjoint rows.
2. **a shuffle buffer per bucket shape**: a rank's rows of one bucket, in block order, are cut
   into windows of ``W`` rows (a multiple of the batch size, ``W`` proportional to the bucket's
   share of ``buffer_rows``); each window is read in one pass, permuted (seeded by
   ``(seed, epoch, rank, bucket, window)``) and cut into batches.

Buckets' batches are interleaved in proportion to their sizes, so every stretch of an epoch
sees every shape. Everything here is a pure function of the row counts, so skipping to
batch ``k`` (resuming) costs no IO, and at most one window per bucket is ever in memory.

Example::

    plan = BatchPlan(groups, batch_size=64, shuffle=True, seed=0, epoch=3, rank=0, world=2)
    for bucket, window, rows in plan.batches(start=10):
        ...   # read ``plan.window_blocks(bucket, window)``, take ``rows`` of it
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from latentflow.errors import ConfigError


@dataclass(frozen=True)
class Block:
    """Rows ``[start, stop)`` of group ``group``."""

    group: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class GroupRows:
    """The rows of one group a dataset (or a view of it) reads: ``[start, stop)``, in bucket ``bucket``."""

    bucket: str
    start: int
    stop: int


def default_block_rows(total: int, world: int) -> int:
    """Whole groups of up to 1024 rows, smaller when the data is too small to give each rank 8 blocks."""
    return max(1, min(1024, math.ceil(total / (8 * world))))


class BatchPlan:
    """The batches of one epoch for one rank (see the module docstring).

    Args:
        groups: the rows of each group (index = group id).
        batch_size: rows per batch (each batch holds one bucket shape).
        shuffle: permute blocks and rows within windows; off: groups in order, rows in order.
        seed, epoch: the order is a pure function of them.
        rank, world: this reader and the reader count; ranks get disjoint blocks.
        drop_last: drop each bucket's last incomplete batch.
        buffer_rows: rows held in memory (all buckets' windows together, about).
        block_rows: rows per block (default: :func:`default_block_rows`).
    """

    def __init__(self, groups: list[GroupRows], batch_size: int, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                 rank: int = 0, world: int = 1, drop_last: bool = False, buffer_rows: int = 8192,
                 block_rows: int | None = None):
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0, got: {batch_size}")
        if not 0 <= rank < world:
            raise ConfigError(f"rank must be in [0, world), got: rank={rank}, world={world}")
        self.groups, self.batch_size, self.shuffle = groups, batch_size, shuffle
        self.seed, self.epoch, self.rank, self.world, self.drop_last = seed, epoch, rank, world, drop_last
        total = sum(g.stop - g.start for g in groups)
        self.block_rows = block_rows or default_block_rows(total, world)
        mine = self._blocks()[rank::world]
        self.buckets = sorted({groups[b.group].bucket for b in mine})
        self.sequences = {name: [b for b in mine if groups[b.group].bucket == name] for name in self.buckets}
        rows = {name: sum(len(b) for b in seq) for name, seq in self.sequences.items()}
        self.rows = rows
        share = max(sum(rows.values()), 1)
        self.window = {name: max(batch_size, int(buffer_rows * rows[name] / share) // batch_size * batch_size)
                       for name in self.buckets}
        self.counts = {name: self._count(name) for name in self.buckets}

    # ---- blocks ---------------------------------------------------------------------
    def _blocks(self) -> list[Block]:
        blocks = [Block(g, s, min(s + self.block_rows, rows.stop))
                  for g, rows in enumerate(self.groups) for s in range(rows.start, rows.stop, self.block_rows)]
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(blocks))
            blocks = [blocks[i] for i in order]
        return blocks

    # ---- counts ---------------------------------------------------------------------
    def _count(self, bucket: str) -> int:
        n, w, b = self.rows[bucket], self.window[bucket], self.batch_size
        full, rest = divmod(n, w)
        last = rest // b if self.drop_last else math.ceil(rest / b)
        return full * (w // b) + last

    def __len__(self) -> int:
        return sum(self.counts.values())

    # ---- the order ------------------------------------------------------------------
    def batches(self, start: int = 0) -> Iterator[tuple[str, int, np.ndarray]]:
        """``(bucket, window, row positions within the window)`` for batch ``start`` onwards."""
        orders: dict[str, tuple[int, np.ndarray]] = {}  # the current window's permutation per bucket
        for i, (bucket, k) in enumerate(self._interleaved()):
            if i < start:
                continue
            window, j = divmod(k, self.window[bucket] // self.batch_size)
            if orders.get(bucket, (-1,))[0] != window:
                orders[bucket] = (window, self._window_order(bucket, window))
            yield bucket, window, orders[bucket][1][j * self.batch_size:(j + 1) * self.batch_size]

    def _interleaved(self) -> Iterator[tuple[str, int]]:
        """Each bucket's batches 0..n-1, merged by their fraction of the bucket ((k + 0.5) / n)."""
        heap = [((0.5 / n), name, 0) for name, n in self.counts.items() if n]
        heapq.heapify(heap)
        while heap:
            _, name, k = heapq.heappop(heap)
            yield name, k
            if k + 1 < self.counts[name]:
                heapq.heappush(heap, ((k + 1.5) / self.counts[name], name, k + 1))

    def window_rows(self, bucket: str, window: int) -> int:
        return min(self.window[bucket], self.rows[bucket] - window * self.window[bucket])

    def _window_order(self, bucket: str, window: int) -> np.ndarray:
        n = self.window_rows(bucket, window)
        if not self.shuffle:
            return np.arange(n)
        key = [self.seed, self.epoch, self.rank, self.buckets.index(bucket), window]
        return np.random.default_rng(key).permutation(n)

    def window_blocks(self, bucket: str, window: int) -> list[Block]:
        """The row ranges window ``window`` of ``bucket`` reads, in order (block pieces)."""
        lo = window * self.window[bucket]
        hi = lo + self.window_rows(bucket, window)
        out, pos = [], 0
        for block in self.sequences[bucket]:
            a, b = max(lo, pos), min(hi, pos + len(block))
            if a < b:
                out.append(Block(block.group, block.start + a - pos, block.start + b - pos))
            pos += len(block)
            if pos >= hi:
                break
        return out
