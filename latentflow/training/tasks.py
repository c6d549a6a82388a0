"""What the trainer trains: an autoencoder (stage 1) or a prior over cached latents (stage 2).

A task owns the model and the losses; :class:`~latentflow.training.trainer.Trainer`
owns optimization. ``task.net`` is what the forward pass runs through (the model,
or its DDP wrapper under Ray Train).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from latentflow.training.config import LossConfig
from latentflow.training.discriminator import (
    PatchDiscriminator,
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
    last_decoder_layer,
)
from latentflow.training.losses import (
    VFAlignment,
    bottleneck_loss,
    equivariance_loss,
    load_feature_model,
    random_transform,
    regression_loss,
)


def find_quantizer(model: nn.Module) -> nn.Module | None:
    """The model's quantizer module, when it has one (for codebook usage)."""
    from latentflow.quantizers.base import Quantizer

    return next((m for m in model.modules() if isinstance(m, Quantizer)), None)


class AutoencoderTask:
    """Stage-1 losses: regression (+ LPIPS-style) + model bottleneck terms + GAN + EQ-VAE + VF alignment.

    Args:
        model: any :class:`~latentflow.LatentModel` whose ``forward`` returns reconstruction + losses.
        loss: loss weights and switches.
        eval_stream: held-out image batches for PSNR/SSIM (``next_batch``), or None.
        eval_batches: batches of ``eval_stream`` per evaluation.
    """

    def __init__(self, model: nn.Module, loss: LossConfig, eval_stream: Any = None, eval_batches: int = 2,
                 storage_options: dict | None = None):
        self.model = self.net = model
        self.cfg = loss
        self.eval_stream, self.eval_batches = eval_stream, eval_batches
        self.perceptual = None
        if loss.perceptual_weight > 0:
            from latentflow.training.perceptual import PerceptualLoss

            self.perceptual = PerceptualLoss(loss.perceptual_weights, storage_options=storage_options)
        self.vf = None
        if loss.vf_weight > 0:
            feature_model = load_feature_model(loss.vf_model, storage_options)
            self.vf = VFAlignment(feature_model, model.config.latent_channels, loss.vf_margin_cos, loss.vf_margin_dist)
        self.discriminator = PatchDiscriminator(model.in_channels, loss.disc_channels, loss.disc_layers) if loss.disc_weight > 0 else None
        self.disc_lr = loss.disc_lr
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"vf": self.vf} if self.vf is not None else {}

    def to(self, device: torch.device) -> "AutoencoderTask":
        """Move the frozen helper networks (the trainer moves the trained ones)."""
        if self.perceptual is not None:
            self.perceptual.to(device)
        if self.vf is not None:
            self.vf._frozen[0].to(device)
        return self

    def loss(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Total generator loss and its named terms for one batch of images (B, C, H, W) in [-1, 1]."""
        c = self.cfg
        x = batch["pixel_values"].to(self.model.device)
        out = self.net(x)
        x_hat = out.reconstruction
        logs: dict[str, Any] = {f"model/{k}": v.detach() for k, v in out.losses.items()}
        lp = None
        if self.perceptual is not None:
            lp = self.perceptual(x.float(), x_hat.float())
            logs["perceptual"] = lp.mean().detach()
        rec = c.rec_weight * regression_loss(x_hat.float(), x.float(), c.reconstruction,
                                             None if lp is None else c.perceptual_weight * lp)
        logs["rec"] = rec.detach()
        logs["rec_pixel_mae"] = (x_hat.detach().float() - x).abs().mean()
        total = rec + bottleneck_loss(out, c.model_loss_weights)
        total = total + self._regularizers(x, out, logs)
        if self.discriminator is not None:
            total = total + self._adversarial(rec, x_hat, step, logs)
            self._last = (x.detach(), x_hat.detach())
        return total, logs

    def _regularizers(self, x: torch.Tensor, out, logs: dict[str, Any]) -> torch.Tensor:
        c = self.cfg
        extra = x.new_zeros(())
        z = out.encoder_output.latents
        if c.eq_weight > 0 and float(torch.rand(())) < c.eq_prob:
            scale, turns = random_transform(None, tuple(c.eq_scales), c.eq_rotate)
            eq = equivariance_loss(self.model, x, z, scale, turns, c.reconstruction)
            logs["eq"] = eq.detach()
            extra = extra + c.eq_weight * eq
        if self.vf is not None:
            vf = self.vf(z, x)
            logs["vf"] = vf.detach()
            extra = extra + c.vf_weight * vf
        return extra

    def _adversarial(self, rec: torch.Tensor, x_hat: torch.Tensor, step: int, logs: dict[str, Any]) -> torch.Tensor:
        if step < self.cfg.disc_start:
            return rec.new_zeros(())
        self.discriminator.requires_grad_(False)
        g_loss = hinge_g_loss(self.discriminator(x_hat.float()))
        self.discriminator.requires_grad_(True)
        weight = adaptive_weight(rec, g_loss, last_decoder_layer(self.model), self.cfg.adaptive_weight_max)
        logs.update(gan_g=g_loss.detach(), gan_adaptive_weight=weight)
        return self.cfg.disc_weight * weight * g_loss

    def discriminator_loss(self, step: int) -> tuple[torch.Tensor, dict[str, Any]] | None:
        """Hinge loss on the last batch's real images and (detached) reconstructions, from ``disc_start``."""
        if step < self.cfg.disc_start or self._last is None:
            return None
        x, x_hat = self._last
        d_loss = hinge_d_loss(self.discriminator(x), self.discriminator(x_hat))
        return d_loss, {"gan_d": d_loss.detach()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """PSNR / SSIM on held-out batches; codebook usage and perplexity for quantized models."""
        from latentflow.metrics import CodeHistogram, psnr, ssim

        if self.eval_stream is None:
            return {}
        model.eval()
        quantizer = find_quantizer(model)
        hist = CodeHistogram(quantizer.codebook_size) if quantizer is not None else None
        p, s, n = 0.0, 0.0, 0
        self.eval_stream.reset()  # the same held-out batches every evaluation
        for _ in range(self.eval_batches):
            x = self.eval_stream.next_batch()["pixel_values"].to(model.device)
            enc = model.encode(x)
            x_hat = model.decode(enc.latents).sample.clamp(-1, 1)
            if x.ndim == 5:  # clips (B, 3, T, H, W): score every frame as an image
                x, x_hat = (t.transpose(1, 2).flatten(0, 1) for t in (x, x_hat))
            p += psnr(x_hat.float(), x).mean
            s += ssim(x_hat.float(), x).mean
            n += 1
            if hist is not None and getattr(enc, "indices", None) is not None:
                hist.update(enc.indices)
        logs = {"psnr": p / n, "ssim": s / n}
        if hist is not None and hist.counts.sum() > 0:
            stats = hist.stats()
            logs.update(codebook_usage=stats.usage, codebook_perplexity=stats.perplexity)
        return logs


class PriorLoss(nn.Module):
    """``forward`` = the prior's ``loss``, so DDP (which syncs gradients through ``forward``) can wrap it."""

    def __init__(self, prior: nn.Module):
        super().__init__()
        self.prior = prior

    def forward(self, latents: torch.Tensor, labels: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                **text: torch.Tensor):
        # mask: audio latents' padding mask (B, t); text / text_mask: cached caption embeddings. Only the flow prior takes them
        extra = {**({"mask": mask} if mask is not None else {}), **text}
        return self.prior.loss(latents, labels, **extra) if extra else self.prior.loss(latents, labels)


class PriorTask:
    """Stage-2: a prior's own loss on batches of cached latents; validation NLL / flow loss on held-out rows."""

    def __init__(self, prior: nn.Module, val_latents: torch.Tensor | None = None,
                 val_labels: torch.Tensor | None = None, val_batch: int = 256):
        self.model = prior
        self.ddp_module = self.net = PriorLoss(prior)
        self.val_latents, self.val_labels, self.val_batch = val_latents, val_labels, val_batch
        self.discriminator = None

    def extra_modules(self) -> dict[str, nn.Module]:
        return {}

    def loss(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        device = next(self.model.parameters()).device
        labels = batch.get("labels")
        latents = batch["latents"].to(device)
        mask = batch.get("mask")
        text = {k: batch[k].to(device) for k in ("text", "text_mask") if batch.get(k) is not None}
        return self.net(latents, labels, None if mask is None else mask.to(device), **text)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Mean of the prior's validation metric over the held-out rows (batched)."""
        if self.val_latents is None or len(self.val_latents) == 0:
            return {}
        model.eval()
        sums: dict[str, float] = {}
        n = len(self.val_latents)
        for start in range(0, n, self.val_batch):
            rows = slice(start, start + self.val_batch)
            device = next(model.parameters()).device
            labels = None if self.val_labels is None else self.val_labels[rows].to(device)
            for k, v in model.validation(self.val_latents[rows].to(device), labels, seed=start).items():
                sums[k] = sums.get(k, 0.0) + v * len(self.val_latents[rows])
        model.train()
        return {k: v / n for k, v in sums.items()}
