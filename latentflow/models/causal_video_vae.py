"""``CausalVideoAutoencoderKLModel``: a causal video VAE in the shape of Wan 2.1's.

Interchangeable with diffusers' ``AutoencoderKLWan`` (Wan 2.1 layout): the same config keys
(``temperal_downsample`` keeps diffusers' spelling) and the same state dict, key for key, so
weights move either way with ``load_state_dict(strict=True)``. (diffusers reads a clip in chunks
of 4 frames whatever the temporal factor and drops the frames past the last 1 + 4k; this family
chunks by its own factor, so the two agree on every clip for factor 4 and on 1 + 4k frames otherwise.)

How it reads a clip (B, 3, T, H, W) with T = 1 + k * s (s = ``temporal_downsample_factor``):

- every 3D convolution is causal: it pads time on the past side only, so an output frame
  never sees a later input frame;
- the first frame is encoded alone (it becomes latent frame 0, so an image is a one-frame clip),
  then chunks of ``chunk_latent_frames * s`` frames; decoding runs latent frame 0 alone, then
  chunks of ``chunk_latent_frames`` latent frames;
- between chunks a :class:`FeatureCache` carries what each causal layer needs from the past
  (the last two input frames of each 3x3x3 conv, the last frame before a temporal downsample),
  so chunked and whole-clip passes compute the same function and memory stays flat in T;
- space is downsampled 2x per level (8x for the 4-level Wan shape), time 2x at the levels
  ``temperal_downsample`` marks (4x for Wan); the encoder predicts a diagonal Gaussian;
- optional spatial tiling (``tiling``, the :class:`TilingConfig` of ``autoencoder_kl``): each tile
  runs the whole chunked clip, and overlapping tiles are blended linearly, so memory stays flat in
  resolution too (tiles see less context: close to, not equal to, the untiled result).

Reads top to bottom: helpers -> blocks -> encoder/decoder -> config -> model -> presets.

Example::

    model = CausalVideoAutoencoderKLModel(CausalVideoAutoencoderKLConfig(base_dim=16, z_dim=4))
    out = model.encode(clips)                      # clips: (B, 3, 1 + 4k, H, W) in [-1, 1]
    out.latents.shape                              # (B, 4, 1 + k, H/8, W/8), the posterior mean
    video = model.decode(out.latents).sample       # (B, 3, 1 + 4k, H, W)
    model.encode(images).latents.shape             # images (B, 3, H, W) -> (B, 4, 1, H/8, W/8)
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from latentflow.auto import register
from latentflow.configuration import LatentConfig, check_positive
from latentflow.errors import ConfigError, InputError
from latentflow.modeling import LatentModel, check_finite
from latentflow.models.autoencoder_kl import TilingConfig, blend_tiles
from latentflow.outputs import AutoencoderOutput, DecoderOutput, DiagonalGaussian, VariationalEncoderOutput

CACHE_FRAMES = 2  # a kernel-3 causal conv needs the last two frames of the previous chunk


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
class FeatureCache:
    """What each causal layer keeps from the previous chunk, keyed by the layer (one per encode/decode)."""

    def __init__(self) -> None:
        self._state: dict[nn.Module, Any] = {}

    def get(self, layer: nn.Module) -> Any:
        return self._state.get(layer)

    def swap(self, layer: nn.Module, value: Any) -> Any:
        """Store ``value`` for ``layer``; return what was stored before (None on the first chunk)."""
        old = self._state.get(layer)
        self._state[layer] = value
        return old


def last_frames(past: torch.Tensor | None, x: torch.Tensor, n: int) -> torch.Tensor:
    """The last ``n`` frames of ``past`` followed by ``x`` (B, C, T, H, W), copied so ``x`` can be freed."""
    if past is not None and x.shape[2] < n:
        x = torch.cat([past, x], dim=2)
    return x[:, :, -n:].clone()


def per_frame(fn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D module to every frame: (B, C, T, H, W) -> (B, C', T, H', W')."""
    b, c, t, h, w = x.shape
    y = fn(x.transpose(1, 2).reshape(b * t, c, h, w))  # (B*T, C', H', W')
    return y.view(b, t, *y.shape[1:]).transpose(1, 2)


