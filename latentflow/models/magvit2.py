"""MAGVIT-2 (Yu et al. 2023, "Language Model Beats Diffusion: Tokenizer is Key to Visual Generation"):
a lookup-free (LFQ) tokenizer with a causal 3D CNN, one model for images and videos.

How it reads a clip (B, 3, T, H, W), T = 1 + k * s (s = ``temporal_compression``):

- every convolution is a causal 3D conv: time is padded on the past side only, so latent frame j
  never sees a later input frame, and the first frame is encoded alone (it becomes latent frame 0).
  An image (B, 3, H, W) is a one-frame clip; a one-frame input runs each causal conv as the 2D conv
  of its kernel's last time slice (the rest only ever sees zero padding), so images cost a 2D CNN;
- group norms normalize each frame on its own (statistics over time would leak the future);
- encoder: per level ``layers_per_block`` ResBlocks, then a strided causal conv (2x space at every
  level, 2x time at the last log2(s) levels), mid ResBlocks, a 1x1 conv to ``log2(codebook_size)``
  channels;
- LFQ (``latentflow.quantizers.lfq``): each channel becomes one bit, the index reads the bits;
  commitment and entropy losses (per-sample entropy down, codebook entropy up);
- decoder: mirrors the encoder; before each level an adaptive group norm is scaled and shifted from
  the per-frame mean and std of the quantized latents (Open-MAGVIT2's ``AdaptiveGroupNorm``, made
  causal: each frame reads its own latent frame), and it upsamples by depth-to-space (a conv to
  4x (8x) channels rearranged into 2x space (and 2x time, dropping the first of the two frames
  made from latent frame 0, so 1 + k frames become 1 + 2k)).

Shapes: images (B, 3, H, W) -> indices (B, H/f, W/f); clips (B, 3, T, H, W) -> indices
(B, T', H/f, W/f), T' = (T - 1) / s + 1; ``decode`` gives back the input's rank.

Reference names (Open-MAGVIT2 ``ddconfig`` / ``VQModel``) -> ours: ``ch * ch_mult`` ->
``block_out_channels``; ``num_res_blocks`` -> ``layers_per_block``; ``n_embed`` -> ``codebook_size``;
``embed_dim``/``z_channels`` -> log2(codebook_size), derived; ``commit_weight`` -> ``commitment_weight``;
``codebook_weight`` (x ``sample_minimization_weight`` / ``batch_maximization_weight``) ->
``entropy_weight`` (x ``diversity_gamma``). Open-MAGVIT2 is image-only (2D convs); the causal 3D
layout and ``temporal_compression`` follow the MAGVIT-v2 paper.

Example::

    model = MagvitV2Model(MagvitV2Config(block_out_channels=(16, 32), norm_num_groups=8, codebook_size=2**10,
                                         temporal_compression=2))
    model.tokenize(images).shape             # (B, 3, 32, 32) -> (B, 16, 16), int16
    model.tokenize(clips).shape              # (B, 3, 5, 32, 32) -> (B, 3, 16, 16)
    model.detokenize(model.tokenize(clips))  # (B, 3, 5, 32, 32)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentflow.auto import register
from latentflow.configuration import LatentConfig, check_positive
from latentflow.errors import ConfigError, InputError
from latentflow.modeling import check_finite
from latentflow.models import causal_video_vae
from latentflow.models.autoencoder import QuantizedLatentModel
from latentflow.models.causal_video_vae import check_clip_input, per_frame
from latentflow.outputs import DecoderOutput, QuantizedEncoderOutput
from latentflow.quantizers.base import Quantizer, quantizer_from_config


# ---- helpers ------------------------------------------------------------------------------------
def latent_frame_of(latent_frames: int, frames: int, device: torch.device) -> torch.Tensor:
    """For each of ``frames`` decoder frames, the latent frame it was made from (causal). Shape (frames,).

    Frame 0 comes from latent frame 0; with m = (frames - 1) / (latent_frames - 1) frames per later
    latent frame, frame j >= 1 comes from latent frame 1 + (j - 1) // m.
    """
    j = torch.arange(frames, device=device)
    if latent_frames == 1:
        return torch.zeros_like(j)
    m = (frames - 1) // (latent_frames - 1)
    return torch.where(j == 0, 0, 1 + (j - 1) // m)


def depth_to_space(x: torch.Tensor, temporal: bool) -> torch.Tensor:
    """(B, C * 4 [* 2], T, H, W) -> (B, C, T [* 2 - 1], 2H, 2W): channel blocks become 2x2 (x2 in time) neighbours.

    In time, each frame becomes two and the first of frame 0's two is dropped (1 + k -> 1 + 2k frames).
    """
    b, c, t, h, w = x.shape
    rt = 2 if temporal else 1
    x = x.view(b, c // (4 * rt), rt, 2, 2, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)  # (B, C, T, rt, H, 2, W, 2)
    x = x.reshape(b, c // (4 * rt), t * rt, 2 * h, 2 * w)
    return x[:, :, rt - 1 :]


# ---- blocks ---------------------------------------------------------------------------------------
class CausalConv3d(causal_video_vae.CausalConv3d):
    """The causal video VAE's conv (time padded on the past side only), with a one-frame fast path:
    a single frame only ever meets zero padding in the past, so its output is the 2D conv of the
    kernel's last time slice (equal up to float rounding, at a third of the cost for 3-frame kernels)."""

    def forward(self, x: torch.Tensor, cache: None = None) -> torch.Tensor:  # (B, C, T, H, W)
        if x.shape[2] == 1 and self.time_pad == self.kernel_size[0] - 1:
            y = F.conv2d(F.pad(x[:, :, 0], self.space_pad), self.weight[:, :, -1], self.bias, self.stride[1:])
            return y.unsqueeze(2)
        return super().forward(x)


