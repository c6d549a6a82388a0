"""Grouped (product) vector quantization: channels split into G independently quantized groups.

``dim`` channels are cut into ``groups`` contiguous slices of ``dim / groups``; each
slice has its own :class:`~latentflow.quantizers.vq.VectorQuantizer` (configured by
``vq``). A position gets G indices (trailing axis (.., G)), so the effective
codebook is ``codebook_size ** G`` while each lookup stays small (Jégou et al. 2011,
product quantization; wav2vec 2.0's grouped codebooks).

Example::

    gvq = GroupedVectorQuantizer(GroupedVQConfig(dim=32, groups=4, vq={"codebook_size": 64}))
    out = gvq(torch.randn(2, 32, 8, 8))     # indices (2, 8, 8, 4)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from latentflow.configuration import check_positive
from latentflow.errors import ConfigError
from latentflow.quantizers.base import FlatQuantized, Quantizer, QuantizerConfig, register_quantizer
from latentflow.quantizers.residual import level_config
from latentflow.quantizers.vq import VectorQuantizer, VQConfig


@dataclass
class GroupedVQConfig(QuantizerConfig):
    """Grouped VQ settings; ``vq`` holds the per-group :class:`VQConfig` fields except ``dim``."""

    name: ClassVar[str] = "grouped_vq"

    dim: int = 64
    groups: int = 4
    vq: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        owner = type(self).__name__
        check_positive(owner, dim=self.dim, groups=self.groups)
        if self.dim % self.groups:
            raise ConfigError(f"{owner}.dim ({self.dim}) must be divisible by groups, got: {self.groups}")
        level_config(owner, self.vq, self.dim // self.groups)


@register_quantizer
class GroupedVectorQuantizer(Quantizer):
    """G independent VQs over channel groups; see the module docstring."""

    config_class = GroupedVQConfig

    def __init__(self, config: GroupedVQConfig):
        super().__init__(config)
        base = level_config(type(config).__name__, config.vq, config.dim // config.groups)
        self.quantizers = nn.ModuleList(
            VectorQuantizer(VQConfig.from_dict({**base.to_dict(), "seed": base.seed + g})) for g in range(config.groups)
        )

    @property
    def codebook_size(self) -> int:
        return self.quantizers[0].codebook_size

    @property
    def num_levels(self) -> int:
        return self.config.groups

    def _split(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return z.chunk(self.config.groups, dim=-1)  # G x (N, D / G)

    def quantize_flat(self, z: torch.Tensor) -> FlatQuantized:
        outs = [vq.quantize_flat(part) for vq, part in zip(self.quantizers, self._split(z))]
        losses: dict[str, torch.Tensor] = {}
        for out in outs:
            for name, value in out.losses.items():
                losses[name] = losses.get(name, 0) + value / len(outs)
        dead = [o.dead_codes for o in outs if o.dead_codes is not None]
        return FlatQuantized(
            torch.cat([o.codes for o in outs], dim=-1),
            torch.stack([o.indices for o in outs], dim=-1),  # (N, G)
            losses,
            torch.stack(dead).sum() if dead else None,
        )

    def decode_flat(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.cat([vq.decode_flat(indices[:, g]) for g, vq in enumerate(self.quantizers)], dim=-1)

    def encode_flat(self, z: torch.Tensor) -> torch.Tensor:
        return torch.stack([vq.encode_flat(part) for vq, part in zip(self.quantizers, self._split(z))], dim=-1)
