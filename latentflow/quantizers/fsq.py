"""Finite scalar quantization (Mentzer et al. 2023, "FSQ: VQ-VAE made simple").

Each of ``d = len(levels)`` channels is squashed into a fixed range and rounded to
one of ``levels[i]`` values; the codebook is implicit (``prod(levels)`` codes) and
needs no losses. Index convention, identical to the paper's reference code so that
indices are interchangeable with other FSQ implementations:

- ``bound(z) = tanh(z + shift) * half_l - offset`` with ``half_l = (L - 1)(1 - eps) / 2``,
  ``offset = 0.5`` for even L (0 for odd), ``shift = tan(offset / half_l)``;
  ``FSQConfig(bound="vector_quantize_pytorch")`` takes that library's (>= 1.x) bound instead,
  ``half_l = (L - 1)(1 + eps) / 2`` and ``shift = atanh(offset / half_l)``. The two differ on a few
  percent of indices or fewer (0.8-0.9% on N(0, 1.5^2) inputs, odd and even levels alike; ~3% reported
  on real hold-out data), so a model trained with that library tokenizes identically only with it;
- codes are ``round(bound(z)) / (L // 2)``;
- index ``= sum_i (code_i * (L_i // 2) + L_i // 2) * basis_i`` with
  ``basis = cumprod([1] + levels[:-1])`` (the first channel varies fastest).

Example::

    fsq = FiniteScalarQuantizer(FSQConfig(levels=[8, 5, 5, 5]))      # 1000 codes
    out = fsq(torch.randn(2, 4, 8, 8))                             # indices (2, 8, 8)

With ``dim`` != ``len(levels)``, linear projections map in and out of the code space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from latentflow.configuration import check_choice, check_positive
from latentflow.errors import ConfigError
from latentflow.quantizers.base import (
    FlatQuantized,
    Quantizer,
    QuantizerConfig,
    exact_straight_through,
    register_quantizer,
)

BOUNDS = ("reference", "vector_quantize_pytorch")


@dataclass
class FSQConfig(QuantizerConfig):
    """FSQ settings. ``levels`` per code channel; the paper recommends e.g. [8, 5, 5, 5] for ~2^10."""

    name: ClassVar[str] = "fsq"

    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])
    dim: int | None = None  # input channels; None: len(levels), no projection
    eps: float = 1e-3  # keeps tanh's range just inside the outer levels
    bound: str = "reference"  # "reference" (the paper's code) or "vector_quantize_pytorch" (its >= 1.x bound)

    def validate(self) -> None:
        owner = type(self).__name__
        if not self.levels:
            raise ConfigError(f"{owner}.levels must be a non-empty list of ints >= 2, got: []")
        if any(level < 2 for level in self.levels):
            raise ConfigError(f"{owner}.levels must all be >= 2, got: {self.levels}")
        check_positive(owner, dim=self.dim)
        if not 0 <= self.eps < 1:
            raise ConfigError(f"{owner}.eps must be in [0, 1), got: {self.eps}")
        check_choice(owner, "bound", self.bound, BOUNDS)


@register_quantizer
class FiniteScalarQuantizer(Quantizer):
    """FSQ; see the module docstring for the exact index convention."""

    config_class = FSQConfig

    def __init__(self, config: FSQConfig):
        super().__init__(config)
        levels = torch.tensor(config.levels, dtype=torch.long)
        d = len(config.levels)
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("basis", torch.cumprod(torch.tensor([1] + config.levels[:-1]), 0), persistent=False)
        self.project_in = nn.Linear(self.dim, d) if self.dim != d else nn.Identity()
        self.project_out = nn.Linear(d, self.dim) if self.dim != d else nn.Identity()

    @property
    def dim(self) -> int:
        return self.config.dim or len(self.config.levels)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.config.levels)

    @property
    def half_width(self) -> torch.Tensor:
        return (self.levels // 2).float()

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash (N, d) into the range whose rounding gives ``levels`` values per channel."""
        levels = self.levels.float()
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        if self.config.bound == "vector_quantize_pytorch":  # vector_quantize_pytorch.FSQ.bound (>= 1.x)
            half_l = (levels - 1) * (1 + self.config.eps) / 2
            shift = torch.atanh(offset / half_l)
        else:  # the paper's reference code
            half_l = (levels - 1) * (1 - self.config.eps) / 2
            shift = torch.tan(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def _quantize_codes(self, z: torch.Tensor) -> torch.Tensor:
        bounded = self.bound(self.project_in(z))  # (N, d)
        return exact_straight_through(torch.round(bounded), bounded) / self.half_width

    def codes_to_indices_flat(self, codes: torch.Tensor) -> torch.Tensor:
        """Normalised codes (N, d) in [-1, 1] -> indices (N,)."""
        shifted = torch.round(codes * self.half_width + self.half_width).long()
        return (shifted * self.basis).sum(dim=-1)

    def indices_to_level_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices (N,) -> normalised codes (N, d), before ``project_out``."""
        digits = (indices.unsqueeze(-1) // self.basis) % self.levels  # (N, d)
        return (digits.float() - self.half_width) / self.half_width

    def quantize_flat(self, z: torch.Tensor) -> FlatQuantized:
        codes = self._quantize_codes(z)
        return FlatQuantized(self.project_out(codes), self.codes_to_indices_flat(codes.detach()))

    def encode_flat(self, z: torch.Tensor) -> torch.Tensor:
        if self.dim != len(self.config.levels):
            return self.nearest_output_code(z)  # the output projection has no exact inverse
        return self.codes_to_indices_flat(z)  # z are codes in [-1, 1]: the reference's scale-and-shift

    def decode_flat(self, indices: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.indices_to_level_codes(indices))

    def extra_repr(self) -> str:
        return f"levels={self.config.levels}, dim={self.dim}, codebook_size={self.codebook_size}"
