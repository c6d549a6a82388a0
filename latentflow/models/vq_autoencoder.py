"""Quantized autoencoders: a VQ-VAE/VQGAN with any quantizer, and a two-level VQ-VAE-2.

Encoder -> 1x1 ``quant_conv`` -> quantizer -> 1x1 ``post_quant_conv`` -> decoder. The
quantizer is given by its JSON config (:func:`latentflow.quantizers.quantizer_from_config`),
so the same model trains with VQ, FSQ, LFQ, residual VQ, ...; its ``dim`` is filled in
from ``latent_channels``.

Networks: ``architecture="conv"`` uses the compact blocks of ``layers.py``;
``"vqgan"`` uses the latent-diffusion ``Encoder``/``Decoder`` (ResBlocks + mid attention),
as in VQGAN (Esser et al. 2021).

Example::

    cfg = VQAutoencoderConfig(block_out_channels=(32, 64), latent_channels=8,
                              quantizer={"name": "fsq", "configuration": {"levels": [8, 5, 5, 5]}})
    model = VectorQuantizedAutoencoderModel(cfg)
    tokens = model.tokenize(x)                 # (B, H/2, W/2), uint8 up to 256 codes (index_dtype_for)
    x_hat = model.detokenize(tokens)           # (B, 3, H, W)

The hierarchical :class:`VQVAE2Model` (Razavi et al. 2019) quantizes a coarse top grid
first and conditions the finer bottom grid on it; ``tokenize`` returns
:class:`VQVAE2Tokens` (``top``, ``bottom``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentflow.auto import register
from latentflow.configuration import LatentConfig, check_positive
from latentflow.errors import ConfigError, InputError
from latentflow.modeling import LatentModel, check_finite
from latentflow.models.autoencoder import QuantizedLatentModel, reconstruction_loss
from latentflow.models.layers import ConvDecoder, ConvEncoder
from latentflow.outputs import AutoencoderOutput, DecoderOutput, QuantizedEncoderOutput, QuantizerOutput
from latentflow.quantizers.base import Quantizer, quantizer_class_for, quantizer_from_config


# ---- helpers -------------------------------------------------------------------------
def resolve_quantizer(owner: str, quantizer: dict[str, Any], dim: int) -> dict[str, Any]:
    """The quantizer config with ``dim`` filled in, validated; a different ``dim`` is an error."""
    if not isinstance(quantizer, dict) or "name" not in quantizer:
        raise ConfigError(f'{owner}.quantizer must be {{"name": ..., "configuration": {{...}}}}, got: {quantizer!r}')
    conf = dict(quantizer.get("configuration", {}))
    if conf.get("dim", dim) != dim:
        raise ConfigError(f"{owner}: quantizer dim ({conf['dim']}) must equal latent_channels ({dim}); drop 'dim' to have it filled in")
    conf["dim"] = dim
    quantizer_class_for(quantizer["name"]).config_class.from_dict(conf)  # raises on bad settings
    return {"name": quantizer["name"], "configuration": conf}


def build_networks(c: "VQAutoencoderConfig", in_ch: int, out_ch: int, latent_in: int) -> tuple[nn.Module, nn.Module]:
    """(encoder to ``c.latent_channels``, decoder from ``latent_in``) for the chosen architecture."""
    if c.architecture == "vqgan":
        from latentflow.models.ldm_blocks import Decoder, Encoder

        common = dict(block_out_channels=c.block_out_channels, layers_per_block=c.layers_per_block,
                      norm_num_groups=c.norm_num_groups, mid_block_add_attention=c.mid_block_add_attention)
        return (Encoder(in_ch, c.latent_channels, double_z=False, **common), Decoder(latent_in, out_ch, **common))
    return (
        ConvEncoder(in_ch, c.latent_channels, c.block_out_channels, c.layers_per_block, c.norm_num_groups),
        ConvDecoder(latent_in, out_ch, c.block_out_channels, c.layers_per_block, c.norm_num_groups),
    )


# ---- VQ autoencoder ---------------------------------------------------------------------
@dataclass
class VQAutoencoderConfig(LatentConfig):
    """A quantized autoencoder.

    Attributes:
        architecture: "conv" (compact ResBlocks) or "vqgan" (LDM Encoder/Decoder with mid attention).
        block_out_channels: widths per level; ``len - 1`` downsamplings by 2.
        latent_channels: channels the quantizer sees (its ``dim``).
        quantizer: ``{"name": ..., "configuration": {...}}``; ``dim`` may be left out.
        reconstruction_loss: "mse" or "l1", averaged per element.
    """

    model_type: ClassVar[str] = "vq_autoencoder"

    in_channels: int = 3
    out_channels: int | None = None
    architecture: Literal["conv", "vqgan"] = "conv"
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    mid_block_add_attention: bool = True  # vqgan only
    latent_channels: int = 16
    quantizer: dict[str, Any] = field(default_factory=lambda: {"name": "vq", "configuration": {"codebook_size": 512}})
    reconstruction_loss: Literal["mse", "l1"] = "mse"

    def validate(self) -> None:
        super().validate()
        check_positive(type(self).__name__, in_channels=self.in_channels, latent_channels=self.latent_channels,
                       layers_per_block=self.layers_per_block, norm_num_groups=self.norm_num_groups)
        if not self.block_out_channels or any(c <= 0 for c in self.block_out_channels):
            raise ConfigError(f"block_out_channels must be non-empty and > 0, got: {self.block_out_channels}")
        if self.architecture == "vqgan" and any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ConfigError(f"vqgan: norm_num_groups ({self.norm_num_groups}) must divide every width, got: {self.block_out_channels}")
        resolve_quantizer(type(self).__name__, self.quantizer, self.latent_channels)

    @property
    def resolved_out_channels(self) -> int:
        return self.out_channels or self.in_channels

    @property
    def resolved_quantizer(self) -> dict[str, Any]:
        return resolve_quantizer(type(self).__name__, self.quantizer, self.latent_channels)


@register
class VectorQuantizedAutoencoderModel(QuantizedLatentModel):
    """Encoder -> quantizer -> decoder; ``latents`` are quantized features (B, C, h, w)."""

    config_class = VQAutoencoderConfig
    token_layout: ClassVar[str] = "(B, H/f, W/f) (+ a level axis for residual/grouped quantizers)"

    def __init__(self, config: VQAutoencoderConfig):
        super().__init__(config)
        c = config
        self.encoder, self.decoder = build_networks(c, c.in_channels, c.resolved_out_channels, c.latent_channels)
        self.quant_conv = nn.Conv2d(c.latent_channels, c.latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(c.latent_channels, c.latent_channels, 1)
        self.quantizer: Quantizer = quantizer_from_config(c.resolved_quantizer)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        f = self.downsample_factor
        return (self.config.latent_channels, height // f, width // f)

    def encode(self, x: torch.Tensor) -> QuantizedEncoderOutput:
        """(B, C, H, W) -> quantized latents (B, latent_channels, H/f, W/f), pre-quant features, indices."""
        self.check_input(x)
        pre_quant = self.quant_conv(self.encoder(x))
        q = self.quantizer(pre_quant)
        return QuantizedEncoderOutput(latents=q.quantized, pre_quant=pre_quant, indices=q.indices, quantizer_output=q)

    def decode(self, latents: torch.Tensor) -> DecoderOutput:
        out = self.decoder(self.post_quant_conv(latents))
        if self.config.check_finite:
            check_finite(out, "decoder output")
        return DecoderOutput(sample=out)


# ---- VQ-VAE-2 -----------------------------------------------------------------------------
@dataclass
class VQVAE2Tokens:
    """Both token grids of a :class:`VQVAE2Model`: ``top`` (B, H/(f*t), W/(f*t)) and ``bottom`` (B, H/f, W/f)."""

    top: torch.Tensor
    bottom: torch.Tensor


@dataclass
class VQVAE2EncoderOutput(QuantizedEncoderOutput):
    """``latents`` pack both levels for the decoder: ``cat[bottom, nearest_upsample(top)]`` (B, 2C, H/f, W/f).

    ``pre_quant``/``indices``/``quantizer_output`` are the bottom level's; ``top_*`` the top's.
    """

    top_latents: torch.Tensor = None  # type: ignore[assignment]
    top_pre_quant: torch.Tensor = None  # type: ignore[assignment]
    top_indices: torch.Tensor = None  # type: ignore[assignment]
    top_quantizer_output: QuantizerOutput | None = None

    @property
    def tokens(self) -> VQVAE2Tokens:
        return VQVAE2Tokens(top=self.top_indices, bottom=self.indices)


@dataclass
class VQVAE2Config(VQAutoencoderConfig):
    """Two-level VQ-VAE-2: ``block_out_channels`` reach the bottom grid (factor f), ``top_block_out_channels``
    downsample further to the top grid (factor t). ``top_quantizer`` defaults to ``quantizer``."""

    model_type: ClassVar[str] = "vqvae2"

    architecture: Literal["conv"] = "conv"
    top_block_out_channels: tuple[int, ...] = (64, 64)
    top_quantizer: dict[str, Any] | None = None

    def validate(self) -> None:
        super().validate()
        if len(self.top_block_out_channels) < 2 or any(c <= 0 for c in self.top_block_out_channels):
            raise ConfigError(f"top_block_out_channels needs >= 2 positive widths (one downsampling), got: {self.top_block_out_channels}")
        resolve_quantizer(type(self).__name__, self.top_quantizer or self.quantizer, self.latent_channels)


@register
class VQVAE2Model(LatentModel):
    """Hierarchical VQ-VAE: the top codes condition the bottom quantization and both feed the decoder."""

    config_class = VQVAE2Config
    latent_kind: ClassVar[str] = "discrete"

    def __init__(self, config: VQVAE2Config):
        super().__init__(config)
        c, lat = config, config.latent_channels
        hidden = c.block_out_channels[-1]
        self.encoder = ConvEncoder(c.in_channels, hidden, c.block_out_channels, c.layers_per_block, c.norm_num_groups)
        self.top_encoder = ConvEncoder(hidden, lat, c.top_block_out_channels, c.layers_per_block, c.norm_num_groups)
        self.top_decoder = ConvDecoder(lat, lat, c.top_block_out_channels, c.layers_per_block, c.norm_num_groups)
        self.bottom_quant_conv = nn.Conv2d(hidden + lat, lat, 1)  # bottom features conditioned on the top codes
        self.top_quantizer = quantizer_from_config(resolve_quantizer("VQVAE2Config", c.top_quantizer or c.quantizer, lat))
        self.bottom_quantizer = quantizer_from_config(c.resolved_quantizer)
        self.decoder = ConvDecoder(2 * lat, c.resolved_out_channels, c.block_out_channels, c.layers_per_block, c.norm_num_groups)

    @property
    def top_factor(self) -> int:
        return 2 ** (len(self.config.top_block_out_channels) - 1)

    @property
    def downsample_factor(self) -> int:
        """Pixels per bottom-grid position (where the packed latents sit)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        f = self.downsample_factor
        return (2 * self.config.latent_channels, height // f, width // f)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        f = self.downsample_factor * self.top_factor
        if any(s % f for s in x.shape[2:]):
            raise InputError(f"VQVAE2Model's top grid is {f}x smaller than the input: "
                             f"spatial size must be a multiple of {f}, got: {tuple(x.shape[2:])}")

    def _pack(self, bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        return torch.cat([bottom, F.interpolate(top, scale_factor=self.top_factor, mode="nearest")], dim=1)

    def encode(self, x: torch.Tensor) -> VQVAE2EncoderOutput:
        self.check_input(x)
        h = self.encoder(x)  # (B, hidden, H/f, W/f)
        top_pre = self.top_encoder(h)  # (B, C, H/(f t), W/(f t))
        top = self.top_quantizer(top_pre)
        bottom_pre = self.bottom_quant_conv(torch.cat([h, self.top_decoder(top.quantized)], dim=1))
        bottom = self.bottom_quantizer(bottom_pre)
        return VQVAE2EncoderOutput(
            latents=self._pack(bottom.quantized, top.quantized), pre_quant=bottom_pre, indices=bottom.indices,
            quantizer_output=bottom, top_latents=top.quantized, top_pre_quant=top_pre, top_indices=top.indices,
            top_quantizer_output=top,
        )

    def decode(self, latents: torch.Tensor) -> DecoderOutput:
        """Packed latents (B, 2C, H/f, W/f), as in :class:`VQVAE2EncoderOutput`, -> images."""
        out = self.decoder(latents)
        if self.config.check_finite:
            check_finite(out, "decoder output")
        return DecoderOutput(sample=out)

    def tokenize(self, x: torch.Tensor) -> VQVAE2Tokens:
        """Images -> :class:`VQVAE2Tokens` (``top`` coarse grid, ``bottom`` fine grid)."""
        return self.encode(x).tokens

    def detokenize(self, tokens: VQVAE2Tokens | dict[str, torch.Tensor]) -> torch.Tensor:
        """Both token grids (:class:`VQVAE2Tokens` or ``{"top": ..., "bottom": ...}``) -> images."""
        if isinstance(tokens, dict):
            if set(tokens) != {"top", "bottom"}:
                raise InputError(f"VQVAE2 tokens need keys 'top' and 'bottom', got: {sorted(tokens)}")
            tokens = VQVAE2Tokens(**tokens)
        top = self.top_quantizer.indices_to_codes(tokens.top).to(self.dtype)
        bottom = self.bottom_quantizer.indices_to_codes(tokens.bottom).to(self.dtype)
        if bottom.shape[-2:] != tuple(s * self.top_factor for s in top.shape[-2:]):
            raise InputError(f"bottom grid {tuple(bottom.shape[-2:])} must be {self.top_factor}x the top grid {tuple(top.shape[-2:])}")
        return self.decode(self._pack(bottom, top)).sample

    def forward(self, x: torch.Tensor, **kwargs: Any) -> AutoencoderOutput:
        enc = self.encode(x)
        x_hat = self.decode(enc.latents).sample
        rec = reconstruction_loss(x_hat, x, self.config.reconstruction_loss)
        top, bottom = enc.top_quantizer_output, enc.quantizer_output
        losses = {"rec": rec, **{f"top_{k}": v for k, v in top.losses.items()}, **{f"bottom_{k}": v for k, v in bottom.losses.items()}}
        return AutoencoderOutput(reconstruction=x_hat, loss=rec + top.loss + bottom.loss, losses=losses, encoder_output=enc)


# ---- presets ------------------------------------------------------------------------------------
def vqgan_f4(**overrides: Any) -> VectorQuantizedAutoencoderModel:
    """VQGAN-style f4 model with an EMA, k-means-initialised 8192-code codebook."""
    quantizer = {"name": "vq", "configuration": {"codebook_size": 8192, "use_ema": True, "kmeans_init": True, "dead_code_threshold": 1.0}}
    base = {"architecture": "vqgan", "block_out_channels": [128, 256, 512], "layers_per_block": 2, "norm_num_groups": 32,
            "latent_channels": 3, "quantizer": quantizer}
    return VectorQuantizedAutoencoderModel(VQAutoencoderConfig.from_dict({**base, **copy.deepcopy(overrides)}))


def fsq_autoencoder_small(**overrides: Any) -> VectorQuantizedAutoencoderModel:
    """Compact f4 autoencoder with FSQ levels [8, 5, 5, 5] (1000 codes)."""
    base = {"block_out_channels": [32, 64, 64], "latent_channels": 4,
            "quantizer": {"name": "fsq", "configuration": {"levels": [8, 5, 5, 5]}}}
    return VectorQuantizedAutoencoderModel(VQAutoencoderConfig.from_dict({**base, **overrides}))
