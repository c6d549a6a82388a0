"""Reconstruction and latent metrics: PSNR, SSIM, codebook usage, latent channel statistics.

Everything here is plain torch (no model code), so the trainer, the evaluation job
and the tests share one definition of each number.

Conventions:
    * images are (B, C, H, W) tensors in [-1, 1] unless ``data_range`` says otherwise;
    * per-sample values come back as (B,) float64 tensors, means as Python floats;
    * streaming accumulators (:class:`ChannelStats`, :class:`CodeHistogram`) keep
      float64/int64 state and ``merge`` so partial results from Ray workers combine.

Example::

    p = psnr(x_hat, x)                    # PSNRResult(per_sample=(B,), mean=float)
    s = ssim(x_hat, x).mean
    stats = ChannelStats(); stats.update(latents); stats.scaling_factor()
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from latentflow.errors import InputError

# PSNR of identical images is +inf; by default it is capped here so that reports stay
# finite JSON and means over a batch stay meaningful. 100 dB is far above any codec:
# rounding to 8 bits alone already limits PSNR to ~59 dB.
PSNR_CAP_DB = 100.0


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise InputError(f"images must have one shape, got: {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim != 4:
        raise InputError(f"expected (B, C, H, W) images, got rank {x.ndim} with shape {tuple(x.shape)}")


@dataclass
class MetricResult:
    """A per-sample metric (B,) float64 and its mean over the batch."""

    per_sample: torch.Tensor
    mean: float


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, max_db: float | None = PSNR_CAP_DB) -> MetricResult:
    """Peak signal-to-noise ratio, per sample: ``10 log10(data_range^2 / MSE)``.

    Args:
        x, y: (B, C, H, W) images; ``data_range`` is max - min of the pixel scale
            (2.0 for [-1, 1], 1.0 for [0, 1], 255 for uint8 values).
        data_range: peak-to-peak range of the pixel values.
        max_db: identical images have MSE 0 and PSNR +inf; values are capped at
            ``max_db`` (default :data:`PSNR_CAP_DB` = 100 dB). Pass ``None`` for +inf.

    Returns:
        :class:`MetricResult` with per-sample PSNR in dB and their mean.
    """
    _check_pair(x, y)
    if data_range <= 0:
        raise InputError(f"data_range must be > 0, got: {data_range}")
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(dim=1)  # (B,)
    with torch.no_grad():
        values = 10.0 * torch.log10(data_range**2 / mse)  # inf where mse == 0
    if max_db is not None:
        values = values.clamp(max=max_db)
    return MetricResult(values, float(values.mean()))


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-0.5 * (coords / sigma) ** 2)
    return g / g.sum()  # (size,)


def _blur(t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter of every channel. (B, C, H, W) -> (B, C, H-k+1, W-k+1)."""
    c = t.shape[1]
    k = g.numel()
    t = F.conv2d(t, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(t, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 2.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> MetricResult:
    """Structural similarity (Wang et al. 2004) with a Gaussian window, averaged over channels.

    Matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range)``: statistics are computed only
    where the whole window fits (the border of ``win_size // 2`` is left out).

    Args:
        x, y: (B, C, H, W) images with H, W >= ``win_size``.
        data_range: peak-to-peak range (2.0 for [-1, 1]).
        win_size: odd Gaussian window size (11 by default).
        sigma: Gaussian standard deviation (1.5 by default).
        k1, k2: the standard stabilizing constants.

    Returns:
        :class:`MetricResult` with per-sample SSIM and the batch mean.
    """
    _check_pair(x, y)
    if win_size % 2 == 0 or min(x.shape[2:]) < win_size:
        raise InputError(f"SSIM needs an odd win_size <= image size, got: win_size={win_size}, image {tuple(x.shape[2:])}")
    x, y = x.double(), y.double()
    g = _gaussian_window(win_size, sigma, x.dtype, x.device)
    mu_x, mu_y = _blur(x, g), _blur(y, g)
    var_x = _blur(x * x, g) - mu_x**2
    var_y = _blur(y * y, g) - mu_y**2
    cov = _blur(x * y, g) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    values = (num / den).flatten(1).mean(dim=1)  # (B,) mean over channels and positions
    return MetricResult(values, float(values.mean()))


# ---- codebooks ---------------------------------------------------------------------


@dataclass
class CodebookStats:
    """Summary of a code histogram.

    Attributes:
        codebook_size: number of codes K.
        used: codes with at least one hit.
        usage: ``used / K``.
        dead_codes: ``K - used``.
        perplexity: ``exp(entropy)`` of the empirical code distribution, in [1, K].
        entropy_bits: entropy in bits.
        total: number of indices counted.
    """

    codebook_size: int
    used: int
    usage: float
    dead_codes: int
    perplexity: float
    entropy_bits: float
    total: int


def codebook_stats(counts: torch.Tensor) -> CodebookStats:
    """Usage, perplexity and dead codes from a (K,) histogram of code indices.

    Args:
        counts: (K,) non-negative hit counts, one per code.

    Returns:
        :class:`CodebookStats`.
    """
    counts = torch.as_tensor(counts).double().flatten()
    total = float(counts.sum())
    if total <= 0:
        raise InputError("codebook_stats needs at least one counted index, got an empty histogram")
    p = counts / total
    nz = p[p > 0]
    entropy = float(-(nz * nz.log()).sum())  # nats
    used = int((counts > 0).sum())
    k = counts.numel()
    return CodebookStats(k, used, used / k, k - used, math.exp(entropy), entropy / math.log(2), int(total))


class CodeHistogram:
    """Streaming histogram of code indices (any shape), mergeable across workers.

    Example::

        hist = CodeHistogram(codebook_size=512)
        hist.update(model.tokenize(x))      # (B, h, w) int
        hist.stats().perplexity
    """

    def __init__(self, codebook_size: int):
        if codebook_size <= 0:
            raise InputError(f"codebook_size must be > 0, got: {codebook_size}")
        self.counts = torch.zeros(codebook_size, dtype=torch.int64)

    def update(self, indices: torch.Tensor) -> None:
        idx = torch.as_tensor(indices).flatten().long().cpu()
        k = self.counts.numel()
        if idx.numel() and (idx.min() < 0 or idx.max() >= k):
            raise InputError(f"code indices must be in [0, {k}), got range [{int(idx.min())}, {int(idx.max())}]")
        self.counts += torch.bincount(idx, minlength=k)

    def merge(self, other: "CodeHistogram") -> "CodeHistogram":
        self.counts += other.counts
        return self

    def stats(self) -> CodebookStats:
        return codebook_stats(self.counts)


# ---- latent channel statistics -------------------------------------------------------


class ChannelStats:
    """Streaming per-channel mean/std of (B, C, ...) latents (Chan et al. parallel Welford, float64).

    Also tracks the statistics of all values pooled together, which give the single
    ``scaling_factor = 1 / std`` and ``shift_factor = mean`` that latent-diffusion
    configs use. ``merge`` combines accumulators from different workers exactly.
    """

    def __init__(self) -> None:
        self.count = 0  # values per channel
        self.mean: torch.Tensor | None = None  # (C,) float64
        self.m2: torch.Tensor | None = None  # (C,) sum of squared deviations
        self.min: torch.Tensor | None = None
        self.max: torch.Tensor | None = None

    def update(self, latents: torch.Tensor) -> None:
        """Add a batch of (B, C, ...) latents."""
        if latents.ndim < 2:
            raise InputError(f"expected (B, C, ...) latents, got shape {tuple(latents.shape)}")
        z = latents.detach().double().cpu().transpose(0, 1).reshape(latents.shape[1], -1)  # (C, N)
        n = z.shape[1]
        mean = z.mean(dim=1)
        m2 = (z - mean[:, None]).pow(2).sum(dim=1)
        self._combine(n, mean, m2, z.min(dim=1).values, z.max(dim=1).values)

    def _combine(self, n: int, mean: torch.Tensor, m2: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
        if n == 0:
            return
        if self.mean is None:
            self.count, self.mean, self.m2, self.min, self.max = n, mean.clone(), m2.clone(), lo.clone(), hi.clone()
            return
        if mean.shape != self.mean.shape:
            raise InputError(f"channel count changed: {self.mean.numel()} then {mean.numel()}")
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.pow(2) * (self.count * n / total)
        self.min, self.max = torch.minimum(self.min, lo), torch.maximum(self.max, hi)
        self.count = total

    def merge(self, other: "ChannelStats") -> "ChannelStats":
        if other.mean is not None:
            self._combine(other.count, other.mean, other.m2, other.min, other.max)
        return self

    def to_state(self) -> dict[str, "np.ndarray"]:
        """Exact accumulator state as float64 numpy arrays (to ship between Ray workers)."""
        self._require()
        return {"count": np.array([self.count], dtype=np.float64), "mean": self.mean.numpy(), "m2": self.m2.numpy(),
                "min": self.min.numpy(), "max": self.max.numpy()}

    @classmethod
    def from_state(cls, state: dict[str, "np.ndarray"]) -> "ChannelStats":
        """Inverse of :meth:`to_state`."""
        out = cls()
        t = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in state.items()}
        out._combine(int(t["count"].reshape(-1)[0]), t["mean"], t["m2"], t["min"], t["max"])
        return out

    def _require(self) -> None:
        if self.mean is None:
            raise InputError("ChannelStats has seen no latents yet")

    def channel_mean(self) -> torch.Tensor:
        self._require()
        return self.mean.clone()

    def channel_std(self) -> torch.Tensor:
        """Population std per channel, (C,) float64."""
        self._require()
        return (self.m2 / self.count).sqrt()

    def global_mean(self) -> float:
        self._require()
        return float(self.mean.mean())  # every channel has the same count

    def global_std(self) -> float:
        """Std of all values pooled: within-channel spread plus between-channel spread of means."""
        self._require()
        within = self.m2.sum() / (self.count * self.mean.numel())
        between = (self.mean - self.mean.mean()).pow(2).mean()
        return float((within + between).sqrt())

    def scaling_factor(self) -> float:
        """Suggested ``scaling_factor = 1 / std`` of all latent values (unit variance after scaling)."""
        std = self.global_std()
        return 1.0 / std if std > 0 else 1.0

    def shift_factor(self) -> float:
        """Suggested ``shift_factor`` = mean of all latent values."""
        return self.global_mean()

    def to_dict(self) -> dict:
        """JSON-able summary: per-channel mean/std/min/max, pooled mean/std, suggested factors."""
        self._require()
        return {
            "count_per_channel": self.count,
            "channel_mean": self.channel_mean().tolist(),
            "channel_std": self.channel_std().tolist(),
            "channel_min": self.min.tolist(),
            "channel_max": self.max.tolist(),
            "global_mean": self.global_mean(),
            "global_std": self.global_std(),
            "suggested_scaling_factor": self.scaling_factor(),
            "suggested_shift_factor": self.shift_factor(),
        }


def size_reduction_factor(input_shape: tuple[int, ...], latent_shape: tuple[int, ...]) -> float:
    """Tensor-size reduction: input elements / latent elements (per sample shapes, no batch dim).

    Example: a (3, 256, 256) image to (4, 32, 32) latents gives 48.0.
    """
    n_in, n_lat = math.prod(input_shape), math.prod(latent_shape)
    if n_in <= 0 or n_lat <= 0:
        raise InputError(f"shapes must be non-empty, got: {input_shape} and {latent_shape}")
    return n_in / n_lat


__all__ = [
    "PSNR_CAP_DB",
    "MetricResult",
    "psnr",
    "ssim",
    "CodebookStats",
    "codebook_stats",
    "CodeHistogram",
    "ChannelStats",
    "size_reduction_factor",
    "si_sdr",
    "waveform_psnr",
]


# ---- audio ------------------------------------------------------------------------------
def _check_waveforms(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise InputError(f"waveforms must have one shape, got: {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim != 3 or x.shape[-1] == 0:
        raise InputError(f"expected (B, C, T) waveforms with T > 0, got shape {tuple(x.shape)}")


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-12) -> MetricResult:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019), per sample.

    Per channel, both signals are made zero-mean, ``reference`` is scaled by the projection
    ``a = <estimate, reference> / ||reference||^2``, and ``SI-SDR = 10 log10(||a r||^2 / ||a r - e||^2)``;
    a sample's value is the mean over its channels. Any gain on ``estimate`` leaves it unchanged.

    Args:
        estimate, reference: (B, C, T) waveforms.

    Returns:
        :class:`MetricResult` (B,) float64 in dB. ``eps`` keeps silent channels finite (about 0 dB when
        both are silent), so leave silent references out of a mean that should mean something.
    """
    _check_waveforms(estimate, reference)
    e = estimate.double() - estimate.double().mean(dim=-1, keepdim=True)
    r = reference.double() - reference.double().mean(dim=-1, keepdim=True)
    a = (e * r).sum(-1, keepdim=True) / (r.pow(2).sum(-1, keepdim=True) + eps)
    target, noise = a * r, a * r - e
    values = 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps)).mean(dim=1)  # (B,)
    return MetricResult(values, float(values.mean()))


def waveform_psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, max_db: float | None = PSNR_CAP_DB) -> MetricResult:
    """PSNR of (B, C, T) waveforms, per sample: ``10 log10(data_range^2 / MSE)``; 2.0 is the range of [-1, 1] audio.

    As :func:`psnr` (the same cap), for audio's rank.
    """
    _check_waveforms(x, y)
    if data_range <= 0:
        raise InputError(f"data_range must be > 0, got: {data_range}")
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(dim=1)
    values = 10.0 * torch.log10(data_range**2 / mse)
    if max_db is not None:
        values = values.clamp(max=max_db)
    return MetricResult(values, float(values.mean()))
