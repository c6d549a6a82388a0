"""Rectified-flow (flow matching) prior over continuous latents, with Euler sampling.

Straight paths from noise to data: ``x_t = (1 - t) x0 + t x1`` with ``x0 ~ N(0, I)``
and ``x1`` the (normalized) latent; the network regresses the velocity
``x1 - x0``. Sampling integrates ``dx/dt = v(x, t)`` from t = 0 to 1 with Euler
steps. The velocity network is a small DiT (adaLN-Zero blocks over latent
patches) or a timestep-conditioned UNet built from the LDM autoencoder's blocks.

Example::

    prior = FlowPrior(FlowConfig(latent_shape=(4, 8, 8), network="dit"))
    loss, _ = prior.loss(latents)                      # (B, 4, 8, 8) float
    z = prior.sample(4, steps=32)                      # (4, 4, 8, 8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from latentflow.errors import ConfigError, InputError
from latentflow.models.layers import Attention
from latentflow.priors.base import PriorConfig, PriorModel, register_prior


@dataclass
class FlowConfig(PriorConfig):
    """Velocity network sizes. ``latent_shape`` is (C, h, w).

    Attributes:
        network: ``dit`` or ``unet``.
        patch_size: DiT patch side (must divide h and w).
        hidden_size / num_layers / num_heads: DiT width, depth, heads.
        block_out_channels: UNet widths per level (one 2x downsampling between levels).
    """

    latent_shape: tuple[int, ...] = (4, 8, 8)
    network: str = "dit"
    patch_size: int = 1
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    block_out_channels: tuple[int, ...] = (32, 64)
    norm_num_groups: int = 8

    def validate(self) -> None:
        super().validate()
        if len(self.latent_shape) != 3:
            raise ConfigError(f"flow latent_shape must be (C, h, w), got: {self.latent_shape}")
        if self.network not in ("dit", "unet"):
            raise ConfigError(f"network must be 'dit' or 'unet', got: {self.network!r}")
        _, h, w = self.latent_shape
        if h % self.patch_size or w % self.patch_size:
            raise ConfigError(f"patch_size {self.patch_size} must divide the latent size {h}x{w}")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of times t (B,) in [0, 1] (scaled to [0, 1000] like diffusion steps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class TimeClassEmbedding(nn.Module):
    """Sinusoidal t -> 2-layer MLP, plus a class embedding (index ``num_classes`` = no class)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.classes = nn.Embedding(num_classes + 1, dim)

    def forward(self, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.dim)) + self.classes(labels)  # (B, dim)


