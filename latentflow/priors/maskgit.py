"""MaskGIT prior: a bidirectional transformer that fills in masked tokens.

Training masks ``ceil(cos(pi/2 * r) * L)`` random tokens per sample (r ~ U(0, 1),
the cosine schedule) and predicts them. Sampling starts fully masked; each of
``steps`` iterations predicts every masked token, keeps them all, then re-masks
the least-confident new ones so that ``floor(L * cos(pi/2 * (t+1)/steps))``
stay masked. Validation reports the masked-token cross-entropy in bits per
token, averaged over mask ratios on a fixed grid.

Example::

    prior = MaskGITPrior(MaskGITConfig(vocab_size=512, latent_shape=(16, 16)))
    tokens = prior.sample(4, steps=8, temperature=1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from latentflow.errors import InputError
from latentflow.models.layers import TransformerBlock
from latentflow.priors.base import PriorModel, register_prior
from latentflow.priors.gpt import LEGACY_BLOCK_KEYS, GPTConfig, check_tokens
from latentflow.progress import Progress


@dataclass
class MaskGITConfig(GPTConfig):
    """Same sizes as the GPT prior; the mask token is index ``vocab_size``."""


def cosine_schedule(r: torch.Tensor) -> torch.Tensor:
    """Fraction of tokens masked at progress ``r`` in [0, 1]: 1 at r = 0, 0 at r = 1."""
    return torch.cos(0.5 * math.pi * r)


@register_prior
class MaskGITPrior(PriorModel):
    """Bidirectional masked-token transformer."""

    kind: ClassVar[str] = "maskgit"
    legacy_key_renames = LEGACY_BLOCK_KEYS
    config_class = MaskGITConfig

    def __init__(self, config: MaskGITConfig):
        super().__init__(config)
        d = config.hidden_size
        self.mask_id = config.vocab_size
        self.tok_emb = nn.Embedding(config.vocab_size + 1, d)
        self.class_emb = nn.Embedding(config.num_classes + 1, d)
        self.pos_emb = nn.Parameter(torch.zeros(1, config.seq_len + 1, d))
        nn.init.normal_(self.pos_emb, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock(d, config.num_heads, norm_eps=1e-5, causal=False) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.vocab_size)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, L, V) for (B, L) tokens where masked positions hold ``mask_id``."""
        cls = self.class_emb(self.class_labels(labels, tokens.shape[0], tokens.device))[:, None]
        h = torch.cat([cls, self.tok_emb(tokens)], dim=1) + self.pos_emb
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h[:, 1:]))

    def _mask(self, tokens: torch.Tensor, ratio: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Boolean mask (B, L) with ``ceil(ratio * L)`` (>= 1) random True per row."""
        b, n = tokens.shape
        count = torch.clamp(torch.ceil(ratio * n), 1, n).long()  # (B,)
        scores = torch.rand(b, n, generator=generator, device=tokens.device)
        ranks = scores.argsort(dim=1).argsort(dim=1)
        return ranks < count[:, None]

    def _masked_ce(self, tokens: torch.Tensor, labels, ratio: torch.Tensor, generator=None) -> torch.Tensor:
        mask = self._mask(tokens, ratio, generator)
        logits = self(tokens.masked_fill(mask, self.mask_id), labels)
        return F.cross_entropy(logits[mask].float(), tokens[mask])

    def loss(self, latents: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Cross-entropy (nats) on the masked tokens, mask ratio from the cosine schedule."""
        tokens = check_tokens(latents, self.config, self.config.vocab_size)
        ratio = cosine_schedule(torch.rand(tokens.shape[0], device=tokens.device))
        ce = self._masked_ce(tokens, labels, ratio)
        return ce, {"bits_per_token": ce.detach() / math.log(2)}

    @torch.no_grad()
    def validation(self, latents: torch.Tensor, labels: torch.Tensor | None = None, seed: int = 0,
                   grid: int = 8) -> dict[str, float]:
        """Masked-token NLL in bits per token, averaged over ``grid`` schedule points (fixed seed)."""
        tokens = check_tokens(latents, self.config, self.config.vocab_size)
        gen = torch.Generator(device=tokens.device).manual_seed(seed)
        total = 0.0
        for i in range(grid):
            r = torch.full((tokens.shape[0],), (i + 0.5) / grid, device=tokens.device)
            total += float(self._masked_ce(tokens, labels, cosine_schedule(r), gen))
        return {"nll_bits_per_token": total / grid / math.log(2)}

    @torch.no_grad()
    def sample(self, num_samples: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               steps: int = 8, temperature: float = 1.0, **_: Any) -> torch.Tensor:
        """Iterative parallel decoding; returns (N, *latent_shape) long indices."""
        if steps <= 0 or temperature <= 0:
            raise InputError(f"steps and temperature must be > 0, got: {steps}, {temperature}")
        n = self.config.seq_len
        device = self.pos_emb.device
        tokens = torch.full((num_samples, n), self.mask_id, dtype=torch.long, device=device)
        progress = Progress(steps, f"sample {num_samples} x maskgit", unit="step")
        for t in range(steps):
            unknown = tokens == self.mask_id
            probs = F.softmax(self(tokens, labels).float() / temperature, dim=-1)  # (N, L, V)
            drawn = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(num_samples, n)
            conf = torch.gather(probs, -1, drawn[..., None])[..., 0]
            conf = conf.masked_fill(~unknown, float("inf"))  # known tokens are never re-masked
            tokens = torch.where(unknown, drawn, tokens)
            keep_masked = int(math.floor(n * math.cos(0.5 * math.pi * (t + 1) / steps)))
            keep_masked = min(keep_masked, int(unknown.sum(1).min()) - 1)
            if keep_masked > 0:
                lowest = conf.argsort(dim=1)[:, :keep_masked]
                tokens.scatter_(1, lowest, self.mask_id)
            progress.update(1)
        progress.close()
        return tokens.view(num_samples, *self.config.latent_shape)
