"""Exponential moving average of a model's weights.

Keeps a float32 shadow copy of every floating parameter and buffer; warms up
the decay as ``min(decay, (1 + n) / (10 + n))`` so early averages are not
stuck at the random init.

Example::

    ema = EMA(model, decay=0.999)
    ...  # after each optimizer step
    ema.update(model)
    ema.copy_to(eval_model)
"""

from __future__ import annotations

import torch
from torch import nn


def _shadow_of(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return t.float().clone() if t.is_floating_point() else t.clone()


class EMA:
    """Shadow weights ``s <- d * s + (1 - d) * w``.

    Args:
        model: the module to track (unwrapped, not DDP).
        decay: target decay in [0, 1).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {k: _shadow_of(v) for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the shadow."""
        d = self.current_decay()
        for key, value in model.state_dict().items():
            shadow = self.shadow[key]
            if value.is_floating_point():
                shadow.mul_(d).add_(value.detach().float(), alpha=1.0 - d)
            else:  # integer buffers (counters): track the latest value
                shadow.copy_(value)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the shadow weights into ``model`` (cast to its dtypes)."""
        own = model.state_dict()
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in self.shadow.items()})

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (safetensors-ready); ``num_updates`` travels in the trainer's JSON."""
        return {k: v.contiguous() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            from latentflow.errors import CheckpointError

            raise CheckpointError(f"EMA state is missing keys: {missing[:5]}{'...' if len(missing) > 5 else ''}")
        self.shadow = {k: _shadow_of(state[k]) for k in self.shadow}
        self.num_updates = num_updates
