"""Variational autoencoder (Kingma & Welling) and β-VAE (Higgins et al.; Burgess et al.).

The encoder predicts a diagonal Gaussian posterior; ``encode(x).latents`` is its
mean, ``encode(x).latent_dist`` the full posterior. The loss follows the convention of
every family (:class:`~latentflow.outputs.AutoencoderOutput`): the reconstruction error
averaged over elements, plus the weighted KL (summed per sample, batch mean):

    loss = rec + kl_weight * KL(q(z|x) || N(0, I))

``kl_weight=None`` (the default) is the ELBO's own balance, ``1 / N`` for inputs of N
elements (C * H * W): ``loss`` is then the negative ELBO (Gaussian decoder for MSE,
Laplace for L1, up to constants) divided by N, and trains as the summed ELBO did.
``losses["elbo_nats"]`` keeps that per-sample sum, ``rec`` summed + KL, for reporting.

β-VAE scales the KL by ``beta`` on top: ``rec + beta * kl_weight * KL``; with
``capacity_max > 0`` it uses the capacity-annealed objective
``rec + gamma * kl_weight * |KL - C(step)|`` where C grows linearly from 0 to
``capacity_max`` nats over ``capacity_steps`` training steps. ``beta`` and ``gamma``
thus keep their papers' meaning (relative to the ELBO).

Example::

    vae = VariationalAutoencoderModel(VariationalAutoencoderConfig(latent_channels=4))
    post = vae.encode(x).latent_dist
    z = post.sample(generator=torch.Generator().manual_seed(0))
    imgs = vae.sample(8, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from latentflow.auto import register
from latentflow.errors import ConfigError
from latentflow.models.autoencoder import AutoencoderConfig, AutoencoderModel, reconstruction_loss, summed_error
from latentflow.outputs import AutoencoderOutput, DiagonalGaussian, VariationalEncoderOutput


@dataclass
class VariationalAutoencoderConfig(AutoencoderConfig):
    """A VAE. ``kl_weight``: weight of the KL against the per-element reconstruction error;
    None: the ELBO's balance, 1 / (elements of one input), e.g. 1/3072 for 3x32x32 images
    (this is what ``kl_weight=1.0`` meant when the reconstruction was summed per sample)."""

    model_type: ClassVar[str] = "vae"

    kl_weight: float | None = None

    def validate(self) -> None:
        super().validate()
        if self.kl_weight is not None and self.kl_weight < 0:
            raise ConfigError(f"kl_weight must be >= 0 or None (the ELBO's balance), got: {self.kl_weight}")


@register
class VariationalAutoencoderModel(AutoencoderModel):
    """A VAE with an N(0, I) prior: ``sample`` decodes prior draws."""

    config_class = VariationalAutoencoderConfig
    latent_multiplier = 2

    def encode(self, x: torch.Tensor) -> VariationalEncoderOutput:
        moments = self._encode_features(x)  # (B, 2C, h, w) or (B, 2D)
        posterior = DiagonalGaussian.from_moments(moments, dim=1)
        return VariationalEncoderOutput(latents=posterior.mode(), latent_dist=posterior)

    def kl_weight_for(self, x: torch.Tensor) -> float:
        """The configured ``kl_weight``, or the ELBO's balance 1 / (elements of one input) when None."""
        w = self.config.kl_weight
        return 1.0 / x[0].numel() if w is None else w

    def kl_term(self, kl: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted KL contribution to the loss, plus extra named terms."""
        return kl_weight * kl, {}

    def forward(self, x: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None,
                **kwargs) -> AutoencoderOutput:
        """Reconstruct ``x`` through a posterior sample (or its mean).

        Returns:
            :class:`AutoencoderOutput`: ``loss = rec + kl_weight * kl`` (β-VAE: see the module doc);
            ``losses`` holds ``rec`` (per-element mean), ``kl`` (nats per sample, batch mean) and
            ``elbo_nats`` (negative ELBO per sample: error summed + KL; reported, not in ``loss``).
        """
        enc = self.encode(x)
        post = enc.latent_dist
        z = post.sample(generator) if sample_posterior else post.mode()
        x_hat = self.decode(z).sample
        kind = self.config.reconstruction_loss
        rec = reconstruction_loss(x_hat, x, kind)
        kl = post.kl().mean()
        weighted, extra = self.kl_term(kl, self.kl_weight_for(x))
        elbo = summed_error(x_hat, x, kind) + kl
        losses = {"rec": rec, "kl": kl, **extra, "elbo_nats": elbo}
        return AutoencoderOutput(reconstruction=x_hat, loss=rec + weighted, losses=losses, encoder_output=enc)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode ``num_samples`` draws from the N(0, I) prior at ``sample_size``. (N, C, S, S)."""
        if num_samples <= 0:
            raise ValueError(f"num_samples must be > 0, got: {num_samples}")
        s = self.config.sample_size
        shape = (num_samples, *self.latent_shape(s, s))
        z = torch.randn(shape, generator=generator, dtype=self.dtype).to(self.device)
        return self.decode(z).sample


@dataclass
class BetaVAEConfig(VariationalAutoencoderConfig):
    """β-VAE: the KL weighs ``beta * kl_weight`` (``beta`` relative to the ELBO, as in the paper).
    ``capacity_max > 0`` switches on Burgess et al.'s capacity annealing, weighted ``gamma * kl_weight``."""

    model_type: ClassVar[str] = "beta_vae"

    beta: float = 4.0
    capacity_max: float = 0.0  # C_max in nats; 0 disables
    capacity_steps: int = 100_000
    gamma: float = 1000.0

    def validate(self) -> None:
        super().validate()
        if self.beta < 0 or self.capacity_max < 0 or self.gamma < 0:
            raise ConfigError(f"beta, capacity_max and gamma must be >= 0, got: {self.beta}, {self.capacity_max}, {self.gamma}")
        if self.capacity_steps <= 0:
            raise ConfigError(f"capacity_steps must be > 0, got: {self.capacity_steps}")


@register
class BetaVAEModel(VariationalAutoencoderModel):
    """β-VAE; counts its training steps in a buffer so capacity annealing resumes exactly."""

    config_class = BetaVAEConfig

    def __init__(self, config: BetaVAEConfig):
        super().__init__(config)
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    def capacity(self) -> float:
        c = self.config
        return min(c.capacity_max, c.capacity_max * self.num_steps.item() / c.capacity_steps)

    def kl_term(self, kl: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        cap = torch.tensor(self.capacity(), dtype=kl.dtype, device=kl.device)  # C at this step
        if self.training:
            self.num_steps += 1
        if c.capacity_max <= 0:
            return c.beta * kl_weight * kl, {}
        return c.gamma * kl_weight * (kl - cap).abs(), {"capacity": cap}
