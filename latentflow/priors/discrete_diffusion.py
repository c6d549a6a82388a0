"""Masked (absorbing-state) discrete diffusion prior over token indices: MDLM objective and ancestral sampler.

Forward process (Sahoo et al. 2024, "Simple and Effective Masked Diffusion Language Models", MDLM):
at time t in [0, 1] each token of a clean grid is independently kept with probability ``alpha(t)``
and replaced by the mask token otherwise; ``alpha(0) = 1`` (clean), ``alpha(1) = 0`` (all masked).
The network sees the partly masked grid and predicts the clean token at every masked position
(the SUBS parameterization: unmasked tokens are copied, the mask token is never predicted). The
continuous-time negative ELBO is a weighted masked cross-entropy::

    NELBO = E_{t ~ U(0, 1)} [ -alpha'(t) / (1 - alpha(t)) * sum_{l masked} -log p(x_l | z_t) ]

reported per token (divided by L); it upper-bounds the NLL, so ``validation`` reports it as
``nll_bits_per_token``, comparable with the GPT prior's exact NLL. Schedules (``schedule``):

* ``linear``: ``alpha(t) = 1 - t``, weight ``1 / t``;
* ``cosine``: ``alpha(t) = 1 - sin(pi t / 2)`` (the mask ratio ``cos(pi/2 (1 - t))`` of MaskGIT; MD4,
  Shi et al. 2024), weight ``(pi / 2) cot(pi t / 2)``.

The network is MaskGIT's (a bidirectional transformer of shared ``TransformerBlock``s with a mask
token and a class token): as MDLM shows, with absorbing-state masking it needs no time input, so
its logits are reused between sampler steps where no token changed. Only the objective and the
sampler differ, so :class:`DiscreteDiffusionPrior` subclasses :class:`MaskGITPrior`.

Sampling (MDLM's ancestral sampler): from t = 1 (all masked) to 0 in ``steps`` uniform steps,
each masked token is unmasked, with probability ``(alpha(s) - alpha(t)) / (1 - alpha(t))``, to a
token drawn from the network's distribution, and stays masked otherwise; unmasked tokens never
change. The categorical draw is a Gumbel-max in float64: Zheng et al. 2024 (arXiv 2409.02908)
show that Gumbel sampling in float32 truncates the noise and silently lowers the temperature
(less diverse samples).

Classifier-free guidance: ``label_dropout`` trains with labels replaced by "no class" (the same
null index every prior's ``class_labels`` uses); ``sample(guidance_scale=w)`` mixes
``uncond + w * (cond - uncond)`` logits.

Example::

    prior = DiscreteDiffusionPrior(DiscreteDiffusionConfig(vocab_size=512, latent_shape=(16, 16)))
    loss, logs = prior.loss(indices)                  # (B, 16, 16) long
    tokens = prior.sample(4, steps=64, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from latentflow.errors import ConfigError, InputError
from latentflow.priors.base import register_prior
from latentflow.priors.gpt import check_tokens, top_k_filter
from latentflow.priors.maskgit import MaskGITConfig, MaskGITPrior
from latentflow.progress import Progress

SCHEDULES = ("cosine", "linear")


# ---- schedule -----------------------------------------------------------------------------
def alpha(t: torch.Tensor, schedule: str) -> torch.Tensor:
    """Probability that a token is still unmasked at time ``t`` in [0, 1]: 1 at t = 0, 0 at t = 1."""
    if schedule == "linear":
        return 1.0 - t
    return 1.0 - torch.sin(0.5 * math.pi * t)


def elbo_weight(t: torch.Tensor, schedule: str) -> torch.Tensor:
    """MDLM's weight ``-alpha'(t) / (1 - alpha(t))`` of the masked cross-entropy at time ``t`` in (0, 1]."""
    if schedule == "linear":
        return 1.0 / t
    half = 0.5 * math.pi * t
    return 0.5 * math.pi * torch.cos(half) / torch.sin(half)


# ---- float64 Gumbel-max --------------------------------------------------------------------
def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log u)``, drawn and returned in float64 (arXiv 2409.02908)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float64).tiny)))


def sample_categorical(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of unnormalized log-probabilities (..., K) by Gumbel-max in float64. Returns (...) long."""
    return (logits.double() + gumbel_noise(tuple(logits.shape), generator, logits.device)).argmax(dim=-1)


# ---- config and model ----------------------------------------------------------------------
@dataclass
class DiscreteDiffusionConfig(MaskGITConfig):
    """MaskGIT's sizes, plus the diffusion's.

    Attributes:
        schedule: ``cosine`` or ``linear`` masking schedule ``alpha(t)`` (see module doc).
        t_min: training and validation times are drawn from [t_min, 1]: the weight diverges as
            t -> 0 while the masked count vanishes, so the smallest times only add variance.
        label_dropout: probability of training a row with the "no class" label (for guidance).
    """

    schedule: str = "cosine"
    t_min: float = 1e-3
    label_dropout: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got: {self.schedule!r}")
        if not 0.0 < self.t_min < 1.0:
            raise ConfigError(f"t_min must be in (0, 1), got: {self.t_min}")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ConfigError(f"label_dropout must be in [0, 1), got: {self.label_dropout}")