# ---- DiT -----------------------------------------------------------------------------
def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """adaLN-Zero block: the conditioning sets shift/scale/gate of attention and MLP (gates start at 0)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.ln2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        s1, sc1, g1, s2, sc2, g2 = self.ada(c).chunk(6, dim=-1)
        x = x + g1[:, None] * self.attn(modulate(self.ln1(x), s1, sc1))
        return x + g2[:, None] * self.mlp(modulate(self.ln2(x), s2, sc2))


class DiT(nn.Module):
    """Patchify (B, C, h, w) -> tokens, adaLN-Zero blocks, unpatchify to a velocity of the same shape."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        c, h, w = config.latent_shape
        p, d = config.patch_size, config.hidden_size
        self.p, self.grid = p, (h // p, w // p)
        self.embed = nn.Conv2d(c, d, p, stride=p)
        self.pos = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], d))
        nn.init.normal_(self.pos, std=0.02)
        self.cond = TimeClassEmbedding(d, config.num_classes)
        self.blocks = nn.ModuleList(DiTBlock(d, config.num_heads) for _ in range(config.num_layers))
        self.ln_out = nn.LayerNorm(d, elementwise_affine=False)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.out = nn.Linear(d, p * p * c)
        for layer in (self.ada_out[1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def position(self, gh: int, gw: int) -> torch.Tensor:
        """Position embeddings (1, gh*gw, d): the learned grid, bilinearly resized for other bucket shapes."""
        if (gh, gw) == self.grid:
            return self.pos
        grid = self.pos.view(1, *self.grid, -1).permute(0, 3, 1, 2)  # (1, d, H, W)
        grid = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
        return grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        gh, gw = x.shape[-2] // self.p, x.shape[-1] // self.p
        h = self.embed(x).flatten(2).transpose(1, 2) + self.position(gh, gw)  # (B, N, d)
        cond = self.cond(t, labels)
        for block in self.blocks:
            h = block(h, cond)
        shift, scale = self.ada_out(cond).chunk(2, dim=-1)
        h = self.out(modulate(self.ln_out(h), shift, scale))  # (B, N, p*p*C)
        h = h.view(b, gh, gw, self.p, self.p, c).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(b, c, gh * self.p, gw * self.p)


# ---- UNet from the LDM autoencoder's blocks ---------------------------------------------------
def _unet_blocks():
    from latentflow.models import ldm_blocks

    class TimestepResnetBlock(ldm_blocks.ResnetBlock):
        """The LDM ResnetBlock with the (time + class) embedding added after its first conv."""

        def __init__(self, cin: int, cout: int, emb_dim: int, groups: int):
            super().__init__(cin, cout, norm_num_groups=groups)
            self.emb_proj = nn.Linear(emb_dim, cout)

        def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            h = self.conv1(F.silu(self.norm1(x))) + self.emb_proj(F.silu(emb))[:, :, None, None]
            h = self.conv2(self.dropout(F.silu(self.norm2(h))))
            return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h

    return ldm_blocks, TimestepResnetBlock


class UNet(nn.Module):
    """Encoder-decoder with skip connections; every ResBlock receives the time/class embedding."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        blocks, TRes = _unet_blocks()
        c, widths, g = config.latent_shape[0], config.block_out_channels, config.norm_num_groups
        if config.latent_shape[1] % 2 ** (len(widths) - 1):
            raise ConfigError(f"UNet with {len(widths)} levels needs latent size divisible by {2 ** (len(widths) - 1)}")
        emb = widths[0] * 4
        self.cond = TimeClassEmbedding(emb, config.num_classes)
        self.conv_in = nn.Conv2d(c, widths[0], 3, padding=1)
        self.down = nn.ModuleList(TRes(widths[max(i - 1, 0)], w, emb, g) for i, w in enumerate(widths))
        self.downsample = nn.ModuleList(blocks.Downsample(w) for w in widths[:-1])
        self.mid = TRes(widths[-1], widths[-1], emb, g)
        self.up = nn.ModuleList(TRes(2 * w, w if i == 0 else widths[i - 1], emb, g) for i, w in reversed(list(enumerate(widths))))
        self.upsample = nn.ModuleList(blocks.Upsample(w) for w in reversed(widths[:-1]))
        self.norm_out = nn.GroupNorm(g, widths[0])
        self.conv_out = nn.Conv2d(widths[0], c, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        emb = self.cond(t, labels)
        h, skips = self.conv_in(x), []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.upsample):
                h = self.upsample[i](h)
        return self.conv_out(F.silu(self.norm_out(h)))


@register_prior
class FlowPrior(PriorModel):
    """Rectified-flow prior over (B, C, h, w) normalized latents."""

    kind: ClassVar[str] = "flow"
    config_class = FlowConfig
    discrete: ClassVar[bool] = False

    def __init__(self, config: FlowConfig):
        super().__init__(config)
        self.net = DiT(config) if config.network == "dit" else UNet(config)

    def _check(self, latents: torch.Tensor) -> None:
        """Float (B, C, h, w) with the config's C; any h, w the network divides (aspect-ratio buckets:
        the DiT resizes its position grid, the UNet is convolutional)."""
        c = self.config.latent_shape[0]
        step = self.config.patch_size if self.config.network == "dit" else 2 ** (len(self.config.block_out_channels) - 1)
        ok = latents.ndim == 4 and latents.shape[1] == c and latents.shape[2] % step == 0 and latents.shape[3] % step == 0
        if not latents.is_floating_point() or not ok:
            raise InputError(f"flow prior expects float latents (B, {c}, h, w) with h, w divisible by {step} "
                             f"(trained at {', '.join(map(str, self.config.latent_shape))}), "
                             f"got {tuple(latents.shape)} {latents.dtype}")

    def velocity(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, t, self.class_labels(labels, x.shape[0], x.device))

    def _flow_loss(self, x1: torch.Tensor, labels, generator: torch.Generator | None) -> torch.Tensor:
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device)
        t = torch.rand(x1.shape[0], generator=generator, device=x1.device)
        xt = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * x1
        return F.mse_loss(self.velocity(xt, t, labels).float(), x1 - x0)

    def loss(self, latents: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Velocity MSE at uniform random times."""
        self._check(latents)
        loss = self._flow_loss(latents.float(), labels, None)
        return loss, {}

    @torch.no_grad()
    def validation(self, latents: torch.Tensor, labels: torch.Tensor | None = None, seed: int = 0) -> dict[str, float]:
        """Flow loss with fixed noise and times (comparable across evaluations)."""
        self._check(latents)
        gen = torch.Generator(device=latents.device).manual_seed(seed)
        return {"flow_loss": float(self._flow_loss(latents.float(), labels, gen))}

    @torch.no_grad()
    def sample(self, num_samples: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               steps: int = 32, latent_size: tuple[int, int] | None = None, **_: Any) -> torch.Tensor:
        """Euler integration from noise (t = 0) to data (t = 1). Returns (N, C, h, w) float32.

        ``latent_size``: (h, w) of another bucket shape (default: the config's ``latent_shape``).
        """
        if steps <= 0:
            raise InputError(f"steps must be > 0, got: {steps}")
        device = next(self.parameters()).device
        shape = (self.config.latent_shape[0], *latent_size) if latent_size else tuple(self.config.latent_shape)
        x = torch.randn((num_samples, *shape), generator=generator, device=device)
        if latent_size:
            self._check(x)
        dt = 1.0 / steps
        for i in range(steps):
            t = torch.full((num_samples,), i * dt, device=device)
            x = x + dt * self.velocity(x, t, labels).float()
        return x
