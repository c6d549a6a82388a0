"""Small shared blocks for the compact families (autoencoder, VAE, MAE, VQ default nets).

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


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``. (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads, got: {dim} and {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, N, d_head)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-norm ViT block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


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
