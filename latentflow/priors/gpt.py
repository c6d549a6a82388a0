"""GPT-style autoregressive prior over token indices, in raster order.

Tokens (B, h, w[, levels]) are flattened row-major to (B, L). A start token
carries the class (or "no class"); position i predicts token i from the start
token and tokens < i. Sampling draws one token at a time with temperature and
top-k. Validation NLL is reported in bits per token.

Example::

    prior = GPTPrior(GPTConfig(vocab_size=512, latent_shape=(16, 16), num_classes=10))
    loss, logs = prior.loss(indices, labels)          # indices (B, 16, 16) long
    tokens = prior.sample(4, labels=torch.tensor([0, 1, 2, 3]), temperature=1.0, top_k=100)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from latentflow.configuration import check_positive
from latentflow.errors import InputError
from latentflow.models.layers import TransformerBlock
from latentflow.priors.base import PriorConfig, PriorModel, register_prior
from latentflow.progress import Progress


@dataclass
class GPTConfig(PriorConfig):
    """Sizes of the AR transformer; ``vocab_size`` is the codebook size."""

    vocab_size: int = 512
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4

    def validate(self) -> None:
        super().validate()
        check_positive(type(self).__name__, vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                       num_layers=self.num_layers, num_heads=self.num_heads)


# checkpoints written before the priors used the shared TransformerBlock (ln1/ln2/mlp -> norm1/norm2/ffn)
LEGACY_BLOCK_KEYS = ((".ln1.", ".norm1."), (".ln2.", ".norm2."), (".mlp.", ".ffn."))


def check_tokens(tokens: torch.Tensor, config: PriorConfig, vocab: int) -> torch.Tensor:
    """Flatten (B, *latent_shape) integer tokens to (B, L), checking shape and range."""
    if tokens.is_floating_point():
        raise InputError(f"token priors take integer indices, got dtype {tokens.dtype}; continuous latents need the flow prior")
    if tuple(tokens.shape[1:]) != tuple(config.latent_shape):
        raise InputError(f"expected tokens of shape (B, {', '.join(map(str, config.latent_shape))}), got: {tuple(tokens.shape)}")
    flat = tokens.reshape(tokens.shape[0], -1).long()
    if flat.numel() and (flat.min() < 0 or flat.max() >= vocab):
        raise InputError(f"token indices must be in [0, {vocab}), got range [{int(flat.min())}, {int(flat.max())}]")
    return flat


def top_k_filter(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Keep the ``top_k`` largest logits per row, -inf elsewhere."""
    if top_k is None or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


@register_prior
class GPTPrior(PriorModel):
    """Causal transformer over raster-ordered tokens."""

    kind: ClassVar[str] = "gpt"
    legacy_key_renames = LEGACY_BLOCK_KEYS
    config_class = GPTConfig

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        d = config.hidden_size
        self.tok_emb = nn.Embedding(config.vocab_size, d)
        self.start_emb = nn.Embedding(config.num_classes + 1, d)  # index num_classes = no class
        self.pos_emb = nn.Parameter(torch.zeros(1, config.seq_len, d))
        nn.init.normal_(self.pos_emb, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock(d, config.num_heads, norm_eps=1e-5, causal=True) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.vocab_size)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, n + 1, V) for prefixes ``tokens`` (B, n), n < L: output i predicts token i."""
        b = tokens.shape[0]
        start = self.start_emb(self.class_labels(labels, b, tokens.device))[:, None]  # (B, 1, d)
        h = torch.cat([start, self.tok_emb(tokens)], dim=1)
        h = h + self.pos_emb[:, : h.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))

    def loss(self, latents: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Mean next-token cross-entropy (nats) on (B, *latent_shape) indices."""
        tokens = check_tokens(latents, self.config, self.config.vocab_size)
        logits = self(tokens[:, :-1], labels)  # (B, L, V)
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens.reshape(-1))
        return ce, {"bits_per_token": ce.detach() / math.log(2)}

    @torch.no_grad()
    def validation(self, latents: torch.Tensor, labels: torch.Tensor | None = None, seed: int = 0) -> dict[str, float]:
        """Exact NLL in bits per token over the given rows."""
        ce, _ = self.loss(latents, labels)
        return {"nll_bits_per_token": float(ce) / math.log(2)}

    @torch.no_grad()
    def sample(self, num_samples: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0, top_k: int | None = None, **_: Any) -> torch.Tensor:
        """Draw token grids (N, *latent_shape), long, one token at a time."""
        if temperature <= 0:
            raise InputError(f"temperature must be > 0, got: {temperature}")
        device = self.pos_emb.device
        caches: list[dict[str, torch.Tensor]] = [{} for _ in self.blocks]  # keys/values of the prefix, per layer
        h = self.start_emb(self.class_labels(labels, num_samples, device))[:, None]  # (N, 1, d): position 0
        tokens = []
        with Progress(self.config.seq_len, f"sample {num_samples} x gpt", unit="token") as progress:
            for i in range(self.config.seq_len):
                logits = self._step(h + self.pos_emb[:, i: i + 1], caches).float() / temperature  # (N, V)
                probs = F.softmax(top_k_filter(logits, top_k), dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)  # (N, 1)
                tokens.append(nxt)
                h = self.tok_emb(nxt)  # the next position's input
                progress.update(1)
        return torch.cat(tokens, dim=1).view(num_samples, *self.config.latent_shape)

    def _step(self, h: torch.Tensor, caches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Logits (N, V) of the next token after one new position ``h`` (N, 1, d), through each layer's KV cache."""
        for block, cache in zip(self.blocks, caches):
            h = block(h, cache=cache)
        return self.head(self.ln_f(h))[:, -1]
