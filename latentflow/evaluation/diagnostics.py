"""Latent diagnostics of a codec: channel statistics, latent-space uniformity, a linear probe, codebook use.

One function, :func:`latent_diagnostics`, gives a JSON-able :class:`LatentDiagnostics` from what an
evaluation accumulates (a :class:`~latentflow.metrics.ChannelStats`, a subsample of latent token
vectors, per-image pooled features with labels, a code histogram); :func:`diagnose_latents` does
the same from a batch of latents in memory. The evaluation job writes one per model into its report
(``report["models"][name]["diagnostics"]``) and plots them side by side.

Uniformity (the latent-distribution metrics of TransVAE, "A Hybrid Paradigm for Vision Autoencoders:
Unifying CNNs and Transformers", ICLR 2026 submission, openreview.net/forum?id=VlcP90XLMV, which
follow the uniformity analysis of VA-VAE, Yao et al. 2025, arXiv 2501.01423): the latent token
vectors (one C-dim vector per spatial position) are standardized per channel and projected to 2D,
a Gaussian kernel density estimate gives a density ``d_i`` at each of the N points, and

* density CV = ``std(d) / mean(d)`` (coefficient of variation; 0 for a perfectly even spread);
* entropy = ``-sum_i p_i log p_i / log N`` with ``p_i = d_i / sum d`` (normalized Shannon entropy; 1 = even);
* Gini = ``sum_i (2i - N - 1) d_(i) / (N sum d)`` over the sorted densities (0 = even, -> 1 = concentrated).

A more uniform latent distribution (lower CV and Gini, higher entropy) is what those papers associate
with latents that are easier for a diffusion model to learn. The papers project with t-SNE; here the
projection is PCA (deterministic, no extra dependency), and the KDE is leave-one-out with Scott's
bandwidth, so the numbers are comparable between codecs measured here, not with the papers' tables.
Two limits of any such estimate: a distribution with hard edges (a uniform box) reads less even than
it is (the KDE underestimates density near its boundary), and with many channels the 2D projection
sees the dominant structure only (a projected uniform cube is near-Gaussian).

Linear probe: a ridge-regression classifier (one-hot targets, closed form) on per-image latents
average-pooled to at most a 4x4 grid, trained on a seeded split and scored on the held-out rest;
``chance`` is the held-out share of the most frequent training class.

Example::

    diag = diagnose_latents(latents, labels=labels)        # latents (B, C, h, w)
    diag.uniformity.density_cv, diag.probe.accuracy
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from latentflow.errors import InputError
from latentflow.metrics import ChannelStats, CodebookStats, codebook_stats

PROBE_GRID = 4  # per-image features: latents average-pooled to at most 4x4


# ---- inequality of a set of non-negative values ------------------------------------------------
def _values(values: Any) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or not np.isfinite(v).all() or (v < 0).any() or v.sum() <= 0:
        raise InputError(f"expected finite non-negative values with a positive sum, got {v.size} values "
                         f"(min {v.min() if v.size else None})")
    return v


def coefficient_of_variation(values: Any) -> float:
    """Population ``std / mean`` of non-negative values."""
    v = _values(values)
    return float(v.std() / v.mean())


def normalized_entropy(values: Any) -> float:
    """Shannon entropy of ``values / sum(values)`` divided by ``log N``: 1 when all are equal."""
    v = _values(values)
    if v.size == 1:
        return 1.0
    p = v / v.sum()
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / math.log(v.size))


def gini(values: Any) -> float:
    """Gini coefficient ``sum_i (2i - N - 1) x_(i) / (N sum x)`` (x sorted ascending, i from 1): 0 when
    all are equal, ``(N - 1) / N`` when one value holds everything."""
    v = np.sort(_values(values))
    n = v.size
    return float(((2 * np.arange(1, n + 1) - n - 1) * v).sum() / (n * v.sum()))


# ---- uniformity -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class UniformityStats:
    """Uniformity of the latent token distribution (see module doc). ``num_points`` KDE points,
    ``bandwidth`` the Scott factor in units of each projected axis' std."""

    density_cv: float
    entropy: float
    gini: float
    num_points: int
    bandwidth: float