class FrameGroupNorm(nn.Module):
    """GroupNorm over each frame's (C, H, W) on its own: no statistic crosses time."""

    def __init__(self, channels: int, groups: int, affine: bool = True):
        super().__init__()
        self.norm = nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-6, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        return per_frame(self.norm, x)


class ResBlock3d(nn.Module):
    """norm -> SiLU -> causal 3x3x3 conv, twice, plus a (1x1x1 if widths differ) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, groups: int):
        super().__init__()
        self.norm1 = FrameGroupNorm(in_ch, groups)
        self.conv1 = CausalConv3d(in_ch, out_ch, 3, padding=1)
        self.norm2 = FrameGroupNorm(out_ch, groups)
        self.conv2 = CausalConv3d(out_ch, out_ch, 3, padding=1)
        self.shortcut = CausalConv3d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.shortcut(x) + h


class Upsample(nn.Module):
    """Causal 3x3x3 conv to 4x (8x with time) channels, then :func:`depth_to_space`."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels * (8 if temporal else 4), 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(self.conv(x), self.temporal)


class AdaptiveGroupNorm(nn.Module):
    """Per-frame GroupNorm (no affine) scaled and shifted from the quantized latents' per-frame statistics:
    ``gamma(std_hw(z)) * norm(x) + beta(mean_hw(z))``, each frame reading the latent frame it was made from."""

    def __init__(self, latent_channels: int, channels: int, groups: int):
        super().__init__()
        self.norm = FrameGroupNorm(channels, groups, affine=False)
        self.gamma = nn.Linear(latent_channels, channels)
        self.beta = nn.Linear(latent_channels, channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # x (B, C, T, H, W), z (B, Cz, t, h, w)
        flat = z.flatten(3)  # (B, Cz, t, h*w)
        std = (flat.var(dim=-1, unbiased=False) + 1e-6).sqrt().transpose(1, 2)  # (B, t, Cz)
        mean = flat.mean(dim=-1).transpose(1, 2)
        pick = latent_frame_of(z.shape[2], x.shape[2], x.device)
        scale = self.gamma(std)[:, pick].transpose(1, 2)[..., None, None]  # (B, C, T, 1, 1)
        shift = self.beta(mean)[:, pick].transpose(1, 2)[..., None, None]
        return scale * self.norm(x) + shift


# ---- encoder / decoder -------------------------------------------------------------------------------
class Encoder(nn.Module):
    """(B, C, 1 + k * s, H, W) -> (B, bits, 1 + k, H / f, W / f), before quantization."""

    def __init__(self, c: MagvitV2Config):
        super().__init__()
        chans, groups = c.block_out_channels, c.norm_num_groups
        self.conv_in = CausalConv3d(c.in_channels, chans[0], 3, padding=1)
        blocks: list[nn.Module] = []
        prev = chans[0]
        for i, ch in enumerate(chans):
            for _ in range(c.layers_per_block):
                blocks.append(ResBlock3d(prev, ch, groups))
                prev = ch
            if i < len(chans) - 1:  # 2x space, and 2x time where the config says
                blocks.append(CausalConv3d(ch, ch, 3, stride=(2 if c.temporal_levels[i] else 1, 2, 2), padding=1))
        blocks += [ResBlock3d(prev, prev, groups) for _ in range(c.layers_per_block)]  # mid
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = FrameGroupNorm(prev, groups)
        self.conv_out = CausalConv3d(prev, c.num_bits, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(x)))))


