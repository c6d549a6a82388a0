"""Small shared blocks for the compact families (autoencoder, VAE, MAE, VQ default nets),
and the one transformer block every family and prior uses (MAE, TransVAE, GPT, MaskGIT).

The LDM/diffusers-compatible blocks live in ``ldm_blocks.py``: those must keep
diffusers' parameter names, these need not.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=math.gcd(groups, channels), num_channels=channels, eps=1e-6)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, twice, plus a (1x1 if widths differ) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, groups: int = 8):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = group_norm(out_ch, groups)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.shortcut(x) + h


class ConvEncoder(nn.Module):
    """conv_in -> [ResBlocks, stride-2 conv] per level -> norm/SiLU/conv_out.

    ``len(block_out_channels) - 1`` downsamplings: (B, C, H, W) -> (B, out_channels, H/f, W/f).
    """

    def __init__(self, in_channels: int, out_channels: int, block_out_channels: tuple[int, ...], layers_per_block: int, groups: int):
        super().__init__()
        chans = block_out_channels
        self.conv_in = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        blocks: list[nn.Module] = []
        prev = chans[0]
        for i, ch in enumerate(chans):
            for _ in range(layers_per_block):
                blocks.append(ResBlock(prev, ch, groups))
                prev = ch
            if i < len(chans) - 1:
                blocks.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = group_norm(prev, groups)
        self.conv_out = nn.Conv2d(prev, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(x)))))


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: nearest x2 upsampling + conv between levels."""

    def __init__(self, in_channels: int, out_channels: int, block_out_channels: tuple[int, ...], layers_per_block: int, groups: int):
        super().__init__()
        chans = tuple(reversed(block_out_channels))
        self.conv_in = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        blocks: list[nn.Module] = []
        prev = chans[0]
        for i, ch in enumerate(chans):
            for _ in range(layers_per_block):
                blocks.append(ResBlock(prev, ch, groups))
                prev = ch
            if i < len(chans) - 1:
                blocks.append(nn.Upsample(scale_factor=2.0, mode="nearest"))
                blocks.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = group_norm(prev, groups)
        self.conv_out = nn.Conv2d(prev, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(z)))))


class MLP(nn.Module):
    """Linear -> SiLU stack; no activation after the last layer."""

    def __init__(self, dims: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---- transformer: one block for every family ---------------------------------------------


def rope_2d_angles(height: int, width: int, head_dim: int, base: float, device=None) -> torch.Tensor:
    """Rotation angles for a ``height x width`` grid, row-major. Returns (H*W, head_dim / 2).

    The first half of the rotated pairs turns with the row index, the second half with
    the column index, at frequencies ``base ** (-i / (head_dim / 4))``.
    """
    quarter = head_dim // 4
    freqs = base ** (-torch.arange(quarter, dtype=torch.float64, device=device) / quarter)  # (head_dim/4,)
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64, device=device),
        torch.arange(width, dtype=torch.float64, device=device),
        indexing="ij",
    )
    return torch.cat([ys.reshape(-1, 1) * freqs, xs.reshape(-1, 1) * freqs], dim=1)  # (N, head_dim/2)


