"""Building blocks of the latent-diffusion (LDM / Stable Diffusion) conv autoencoder.

Reads top to bottom: precision helpers -> attention kernels -> ResBlock, down/upsample,
mid attention, mid block -> :class:`Encoder` / :class:`Decoder`.

Module and parameter names follow diffusers' ``AutoencoderKL`` exactly
(``down_blocks.{i}.resnets.{j}.conv1``, ``mid_block.attentions.0.to_q``, ...), so a state
dict moves between the two key for key. Other families reuse these blocks (a VQGAN
encoder/decoder, a timestep-conditioned UNet): :class:`Encoder` and :class:`Decoder` build
every ResBlock, attention, norm and conv through ``make_*`` factory methods that a
subclass overrides to swap one part without copying the network.

Example::

    enc = Encoder(in_channels=3, out_channels=4, block_out_channels=(64, 128), norm_num_groups=32)
    moments = enc(torch.randn(1, 3, 64, 64))          # (1, 8, 32, 32): mean and logvar
    dec = Decoder(in_channels=4, out_channels=3, block_out_channels=(64, 128))
    x_hat = dec(moments[:, :4])                        # (1, 3, 64, 64)
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from latentflow.errors import ConfigError, NotSupportedError

ATTENTION_BACKENDS = ("sdpa", "math", "linear", "xformers")
NORM_EPS = 1e-6  # every norm of the LDM autoencoder uses eps 1e-6
_LOW_PRECISION = (torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------
# precision helpers
# ---------------------------------------------------------------------------
def _no_autocast(device_type: str):
    """Disable autocast for an op that must stay in fp32 (autocast would re-cast its inputs)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def _running_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype an op on ``x`` computes in: autocast's when active, else ``x``'s."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that computes in fp32 for fp16/bf16 inputs when ``upcast`` is set.

    The output is cast back to the dtype the surrounding ops run in, so the next conv
    still runs in low precision. Same parameters (``weight``, ``bias``) as ``nn.GroupNorm``.
    """

    upcast: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.upcast and _running_dtype(x) in _LOW_PRECISION):
            return super().forward(x)
        out_dtype = _running_dtype(x)
        with _no_autocast(x.device.type):
            w = None if self.weight is None else self.weight.float()
            b = None if self.bias is None else self.bias.float()
            y = F.group_norm(x.float(), self.num_groups, w, b, self.eps)
        return y.to(out_dtype)


def set_upcast(module: nn.Module, upcast: bool) -> None:
    """Turn fp32 GroupNorm and attention softmax on or off for every block under ``module``."""
    for m in module.modules():
        if isinstance(m, (GroupNorm, MidAttention)):
            m.upcast = upcast


# ---------------------------------------------------------------------------
# attention kernels: q, k, v are (B, N, C), single head; each returns (B, N, C)
# ---------------------------------------------------------------------------
def _attend_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)


def _attend_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Explicit softmax(q k^T / sqrt(C)) v, for debugging; the softmax runs in fp32.
    scores = torch.bmm(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(1, 2))  # (B, N, N)
    probs = scores.float().softmax(dim=-1).to(v.dtype)
    return torch.bmm(probs, v)


def _attend_linear(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # O(N) kernelized attention (Katharopoulos et al. 2020): phi(q) (phi(k)^T v) / (phi(q) sum phi(k)),
    # phi = elu + 1. An approximation of softmax attention for latents too large for O(N^2).
    q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
    kv = torch.bmm(k.transpose(1, 2), v)  # (B, C, C)
    norm = torch.bmm(q, k.sum(dim=1, keepdim=True).transpose(1, 2))  # (B, N, 1)
    return torch.bmm(q, kv) / norm.clamp_min(1e-6)


def _attend_xformers(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    import xformers.ops

    # xformers takes (B, N, heads, C)
    return xformers.ops.memory_efficient_attention(q.unsqueeze(2), k.unsqueeze(2), v.unsqueeze(2)).squeeze(2)


_KERNELS = {"sdpa": _attend_sdpa, "math": _attend_math, "linear": _attend_linear, "xformers": _attend_xformers}


def check_attention_backend(backend: str) -> None:
    """Raise a clear error for an unknown backend, or ``xformers`` when the package is missing."""
    if backend not in ATTENTION_BACKENDS:
        raise ConfigError(f"attention_backend must be one of {list(ATTENTION_BACKENDS)}, got: {backend!r}")
    if backend == "xformers" and importlib.util.find_spec("xformers") is None:
        raise NotSupportedError(
            "attention_backend 'xformers' needs the xformers package, which is not installed; "
            "install it (pip install xformers) or use attention_backend='sdpa'"
        )


# ---------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------
class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, twice, plus a 1x1 ``conv_shortcut`` when the width changes.

    Args:
        in_channels: input width.
        out_channels: output width (defaults to ``in_channels``).
        norm_num_groups: GroupNorm groups (must divide both widths).
        dropout: dropout before the second conv (0 in every released LDM autoencoder).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, norm_num_groups: int = 32, dropout: float = 0.0):
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = GroupNorm(norm_num_groups, in_channels, eps=NORM_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = GroupNorm(norm_num_groups, out_channels, eps=NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W) -> (B, Cout, H, W)
        inplace = not torch.is_grad_enabled()  # no autograd graph: reuse buffers instead of allocating
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=inplace)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return h.add_(x) if inplace and h.dtype == x.dtype else x + h


class Downsample(nn.Module):
    """Pad right and bottom by one, then a stride-2 3x3 conv: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidAttention(nn.Module):
    """Single-head self-attention over all positions with a GroupNorm in front and a residual.

    Parameter names are diffusers' (``group_norm``, ``to_q``, ``to_k``, ``to_v``, ``to_out.0``).

    Args:
        channels: feature width (the head width too: one head).
        norm_num_groups: GroupNorm groups.
        backend: ``sdpa`` (fused ``scaled_dot_product_attention``), ``math`` (explicit
            softmax), ``linear`` (O(N) approximation) or ``xformers``.
    """

    upcast: bool = False

    def __init__(self, channels: int, norm_num_groups: int = 32, backend: str = "sdpa"):
        super().__init__()
        self.group_norm = GroupNorm(norm_num_groups, channels, eps=NORM_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])
        self.set_backend(backend)

    def set_backend(self, backend: str) -> None:
        check_attention_backend(backend)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        b, c, h, w = x.shape
        tokens = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.to_q(tokens), self.to_k(tokens), self.to_v(tokens)
        out = self._attend(q, k, v)  # (B, HW, C)
        out = self.to_out[1](self.to_out[0](out))
        return x + out.transpose(1, 2).reshape(b, c, h, w)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        kernel = _KERNELS[self.backend]
        if not (self.upcast and q.dtype in _LOW_PRECISION):
            return kernel(q, k, v)
        # force_upcast: q k^T and the softmax in fp32, as in LDM's upcast_softmax.
        with _no_autocast(q.device.type):
            return kernel(q.float(), k.float(), v.float()).to(q.dtype)


