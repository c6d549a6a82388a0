"""Vector quantization (van den Oord et al. 2017) with the fixes that keep codebooks alive.

Options, all in :class:`VQConfig`:

- codebook loss ``||sg[z] - q||^2`` plus commitment ``beta * ||z - sg[q]||^2``, or
  EMA codebook updates (``use_ema``: decay, eps, Laplace smoothing) instead of the codebook loss;
- k-means initialisation from the first training batch (``kmeans_init``);
- dead-code reset: codes whose EMA count falls below ``dead_code_threshold`` are
  replaced by encoder outputs drawn from the batch;
- the rotation trick (Fifty et al. 2024) instead of the straight-through estimator;
- cosine-similarity codebooks (``cosine``: codes and inputs on the unit sphere);
- a factorized low-dimensional codebook (``codebook_dim`` < ``dim``), as in ViT-VQGAN:
  project in, look up, project out.

Under torch.distributed the EMA statistics, k-means sums and reset samples are
all-reduced, so every rank holds the same codebook a single process would hold
after seeing the concatenated batches. Nothing updates in eval mode.

Example::

    vq = VectorQuantizer(VQConfig(dim=64, codebook_size=512, use_ema=True, kmeans_init=True,
                                  dead_code_threshold=1.0))
    out = vq(features)                    # (B, 64, H, W) -> indices (B, H, W)
    loss = out.loss                       # commitment (+ codebook without EMA)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from latentflow.configuration import check_positive
from latentflow.errors import ConfigError
from latentflow.quantizers.base import (
    FlatQuantized,
    Quantizer,
    QuantizerConfig,
    all_reduce_sum,
    exact_straight_through,
    gather_rows,
    global_row_count,
    nearest_rows,
    pick_weighted_row,
    register_quantizer,
)


@dataclass
class VQConfig(QuantizerConfig):
    """Vector quantizer settings; the defaults are a plain VQ-VAE codebook."""

    name: ClassVar[str] = "vq"

    dim: int = 64  # input feature channels
    codebook_size: int = 512
    codebook_dim: int | None = None  # < dim: factorized codebook with linear projections
    beta: float = 0.25  # commitment weight
    use_ema: bool = False  # EMA codebook updates instead of the codebook loss
    decay: float = 0.99  # EMA decay of counts and sums
    eps: float = 1e-5  # Laplace smoothing of EMA counts
    kmeans_init: bool = False  # k-means on the first training batch
    kmeans_iters: int = 10
    dead_code_threshold: float = 0.0  # reset codes whose EMA count drops below this (0: never)
    rotation_trick: bool = False  # rotation trick instead of straight-through
    cosine: bool = False  # cosine-similarity codebook (unit-norm codes)
    seed: int = 0  # seeds k-means and reset sampling (identical on every rank)

    def validate(self) -> None:
        owner = type(self).__name__
        check_positive(owner, dim=self.dim, codebook_size=self.codebook_size, codebook_dim=self.codebook_dim,
                       eps=self.eps, kmeans_iters=self.kmeans_iters)
        if self.codebook_dim is not None and self.codebook_dim > self.dim:
            raise ConfigError(f"{owner}.codebook_dim must be <= dim ({self.dim}), got: {self.codebook_dim}")
        if not 0.0 < self.decay < 1.0:
            raise ConfigError(f"{owner}.decay must be in (0, 1), got: {self.decay}")
        check_positive(owner, beta=self.beta, dead_code_threshold=self.dead_code_threshold, allow_zero=True)


def nearest_codes(z: torch.Tensor, codebook: torch.Tensor, cosine: bool) -> torch.Tensor:
    """Index of the nearest code for each row of ``z`` (N, D) among ``codebook`` (K, D). Shape (N,)."""
    if cosine:
        return (z @ codebook.t()).argmax(dim=-1)
    dist = z.pow(2).sum(-1, keepdim=True) - 2 * z @ codebook.t() + codebook.pow(2).sum(-1)  # (N, K)
    return dist.argmin(dim=-1)


def rotate_onto(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Rotation trick: ``q`` as a fixed rotation and rescaling of ``z`` (Fifty et al. 2024).

    The output's value is ``q`` (exactly, see :func:`exact_straight_through`); its
    gradient w.r.t. ``z`` goes through ``lambda * R`` with R, lambda treated as constants,
    where R rotates z's direction onto q's.
    """
    z_norm = z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    q_norm = q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    u = (z / z_norm).detach()
    q_hat = (q / q_norm).detach()
    r = F.normalize(u + q_hat, dim=-1).detach()
    rotated = z - 2 * (z * r).sum(-1, keepdim=True) * r + 2 * (z * u).sum(-1, keepdim=True) * q_hat
    return exact_straight_through(q, (q_norm / z_norm).detach() * rotated)