def interleave_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, 2C, T, H, W) -> (B, C, 2T, H, W): frame 2i from the first C channels at i, 2i+1 from the second."""
    b, c2, t, h, w = x.shape
    return x.view(b, 2, c2 // 2, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c2 // 2, 2 * t, h, w)


def clip_chunks(x: torch.Tensor, size: int | None) -> Iterator[torch.Tensor]:
    """Frame 0 alone, then chunks of ``size`` frames (None: all the rest at once)."""
    yield x[:, :, :1]
    t = x.shape[2]
    step = size or max(t - 1, 1)
    for start in range(1, t, step):
        yield x[:, :, start:start + step]


# ---------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------
class CausalConv3d(nn.Conv3d):
    """A Conv3d padded in time on the past side only (``2 * padding[0]`` frames); space is padded on both sides.

    With a cache, the previous chunk's last frames replace (part of) the zero padding, so a clip
    run chunk by chunk gives what the whole clip gives.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        pt, ph, pw = self.padding
        self.time_pad = 2 * pt
        self.space_pad = (pw, pw, ph, ph)
        self.padding = (0, 0, 0)

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:  # (B, C, T, H, W)
        pad = self.time_pad
        if cache is not None and pad > 0:
            past = cache.swap(self, last_frames(cache.get(self), x, CACHE_FRAMES))
            if past is not None:
                x = torch.cat([past, x], dim=2)
                pad -= past.shape[2]
        return super().forward(F.pad(x, (*self.space_pad, pad, 0)))


class RMSNorm(nn.Module):
    """RMS norm over channels (dim 1) with a per-channel gain, as Wan's ``RMS_norm`` (no bias).

    ``frames=True``: the gain broadcasts over (T, H, W); False: over (H, W). fp16/bf16 normalize in fp32.
    """

    def __init__(self, dim: int, frames: bool = True):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1, 1) if frames else (1, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = x.dtype in (torch.float16, torch.bfloat16)
        return F.normalize(x.float() if low else x, dim=1).to(x.dtype) * self.scale * self.gamma


class ResBlock(nn.Module):
    """norm -> SiLU -> causal conv, twice, plus a (1x1x1 conv) shortcut."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = RMSNorm(in_dim)
        self.conv1 = CausalConv3d(in_dim, out_dim, 3, padding=1)
        self.norm2 = RMSNorm(out_dim)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3, padding=1)
        self.conv_shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:  # (B, C, T, H, W)
        h = self.conv_shortcut(x)
        x = self.conv1(F.silu(self.norm1(x)), cache)
        x = self.conv2(self.dropout(F.silu(self.norm2(x))), cache)
        return x + h


class FrameAttention(nn.Module):
    """Single-head self-attention over the positions of each frame (no attention across time)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, frames=False)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W), N = B*T
        n, c, h, w = x.shape
        qkv = self.to_qkv(self.norm(x)).flatten(2).transpose(1, 2)  # (N, H*W, 3C)
        q, k, v = qkv.unsqueeze(1).chunk(3, dim=-1)  # (N, 1, H*W, C) each
        y = F.scaled_dot_product_attention(q, k, v).squeeze(1)  # (N, H*W, C)
        return self.proj(y.transpose(1, 2).reshape(n, c, h, w))

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        return x + per_frame(self._attend, x)


class MidBlock(nn.Module):
    """ResBlock -> attention -> ResBlock (``attentions`` before ``resnets``: diffusers' key order)."""

    def __init__(self, dim: int, dropout: float = 0.0):
        super().__init__()
        self.attentions = nn.ModuleList([FrameAttention(dim)])
        self.resnets = nn.ModuleList([ResBlock(dim, dim, dropout), ResBlock(dim, dim, dropout)])

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        x = self.resnets[0](x, cache)
        return self.resnets[1](self.attentions[0](x), cache)


class Downsample(nn.Module):
    """2x in space (stride-2 conv per frame); with ``temporal``, then 2x in time.

    In time, the first frame passes alone and each later pair is merged with the frame before it
    (a kernel-3, stride-2 conv over frames 0..2, 2..4, ...): 1 + 2k frames -> 1 + k.
    """

    def __init__(self, dim: int, temporal: bool):
        super().__init__()
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        x = per_frame(self.resample, x)  # (B, C, T, H/2, W/2)
        if self.time_conv is None:
            return x
        past = cache.swap(self, x[:, :, -1:].clone()) if cache is not None else None
        if past is not None:  # a later chunk: its pairs lean on the previous chunk's last frame
            return self.time_conv(torch.cat([past, x], dim=2))
        if x.shape[2] == 1:
            return x
        return torch.cat([x[:, :, :1], self.time_conv(x)], dim=2)