class DecoderLevel(nn.Module):
    """Adaptive group norm from the latents, ResBlocks, then (except at the finest level) an upsampling."""

    def __init__(self, in_ch: int, out_ch: int, c: MagvitV2Config, upsample: bool | None):
        super().__init__()
        self.adaptive = AdaptiveGroupNorm(c.num_bits, in_ch, c.norm_num_groups)
        chans = [in_ch] + [out_ch] * c.layers_per_block
        self.resnets = nn.Sequential(*(ResBlock3d(a, b, c.norm_num_groups) for a, b in itertools.pairwise(chans)))
        self.upsample = Upsample(out_ch, upsample) if upsample is not None else None

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = self.resnets(self.adaptive(x, z))
        return x if self.upsample is None else self.upsample(x)


class Decoder(nn.Module):
    """(B, bits, 1 + k, h, w) -> (B, C, 1 + k * s, h * f, w * f); widths mirror the encoder's."""

    def __init__(self, c: MagvitV2Config):
        super().__init__()
        chans, groups = tuple(reversed(c.block_out_channels)), c.norm_num_groups
        temporal = tuple(reversed(c.temporal_levels))  # the upsampling after level i undoes the encoder's
        self.conv_in = CausalConv3d(c.num_bits, chans[0], 3, padding=1)
        self.mid = nn.Sequential(*(ResBlock3d(chans[0], chans[0], groups) for _ in range(c.layers_per_block)))
        self.levels = nn.ModuleList(
            DecoderLevel(chans[max(i - 1, 0)], ch, c, temporal[i] if i < len(chans) - 1 else None) for i, ch in enumerate(chans))
        self.norm_out = FrameGroupNorm(chans[-1], groups)
        self.conv_out = CausalConv3d(chans[-1], c.resolved_out_channels, 3, padding=1)  # last: the GAN weight's layer

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(z))
        for level in self.levels:
            x = level(x, z)
        return self.conv_out(F.silu(self.norm_out(x)))