def laplace_smooth(counts: torch.Tensor, eps: float) -> torch.Tensor:
    """``(c + eps) / (n + K eps) * n``: no code gets a zero count, the total stays n."""
    n = counts.sum()
    return (counts + eps) / (n + counts.numel() * eps) * n


@register_quantizer
class VectorQuantizer(Quantizer):
    """Nearest-neighbour codebook lookup; see the module docstring for the options.

    State: ``codebook`` (K, codebook_dim) (a parameter; frozen under EMA), and the
    buffers ``cluster_size`` (K,) EMA counts, ``embed_sum`` (K, codebook_dim) EMA sums,
    ``initted`` and ``num_updates``.
    """

    config_class = VQConfig

    def __init__(self, config: VQConfig):
        super().__init__(config)
        k, dc = config.codebook_size, self.codebook_dim
        factorized = dc != config.dim
        self.project_in = nn.Linear(config.dim, dc) if factorized else nn.Identity()
        self.project_out = nn.Linear(dc, config.dim) if factorized else nn.Identity()
        generator = torch.Generator().manual_seed(config.seed)
        codebook = (torch.rand(k, dc, generator=generator) * 2 - 1) / k
        if config.cosine:
            codebook = F.normalize(torch.randn(k, dc, generator=generator), dim=-1)
        self.codebook = nn.Parameter(codebook, requires_grad=not config.use_ema)
        self.register_buffer("cluster_size", torch.ones(k))
        self.register_buffer("embed_sum", codebook.clone())
        self.register_buffer("initted", torch.tensor(not config.kmeans_init))
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))

    @property
    def codebook_dim(self) -> int:
        return self.config.codebook_dim or self.config.dim

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def codes(self) -> torch.Tensor:
        """The codebook as used for lookup (unit rows for cosine). Shape (K, codebook_dim)."""
        return F.normalize(self.codebook, dim=-1) if self.config.cosine else self.codebook

    def _project(self, z: torch.Tensor) -> torch.Tensor:
        zc = self.project_in(z)  # (N, Dc)
        return F.normalize(zc, dim=-1) if self.config.cosine else zc

    def _rng(self, salt: int) -> torch.Generator:
        # same seed on every rank, and reproducible after a resume (num_updates is saved)
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + int(self.num_updates) * 7919 + salt)

    # ---- the hooks -----------------------------------------------------------
    def encode_flat(self, z: torch.Tensor) -> torch.Tensor:
        if self.codebook_dim != self.config.dim:
            return self.nearest_output_code(z)  # codes live behind project_out
        return nearest_rows(self._project(z), self.codes())

    def decode_flat(self, indices: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.codes()[indices])

    def quantize_flat(self, z: torch.Tensor) -> FlatQuantized:
        zc = self._project(z)  # (N, Dc)
        if self.training and not bool(self.initted):
            self._kmeans_init(zc.detach())
        codes = self.codes()
        indices = nearest_codes(zc.detach(), codes.detach(), self.config.cosine)
        q = codes[indices]  # (N, Dc)
        losses = {"commitment": self.config.beta * F.mse_loss(zc, q.detach())}
        if not self.config.use_ema:
            losses["codebook"] = F.mse_loss(q, zc.detach())
        dead = None
        if self.training:
            dead = self._update(zc.detach(), indices)
        out = rotate_onto(zc, q) if self.config.rotation_trick else exact_straight_through(q, zc)
        return FlatQuantized(self.project_out(out), indices, losses, dead)

    # ---- state updates (train mode only) ---------------------------------------
    @torch.no_grad()
    def _update(self, zc: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """EMA counts (and sums/codebook under EMA), then dead-code reset. Returns the dead count."""
        cfg = self.config
        counts = all_reduce_sum(torch.bincount(indices, minlength=cfg.codebook_size).float())  # (K,)
        self.cluster_size.mul_(cfg.decay).add_(counts, alpha=1 - cfg.decay)
        if cfg.use_ema:
            sums = all_reduce_sum(torch.zeros_like(self.embed_sum).index_add_(0, indices, zc))  # (K, Dc)
            self.embed_sum.mul_(cfg.decay).add_(sums, alpha=1 - cfg.decay)
            self.codebook.data.copy_(self.embed_sum / laplace_smooth(self.cluster_size, cfg.eps).unsqueeze(1))
        dead_mask = self.cluster_size < (cfg.dead_code_threshold or 1.0)
        if cfg.dead_code_threshold > 0 and dead_mask.any():
            self._reset(zc, dead_mask)
        self.num_updates += 1
        return dead_mask.sum()

    def _reset(self, zc: torch.Tensor, dead_mask: torch.Tensor) -> None:
        """Replace dead codes by rows drawn from the (global) batch."""
        dead = dead_mask.nonzero().squeeze(1)
        picks = torch.randint(global_row_count(zc), (dead.numel(),), generator=self._rng(1)).to(zc.device)
        samples = gather_rows(zc, picks)  # (n_dead, Dc)
        threshold = self.config.dead_code_threshold
        self.codebook.data[dead] = samples
        self.embed_sum[dead] = samples * threshold
        self.cluster_size[dead] = threshold

    def _kmeans_plus_plus(self, zc: torch.Tensor) -> torch.Tensor:
        """k-means++ seeding on the global batch: each next centroid drawn with prob ~ d^2. (K, Dc)."""
        generator = self._rng(2)
        first = torch.randint(global_row_count(zc), (1,), generator=generator).to(zc.device)
        centroids = [gather_rows(zc, first)[0]]
        d2 = (zc - centroids[0]).pow(2).sum(-1)  # (N,)
        for _ in range(1, self.config.codebook_size):
            pick = pick_weighted_row(d2, generator)
            centroids.append(gather_rows(zc, pick.view(1))[0])
            d2 = torch.minimum(d2, (zc - centroids[-1]).pow(2).sum(-1))
        return torch.stack(centroids)

    @torch.no_grad()
    def _kmeans_init(self, zc: torch.Tensor) -> None:
        """Lloyd's k-means on the global batch, seeded by k-means++."""
        cfg, k = self.config, self.config.codebook_size
        centroids = self._kmeans_plus_plus(zc)  # (K, Dc)
        counts = torch.zeros(k, device=zc.device)
        for _ in range(cfg.kmeans_iters):
            assign = nearest_codes(zc, centroids, cfg.cosine)
            counts = all_reduce_sum(torch.bincount(assign, minlength=k).float())
            sums = all_reduce_sum(torch.zeros_like(centroids).index_add_(0, assign, zc))
            updated = sums / counts.clamp_min(1.0).unsqueeze(1)
            if cfg.cosine:
                updated = F.normalize(updated, dim=-1)
            centroids = torch.where(counts.unsqueeze(1) > 0, updated, centroids)
        self.codebook.data.copy_(centroids)
        self.cluster_size.copy_(counts)
        self.embed_sum.copy_(centroids * laplace_smooth(counts, cfg.eps).unsqueeze(1))
        self.initted.fill_(True)

    def extra_repr(self) -> str:
        cfg = self.config
        flags = [name for name in ("use_ema", "kmeans_init", "rotation_trick", "cosine") if getattr(cfg, name)]
        return f"dim={cfg.dim}, codebook_size={cfg.codebook_size}, codebook_dim={self.codebook_dim}" + "".join(f", {f}" for f in flags)