def project_2d(tokens: np.ndarray) -> np.ndarray:
    """(N, C) token vectors -> (N, 2): standardized per channel, then the top two principal axes
    (one axis, padded with zeros, when C = 1)."""
    x = np.asarray(tokens, dtype=np.float64)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    if x.shape[1] == 1:
        return np.concatenate([x, np.zeros_like(x)], axis=1)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def kde_density(points: np.ndarray, bandwidth: float | None = None) -> tuple[np.ndarray, float]:
    """Leave-one-out Gaussian KDE at each of (N, 2) points, product kernel with per-axis widths
    ``bandwidth * std``; Scott's factor ``N ** (-1 / 6)`` by default. Returns (densities (N,), factor)."""
    n = points.shape[0]
    h = n ** (-1.0 / 6.0) if bandwidth is None else bandwidth
    widths = h * np.where(points.std(0) > 0, points.std(0), 1.0)
    z = points / widths  # (N, 2)
    sq = (z * z).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)  # (N, N) squared distances
    kernel = np.exp(-0.5 * d2)
    np.fill_diagonal(kernel, 0.0)
    return kernel.sum(1) / ((n - 1) * 2 * math.pi * widths.prod()), h


def latent_uniformity(tokens: Any, max_points: int = 4096, seed: int = 0) -> UniformityStats:
    """Density CV, normalized entropy and Gini of the latent token distribution.

    Args:
        tokens: (N, C) latent vectors, one per spatial position (N >= 3).
        max_points: at most this many points (a seeded subsample; the KDE is O(N^2)).
        seed: seeds the subsample.
    """
    x = np.asarray(tokens, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 3:
        raise InputError(f"expected (N, C) latent token vectors with N >= 3, got shape {x.shape}")
    if x.shape[0] > max_points:
        x = x[np.random.default_rng(seed).choice(x.shape[0], size=max_points, replace=False)]
    density, h = kde_density(project_2d(x))
    return UniformityStats(coefficient_of_variation(density), normalized_entropy(density), gini(density), len(x), h)


# ---- linear probe ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeResult:
    """Held-out accuracy of a ridge classifier on latents, and the majority-class baseline."""

    accuracy: float
    chance: float
    num_classes: int
    num_train: int
    num_test: int
    ridge: float


def probe_features(latents: torch.Tensor, grid: int = PROBE_GRID) -> np.ndarray:
    """Per-image features (B, C * g * g): (B, C, h, w) latents average-pooled to g = min(grid, h, w)
    (other ranks: flattened after the channel axis)."""
    z = latents.detach().float().cpu()
    if z.ndim == 4:
        g = min(grid, *z.shape[2:])
        z = F.adaptive_avg_pool2d(z, (g, g))
    return z.reshape(z.shape[0], -1).numpy()


def linear_probe(features: Any, labels: Any, test_fraction: float = 0.25, ridge: float = 1e-2, seed: int = 0) -> ProbeResult:
    """Ridge-regression classifier (one-hot targets, closed form) on a seeded train/test split.

    Features are standardized with the training rows' statistics; the penalty is ``ridge`` times the
    mean eigenvalue of the training Gram matrix (so it does not depend on the feature scale).

    Args:
        features: (N, D) floats.
        labels: (N,) integer class labels.
        test_fraction: share of rows held out (at least one row each side).
        ridge: relative L2 penalty.
        seed: seeds the split.
    """
    x, y = np.asarray(features, dtype=np.float64), np.asarray(labels).astype(np.int64).ravel()
    if x.ndim != 2 or len(x) != len(y) or len(y) < 4:
        raise InputError(f"expected (N, D) features and (N,) labels with N >= 4, got {x.shape} and {y.shape}")
    if not 0 < test_fraction < 1:
        raise InputError(f"test_fraction must be in (0, 1), got: {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = min(max(1, int(round(test_fraction * len(y)))), len(y) - 1)
    test, train = order[:n_test], order[n_test:]
    classes = np.unique(y[train])
    mean, std = x[train].mean(0), x[train].std(0)
    xs = (x - mean) / np.where(std > 0, std, 1.0)
    xtr = np.concatenate([xs[train], np.ones((len(train), 1))], axis=1)  # bias column
    targets = (y[train][:, None] == classes[None]).astype(np.float64)  # (n, K) one-hot
    gram = xtr @ xtr.T  # dual form: (n, n), cheap when D > n and fine otherwise for evaluation sizes
    lam = ridge * np.trace(gram) / len(train)
    alpha = np.linalg.solve(gram + lam * np.eye(len(train)), targets)
    xte = np.concatenate([xs[test], np.ones((len(test), 1))], axis=1)
    pred = classes[np.argmax(xte @ (xtr.T @ alpha), axis=1)]
    majority = classes[np.argmax(targets.sum(0))]
    return ProbeResult(float((pred == y[test]).mean()), float((y[test] == majority).mean()), int(len(np.unique(y))),
                       int(len(train)), int(len(test)), ridge)


# ---- everything at once ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LatentDiagnostics:
    """Per-channel statistics (``ChannelStats.to_dict()``), uniformity, linear probe (None without
    labels, or with fewer than two classes), codebook statistics (None for continuous codecs)."""

    channels: dict[str, Any]
    uniformity: UniformityStats | None
    probe: ProbeResult | None
    codebook: CodebookStats | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def latent_diagnostics(stats: ChannelStats, tokens: Any | None = None, features: Any | None = None,
                       labels: Any | None = None, code_counts: Any | None = None, seed: int = 0) -> LatentDiagnostics:
    """Diagnostics from accumulated pieces.

    Args:
        stats: per-channel statistics of every latent value.
        tokens: (N, C) latent vectors (a subsample) for the uniformity metrics; None skips them.
        features / labels: (M, D) per-image features and (M,) labels for the probe; labels < 0 mean
            "no label" and are dropped; None (or fewer than two classes) skips the probe.
        code_counts: (K,) code histogram of a quantized codec.
        seed: seeds the subsample and the probe split.
    """
    uniformity = latent_uniformity(tokens, seed=seed) if tokens is not None and len(tokens) >= 3 else None
    probe = None
    if features is not None and labels is not None:
        y = np.asarray(labels).astype(np.int64).ravel()
        keep = y >= 0
        if len(np.unique(y[keep])) >= 2 and keep.sum() >= 4:
            probe = linear_probe(np.asarray(features)[keep], y[keep], seed=seed)
    counts = None if code_counts is None else np.asarray(code_counts)
    codebook = codebook_stats(torch.as_tensor(counts)) if counts is not None and counts.sum() > 0 else None
    return LatentDiagnostics(stats.to_dict(), uniformity, probe, codebook)


def diagnose_latents(latents: torch.Tensor, labels: Any | None = None, indices: torch.Tensor | None = None,
                     codebook_size: int | None = None, max_tokens: int = 4096, seed: int = 0) -> LatentDiagnostics:
    """:func:`latent_diagnostics` of a batch of (B, C, ...) latents held in memory.

    Args:
        latents: (B, C, ...) latents.
        labels: (B,) class labels, or None.
        indices / codebook_size: token indices of a quantized codec and its codebook size, or None.
        max_tokens: token vectors used for the uniformity metrics.
        seed: seeds subsampling and the probe split.
    """
    if latents.ndim < 3:
        raise InputError(f"expected (B, C, ...) latents with spatial axes, got shape {tuple(latents.shape)}")
    stats = ChannelStats()
    stats.update(latents)
    tokens = latents.detach().double().cpu().movedim(1, -1).reshape(-1, latents.shape[1]).numpy()  # (B*h*w, C)
    if len(tokens) > max_tokens:
        tokens = tokens[np.random.default_rng(seed).choice(len(tokens), size=max_tokens, replace=False)]
    counts = None
    if indices is not None:
        if not codebook_size:
            raise InputError("indices need the codebook_size to count dead codes")
        idx = indices.flatten().long().cpu()
        counts = torch.bincount(idx[idx >= 0], minlength=codebook_size).numpy()
    return latent_diagnostics(stats, tokens, probe_features(latents), labels, counts, seed)


__all__ = ["coefficient_of_variation", "normalized_entropy", "gini", "UniformityStats", "project_2d", "kde_density",
           "latent_uniformity", "ProbeResult", "probe_features", "linear_probe", "LatentDiagnostics",
           "latent_diagnostics", "diagnose_latents"]