# ---- config ------------------------------------------------------------------------------------------
@dataclass
class MagvitV2Config(LatentConfig):
    """A MAGVIT-2 tokenizer; the defaults are Open-MAGVIT2's 256-px image tokenizer (128 x [1, 1, 2, 2, 4],
    4 ResBlocks per level, 2^18 codes: 16x space) with MAGVIT-v2's 4x causal time compression.

    Attributes:
        block_out_channels: widths per level; ``len - 1`` downsamplings by 2 in space.
        layers_per_block: ResBlocks per level (and in the middle).
        codebook_size: a power of two; LFQ quantizes log2(codebook_size) channels, one bit each.
        temporal_compression: 2**n, n <= len(block_out_channels) - 1: time is halved at the last n levels.
        commitment_weight, entropy_weight, diversity_gamma, entropy_temperature: the LFQ losses
            (``latentflow.quantizers.lfq.LFQConfig``'s ``beta``, ``entropy_weight``, ...).
        reconstruction_loss: "l1" or "mse", averaged per element.
    """

    model_type: ClassVar[str] = "magvit2"

    in_channels: int = 3
    out_channels: int | None = None
    block_out_channels: tuple[int, ...] = (128, 128, 256, 256, 512)
    layers_per_block: int = 4
    norm_num_groups: int = 32
    codebook_size: int = 2**18
    temporal_compression: int = 4
    commitment_weight: float = 0.25
    entropy_weight: float = 0.1
    diversity_gamma: float = 1.0
    entropy_temperature: float = 0.01
    reconstruction_loss: Literal["l1", "mse"] = "l1"

    def validate(self) -> None:
        super().validate()
        check_positive(type(self).__name__, in_channels=self.in_channels, layers_per_block=self.layers_per_block,
                       norm_num_groups=self.norm_num_groups, codebook_size=self.codebook_size,
                       temporal_compression=self.temporal_compression, entropy_temperature=self.entropy_temperature)
        if not self.block_out_channels or any(c <= 0 for c in self.block_out_channels):
            raise ConfigError(f"block_out_channels must be non-empty and > 0, got: {list(self.block_out_channels)}")
        if self.codebook_size < 2 or self.codebook_size & (self.codebook_size - 1):
            raise ConfigError(f"codebook_size must be a power of two >= 2 (LFQ quantizes log2 of it in bits), got: "
                              f"{self.codebook_size}; e.g. {1 << max(1, self.codebook_size.bit_length() - 1)} or "
                              f"{1 << self.codebook_size.bit_length()}")
        s, levels = self.temporal_compression, len(self.block_out_channels) - 1
        if s & (s - 1) or s.bit_length() - 1 > levels:
            raise ConfigError(f"temporal_compression must be a power of two up to 2**(len(block_out_channels) - 1) = "
                              f"{2 ** levels}, got: {s}")
        check_positive(type(self).__name__, commitment_weight=self.commitment_weight,
                       entropy_weight=self.entropy_weight, diversity_gamma=self.diversity_gamma, allow_zero=True)

    @property
    def num_bits(self) -> int:
        return self.codebook_size.bit_length() - 1

    @property
    def resolved_out_channels(self) -> int:
        return self.out_channels or self.in_channels

    @property
    def temporal_levels(self) -> tuple[bool, ...]:
        """Per downsampling (encoder order), whether it also halves time: the last log2(s) ones."""
        levels, n = len(self.block_out_channels) - 1, self.temporal_compression.bit_length() - 1
        return tuple(i >= levels - n for i in range(levels))

    @property
    def quantizer(self) -> dict[str, Any]:
        """The LFQ's JSON config (``latentflow.quantizers``), one bit per latent channel."""
        conf = {"dim": self.num_bits, "codebook_size": self.codebook_size, "beta": self.commitment_weight,
                "entropy_weight": self.entropy_weight, "diversity_gamma": self.diversity_gamma,
                "entropy_temperature": self.entropy_temperature}
        return {"name": "lfq", "configuration": conf}


