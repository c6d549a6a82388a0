"""Lookup-free quantization (MAGVIT-2, Yu et al. 2023): binary codes, no codebook lookup.

Each of ``d = log2(codebook_size)`` channels is quantized to its sign, ``+-scale``; the
index reads the signs as bits, channel ``i`` worth ``2**i`` (channel 0 is the least
significant bit, matching FSQ's "first channel varies fastest" order).

Losses:

- commitment ``beta * ||z - sg[q]||^2``;
- entropy ``entropy_weight * (H_sample - diversity_gamma * H_codebook)``: low
  per-sample entropy makes assignments confident, high codebook entropy spreads
  them over the codebook. Code probabilities are ``softmax(-||z - c||^2 / T)``, which
  factorize over bits as ``p_i(+) = sigmoid(4 * scale * z_i / T)``. ``H_sample`` is the
  exact entropy of that product distribution; ``H_codebook`` is computed per bit on
  the batch-mean marginals (an upper bound of the joint entropy, cheap for 2^18 codes).

Example::

    lfq = LookupFreeQuantizer(LFQConfig(dim=16, codebook_size=2**16))
    out = lfq(torch.randn(2, 16, 8, 8))        # indices (2, 8, 8) in [0, 65536)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from latentflow.configuration import check_positive
from latentflow.errors import ConfigError
from latentflow.quantizers.base import (
    FlatQuantized,
    Quantizer,
    QuantizerConfig,
    entropy,
    exact_straight_through,
    register_quantizer,
)


@dataclass
class LFQConfig(QuantizerConfig):
    """LFQ settings. ``codebook_size`` must be a power of two (2**bits)."""

    name: ClassVar[str] = "lfq"

    dim: int = 16  # input channels; != bits adds linear projections
    codebook_size: int = 2**16
    beta: float = 0.25  # commitment weight
    entropy_weight: float = 0.1
    diversity_gamma: float = 1.0  # weight of the codebook-entropy term
    entropy_temperature: float = 0.01

    def validate(self) -> None:
        owner = type(self).__name__
        check_positive(owner, dim=self.dim, codebook_size=self.codebook_size, entropy_temperature=self.entropy_temperature)
        if self.codebook_size < 2 or self.codebook_size & (self.codebook_size - 1):
            raise ConfigError(f"{owner}.codebook_size must be a power of two >= 2, got: {self.codebook_size}")
        check_positive(owner, beta=self.beta, entropy_weight=self.entropy_weight, allow_zero=True)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of Bernoulli(p), elementwise."""
    return entropy(torch.stack([p, 1 - p], dim=-1))


@register_quantizer
class LookupFreeQuantizer(Quantizer):
    """LFQ; see the module docstring. :class:`BinarySphericalQuantizer` refines it."""

    config_class = LFQConfig

    def __init__(self, config: LFQConfig):
        super().__init__(config)
        bits = self.num_bits
        self.register_buffer("bit_values", 2 ** torch.arange(bits), persistent=False)
        self.project_in = nn.Linear(config.dim, bits) if config.dim != bits else nn.Identity()
        self.project_out = nn.Linear(bits, config.dim) if config.dim != bits else nn.Identity()

    @property
    def num_bits(self) -> int:
        return int(math.log2(self.config.codebook_size))

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def scale(self) -> float:
        """Magnitude of every code coordinate."""
        return 1.0

    def prepare(self, z: torch.Tensor) -> torch.Tensor:
        """Input rows (N, dim) -> the (N, bits) space codes live in."""
        return self.project_in(z)

    def bits_to_codes(self, bits: torch.Tensor) -> torch.Tensor:
        return torch.where(bits, self.scale, -self.scale)

    def quantize_flat(self, z: torch.Tensor) -> FlatQuantized:
        zb = self.prepare(z)  # (N, bits)
        positive = zb > 0
        q = self.bits_to_codes(positive)
        losses = {"commitment": self.config.beta * F.mse_loss(zb, q), **self.entropy_losses(zb)}
        codes = exact_straight_through(q, zb)
        return FlatQuantized(self.project_out(codes), (positive.long() * self.bit_values).sum(-1), losses)

    def entropy_losses(self, zb: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        if cfg.entropy_weight == 0:
            return {}
        p = torch.sigmoid(4 * self.scale * zb / cfg.entropy_temperature)  # (N, bits): P(bit = +)
        sample_entropy = binary_entropy(p).sum(-1).mean()
        codebook_entropy = binary_entropy(p.mean(0)).sum()
        return {"entropy": cfg.entropy_weight * (sample_entropy - cfg.diversity_gamma * codebook_entropy)}

    def encode_flat(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.dim != self.num_bits:
            return self.nearest_output_code(z)  # the output projection has no exact inverse
        return ((self.prepare(z) > 0).long() * self.bit_values).sum(-1)

    def decode_flat(self, indices: torch.Tensor) -> torch.Tensor:
        bits = (indices.unsqueeze(-1) // self.bit_values) % 2 == 1  # (N, bits)
        return self.project_out(self.bits_to_codes(bits))