def apply_rope(t: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of ``t`` (..., N, head_dim) by ``angles`` (N, head_dim/2)."""
    pairs = torch.view_as_complex(t.float().reshape(*t.shape[:-1], -1, 2).contiguous())  # (..., N, head_dim/2)
    rot = torch.polar(torch.ones_like(angles), angles).to(pairs.dtype)
    return torch.view_as_real(pairs * rot).flatten(-2).to(t.dtype)


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``. (B, N, D) -> (B, N, D).

    Args:
        causal: token i attends to tokens <= i (GPT).
        qk_norm: RMSNorm per head on queries and keys (TransVAE).
        rope_base: 2D rotary position embedding with this base; ``forward`` then needs the token ``grid``.
    """

    def __init__(self, dim: int, num_heads: int, *, causal: bool = False, qk_norm: bool = False,
                 rope_base: float | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads, got: {dim} and {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.causal, self.rope_base = causal, rope_base
        self.qkv = nn.Linear(dim, 3 * dim)
        if qk_norm:
            self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
            self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.qk_norm = qk_norm
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None, key_mask: torch.Tensor | None = None,
                cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``key_mask``: (B, N) bool, True for the tokens that may be attended to (padding: False).

        ``cache`` (causal attention, decoding): a dict holding this layer's keys and values of the tokens before
        ``x``; ``x``'s own are appended to it, and ``x`` attends to all of them (a KV cache: each new token costs
        one token's projections instead of the whole prefix's).
        """
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3x (B, h, N, dh)
        if cache is not None:
            if not self.causal or (cache and n != 1):
                raise ValueError("a KV cache takes causal attention and one new token at a time after the first call")
            if cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
            causal = n > 1  # the first call: a causal prefix; later: one query that sees every cached key
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, h, n, dh)
            return self.proj(out.transpose(1, 2).reshape(b, n, d))
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope_base is not None:
            if grid is None:
                raise ValueError("attention with 2D RoPE needs the token grid (h, w)")
            angles = rope_2d_angles(*grid, self.head_dim, self.rope_base, device=x.device)
            q, k = apply_rope(q, angles), apply_rope(k, angles)
        if key_mask is not None and self.causal:
            raise ValueError("key_mask with causal attention is not supported")
        attn_mask = None if key_mask is None else key_mask[:, None, None, :].to(torch.bool)  # (B, 1, 1, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=self.causal)  # (B, h, N, dh)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class ConvFFN(nn.Module):
    """Linear -> depthwise 3x3 conv over the token grid -> SiLU gate -> linear. (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc_in = nn.Linear(dim, 2 * hidden)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.fc_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, _ = x.shape
        h = self.fc_in(x).transpose(1, 2).reshape(b, -1, *grid)  # (B, 2*hidden, h, w)
        h = self.dwconv(h).flatten(2).transpose(1, 2)  # (B, N, 2*hidden)
        value, gate = h.chunk(2, dim=-1)
        return self.fc_out(value * F.silu(gate))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + ffn(norm2(x))``.

    One block for every family; the variants are arguments, not copies:

    - MAE (ViT): the defaults, LayerNorm eps 1e-6 and an MLP (Linear -> GELU -> Linear).
    - GPT / MaskGIT priors: ``causal=True`` for GPT, ``norm_eps=1e-5``.
    - TransVAE: ``norm="rms"``, ``ffn="conv"`` (:class:`ConvFFN`), ``qk_norm=True``, ``rope_base`` for 2D RoPE.

    ``grid`` (h, w) is needed by the conv FFN and by RoPE. State-dict keys: ``norm1``, ``attn``,
    ``norm2``, ``ffn`` (``ffn.0``/``ffn.2`` for the MLP).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, *, norm: str = "layer", norm_eps: float = 1e-6,
                 ffn: str = "mlp", causal: bool = False, qk_norm: bool = False, rope_base: float | None = None):
        super().__init__()
        if norm not in ("layer", "rms") or ffn not in ("mlp", "conv"):
            raise ValueError(f"norm must be 'layer' or 'rms' and ffn 'mlp' or 'conv', got: {norm!r}, {ffn!r}")
        make_norm = nn.LayerNorm if norm == "layer" else nn.RMSNorm
        hidden = int(dim * mlp_ratio)
        self.norm1 = make_norm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, causal=causal, qk_norm=qk_norm, rope_base=rope_base)
        self.norm2 = make_norm(dim, eps=norm_eps)
        if ffn == "conv":
            self.ffn = ConvFFN(dim, hidden)
        else:
            self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.conv_ffn = ffn == "conv"

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None,
                cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:  # (B, N, D)
        x = x + self.attn(self.norm1(x), grid, cache=cache)
        h = self.norm2(x)
        return x + (self.ffn(h, grid) if self.conv_ffn else self.ffn(h))


def sincos_2d(embed_dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding, (grid_size**2, embed_dim), as in MAE."""
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be divisible by 4 for 2D sin-cos embeddings, got: {embed_dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 4, dtype=torch.float64) / (embed_dim / 4))

    def embed(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([embed(gy), embed(gx)], dim=1).float()
