"""Rectified-flow (flow matching) prior over continuous latents, with Euler sampling.

Straight paths from noise to data: ``x_t = (1 - t) x0 + t x1`` with ``x0 ~ N(0, I)``
and ``x1`` the (normalized) latent; the network regresses the velocity
``x1 - x0``. Sampling integrates ``dx/dt = v(x, t)`` from t = 0 to 1 with Euler
steps. The velocity network is a small DiT (adaLN-Zero blocks over latent
patches) or a timestep-conditioned UNet built from the LDM autoencoder's blocks.

Video latents (C, T', h, w) go through the DiT with 3D patches (pt, ph, pw) and a fixed
separable sin-cos position embedding over (t, h, w) (CogVideoX's ``get_3d_sincos_pos_embed``:
a quarter of the width for time, the rest for the 2D spatial grid). Being a function of the
grid, it fits every (T', h, w) bucket exactly and adds no parameters that grow with clip length.
Images keep their learned 2D grid (and their checkpoints load unchanged).

Audio latents (C, t) go through the DiT with 1D patches (a strided Conv1d) and a fixed 1D sin-cos
position embedding over the token index (:func:`sincos_1d`), so every segment length (duration
bucket) fits. Segments padded at the end carry a mask (B, t) (``LatentDataset``'s ``mask``, from
``valid_length``): padded tokens are never attended to, and the loss counts real frames only.

Example::

    prior = FlowPrior(FlowConfig(latent_shape=(4, 8, 8), network="dit"))
    loss, _ = prior.loss(latents)                      # (B, 4, 8, 8) float
    z = prior.sample(4, steps=32)                      # (4, 4, 8, 8)

    video = FlowPrior(FlowConfig(latent_shape=(4, 3, 8, 8), patch_size=(1, 2, 2), hidden_size=64))
    z = video.sample(2, steps=8)                       # (2, 4, 3, 8, 8): (N, C, T', h, w)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from latentflow.errors import ConfigError, InputError
from latentflow.models.layers import Attention
from latentflow.priors.base import PriorConfig, PriorModel, register_prior
from latentflow.progress import Progress


@dataclass
class FlowConfig(PriorConfig):
    """Velocity network sizes. ``latent_shape`` is (C, h, w) for images, (C, T', h, w) for video, (C, t) for audio.

    Attributes:
        network: ``dit`` or ``unet`` (the UNet takes images only).
        patch_size: DiT patch: an int ``p`` is (p, p) for images, (1, p, p) for video (every
            latent frame its own tokens) and (p,) for audio; or one size per axis, (ph, pw), (pt, ph, pw)
            or (pt,). Each must divide its latent axis.
        hidden_size / num_layers / num_heads: DiT width, depth, heads (video: width divisible by 16,
            for the 3D sin-cos split).
        block_out_channels: UNet widths per level (one 2x downsampling between levels).
        text_dim: width D of the cached text embeddings (B, L, D) the DiT attends to through cross-attention
            (with their padding mask); 0 = no text conditioning. The prior trainer sets it from the codec's
            text column (``data.text``).
        text_dropout: the share of training rows whose text is replaced by a learned null text (conditioning
            dropout), so that one network also gives the unconditional velocity of classifier-free guidance.
    """

    latent_shape: tuple[int, ...] = (4, 8, 8)
    network: str = "dit"
    patch_size: int | tuple[int, ...] = 1
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    block_out_channels: tuple[int, ...] = (32, 64)
    norm_num_groups: int = 8
    text_dim: int = 0
    text_dropout: float = 0.1

    def validate(self) -> None:
        super().validate()
        if len(self.latent_shape) not in (2, 3, 4):
            raise ConfigError(f"flow latent_shape must be (C, h, w), (C, T', h, w) or (C, t), got: {self.latent_shape}")
        if self.network not in ("dit", "unet"):
            raise ConfigError(f"network must be 'dit' or 'unet', got: {self.network!r}")
        if self.network == "unet" and (self.video or self.audio):
            raise ConfigError(f"network='unet' takes image latents (C, h, w); for {self.latent_shape} use network='dit'")
        if self.text_dim and self.network != "dit":
            raise ConfigError(f"text conditioning (text_dim={self.text_dim}) needs network='dit' (cross-attention), got: {self.network!r}")
        if not 0.0 <= self.text_dropout < 1.0:
            raise ConfigError(f"text_dropout must be in [0, 1), got: {self.text_dropout}")
        if self.network == "dit" and self.audio and self.hidden_size % 2:
            raise ConfigError(f"an audio DiT's 1D sin-cos needs an even hidden_size, got: {self.hidden_size}")
        patch, sizes = self.patch, self.latent_shape[1:]
        if len(patch) != len(sizes) or min(patch) < 1:
            raise ConfigError(f"patch_size must be an int or {len(sizes)} positive sizes (one per axis of {sizes}), "
                              f"got: {self.patch_size}")
        if any(s % p for s, p in zip(sizes, patch)):
            raise ConfigError(f"patch_size {patch} must divide the latent size {'x'.join(map(str, sizes))}")
        if self.network == "dit" and self.video and self.hidden_size % 16:
            raise ConfigError(f"a video DiT splits hidden_size over (t, h, w) sin-cos: it must be divisible by 16, "
                              f"got: {self.hidden_size}")

    @property
    def video(self) -> bool:
        """Latents are (C, T', h, w)."""
        return len(self.latent_shape) == 4

    @property
    def audio(self) -> bool:
        """Latents are (C, t)."""
        return len(self.latent_shape) == 2

    @property
    def patch(self) -> tuple[int, ...]:
        """The patch size per latent axis: (ph, pw), (pt, ph, pw) for video, (pt,) for audio."""
        if isinstance(self.patch_size, int):
            return (self.patch_size,) if self.audio else (1, self.patch_size, self.patch_size) if self.video else (self.patch_size,) * 2
        return tuple(self.patch_size)

    @property
    def grid(self) -> tuple[int, ...]:
        """What each latent axis ((h, w), or (T', h, w)) must be a multiple of (see :func:`latent_grid`)."""
        return latent_grid({**self.to_dict(), "latent_shape": self.latent_shape})


def latent_grid(config: dict[str, Any]) -> tuple[int, ...]:
    """What each latent axis of a flow prior's data must be a multiple of, from its config dict (only
    ``latent_shape``'s length is read, so it works before the data's shapes are checked): the DiT's
    patch per axis, or ``2 ** (levels - 1)`` for the UNet's (h, w). The prior trainer refuses buckets
    whose latent grid this does not divide before training."""
    video = len(config["latent_shape"]) == 4
    if config.get("network", FlowConfig.network) == "unet":
        levels = len(config.get("block_out_channels", FlowConfig.block_out_channels))
        return (2 ** (levels - 1),) * 2
    patch = config.get("patch_size", FlowConfig.patch_size)
    if isinstance(patch, int) and len(config["latent_shape"]) == 2:  # audio (C, t)
        return (patch,)
    if isinstance(patch, int):
        return (1, patch, patch) if video else (patch, patch)
    return tuple(patch)


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


# ---- patches and positions --------------------------------------------------------------
def patchify(x: torch.Tensor, patch: tuple[int, ...]) -> torch.Tensor:
    """(B, C, *sizes) -> tokens (B, N, prod(patch) * C): non-overlapping patches in raster order
    (t, h, w), each flattened as (pt, ph, pw, C). The inverse of :func:`unpatchify`."""
    b, c, *sizes = x.shape
    grid = [s // p for s, p in zip(sizes, patch)]
    n = len(patch)
    x = x.reshape(b, c, *[v for g, p in zip(grid, patch) for v in (g, p)])  # (B, C, g0, p0, g1, p1, ...)
    x = x.permute(0, *range(2, 2 + 2 * n, 2), *range(3, 3 + 2 * n, 2), 1)  # (B, g0, g1, .., p0, p1, .., C)
    return x.reshape(b, math.prod(grid), math.prod(patch) * c)


def unpatchify(tokens: torch.Tensor, grid: tuple[int, ...], patch: tuple[int, ...], channels: int) -> torch.Tensor:
    """Tokens (B, N, prod(patch) * C) on a ``grid`` of patches -> (B, C, *(g * p)). Inverse of :func:`patchify`."""
    b, n = tokens.shape[0], len(patch)
    x = tokens.reshape(b, *grid, *patch, channels)  # (B, g0, g1, .., p0, p1, .., C)
    x = x.permute(0, 2 * n + 1, *[a for i in range(n) for a in (1 + i, 1 + n + i)])  # (B, C, g0, p0, g1, p1, ...)
    return x.reshape(b, channels, *[g * p for g, p in zip(grid, patch)])


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, dim) as [sin | cos] over ``dim / 2`` frequencies 1 / 10000^(2i/dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


@functools.lru_cache(maxsize=16)  # one per bucket shape; read-only (added, never written in place)
def sincos_3d(dim: int, gt: int, gh: int, gw: int) -> torch.Tensor:
    """Fixed position embedding (gt*gh*gw, dim) of a (t, h, w) token grid in raster order:
    [time (dim/4) | width (3dim/8) | height (3dim/8)], as CogVideoX's ``get_3d_sincos_pos_embed``."""
    spatial = 3 * dim // 4
    t, h, w = torch.meshgrid(torch.arange(gt), torch.arange(gh), torch.arange(gw), indexing="ij")
    parts = [sincos_1d(dim // 4, t.flatten()), sincos_1d(spatial // 2, w.flatten()), sincos_1d(spatial // 2, h.flatten())]
    return torch.cat(parts, dim=1).float()


# ---- DiT -----------------------------------------------------------------------------
def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class CrossAttention(nn.Module):
    """Latent tokens (B, N, d) attend to text tokens (B, L, d); ``mask`` (B, L) is False on pads."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)  # (B, h, N, dh)
        k, v = self.kv(context).view(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # 2x (B, h, L, dh)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DiTBlock(nn.Module):
    """adaLN-Zero block: the conditioning sets shift/scale/gate of attention and MLP (gates start at 0);
    with ``cross``, a cross-attention to the text tokens between the two (PixArt-alpha's layout)."""

    def __init__(self, dim: int, heads: int, cross: bool = False):
        super().__init__()
        self.cross = CrossAttention(dim, heads) if cross else None
        self.ln_cross = nn.LayerNorm(dim) if cross else None
        self.ln1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.ln2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, key_mask: torch.Tensor | None = None,
                text: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        s1, sc1, g1, s2, sc2, g2 = self.ada(c).chunk(6, dim=-1)
        x = x + g1[:, None] * self.attn(modulate(self.ln1(x), s1, sc1), key_mask=key_mask)
        if self.cross is not None and text is not None:
            x = x + self.cross(self.ln_cross(x), *text)
        return x + g2[:, None] * self.mlp(modulate(self.ln2(x), s2, sc2))


class DiT(nn.Module):
    """Patchify (B, C, h, w), (B, C, T', h, w) or (B, C, t) -> tokens, adaLN-Zero blocks, unpatchify to a
    velocity of the same shape. Images: a learned 2D position grid; video: fixed 3D sin-cos; audio: fixed
    1D sin-cos, padded tokens masked out of attention (see module doc)."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        c, *sizes = config.latent_shape
        d, self.patch, self.video, self.audio = config.hidden_size, config.patch, config.video, config.audio
        self.grid = tuple(s // p for s, p in zip(sizes, self.patch))
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(self.patch)]  # a strided conv = patchify + linear
        self.embed = conv(c, d, self.patch, stride=self.patch)
        if not self.video and not self.audio:
            self.pos = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], d))
            nn.init.normal_(self.pos, std=0.02)
        self.cond = TimeClassEmbedding(d, config.num_classes)
        self.blocks = nn.ModuleList(DiTBlock(d, config.num_heads, bool(config.text_dim)) for _ in range(config.num_layers))
        if config.text_dim:  # cached text embeddings -> the DiT's width; a learned null text for dropped rows
            self.text_proj = nn.Sequential(nn.LayerNorm(config.text_dim), nn.Linear(config.text_dim, d))
            self.text_pool = nn.Linear(d, d)  # the masked mean of the text tokens joins the time embedding
            self.null_text = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.ln_out = nn.LayerNorm(d, elementwise_affine=False)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.out = nn.Linear(d, math.prod(self.patch) * c)
        for layer in (self.ada_out[1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def position(self, *grid: int) -> torch.Tensor:
        """Position embeddings (1, N, d) of a token grid: (gt, gh, gw) sin-cos for video; for images the
        learned (gh, gw) grid, bilinearly resized for other bucket shapes."""
        if self.video:
            return sincos_3d(self.embed.out_channels, *grid).to(self.embed.weight.device)[None]
        if self.audio:  # (1, gt, d): the token index, any segment length
            return sincos_1d(self.embed.out_channels, torch.arange(grid[0])).float().to(self.embed.weight.device)[None]
        if tuple(grid) == self.grid:
            return self.pos
        gh, gw = grid
        pos = self.pos.view(1, *self.grid, -1).permute(0, 3, 1, 2)  # (1, d, H, W)
        pos = F.interpolate(pos, size=(gh, gw), mode="bilinear", align_corners=False)
        return pos.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)

    def text_context(self, text: torch.Tensor | None, mask: torch.Tensor | None, drop: torch.Tensor | None,
                     batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(context (B, L, d), mask (B, L))`` from cached text (B, L, D) and its mask (B, L); rows where
        ``drop`` (B,) is True, and every row when ``text`` is None, see the learned null text instead."""
        null = self.null_text.expand(batch, 1, -1)
        if text is None:
            return null, torch.ones(batch, 1, dtype=torch.bool, device=null.device)
        context = self.text_proj(text.to(null.device, null.dtype))  # (B, L, d)
        mask = torch.ones(text.shape[:2], dtype=torch.bool) if mask is None else mask.bool()
        mask = mask.to(null.device)
        if drop is not None and drop.any():
            context = torch.where(drop[:, None, None], null.expand_as(context), context)
            mask = torch.where(drop[:, None], torch.arange(mask.shape[1], device=mask.device)[None] == 0, mask)
        return context, mask

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
                text: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``mask``: audio only, (B, t) bool, True on real latent frames; a token is real when any of its frames is.
        ``text``: ``(context, mask)`` from :meth:`text_context` (text-conditioned priors)."""
        c = x.shape[1]
        grid = tuple(s // p for s, p in zip(x.shape[2:], self.patch))
        key_mask = None if mask is None else mask.reshape(x.shape[0], grid[0], self.patch[0]).any(-1)  # (B, N)
        h = self.embed(x).flatten(2).transpose(1, 2)  # (B, N, d)
        h = h + self.position(*grid).to(h.dtype)
        cond = self.cond(t, labels)
        if text is not None:
            context, text_mask = text
            pooled = (context * text_mask[..., None]).sum(1) / text_mask.sum(1, keepdim=True).clamp(min=1)  # (B, d)
            cond = cond + self.text_pool(pooled)
        for block in self.blocks:
            h = block(h, cond, key_mask, text) if key_mask is not None or text is not None else block(h, cond)
        shift, scale = self.ada_out(cond).chunk(2, dim=-1)
        h = self.out(modulate(self.ln_out(h), shift, scale))  # (B, N, prod(patch) * C)
        return unpatchify(h, grid, self.patch, c)


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
    """Rectified-flow prior over (B, C, h, w) normalized latents, (B, C, T', h, w) video latents or (B, C, t)
    audio latents (with an optional padding mask (B, t))."""

    kind: ClassVar[str] = "flow"
    config_class = FlowConfig
    discrete: ClassVar[bool] = False

    def __init__(self, config: FlowConfig):
        super().__init__(config)
        self.net = DiT(config) if config.network == "dit" else UNet(config)

    def _check(self, latents: torch.Tensor) -> None:
        """Float (B, C, h, w) [or (B, C, T', h, w) for a video prior] with the config's C; any sizes the
        network divides (buckets: the DiT's position embedding follows the grid, the UNet is convolutional)."""
        cfg = self.config
        c, ndim = cfg.latent_shape[0], len(cfg.latent_shape) + 1
        step = cfg.grid
        ok = latents.ndim == ndim and latents.shape[1] == c and all(s % p == 0 for s, p in zip(latents.shape[2:], step))
        if not latents.is_floating_point() or not ok:
            axes = "T', h, w" if cfg.video else "t" if cfg.audio else "h, w"
            raise InputError(f"flow prior expects float latents (B, {c}, {axes}) with ({axes}) divisible by {step} "
                             f"(trained at {', '.join(map(str, cfg.latent_shape))}), "
                             f"got {tuple(latents.shape)} {latents.dtype}")

    def velocity(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None, text: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        labels = self.class_labels(labels, x.shape[0], x.device)
        return self.net(x, t, labels) if mask is None and text is None else self.net(x, t, labels, mask, text)

    def _text(self, text: torch.Tensor | None, text_mask: torch.Tensor | None, batch: int,
              drop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The DiT's text context of a text-conditioned prior (None for others)."""
        if not self.config.text_dim:
            if text is not None:
                raise InputError("this flow prior was built without text conditioning (text_dim=0) but got text")
            return None
        if text is not None and text.shape[-1] != self.config.text_dim:
            raise InputError(f"text must be (B, L, {self.config.text_dim}), got: {tuple(text.shape)}")
        return self.net.text_context(text, text_mask, drop, batch)

    def _check_mask(self, latents: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
        if mask is None:
            return None
        if not self.config.audio or tuple(mask.shape) != (latents.shape[0], latents.shape[-1]):
            raise InputError(f"mask must be (B, t) = {(latents.shape[0], latents.shape[-1])} for audio latents (C, t), "
                             f"got {tuple(mask.shape)} for latents {tuple(latents.shape)}")
        return mask.to(device=latents.device, dtype=torch.bool)

    def _flow_loss(self, x1: torch.Tensor, labels, generator: torch.Generator | None, mask: torch.Tensor | None = None,
                   text: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device)
        t = torch.rand(x1.shape[0], generator=generator, device=x1.device)
        tb = t.view(-1, *[1] * (x1.ndim - 1))  # broadcast over (C, [T',] h, w)
        xt = (1 - tb) * x0 + tb * x1
        if mask is None:
            return F.mse_loss(self.velocity(xt, t, labels, text=text).float(), x1 - x0)
        err = (self.velocity(xt, t, labels, mask, text).float() - (x1 - x0)) ** 2  # (B, C, t)
        weight = mask[:, None].float().expand_as(err)  # real frames only
        return (err * weight).sum() / weight.sum().clamp(min=1.0)

    def loss(self, latents: torch.Tensor, labels: torch.Tensor | None = None,
             mask: torch.Tensor | None = None, text: torch.Tensor | None = None,
             text_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Velocity MSE at uniform random times (audio: over the frames ``mask`` marks real). ``text`` (B, L, D),
        ``text_mask`` (B, L): cached caption embeddings; a ``text_dropout`` share of rows see the null text."""
        self._check(latents)
        drop = torch.rand(latents.shape[0], device=latents.device) < self.config.text_dropout
        context = self._text(text, text_mask, latents.shape[0], drop)
        loss = self._flow_loss(latents.float(), labels, None, self._check_mask(latents, mask), context)
        return loss, {}

    @torch.no_grad()
    def validation(self, latents: torch.Tensor, labels: torch.Tensor | None = None, seed: int = 0,
                   mask: torch.Tensor | None = None, text: torch.Tensor | None = None,
                   text_mask: torch.Tensor | None = None) -> dict[str, float]:
        """Flow loss with fixed noise and times (comparable across evaluations); text-conditioned where given."""
        self._check(latents)
        gen = torch.Generator(device=latents.device).manual_seed(seed)
        context = self._text(text, text_mask, latents.shape[0])
        return {"flow_loss": float(self._flow_loss(latents.float(), labels, gen, self._check_mask(latents, mask), context))}

    @torch.no_grad()
    def sample(self, num_samples: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               steps: int = 32, latent_size: tuple[int, ...] | None = None, text: torch.Tensor | None = None,
               text_mask: torch.Tensor | None = None, guidance_scale: float = 1.0, **_: Any) -> torch.Tensor:
        """Euler integration from noise (t = 0) to data (t = 1). Returns (N, C, h, w) float32,
        (N, C, T', h, w) for a video prior, (N, C, t) for an audio prior (no padding: every frame real).

        ``latent_size``: (h, w), (T', h, w) for video or (t,) for audio, of another bucket shape (default:
        the config's ``latent_shape``). ``text`` (N, L, D) / ``text_mask`` (N, L): the prompts' cached embeddings
        (text-conditioned priors); ``guidance_scale`` s != 1: classifier-free guidance, ``v_null + s (v_text - v_null)``.
        """
        if steps <= 0:
            raise InputError(f"steps must be > 0, got: {steps}")
        device = next(self.parameters()).device
        shape = (self.config.latent_shape[0], *latent_size) if latent_size else tuple(self.config.latent_shape)
        x = torch.randn((num_samples, *shape), generator=generator, device=device)
        if latent_size:
            self._check(x)
        dt = 1.0 / steps
        with Progress(steps, f"sample {num_samples} x flow", unit="step") as progress:
            for i in range(steps):
                t = torch.full((num_samples,), i * dt, device=device)
                x = x + dt * self._guided(x, t, labels, text, text_mask, guidance_scale)
                progress.update(1)
        return x

    def _guided(self, x: torch.Tensor, t: torch.Tensor, labels, text, text_mask, scale: float) -> torch.Tensor:
        if not self.config.text_dim:
            return self.velocity(x, t, labels).float()
        v = self.velocity(x, t, labels, text=self._text(text, text_mask, x.shape[0])).float()
        if text is None or scale == 1.0:
            return v
        v_null = self.velocity(x, t, labels, text=self._text(None, None, x.shape[0])).float()
        return v_null + scale * (v - v_null)