@register_prior
class DiscreteDiffusionPrior(MaskGITPrior):
    """Absorbing-state discrete diffusion (MDLM) over token grids; MaskGIT's network, its own loss and sampler."""

    kind: ClassVar[str] = "discrete_diffusion"
    config_class = DiscreteDiffusionConfig

    def _times(self, batch: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        """Stratified times (B,) in [t_min, 1]: one per 1/B slice, as MDLM's low-discrepancy sampler."""
        u = (torch.rand((), generator=generator, device=device) + torch.arange(batch, device=device) / batch) % 1.0
        return self.config.t_min + (1.0 - self.config.t_min) * u

    def _diffusion_nll(self, tokens: torch.Tensor, labels: torch.Tensor | None, t: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """The weighted masked cross-entropy at times ``t`` (B,), in nats per token, averaged over rows."""
        b, n = tokens.shape
        masked = torch.rand(b, n, generator=generator, device=tokens.device) >= alpha(t, self.config.schedule)[:, None]
        logits = self(tokens.masked_fill(masked, self.mask_id), labels)  # (B, L, V)
        ce = F.cross_entropy(logits.float().transpose(1, 2), tokens, reduction="none")  # (B, L)
        per_row = (ce * masked).sum(dim=1) * elbo_weight(t, self.config.schedule) / n
        return per_row.mean()

    def _drop_labels(self, labels: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """Labels (B,) with a ``label_dropout`` share replaced by "no class" (index ``num_classes``)."""
        labels = self.class_labels(labels, batch, device)
        p = self.config.label_dropout
        if p == 0.0 or self.config.num_classes == 0:
            return labels
        return labels.masked_fill(torch.rand(batch, device=device) < p, self.config.num_classes)

    def loss(self, latents: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """The MDLM negative ELBO (nats per token) at stratified random times."""
        tokens = check_tokens(latents, self.config, self.config.vocab_size)
        t = self._times(tokens.shape[0], tokens.device, None)
        nll = self._diffusion_nll(tokens, self._drop_labels(labels, tokens.shape[0], tokens.device), t)
        return nll, {"bits_per_token": nll.detach() / math.log(2)}

    @torch.no_grad()
    def validation(self, latents: torch.Tensor, labels: torch.Tensor | None = None, seed: int = 0,
                   grid: int = 8) -> dict[str, float]:
        """The negative ELBO in bits per token (an upper bound of the NLL): the time integral by the
        midpoint rule on ``grid`` points of [t_min, 1], masks from a fixed seed."""
        tokens = check_tokens(latents, self.config, self.config.vocab_size)
        gen = torch.Generator(device=tokens.device).manual_seed(seed)
        total = 0.0
        for i in range(grid):
            t = self.config.t_min + (1.0 - self.config.t_min) * (i + 0.5) / grid
            total += float(self._diffusion_nll(tokens, labels, torch.full((tokens.shape[0],), t, device=tokens.device), gen))
        return {"nll_bits_per_token": total / grid / math.log(2)}

    def _log_probs(self, tokens: torch.Tensor, labels: torch.Tensor | None, temperature: float, top_k: int | None,
                   guidance_scale: float) -> torch.Tensor:
        """Float64 log-probabilities (N, L, V) of the clean tokens, with guidance, temperature and top-k."""
        logits = self(tokens, labels).double()
        if guidance_scale != 1.0:
            uncond = self(tokens, None).double()  # None -> the "no class" index
            logits = uncond + guidance_scale * (logits - uncond)
        return F.log_softmax(top_k_filter(logits / temperature, top_k), dim=-1)

    @torch.no_grad()
    def sample(self, num_samples: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               steps: int = 64, temperature: float = 1.0, top_k: int | None = None, guidance_scale: float = 1.0,
               **_: Any) -> torch.Tensor:
        """MDLM ancestral sampling from all-masked; returns (N, *latent_shape) long indices.

        Args:
            steps: uniform time steps from t = 1 to 0 (every token is unmasked by the last).
            temperature / top_k: applied to the network's logits before each draw.
            guidance_scale: classifier-free guidance weight (1 = the conditional model alone); needs
                ``labels`` and a prior trained with ``label_dropout > 0``.
        """
        if steps <= 0 or temperature <= 0:
            raise InputError(f"steps and temperature must be > 0, got: {steps}, {temperature}")
        if guidance_scale != 1.0 and (labels is None or self.config.num_classes == 0):
            raise InputError(f"guidance_scale={guidance_scale} needs labels and a class-conditional prior "
                             f"(num_classes={self.config.num_classes}); leave it at 1.0 otherwise")
        device = self.pos_emb.device
        tokens = torch.full((num_samples, self.config.seq_len), self.mask_id, dtype=torch.long, device=device)
        log_p = None
        progress = Progress(steps, f"sample {num_samples} x discrete_diffusion", unit="step")
        for i in range(steps):
            if log_p is None:  # the network is time-free: its output changes only when tokens do
                log_p = self._log_probs(tokens, labels, temperature, top_k, guidance_scale)  # (N, L, V)
            drawn = self._reverse_step(log_p, 1.0 - i / steps, 1.0 - (i + 1) / steps, generator)
            new = torch.where(tokens == self.mask_id, drawn, tokens)
            if not torch.equal(new, tokens):
                tokens, log_p = new, None
            progress.update(1)
        progress.close()
        return tokens.view(num_samples, *self.config.latent_shape)

    def _reverse_step(self, log_p: torch.Tensor, t: float, s: float, generator: torch.Generator | None) -> torch.Tensor:
        """Draws (N, L) from q(z_s | z_t = mask): a clean token with probability (alpha_s - alpha_t) / (1 - alpha_t)
        times p(x), else index ``vocab_size``, which is the mask token (stays masked)."""
        a_t, a_s = (float(alpha(torch.tensor(v, dtype=torch.float64), self.config.schedule)) for v in (t, s))
        unmask = (a_s - a_t) / (1.0 - a_t)
        stay = torch.full((*log_p.shape[:-1], 1), math.log1p(-unmask) if unmask < 1.0 else -math.inf,
                          dtype=torch.float64, device=log_p.device)
        return sample_categorical(torch.cat([log_p + math.log(unmask), stay], dim=-1), generator)
