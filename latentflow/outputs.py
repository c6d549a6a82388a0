"""Standard outputs: every model returns these dataclasses, never bare tuples.

Common fields sit on the base classes; families add their own in subclasses,
so ``out.latents`` always means "the tensor to store and to decode" whatever
the family.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class DiagonalGaussian:
    """A diagonal Gaussian posterior ``N(mean, exp(logvar))``.

    ``logvar`` is clamped to [-30, 20] as in latent diffusion, so ``std`` is finite.
    ``kl`` sums over every dimension but the batch.

    Example::

        post = DiagonalGaussian(mean, logvar)
        z = post.sample(generator=torch.Generator().manual_seed(0))
        loss = post.kl().mean()
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor, deterministic: bool = False):
        if mean.shape != logvar.shape:
            raise ValueError(f"mean and logvar must have one shape, got: {tuple(mean.shape)} and {tuple(logvar.shape)}")
        self.mean = mean
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.deterministic = deterministic
        if deterministic:
            self.logvar = torch.zeros_like(self.mean)

    @classmethod
    def from_moments(cls, moments: torch.Tensor, dim: int = 1) -> "DiagonalGaussian":
        """Split a (B, 2C, ...) tensor of stacked mean and logvar along ``dim``."""
        mean, logvar = torch.chunk(moments, 2, dim=dim)
        return cls(mean, logvar)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def var(self) -> torch.Tensor:
        return torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def _sum_dims(self) -> list[int]:
        return list(range(1, self.mean.ndim))

    def kl(self, other: "DiagonalGaussian | None" = None) -> torch.Tensor:
        """KL(self || other), or KL(self || N(0, I)) when ``other`` is None. Shape (B,)."""
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device, dtype=self.mean.dtype)
        if other is None:
            terms = self.mean.pow(2) + self.var - 1.0 - self.logvar
        else:
            terms = (self.mean - other.mean).pow(2) / other.var + self.var / other.var - 1.0 - self.logvar + other.logvar
        return 0.5 * terms.sum(dim=self._sum_dims())

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``x`` in nats, summed per sample. Shape (B,)."""
        log2pi = torch.log(torch.tensor(2.0 * torch.pi, dtype=x.dtype, device=x.device))
        terms = log2pi + self.logvar + (x - self.mean).pow(2) / self.var
        return 0.5 * terms.sum(dim=self._sum_dims())


@dataclass
class EncoderOutput:
    """What ``encode`` returns. ``latents`` is the tensor to store and decode."""

    latents: torch.Tensor


@dataclass
class VariationalEncoderOutput(EncoderOutput):
    """``latents`` is the posterior mode (the mean); ``latent_dist`` the full posterior."""

    latent_dist: DiagonalGaussian = None  # type: ignore[assignment]


@dataclass
class QuantizerOutput:
    """What every quantizer returns.

    Attributes:
        quantized: codes in the input's layout, with straight-through (or rotation) gradients.
        indices: integer code indices; feature maps give (B, H, W) or (B, H, W, levels).
        loss: the weighted sum of ``losses``.
        losses: named loss terms (``commitment``, ``codebook``, ``entropy``, ...).
        perplexity: exp(entropy) of the code histogram in this batch.
        usage: fraction of the codebook used in this batch.
        dead_codes: EMA dead-code count, where the quantizer tracks one.
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    perplexity: torch.Tensor | None = None
    usage: torch.Tensor | None = None
    dead_codes: torch.Tensor | None = None


@dataclass
class QuantizedEncoderOutput(EncoderOutput):
    """``latents`` are the quantized features; ``pre_quant`` the encoder features before it."""

    pre_quant: torch.Tensor = None  # type: ignore[assignment]
    indices: torch.Tensor = None  # type: ignore[assignment]
    quantizer_output: QuantizerOutput | None = None

    @property
    def quantized(self) -> torch.Tensor:
        return self.latents


@dataclass
class MaskedEncoderOutput(EncoderOutput):
    """Tokens of the visible patches. ``mask`` is 1 where a patch was removed (B, L).

    ``ids_restore`` (B, L) undoes the shuffle: ``gather(shuffled, ids_restore)``
    puts tokens back in their original order.
    """

    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None


@dataclass
class DecoderOutput:
    """What ``decode`` returns: ``sample`` is the reconstruction (B, C, H, W) in [-1, 1]."""

    sample: torch.Tensor


@dataclass
class AutoencoderOutput:
    """What ``forward`` returns: the reconstruction, named loss terms and their weighted total.

    One loss convention in every family, so a loss weight means the same everywhere: ``loss``
    is the reconstruction error averaged over elements plus every other term times its
    config weight::

        loss = losses["rec"] + kl_weight * losses["kl"] + sum(quantizer terms)

    - ``losses["rec"]``: the reconstruction loss the config names (``mse`` or ``l1``; the KL
      autoencoder: ``l1``), averaged over every element of the (B, C, H, W) input (MAE: over
      the elements of the masked patches).
    - ``losses["kl"]``: KL(q(z|x) || N(0, I)) in nats, summed per sample, batch mean; it enters
      times ``kl_weight`` (β-VAE: ``beta * kl_weight``; capacity: ``gamma * kl_weight * |kl - C|``;
      the VAE's default ``kl_weight=None`` is the ELBO's balance, 1 / (C * H * W)).
    - quantizer terms (``commitment``, ``codebook``, ``entropy``, ...; VQ-VAE-2 prefixes
      ``top_``/``bottom_``) are reported as they enter the loss: already times the weight in
      the quantizer's config (``commitment = beta * mse(z, sg[q])``).
    - reported, not in ``loss``: ``elbo_nats`` (VAE, β-VAE: negative ELBO per sample, error
      summed + KL, batch mean; what ``loss`` was before the convention) and ``capacity``.

    Attributes:
        reconstruction: (B, C, H, W) decoded from the (sampled) latents.
        loss: 0-d tensor, the weighted total above.
        losses: named 0-d terms.
        encoder_output: what ``encode`` returned for this input.
    """

    reconstruction: torch.Tensor
    loss: torch.Tensor
    losses: dict[str, torch.Tensor]
    encoder_output: EncoderOutput


@dataclass
class MaskedAutoencoderOutput(AutoencoderOutput):
    """MAE forward: ``pred`` is per-patch pixels (B, L, p*p*C); ``mask``/``ids_restore`` as above."""

    pred: torch.Tensor = None  # type: ignore[assignment]
    mask: torch.Tensor = None  # type: ignore[assignment]
    ids_restore: torch.Tensor = None  # type: ignore[assignment]