class Level(nn.Module):
    """One resolution level: ``resnets`` then an optional resampler (``downsamplers``/``upsamplers``)."""

    def __init__(self, resnets: Sequence[nn.Module], resampler: nn.Module | None = None, kind: str = "down"):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.kind = kind
        if resampler is not None:
            # diffusers names the list after the direction: downsamplers.0 / upsamplers.0
            setattr(self, f"{kind}samplers", nn.ModuleList([resampler]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        for resampler in getattr(self, f"{self.kind}samplers", ()):
            x = resampler(x)
        return x


class MidBlock(nn.Module):
    """ResBlock -> attention (optional) -> ResBlock at the lowest resolution."""

    def __init__(self, resnets: Sequence[nn.Module], attention: nn.Module | None):
        super().__init__()
        # attentions is registered before resnets, as in diffusers, so state dict order matches too
        self.attentions = nn.ModuleList([attention] if attention is not None else [])
        self.resnets = nn.ModuleList(resnets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x)


# ---------------------------------------------------------------------------
# encoder / decoder
# ---------------------------------------------------------------------------
class _Network(nn.Module):
    """Factory methods shared by :class:`Encoder` and :class:`Decoder`; override one to swap a part."""

    norm_num_groups: int
    attention_backend: str

    def make_resnet(self, in_channels: int, out_channels: int) -> nn.Module:
        return ResnetBlock(in_channels, out_channels, self.norm_num_groups)

    def make_attention(self, channels: int) -> nn.Module:
        return MidAttention(channels, self.norm_num_groups, self.attention_backend)

    def make_norm(self, channels: int) -> nn.Module:
        return GroupNorm(self.norm_num_groups, channels, eps=NORM_EPS)

    def make_conv(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def make_mid_block(self, channels: int, add_attention: bool) -> nn.Module:
        attention = self.make_attention(channels) if add_attention else None
        return MidBlock([self.make_resnet(channels, channels), self.make_resnet(channels, channels)], attention)

    def set_attention_backend(self, backend: str) -> None:
        check_attention_backend(backend)
        self.attention_backend = backend
        for m in self.modules():
            if isinstance(m, MidAttention):
                m.set_backend(backend)


class Encoder(_Network):
    """Image -> latent moments. ``conv_in``, one :class:`Level` per width, mid block, norm, SiLU, ``conv_out``.

    Args:
        in_channels: image channels (3 for RGB).
        out_channels: latent channels; the output has twice as many when ``double_z``.
        block_out_channels: width of each resolution level; all but the last halve the
            resolution, so the downsample factor is ``2 ** (len(block_out_channels) - 1)``.
        layers_per_block: ResBlocks per level.
        norm_num_groups: GroupNorm groups; must divide every width.
        double_z: output mean and logvar stacked (B, 2 * out_channels, h, w) for a Gaussian posterior.
        mid_block_add_attention: put self-attention between the two mid ResBlocks.
        attention_backend: see :class:`MidAttention`.

    Shapes: (B, in_channels, H, W) -> (B, out_channels * (2 if double_z else 1), H / f, W / f).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 4,
        block_out_channels: Sequence[int] = (64,),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        double_z: bool = True,
        mid_block_add_attention: bool = True,
        attention_backend: str = "sdpa",
    ):
        super().__init__()
        self.norm_num_groups, self.attention_backend = norm_num_groups, attention_backend
        widths = list(block_out_channels)
        self.conv_in = self.make_conv(in_channels, widths[0])
        self.down_blocks = nn.ModuleList()
        prev = widths[0]
        for i, width in enumerate(widths):
            resnets = [self.make_resnet(prev if j == 0 else width, width) for j in range(layers_per_block)]
            down = Downsample(width) if i < len(widths) - 1 else None
            self.down_blocks.append(Level(resnets, down, kind="down"))
            prev = width
        self.mid_block = self.make_mid_block(widths[-1], mid_block_add_attention)
        self.conv_norm_out = self.make_norm(widths[-1])
        self.conv_out = self.make_conv(widths[-1], 2 * out_channels if double_z else out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down_blocks:
            h = level(h)
        h = self.mid_block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h), inplace=not torch.is_grad_enabled()))


class Decoder(_Network):
    """Latents -> image. ``conv_in``, mid block, one :class:`Level` per width (widest first), norm, SiLU, ``conv_out``.

    Args:
        in_channels: latent channels.
        out_channels: image channels.
        block_out_channels: the encoder's level widths, in encoder order; the decoder walks
            them in reverse and upsamples x2 after every level but the last.
        layers_per_block: the encoder's value; each decoder level has ``layers_per_block + 1`` ResBlocks.
        norm_num_groups: GroupNorm groups; must divide every width.
        mid_block_add_attention: put self-attention between the two mid ResBlocks.
        attention_backend: see :class:`MidAttention`.

    Shapes: (B, in_channels, h, w) -> (B, out_channels, h * f, w * f).
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 3,
        block_out_channels: Sequence[int] = (64,),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        mid_block_add_attention: bool = True,
        attention_backend: str = "sdpa",
    ):
        super().__init__()
        self.norm_num_groups, self.attention_backend = norm_num_groups, attention_backend
        widths = list(reversed(block_out_channels))
        self.conv_in = self.make_conv(in_channels, widths[0])
        self.up_blocks = nn.ModuleList()  # registered before mid_block, as in diffusers
        self.mid_block = self.make_mid_block(widths[0], mid_block_add_attention)
        prev = widths[0]
        for i, width in enumerate(widths):
            resnets = [self.make_resnet(prev if j == 0 else width, width) for j in range(layers_per_block + 1)]
            up = Upsample(width) if i < len(widths) - 1 else None
            self.up_blocks.append(Level(resnets, up, kind="up"))
            prev = width
        self.conv_norm_out = self.make_norm(widths[-1])
        self.conv_out = self.make_conv(widths[-1], out_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.conv_norm_out(h), inplace=not torch.is_grad_enabled()))


__all__ = [
    "ATTENTION_BACKENDS",
    "GroupNorm",
    "ResnetBlock",
    "Downsample",
    "Upsample",
    "MidAttention",
    "MidBlock",
    "Level",
    "Encoder",
    "Decoder",
    "set_upcast",
    "check_attention_backend",
]
