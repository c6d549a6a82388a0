"""Binary spherical quantization (Zhao et al. 2024): LFQ on the unit sphere.

Inputs are projected to ``d = log2(codebook_size)`` channels and l2-normalised; each
channel is quantized to ``+-1/sqrt(d)``, so every code is a unit vector and the
quantization error is bounded. Indices, losses and options are those of LFQ
(:mod:`latentflow.quantizers.lfq`), with the entropy probabilities taken on the sphere.

Example::

    bsq = BinarySphericalQuantizer(BSQConfig(dim=32, codebook_size=2**12))
    out = bsq(torch.randn(2, 32, 8, 8))       # indices (2, 8, 8) in [0, 4096)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from latentflow.quantizers.base import register_quantizer
from latentflow.quantizers.lfq import LFQConfig, LookupFreeQuantizer


@dataclass
class BSQConfig(LFQConfig):
    """BSQ settings; the same fields as :class:`LFQConfig`."""

    name: ClassVar[str] = "bsq"

    entropy_temperature: float = 0.1  # on the sphere the logits are smaller than LFQ's


@register_quantizer
class BinarySphericalQuantizer(LookupFreeQuantizer):
    """LFQ with l2-normalised inputs and codes of norm 1."""

    config_class = BSQConfig

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.num_bits)

    def prepare(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project_in(z), dim=-1)  # (N, bits) on the unit sphere
