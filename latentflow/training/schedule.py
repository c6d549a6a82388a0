"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

The schedule is a pure function of the step, so resuming needs only the step
(no scheduler object to checkpoint).

Example::

    for group in optimizer.param_groups:
        group["lr"] = warmup_cosine(step, base_lr=1e-4, warmup=100, total=10_000)
"""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, base_lr: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Learning rate at ``step`` (0-based).

    Args:
        step: optimizer steps already taken.
        base_lr: peak learning rate, reached at the end of warmup.
        warmup: linear warmup steps (0 for none).
        total: total steps; the cosine reaches ``base_lr * min_ratio`` there.
        min_ratio: floor as a fraction of ``base_lr``.

    Returns:
        The learning rate for the step about to be taken.
    """
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    floor = base_lr * min_ratio
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every param group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr
