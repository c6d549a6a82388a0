"""Stage-1 loss terms that are not the model's own: regression, EQ-VAE equivariance, VF alignment.

The bottleneck terms (KL, beta-VAE, VQ codebook/commitment/entropy) come from the
model's ``forward`` (``out.loss`` minus its ``rec`` term); the perceptual and
adversarial terms live in :mod:`~latentflow.training.perceptual` and
:mod:`~latentflow.training.discriminator`.
"""

from __future__ import annotations

import math
import os

import fsspec
import torch
import torch.nn.functional as F
from torch import nn

from latentflow.errors import CheckpointError, InputError


def regression_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str, extra_per_sample: torch.Tensor | None = None) -> torch.Tensor:
    """L1 or L2 error averaged over every element: the models' ``rec`` convention
    (:class:`~latentflow.outputs.AutoencoderOutput`), so the model's weighted terms added to it
    keep the balance their config weights give them.

    Args:
        x_hat, x: (B, C, H, W).
        kind: ``l1`` or ``l2``.
        extra_per_sample: (B,) added to every pixel's error before averaging (LDM adds LPIPS this way).
    """
    err = (x_hat - x).abs() if kind == "l1" else (x_hat - x).pow(2)
    if extra_per_sample is not None:
        err = err + extra_per_sample.view(-1, *([1] * (err.ndim - 1)))
    return err.mean()


def bottleneck_loss(out, weights: dict[str, float] | None) -> torch.Tensor:
    """The model's own non-reconstruction terms.

    With ``weights`` None: ``out.loss - out.losses["rec"]`` (the model's weighted KL/VQ part).
    Otherwise ``sum(w * out.losses[name])``, naming a missing term in the error.
    """
    if weights is None:
        rec = out.losses.get("rec")
        return out.loss - rec if rec is not None else out.loss
    missing = sorted(set(weights) - set(out.losses))
    if missing:
        raise InputError(f"model_loss_weights names terms the model does not return: {missing}; it returns {sorted(out.losses)}")
    return sum(w * out.losses[name] for name, w in weights.items())


# ---- EQ-VAE -----------------------------------------------------------------------------
def random_transform(generator: torch.Generator, scales: tuple[float, ...], rotate: bool) -> tuple[float, int]:
    """Draw one transform: a scale in ``(1.0, *scales)`` and a quarter-turn count in 0..3."""
    options = (1.0, *scales)
    scale = options[int(torch.randint(len(options), (1,), generator=generator))]
    turns = int(torch.randint(4, (1,), generator=generator)) if rotate else 0
    if scale == 1.0 and turns == 0:
        turns = 1 if rotate else 0
        scale = scale if rotate else options[-1]
    return scale, turns


def apply_transform(t: torch.Tensor, size: tuple[int, int], turns: int) -> torch.Tensor:
    """Resize a (B, C, H, W) tensor to ``size`` (bilinear, antialiased) then rotate by ``turns`` x 90 degrees."""
    if tuple(t.shape[-2:]) != size:
        t = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
    return torch.rot90(t, turns, dims=(-2, -1)) if turns else t


def equivariance_loss(model: nn.Module, x: torch.Tensor, z: torch.Tensor, scale: float, turns: int, kind: str) -> torch.Tensor:
    """EQ-VAE: ``decode(T(z))`` should match ``T(x)`` for a scale/rotation ``T``.

    Args:
        model: the autoencoder (``decode``, ``downsample_factor``).
        x: images (B, C, H, W); z: their latents (B, c, h, w).
    """
    if z.ndim != 4:
        raise InputError(f"EQ-VAE needs spatial latents (B, C, h, w), got shape {tuple(z.shape)}")
    h = max(1, int(round(z.shape[-2] * scale)))
    w = max(1, int(round(z.shape[-1] * scale)))
    f = model.downsample_factor
    z_t = apply_transform(z, (h, w), turns)
    x_t = apply_transform(x, (h * f, w * f), turns)
    x_hat = model.decode(z_t).sample
    return regression_loss(x_hat, x_t, kind)


# ---- VF alignment (VA-VAE) ---------------------------------------------------------------------
def load_feature_model(path: str, storage_options: dict | None = None) -> nn.Module:
    """A frozen feature model saved with ``save_pretrained`` (e.g. an MAE encoder); clear error when absent."""
    from latentflow.auto import AutoModel

    fs, fpath = fsspec.url_to_fs(os.fspath(path), **(storage_options or {}))
    if not fs.exists(fpath):
        raise CheckpointError(
            f"VF alignment feature model not found at {path!r}: loss.vf_model must be a local folder written by "
            "save_pretrained (config.json + model.safetensors); put it there or set loss.vf_weight=0. "
            "latentflow never downloads weights.")
    return AutoModel.from_pretrained(path, storage_options=storage_options).requires_grad_(False).eval()


def feature_grid(features: torch.Tensor) -> torch.Tensor:
    """Model features as a (B, D, g, g) grid: tokens (B, L or 1 + L, D) are reshaped, a cls token dropped."""
    if features.ndim == 4:
        return features
    if features.ndim != 3:
        raise InputError(f"feature model output must be (B, D, h, w) or (B, L, D), got shape {tuple(features.shape)}")
    n = features.shape[1]
    side = math.isqrt(n)
    if side * side != n:
        features, n = features[:, 1:], n - 1
        side = math.isqrt(n)
    if side * side != n:
        raise InputError(f"cannot lay {features.shape[1]} tokens on a square grid")
    return features.transpose(1, 2).reshape(features.shape[0], -1, side, side)


class VFAlignment(nn.Module):
    """VA-VAE vision-foundation alignment: a 1x1 projection of the latents to the frozen features,
    with a margin cosine-similarity loss and a margin distance-matrix loss.

    Args:
        feature_model: frozen model whose ``encode(x).latents`` are the target features.
        latent_channels: channels of the autoencoder latents.
        margin_cos, margin_dist: margins below which differences are not penalized.
    """

    def __init__(self, feature_model: nn.Module, latent_channels: int, margin_cos: float = 0.5, margin_dist: float = 0.25):
        super().__init__()
        self._frozen = [feature_model]  # a list: not a submodule, never trained nor saved with the task
        cfg = feature_model.config
        self.input_size = getattr(cfg, "image_size", None) or getattr(cfg, "sample_size", None)
        with torch.no_grad():
            probe = self.target(torch.zeros(1, cfg.in_channels, self.input_size or 32, self.input_size or 32))
        self.proj = nn.Conv2d(latent_channels, probe.shape[1], 1)
        self.margin_cos, self.margin_dist = margin_cos, margin_dist

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        model = self._frozen[0]
        if self.input_size and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True)
        return feature_grid(model.encode(x).latents).float()  # (B, D, g, g)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Alignment loss between latents (B, c, h, w) and the features of images x."""
        feats = self.target(x)
        p = self.proj(z.float())
        p = F.interpolate(p, size=feats.shape[-2:], mode="bilinear", align_corners=False)
        p = F.normalize(p.flatten(2), dim=1)  # (B, D, N)
        f = F.normalize(feats.flatten(2), dim=1)
        cos = (p * f).sum(1)  # (B, N)
        mcos = F.relu(1.0 - self.margin_cos - cos).mean()
        dist = (p.transpose(1, 2) @ p) - (f.transpose(1, 2) @ f)  # (B, N, N)
        mdms = F.relu(dist.abs() - self.margin_dist).mean()
        return mcos + mdms


# ---- audio: multi-resolution STFT -------------------------------------------------------
# Magnitudes are clamped at 1e-5 (descript-audio-codec's floor) before the log: finite logs and gradients at
# silence, and digital silence (sound effects' tails) cannot dominate the log term. auraloss floors |X|^2 at 1e-8.
STFT_FLOOR = 1e-5


def stft_magnitude(x: torch.Tensor, fft_size: int, hop: int) -> torch.Tensor:
    """|STFT| of waveforms (B, C, T) with a Hann window of ``fft_size``: (B * C, fft_size / 2 + 1, frames)."""
    window = torch.hann_window(fft_size, device=x.device, dtype=x.dtype)
    spec = torch.stft(x.reshape(-1, x.shape[-1]), fft_size, hop, window=window, return_complex=True)
    return spec.abs().clamp(min=STFT_FLOOR)


def stft_loss(x_hat: torch.Tensor, x: torch.Tensor, fft_size: int, hop: int | None = None) -> torch.Tensor:
    """Spectral convergence + log-magnitude L1 at one resolution (Arik et al. 2018; auraloss' ``STFTLoss``).

    ``sc = ||S - S_hat||_F / ||S||_F`` over the whole batch (auraloss divides per signal, which a silent
    training crop turns into a huge term), ``log_mag = mean |log S - log S_hat|``.
    Both are 0 for identical signals; for ``x_hat = a * x`` (a > 0) ``sc = |1 - a|`` and ``log_mag = |log a|``
    (on bins above the floor), whatever ``x``: the loss ignores the signal's level.
    """
    s_hat, s = stft_magnitude(x_hat, fft_size, hop or fft_size // 4), stft_magnitude(x, fft_size, hop or fft_size // 4)
    sc = (s - s_hat).pow(2).sum().sqrt() / s.pow(2).sum().sqrt()  # over the batch: a silent crop cannot blow it up
    return sc + (s.log() - s_hat.log()).abs().mean()


def multi_resolution_stft_loss(x_hat: torch.Tensor, x: torch.Tensor,
                               fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64, 32)) -> torch.Tensor:
    """Mean of :func:`stft_loss` over FFT sizes (hops a quarter of each): Stable Audio's resolutions by default.

    Args:
        x_hat, x: waveforms (B, C, T), same shape; sizes longer than T are skipped (at least one must fit).

    Returns:
        A scalar: 0 for identical signals.
    """
    if x_hat.shape != x.shape or x.ndim != 3:
        raise InputError(f"expected two (B, C, T) waveforms of one shape, got: {tuple(x_hat.shape)} and {tuple(x.shape)}")
    sizes = [n for n in fft_sizes if n <= x.shape[-1]] or [min(fft_sizes)]
    if sizes[0] > x.shape[-1]:
        raise InputError(f"waveforms of {x.shape[-1]} samples are shorter than every FFT size {list(fft_sizes)}")
    return sum(stft_loss(x_hat, x, n) for n in sizes) / len(sizes)
