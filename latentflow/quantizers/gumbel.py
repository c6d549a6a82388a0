"""Gumbel-softmax quantization (Jang et al. 2017; DALL-E's dVAE, Ramesh et al. 2021).

Features are mapped to logits over ``codebook_size`` codes; in training, a
Gumbel-softmax sample at temperature ``tau`` mixes the code embeddings (soft), or a
one-hot sample passes the soft sample's gradient (``hard``). In eval the code is
``argmax(logits)``, deterministic. A KL term to the uniform prior,
``KL(softmax(logits) || U(K))``, keeps the posterior spread over the codebook.

The temperature anneals with the number of training steps ``t`` (a saved buffer)::

    tau(t) = max(temperature_min, temperature * exp(-anneal_rate * t))

Example::

    gq = GumbelQuantizer(GumbelConfig(dim=32, codebook_size=512, hard=True))
    out = gq(torch.randn(2, 32, 8, 8))      # indices (2, 8, 8); out.losses["kl"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from latentflow.configuration import check_positive
from latentflow.quantizers.base import FlatQuantized, Quantizer, QuantizerConfig, nearest_rows, register_quantizer


@dataclass
class GumbelConfig(QuantizerConfig):
    """Gumbel-softmax settings; DALL-E anneals tau from 1 towards 1/16."""

    name: ClassVar[str] = "gumbel"

    dim: int = 64
    codebook_size: int = 512
    temperature: float = 1.0  # tau at step 0
    temperature_min: float = 1.0 / 16
    anneal_rate: float = 1e-5  # per training step
    hard: bool = False  # one-hot samples with straight-through gradients
    kl_weight: float = 5e-4

    def validate(self) -> None:
        owner = type(self).__name__
        check_positive(owner, dim=self.dim, codebook_size=self.codebook_size, temperature=self.temperature,
                       temperature_min=self.temperature_min)
        check_positive(owner, anneal_rate=self.anneal_rate, kl_weight=self.kl_weight, allow_zero=True)


@register_quantizer
class GumbelQuantizer(Quantizer):
    """Gumbel-softmax over a learned embedding; see the module docstring."""

    config_class = GumbelConfig

    def __init__(self, config: GumbelConfig):
        super().__init__(config)
        self.to_logits = nn.Linear(config.dim, config.codebook_size)
        self.embedding = nn.Parameter(torch.randn(config.codebook_size, config.dim) / math.sqrt(config.dim))
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def temperature(self) -> float:
        """The current annealed temperature."""
        cfg = self.config
        return max(cfg.temperature_min, cfg.temperature * math.exp(-cfg.anneal_rate * int(self.num_updates)))

    def quantize_flat(self, z: torch.Tensor) -> FlatQuantized:
        logits = self.to_logits(z)  # (N, K)
        log_probs = F.log_softmax(logits, dim=-1)
        kl = (log_probs.exp() * (log_probs + math.log(self.codebook_size))).sum(-1).mean()
        losses = {"kl": self.config.kl_weight * kl}
        if not self.training:
            indices = logits.argmax(dim=-1)
            return FlatQuantized(self.embedding[indices], indices, losses)
        soft = F.gumbel_softmax(logits, tau=self.temperature, hard=False)  # (N, K)
        indices = soft.argmax(dim=-1)
        with torch.no_grad():
            self.num_updates += 1
        if self.config.hard:
            # value: the chosen embedding row exactly; gradient: the soft mixture's, w.r.t. the logits
            mixed = soft @ self.embedding.detach()
            codes = self.embedding[indices] + (mixed - mixed.detach())
        else:
            codes = soft @ self.embedding
        return FlatQuantized(codes, indices, losses)

    def encode_flat(self, z: torch.Tensor) -> torch.Tensor:
        return nearest_rows(z, self.embedding)

    def decode_flat(self, indices: torch.Tensor) -> torch.Tensor:
        return self.embedding[indices]