# ---- model ---------------------------------------------------------------------------------------------
@register
class MagvitV2Model(QuantizedLatentModel):
    """Causal 3D CNN encoder -> LFQ -> causal 3D CNN decoder with adaptive group norms.

    ``latents`` are the quantized bits (+-1): (B, bits, h, w) for images, (B, bits, T', h, w) for clips.
    """

    config_class = MagvitV2Config
    token_ranks: ClassVar[tuple[int, ...]] = (3, 4)
    token_layout: ClassVar[str] = "(B, h, w) or (B, T', h, w)"
    input_rank: ClassVar[int] = 4  # images; clips (rank 5) are taken too

    def __init__(self, config: MagvitV2Config):
        super().__init__(config)
        self.encoder = Encoder(config)
        self.quantizer: Quantizer = quantizer_from_config(config.quantizer)
        self.decoder = Decoder(config)

    # ---- geometry -------------------------------------------------------------------
    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def temporal_downsample_factor(self) -> int:
        """Frames per latent frame after the first."""
        return self.config.temporal_compression

    def latent_frames(self, num_frames: int) -> int:
        return (num_frames - 1) // self.temporal_downsample_factor + 1

    def latent_shape(self, height: int, width: int, frames: int | None = None) -> tuple[int, ...]:
        """(bits, h, w) for an image; (bits, T', h, w) for a clip of ``frames`` frames."""
        f, bits = self.downsample_factor, self.config.num_bits
        return (bits, height // f, width // f) if frames is None else (bits, self.latent_frames(frames), height // f, width // f)

    def check_input(self, x: torch.Tensor) -> None:
        check_clip_input(self, x)

    # ---- the contract -------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> QuantizedEncoderOutput:
        """Images (B, C, H, W) or clips (B, C, 1 + k * s, H, W) in [-1, 1] -> bits, pre-quant features and indices
        ((B, h, w) or (B, 1 + k, h, w)); the first frame is encoded alone."""
        self.check_input(x)
        pre_quant = self.encoder(x if x.ndim == 5 else x.unsqueeze(2))  # (B, bits, t, h, w)
        if x.ndim == 4:
            pre_quant = pre_quant.squeeze(2)
        q = self.quantizer(pre_quant)
        return QuantizedEncoderOutput(latents=q.quantized, pre_quant=pre_quant, indices=q.indices, quantizer_output=q)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        bits = self.config.num_bits
        if not isinstance(latents, torch.Tensor) or latents.ndim not in (4, 5) or latents.shape[1] != bits:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise InputError(f"decode expects latents (B, {bits}, h, w) or (B, {bits}, t, h, w), got: {got}")
        out = self.decoder(latents if latents.ndim == 5 else latents.unsqueeze(2))
        return out if latents.ndim == 5 else out.squeeze(2)

    def decode(self, latents: torch.Tensor) -> DecoderOutput:
        """(B, bits, h, w) -> images (B, C, H, W); (B, bits, t, h, w) -> clips (B, C, 1 + (t - 1) * s, H, W)."""
        out = self._decode(latents)
        if self.config.check_finite:
            check_finite(out, "decoder output")
        return DecoderOutput(sample=out)

    def decode_for_loss(self, latents: torch.Tensor) -> torch.Tensor:
        return self._decode(latents)


# ---- presets ------------------------------------------------------------------------------------------
def open_magvit2_image(**overrides: Any) -> MagvitV2Model:
    """Open-MAGVIT2's 256-px image tokenizer shape (``imagenet_lfqgan_256_L``): 16x, 2^18 codes, images only."""
    return MagvitV2Model(MagvitV2Config.from_dict({"temporal_compression": 1, **overrides}))


def magvit2_video(**overrides: Any) -> MagvitV2Model:
    """MAGVIT-v2's video shape: 8x space (128 x [1, 2, 2, 4]), 4x causal time (17 frames -> 5), 2^18 codes."""
    base = {"block_out_channels": [128, 256, 256, 512], "layers_per_block": 4, "temporal_compression": 4}
    return MagvitV2Model(MagvitV2Config.from_dict({**base, **overrides}))


__all__ = ["MagvitV2Config", "MagvitV2Model", "magvit2_video", "open_magvit2_image"]
