"""Residual vector quantization (SoundStream, Zeghidour et al. 2021; RQ-VAE, Lee et al. 2022).

Level ``l`` quantizes what the levels before it left over: ``r_0 = z``,
``q_l = VQ_l(r_l)``, ``r_{l+1} = r_l - q_l``; the output is ``sum_l q_l``. Indices
carry a trailing level axis (.., L). With ``quantizer_dropout`` > 0, a training
batch keeps only its first ``n ~ U{1..L}`` levels with that probability (so the
model learns to decode any prefix, i.e. variable bit-rate); dropped levels get
index -1 and decode to zero.

Each level is a :class:`~latentflow.quantizers.vq.VectorQuantizer` configured by
``vq`` (every VQ option: EMA, k-means, dead-code reset, cosine, ...).

Example::

    rvq = ResidualVectorQuantizer(ResidualVQConfig(dim=32, num_quantizers=4,
                                                   vq={"codebook_size": 256, "use_ema": True}))
    out = rvq(torch.randn(2, 32, 8, 8))     # indices (2, 8, 8, 4)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from latentflow.configuration import check_positive
from latentflow.errors import ConfigError
from latentflow.quantizers.base import (
    FlatQuantized,
    Quantizer,
    QuantizerConfig,
    exact_straight_through,
    register_quantizer,
)
from latentflow.quantizers.vq import VectorQuantizer, VQConfig


def level_config(owner: str, vq: dict[str, Any], dim: int) -> VQConfig:
    """A level's VQConfig from the shared ``vq`` dict, with ``dim`` filled in."""
    if "dim" in vq:
        raise ConfigError(f"{owner}.vq must not set 'dim' (it is derived), got: {vq['dim']}")
    return VQConfig.from_dict({**vq, "dim": dim})


@dataclass
class ResidualVQConfig(QuantizerConfig):
    """Residual VQ settings; ``vq`` holds the per-level :class:`VQConfig` fields except ``dim``."""

    name: ClassVar[str] = "residual_vq"

    dim: int = 64
    num_quantizers: int = 4
    quantizer_dropout: float = 0.0  # probability that a training batch uses only a prefix of levels
    vq: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        owner = type(self).__name__
        check_positive(owner, dim=self.dim, num_quantizers=self.num_quantizers)
        if not 0.0 <= self.quantizer_dropout <= 1.0:
            raise ConfigError(f"{owner}.quantizer_dropout must be in [0, 1], got: {self.quantizer_dropout}")
        level_config(owner, self.vq, self.dim)  # raises on bad level settings


@register_quantizer
class ResidualVectorQuantizer(Quantizer):
    """N levels of VQ on successive residuals; see the module docstring."""

    config_class = ResidualVQConfig

    def __init__(self, config: ResidualVQConfig):
        super().__init__(config)
        base = level_config(type(config).__name__, config.vq, config.dim)
        self.levels = nn.ModuleList(
            VectorQuantizer(VQConfig.from_dict({**base.to_dict(), "seed": base.seed + i}))
            for i in range(config.num_quantizers)
        )
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))

    @property
    def codebook_size(self) -> int:
        return self.levels[0].codebook_size

    @property
    def num_levels(self) -> int:
        return self.config.num_quantizers

    def _active_levels(self) -> int:
        """Levels used by this batch. Seeded by the step count, so every rank drops the same levels
        (ranks that ran different levels would call different all-reduces and hang)."""
        cfg = self.config
        if not self.training:
            return cfg.num_quantizers
        generator = torch.Generator().manual_seed(1_000_003 * self.levels[0].config.seed + int(self.num_updates))
        self.num_updates += 1
        if cfg.quantizer_dropout > 0 and float(torch.rand((), generator=generator)) < cfg.quantizer_dropout:
            return int(torch.randint(1, cfg.num_quantizers + 1, (), generator=generator))
        return cfg.num_quantizers

    def quantize_flat(self, z: torch.Tensor) -> FlatQuantized:
        active = self._active_levels()
        residual, total = z, torch.zeros_like(z)
        indices = torch.full((z.shape[0], self.num_levels), -1, dtype=torch.long, device=z.device)
        losses: dict[str, torch.Tensor] = {}
        dead = []
        for level, vq in enumerate(self.levels[:active]):
            out = vq.quantize_flat(residual)
            codes = out.codes.detach()
            total = total + codes
            residual = residual - codes
            indices[:, level] = out.indices
            for name, value in out.losses.items():
                losses[name] = losses.get(name, 0) + value / active
            if out.dead_codes is not None:
                dead.append(out.dead_codes)
        dead_codes = torch.stack(dead).sum() if dead else None
        # straight-through over the whole stack; the value is exactly the sum of level codes
        return FlatQuantized(exact_straight_through(total, z), indices, losses, dead_codes)

    def decode_flat(self, indices: torch.Tensor) -> torch.Tensor:
        total = None
        for level, vq in enumerate(self.levels):
            idx = indices[:, level]
            kept = (idx >= 0).unsqueeze(-1)
            codes = torch.where(kept, vq.decode_flat(idx.clamp_min(0)), 0.0)
            total = codes if total is None else total + codes
        return total

    def encode_flat(self, z: torch.Tensor) -> torch.Tensor:
        # greedy re-encoding: for a sum of codes it need not recover the same levels (codes_to_indices
        # is then a quantization of the codes, not an exact inverse); keep forward()'s indices
        residual, indices = z, []
        for vq in self.levels:
            idx = vq.encode_flat(residual)
            residual = residual - vq.decode_flat(idx)
            indices.append(idx)
        return torch.stack(indices, dim=-1)