class Upsample2x(nn.Module):
    """Nearest 2x upsampling of (N, C, H, W), computed in fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.float(), scale_factor=2.0, mode="nearest-exact").to(x.dtype)


class Upsample(nn.Module):
    """With ``temporal``, 2x in time first (the first frame stays one frame: 1 + k -> 1 + 2k),
    then 2x in space with a conv per frame to ``out_dim`` channels."""

    def __init__(self, dim: int, out_dim: int, temporal: bool):
        super().__init__()
        self.resample = nn.Sequential(Upsample2x(), nn.Conv2d(dim, out_dim, 3, padding=1))
        self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0)) if temporal else None

    def _double_frames(self, x: torch.Tensor, cache: FeatureCache | None) -> torch.Tensor:
        started = cache.swap(self, True) if cache is not None else None
        if started:  # a later chunk: every frame doubles
            return interleave_frames(self.time_conv(x, cache))
        rest = x[:, :, 1:]  # frame 0 stays; the causal conv starts at frame 1
        if rest.shape[2] == 0:
            return x
        return torch.cat([x[:, :, :1], interleave_frames(self.time_conv(rest, cache))], dim=2)

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        if self.time_conv is not None:
            x = self._double_frames(x, cache)
        return per_frame(self.resample, x)


class UpBlock(nn.Module):
    """``num_res_blocks + 1`` ResBlocks, then an optional :class:`Upsample` halving the channels."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float, upsample: bool | None):
        super().__init__()
        dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
        self.resnets = nn.ModuleList([ResBlock(a, b, dropout) for a, b in zip(dims[:-1], dims[1:])])
        self.upsamplers = None if upsample is None else nn.ModuleList([Upsample(out_dim, out_dim // 2, temporal=upsample)])

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache)
        return x if self.upsamplers is None else self.upsamplers[0](x, cache)


# ---------------------------------------------------------------------------
# encoder / decoder
# ---------------------------------------------------------------------------
class Encoder(nn.Module):
    """(B, 3, T, H, W) -> (B, 2 * z_dim, 1 + (T - 1) / s, H / f, W / f): moments of the posterior."""

    def __init__(self, in_channels: int, dim: int, out_channels: int, dim_mult: tuple[int, ...], num_res_blocks: int,
                 temporal: tuple[bool, ...], dropout: float):
        super().__init__()
        dims = [dim * m for m in (1, *dim_mult)]
        self.conv_in = CausalConv3d(in_channels, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(cin, cout, dropout))
                cin = cout
            if i < len(dim_mult) - 1:
                blocks.append(Downsample(cout, temporal[i]))
        self.down_blocks = nn.ModuleList(blocks)  # flat, as diffusers numbers them
        self.mid_block = MidBlock(dims[-1], dropout)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        x = self.conv_in(x, cache)
        for block in self.down_blocks:
            x = block(x, cache)
        x = self.mid_block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


class Decoder(nn.Module):
    """(B, z_dim, t, h, w) -> (B, 3, 1 + (t - 1) * s, h * f, w * f). Widths mirror the encoder's."""

    def __init__(self, in_channels: int, dim: int, out_channels: int, dim_mult: tuple[int, ...], num_res_blocks: int,
                 temporal: tuple[bool, ...], dropout: float):
        super().__init__()
        dims = [dim * m for m in (dim_mult[-1], *dim_mult[::-1])]
        self.conv_in = CausalConv3d(in_channels, dims[0], 3, padding=1)
        self.mid_block = MidBlock(dims[0], dropout)
        blocks = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            cin = cin // 2 if i > 0 else cin  # the previous Upsample halved the channels
            upsample = temporal[i] if i < len(dim_mult) - 1 else None
            blocks.append(UpBlock(cin, cout, num_res_blocks, dropout, upsample))
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cache: FeatureCache | None = None) -> torch.Tensor:
        x = self.mid_block(self.conv_in(x, cache), cache)
        for block in self.up_blocks:
            x = block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------
# diffusers AutoencoderKLWan keys: accepted when they describe this architecture, not stored
_DIFFUSERS_DERIVED_KEYS = ("scale_factor_temporal", "scale_factor_spatial")  # informational in diffusers


def _check_diffusers_keys(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    name = data.get("_class_name", "AutoencoderKLWan")
    if name != "AutoencoderKLWan":
        raise ConfigError(f"CausalVideoAutoencoderKLConfig reads diffusers AutoencoderKLWan configs, got _class_name: {name!r}")
    if data.pop("is_residual", False):
        raise ConfigError("is_residual must be false: this family is Wan 2.1's layout (Wan 2.2's residual blocks "
                          "load through the diffusers bridge: AutoModel.from_pretrained on the diffusers folder)")
    if data.pop("patch_size", None) is not None:
        raise ConfigError("patch_size must be null (Wan 2.1's layout); Wan 2.2 loads through the diffusers bridge")
    for key in _DIFFUSERS_DERIVED_KEYS:
        data.pop(key, None)
    return data


@dataclass
class CausalVideoAutoencoderKLConfig(LatentConfig):
    """Config of :class:`CausalVideoAutoencoderKLModel`: diffusers ``AutoencoderKLWan``'s keys plus ours.

    Architecture defaults equal diffusers' (Wan 2.1: base_dim 96, z_dim 16, dim_mult [1, 2, 4, 4],
    2 res blocks, temporal downsampling at levels 2 and 3: 8x space, 4x time); ``latents_mean``/
    ``latents_std`` default to None here (no per-channel normalization) rather than Wan's 16
    values, since they belong to trained weights. Use :func:`wan21` for the released VAE's config.

    Ours: ``chunk_latent_frames`` (latent frames per chunk after the first; None: the rest of the
    clip at once, faster, memory linear in T), ``tiling`` (a :class:`TilingConfig` or None: spatial
    tiles, sizes in pixels), ``sample_size``/``sample_frames`` (what ``sample`` draws),
    ``reconstruction_loss`` (l1 | mse) and ``kl_weight`` (weight of the KL in ``forward``).
    """

    model_type: ClassVar[str] = "causal_video_autoencoder_kl"

    base_dim: int = 96
    decoder_base_dim: int | None = None
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0
    in_channels: int = 3
    out_channels: int = 3
    chunk_latent_frames: int | None = 1
    tiling: TilingConfig | None = None
    sample_size: int = 256
    sample_frames: int = 17
    reconstruction_loss: str = "l1"
    kl_weight: float = 1e-6

    def validate(self) -> None:
        super().validate()
        check_positive(type(self).__name__, base_dim=self.base_dim, z_dim=self.z_dim,
                       num_res_blocks=self.num_res_blocks, in_channels=self.in_channels,
                       out_channels=self.out_channels, sample_size=self.sample_size, sample_frames=self.sample_frames)
        if self.decoder_base_dim is not None and self.decoder_base_dim <= 0:
            raise ConfigError(f"decoder_base_dim must be > 0 or None, got: {self.decoder_base_dim}")
        if not self.dim_mult or any(m <= 0 for m in self.dim_mult):
            raise ConfigError(f"dim_mult must be non-empty and > 0, got: {list(self.dim_mult)}")
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ConfigError(f"temperal_downsample needs one flag per downsampling level, len(dim_mult) - 1 = "
                              f"{len(self.dim_mult) - 1}, got: {list(self.temperal_downsample)}")
        if self.attn_scales:
            raise ConfigError(f"attn_scales must be empty (Wan 2.1 has no attention in its down blocks, and diffusers' "
                              f"AutoencoderKLWan cannot run one there), got: {list(self.attn_scales)}")
        if self.chunk_latent_frames is not None and self.chunk_latent_frames <= 0:
            raise ConfigError(f"chunk_latent_frames must be > 0 or None, got: {self.chunk_latent_frames}")
        f = self.downsample_factor
        if self.tiling is not None and (self.tiling.tile_size % f or self.tiling.tile_stride % f):
            raise ConfigError(f"tiling.tile_size and tile_stride must be multiples of the downsample factor {f}, "
                              f"got: {self.tiling.tile_size}, {self.tiling.tile_stride}")
        if self.reconstruction_loss not in ("l1", "mse"):
            raise ConfigError(f"reconstruction_loss must be 'l1' or 'mse', got: {self.reconstruction_loss!r}")
        if self.kl_weight < 0:
            raise ConfigError(f"kl_weight must be >= 0, got: {self.kl_weight}")
        if self.latents_mean is not None and len(self.latents_mean) != self.z_dim:
            raise ConfigError(f"latents_mean needs z_dim={self.z_dim} values, got: {len(self.latents_mean)}")

    @property
    def temporal_downsample_factor(self) -> int:
        return 2 ** sum(bool(t) for t in self.temperal_downsample)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **overrides: Any) -> "CausalVideoAutoencoderKLConfig":
        """Build from our ``to_dict`` output or a diffusers ``AutoencoderKLWan`` config dict (Wan 2.1 layout)."""
        return super().from_dict(_check_diffusers_keys({**(data or {}), **overrides}))

    def to_diffusers_dict(self) -> dict[str, Any]:
        """Keyword arguments (and ``config.json`` content) for diffusers' ``AutoencoderKLWan``."""
        try:
            version = importlib.metadata.version("diffusers")
        except importlib.metadata.PackageNotFoundError:
            version = "0.33.0"
        keys = ("base_dim", "decoder_base_dim", "z_dim", "num_res_blocks", "dropout", "in_channels", "out_channels")
        mean = list(self.latents_mean) if self.latents_mean is not None else [0.0] * self.z_dim
        std = list(self.latents_std) if self.latents_std is not None else [1.0] * self.z_dim
        return {
            "_class_name": "AutoencoderKLWan",
            "_diffusers_version": version,
            **{k: getattr(self, k) for k in keys},
            "dim_mult": list(self.dim_mult),
            "attn_scales": [],
            "temperal_downsample": list(self.temperal_downsample),
            "latents_mean": mean,
            "latents_std": std,
            "is_residual": False,
            "patch_size": None,
            "scale_factor_temporal": self.temporal_downsample_factor,
            "scale_factor_spatial": self.downsample_factor,
        }


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------
@register
class CausalVideoAutoencoderKLModel(LatentModel):
    """Causal 3D-conv encoder -> diagonal Gaussian (B, z_dim, t, h, w) -> causal 3D-conv decoder.

    Takes clips (B, 3, 1 + k * s, H, W) and images (B, 3, H, W), which are one-frame clips:
    their latents are (B, z_dim, 1, h, w). ``decode`` gives clips back, and images
    (B, 3, H, W) for one-frame latents, as the diffusers bridge's video classes do.
    Module names match diffusers' ``AutoencoderKLWan``.
    """

    config_class: ClassVar[type[LatentConfig]] = CausalVideoAutoencoderKLConfig
    latent_kind: ClassVar[str] = "continuous"
    input_rank: ClassVar[int] = 5

    def __init__(self, config: CausalVideoAutoencoderKLConfig):
        super().__init__(config)
        c = config
        arch = dict(dim_mult=tuple(c.dim_mult), num_res_blocks=c.num_res_blocks, dropout=c.dropout)
        self.encoder = Encoder(c.in_channels, c.base_dim, 2 * c.z_dim, temporal=tuple(c.temperal_downsample), **arch)
        self.quant_conv = CausalConv3d(2 * c.z_dim, 2 * c.z_dim, 1)
        self.post_quant_conv = CausalConv3d(c.z_dim, c.z_dim, 1)
        self.decoder = Decoder(c.z_dim, c.decoder_base_dim or c.base_dim, c.out_channels,
                               temporal=tuple(c.temperal_downsample[::-1]), **arch)
        self.tiling: TilingConfig | None = c.tiling

    # ---- geometry ---------------------------------------------------------
    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def temporal_downsample_factor(self) -> int:
        """Frames per latent frame after the first (4 for Wan's shape)."""
        return self.config.temporal_downsample_factor

    @property
    def latent_channels(self) -> int:
        return self.config.z_dim

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of a clip of ``num_frames`` = 1 + k * s frames: 1 + k."""
        return (num_frames - 1) // self.temporal_downsample_factor + 1

    def latent_shape(self, height: int, width: int, frames: int = 1) -> tuple[int, int, int, int]:
        """Per-sample latent shape (C, t, h, w) of a clip of ``frames`` frames (an image: ``frames=1``)."""
        f = self.downsample_factor
        return (self.config.z_dim, self.latent_frames(frames), height // f, width // f)

    # ---- runtime switches -------------------------------------------------
    def enable_tiling(self, tiling: TilingConfig | None = None) -> None:
        """Encode/decode in overlapping spatial tiles (``tiling`` or the default :class:`TilingConfig`)."""
        tiling = tiling or TilingConfig()
        self.config.replace(tiling=tiling)  # validates the sizes against the downsample factor
        self.tiling = tiling

    def disable_tiling(self) -> None:
        self.tiling = None

    # ---- input checks -----------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        check_clip_input(self, x)

    def _check_latents(self, z: torch.Tensor) -> torch.Tensor:
        c = self.config.z_dim
        if not isinstance(z, torch.Tensor) or z.ndim not in (4, 5) or z.shape[1] != c:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise InputError(f"decode expects latents of shape (B, {c}, t, h, w) or (B, {c}, h, w), got: {got}")
        return z if z.ndim == 5 else z.unsqueeze(2)

    # ---- encode / decode ----------------------------------------------------
    def _encode_clip(self, x: torch.Tensor) -> torch.Tensor:
        cache, n = FeatureCache(), self.config.chunk_latent_frames
        size = n * self.temporal_downsample_factor if n else None
        out = torch.cat([self.encoder(chunk, cache) for chunk in clip_chunks(x, size)], dim=2)
        return self.quant_conv(out)

    def _decode_clip(self, z: torch.Tensor) -> torch.Tensor:
        z, cache = self.post_quant_conv(z), FeatureCache()
        return torch.cat([self.decoder(chunk, cache) for chunk in clip_chunks(z, self.config.chunk_latent_frames)], dim=2)

    def _tiled(self, fn, x: torch.Tensor, out_ct: tuple[int, int], tile: int, stride: int, num: int, den: int) -> torch.Tensor:
        """``blend_tiles`` over (B, C*T, H, W): ``fn`` maps a (B, C, T, h, w) tile to (B, *out_ct, h', w')."""
        b, c, t = x.shape[:3]
        flat = lambda y: fn(y.view(b, c, t, *y.shape[-2:])).flatten(1, 2)  # noqa: E731
        out = blend_tiles(x.flatten(1, 2), flat, tile, stride, num, den)  # (B, C'*T', H', W')
        return out.view(b, *out_ct, *out.shape[-2:])

    def encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 1 + k * s, H, W) -> (B, 2 * z_dim, 1 + k, h, w): frame 0 alone, then chunks through one cache."""
        t, f = self.tiling, self.downsample_factor
        if t is None or max(x.shape[-2:]) <= t.threshold:
            return self._encode_clip(x)
        out_ct = (2 * self.config.z_dim, self.latent_frames(x.shape[2]))
        return self._tiled(self._encode_clip, x, out_ct, t.tile_size, t.tile_stride, 1, f)

    def decode_frames(self, z: torch.Tensor) -> torch.Tensor:
        """(B, z_dim, t, h, w) -> (B, 3, 1 + (t - 1) * s, H, W), unclamped: latent frame 0 alone, then chunks."""
        t, f = self.tiling, self.downsample_factor
        if t is None or max(z.shape[-2:]) * f <= t.threshold:
            return self._decode_clip(z)
        out_ct = (self.config.out_channels, 1 + (z.shape[2] - 1) * self.temporal_downsample_factor)
        return self._tiled(self._decode_clip, z, out_ct, t.tile_size // f, t.tile_stride // f, f, 1)

    def encode(self, x: torch.Tensor) -> VariationalEncoderOutput:
        """Encode clips (B, 3, 1 + k * s, H, W), or images (B, 3, H, W) as one-frame clips, in [-1, 1].

        Returns:
            :class:`VariationalEncoderOutput`: ``latents`` the posterior mean (B, z_dim, 1 + k, H/f, W/f),
            raw (not normalized); ``latent_dist`` the :class:`DiagonalGaussian` posterior.
        """
        self.check_input(x)
        clips = x if x.ndim == 5 else x.unsqueeze(2)
        moments = self.encode_moments(clips.to(self.dtype))
        if self.config.check_finite:
            check_finite(moments, "encoder output (mean/logvar)")
        posterior = DiagonalGaussian.from_moments(moments)
        return VariationalEncoderOutput(latents=posterior.mean, latent_dist=posterior)

    def decode(self, latents: torch.Tensor) -> DecoderOutput:
        """Decode raw latents (B, z_dim, t, h, w) to pixels clamped to [-1, 1], as diffusers does.

        Returns:
            :class:`DecoderOutput`: ``sample`` (B, 3, 1 + (t - 1) * s, H, W); one-frame latents
            (t = 1, or (B, z_dim, h, w)) give images (B, 3, H, W).
        """
        sample = self.decode_frames(self._check_latents(latents).to(self.dtype)).clamp(-1.0, 1.0)
        if self.config.check_finite:
            check_finite(sample, "decoder output")
        return DecoderOutput(sample=sample.squeeze(2) if sample.shape[2] == 1 else sample)

    # ---- training / sampling ---------------------------------------------
    def forward(self, x: torch.Tensor, sample_posterior: bool | None = None,
                generator: torch.Generator | None = None) -> AutoencoderOutput:
        """Encode, sample (or take the mean of) the posterior, decode, and compute the losses.

        Args:
            x: clips (B, 3, 1 + k * s, H, W) or images (B, 3, H, W) in [-1, 1].
            sample_posterior: draw z from the posterior; default: in training mode only.
            generator: RNG for the posterior sample.

        Returns:
            :class:`AutoencoderOutput` (``reconstruction`` in ``x``'s shape, not clamped, so the loss has
            gradients everywhere); ``losses``: ``rec`` (the config's l1/mse, mean over elements) and ``kl``
            (summed per sample, batch mean); ``loss = rec + kl_weight * kl``.
        """
        enc = self.encode(x)
        sample = self.training if sample_posterior is None else sample_posterior
        z = enc.latent_dist.sample(generator) if sample else enc.latents
        rec = self.decode_frames(z).reshape(x.shape)
        target = x.to(rec.dtype)
        err = F.l1_loss(rec, target) if self.config.reconstruction_loss == "l1" else F.mse_loss(rec, target)
        losses = {"rec": err, "kl": enc.latent_dist.kl().mean()}
        loss = losses["rec"] + self.config.kl_weight * losses["kl"]
        return AutoencoderOutput(reconstruction=rec, loss=loss, losses=losses, encoder_output=enc)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None, height: int | None = None,
               width: int | None = None, frames: int | None = None) -> torch.Tensor:
        """Decode draws from the N(0, I) prior: (num_samples, 3, frames, H, W), defaults from the config."""
        if num_samples <= 0:
            raise InputError(f"num_samples must be > 0, got: {num_samples}")
        c = self.config
        shape = self.latent_shape(height or c.sample_size, width or c.sample_size, frames or c.sample_frames)
        z = torch.randn((num_samples, *shape), generator=generator, dtype=self.dtype).to(self.device)
        return self.decode(z).sample


# ---------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------
WAN21_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


def wan21(**overrides: Any) -> CausalVideoAutoencoderKLConfig:
    """Wan 2.1's VAE (Wan-AI/Wan2.1-T2V-*/vae): 16 channels, 8x space, 4x time, per-channel statistics."""
    return CausalVideoAutoencoderKLConfig.from_dict(
        {"latents_mean": list(WAN21_LATENTS_MEAN), "latents_std": list(WAN21_LATENTS_STD)}, **overrides)


__all__ = ["CausalVideoAutoencoderKLConfig", "CausalVideoAutoencoderKLModel", "FeatureCache", "CausalConv3d", "TilingConfig", "wan21"]


def check_clip_input(model, x: torch.Tensor) -> None:
    """The input rule of causal video models (images (B, C, H, W) or clips (B, C, 1 + k*s, H, W), sizes a multiple
    of the spatial factor), shared by this family and MAGVIT-2; a clear ``InputError`` names the fix."""
    name, s = type(model).__name__, model.temporal_downsample_factor
    if not isinstance(x, torch.Tensor) or x.ndim not in (4, 5):
        got = f"rank {x.ndim} with shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{name} expects a rank-4 input (B, C, H, W) images or rank-5 (B, C, T, H, W) clips, got {got}")
    if x.shape[1] != model.in_channels:
        raise InputError(f"{name} expects {model.in_channels} input channels, got: {x.shape[1]} (shape {tuple(x.shape)})")
    f, spatial = model.downsample_factor, tuple(x.shape[-2:])
    if any(v % f for v in spatial):
        raise InputError(f"{name} downsamples by {f}: spatial size must be a multiple of {f}, got: {spatial}; "
                         f"resize or crop to e.g. {tuple(v - v % f or f for v in spatial)}")
    if x.ndim == 5 and (x.shape[2] - 1) % s:
        t = x.shape[2]
        raise InputError(f"{name} takes clips of 1 + k * {s} frames (1, {1 + s}, {1 + 2 * s}, ...), got: {t} frames; "
                         f"trim to {t - (t - 1) % s}")
    if model.config.check_finite:
        check_finite(x, "input")
