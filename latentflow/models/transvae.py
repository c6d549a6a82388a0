"""TransVAE: a hybrid CNN + Transformer variational autoencoder.

The encoder runs convolutional stages first (ResBlocks, then a downsampling), where
local texture is cheap to model, and transformer stages on the small grid, where
global context matters. Transformer blocks use

* 2D rotary position embeddings (half of each head rotates with the row, half with the
  column), so attention depends only on relative offsets and the model runs at sizes it
  was not trained at; for comparison, ``pos_embedding="absolute"`` swaps in a learned
  table initialised sin-cos (as MAE), ``"learned"`` one initialised at random (as ViT);
  both are bicubically resized to other grids;
* RMSNorm, with QK-normalisation (RMSNorm per head on queries and keys);
* a convolutional FFN (linear -> depthwise 3x3 conv -> SiLU-gated -> linear).

Every down/upsampling has a DC path (as in DC-AE's residual autoencoding): a
parameter-free, information-preserving shortcut, space-to-channel followed by
channel averaging on the way down, channel duplication followed by channel-to-space on
the way up. The latent projection has the same kind of shortcut. The decoder mirrors
the encoder. Downsample factor ``f = 2 ** (len(block_out_channels) + len(transformer_depths) - 1)``.

Example::

    model = transvae_tiny()
    post = model.encode(x).latent_dist          # x: (B, 3, H, W), H, W multiples of f
    x_hat = model.decode(post.mode()).sample
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentflow.auto import register
from latentflow.configuration import LatentConfig, check_positive
from latentflow.errors import ConfigError
from latentflow.modeling import LatentModel, check_finite
from latentflow.models.autoencoder import reconstruction_loss
from latentflow.models.layers import ResBlock, TransformerBlock, group_norm, sincos_2d
from latentflow.outputs import AutoencoderOutput, DecoderOutput, DiagonalGaussian, VariationalEncoderOutput

# ---- DC path: parameter-free shortcuts -------------------------------------------------


def space_to_channel(x: torch.Tensor, out_channels: int, factor: int = 2) -> torch.Tensor:
    """Pixel-unshuffle, then average groups of channels down to ``out_channels``.

    (B, C, H, W) -> (B, out_channels, H/f, W/f); needs ``C * f**2 % out_channels == 0``.
    With ``out_channels == C * f**2`` it is a bijection (inverse: :func:`channel_to_space`).
    """
    x = F.pixel_unshuffle(x, factor)  # (B, C*f*f, H/f, W/f)
    return average_channels(x, out_channels)


def channel_to_space(x: torch.Tensor, out_channels: int, factor: int = 2) -> torch.Tensor:
    """Duplicate channels up to ``out_channels * f**2``, then pixel-shuffle.

    (B, C, H, W) -> (B, out_channels, H*f, W*f); needs ``out_channels * f**2 % C == 0``.
    """
    x = duplicate_channels(x, out_channels * factor * factor)
    return F.pixel_shuffle(x, factor)


def average_channels(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Mean over consecutive groups of ``C / out_channels`` channels. (B, C, ...) -> (B, out, ...)."""
    b, c = x.shape[:2]
    return x.view(b, out_channels, c // out_channels, *x.shape[2:]).mean(dim=2)


def duplicate_channels(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Repeat each channel ``out_channels / C`` times. (B, C, ...) -> (B, out, ...)."""
    return x.repeat_interleave(out_channels // x.shape[1], dim=1)


class DCDownsample(nn.Module):
    """Stride-2 conv plus the space-to-channel shortcut. (B, Cin, H, W) -> (B, Cout, H/2, W/2)."""

    def __init__(self, in_ch: int, out_ch: int, shortcut: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)
        self.out_ch, self.shortcut = out_ch, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return h + space_to_channel(x, self.out_ch) if self.shortcut else h


class DCUpsample(nn.Module):
    """Conv to 4x channels + pixel-shuffle, plus the channel-to-space shortcut. (B, Cin, H, W) -> (B, Cout, 2H, 2W)."""

    def __init__(self, in_ch: int, out_ch: int, shortcut: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch * 4, 3, padding=1)
        self.out_ch, self.shortcut = out_ch, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.pixel_shuffle(self.conv(x), 2)
        return h + channel_to_space(x, self.out_ch) if self.shortcut else h


# ---- transformer stages --------------------------------------------------------------------
# The block is the shared one (models/layers.py) with TransVAE's choices: RMSNorm, QK-norm,
# 2D RoPE and the conv FFN. Its keys (norm1, attn.{qkv,q_norm,k_norm,proj}, norm2, ffn.*) are
# the ones the shipped checkpoints were written with.


class TransformerStage(nn.Module):
    """Blocks on a (B, D, h, w) map, with an optional absolute position table. Same shape out."""

    def __init__(self, dim: int, depth: int, config: "TransVAEConfig", train_grid: int):
        super().__init__()
        rope_base = config.rope_base if config.pos_embedding == "rope" else None
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, config.num_heads, config.ffn_ratio, norm="rms", ffn="conv", qk_norm=True, rope_base=rope_base)
            for _ in range(depth)
        )
        self.pos_embed = None
        if config.pos_embedding == "absolute":  # learned, sin-cos initialised at the training grid
            table = sincos_2d(dim, train_grid).T.reshape(1, dim, train_grid, train_grid)
            self.pos_embed = nn.Parameter(table.clone())
        elif config.pos_embedding == "learned":  # learned from a random start (ViT)
            self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, dim, train_grid, train_grid), std=0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w = x.shape
        if self.pos_embed is not None:
            pos = self.pos_embed
            if pos.shape[-2:] != (h, w):
                pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)
            x = x + pos.to(x.dtype)
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, D)
        for block in self.blocks:
            tokens = block(tokens, (h, w))
        return tokens.transpose(1, 2).reshape(b, d, h, w)


# ---- config ------------------------------------------------------------------------------


@dataclass
class TransVAEConfig(LatentConfig):
    """Geometry of a TransVAE.

    Attributes:
        block_out_channels: CNN stage widths; each stage is ResBlocks then a DC downsampling.
        layers_per_block: ResBlocks per CNN stage.
        transformer_dim: width of the transformer stages.
        transformer_depths: blocks per transformer stage; stages after the first start
            with a DC downsampling. Together with ``block_out_channels`` this sets the
            compression: ``f = 2 ** (len(block_out_channels) + len(transformer_depths) - 1)``.
        num_heads: attention heads; ``transformer_dim / num_heads`` must be a multiple of 4 (2D RoPE).
        ffn_ratio: conv-FFN hidden width / transformer_dim.
        pos_embedding: "rope" (relative, extrapolates), or a learned absolute table resized to
            other grids: "absolute" (sin-cos initialised) or "learned" (random initialised).
        rope_base: RoPE frequency base (positions are token indices).
        sample_size: training image side; sets the absolute table's grid.
        latent_channels: latent dimension per position.
        dc_shortcut: use the parameter-free DC shortcuts.
        kl_weight: weight of KL(q(z|x) || N(0, I)), summed over latent elements, against a
            reconstruction loss averaged over pixels (latent-diffusion convention).
        reconstruction_loss: "mse" or "l1", mean over elements.
    """

    model_type: ClassVar[str] = "transvae"

    in_channels: int = 3
    out_channels: int | None = None
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    transformer_dim: int = 128
    transformer_depths: tuple[int, ...] = (2,)
    num_heads: int = 4
    ffn_ratio: float = 2.0
    pos_embedding: Literal["rope", "absolute", "learned"] = "rope"
    rope_base: float = 100.0
    sample_size: int = 32
    latent_channels: int = 16
    dc_shortcut: bool = True
    kl_weight: float = 1e-6
    reconstruction_loss: Literal["mse", "l1"] = "mse"

    def validate(self) -> None:
        super().validate()
        check_positive(type(self).__name__, in_channels=self.in_channels, layers_per_block=self.layers_per_block,
                       norm_num_groups=self.norm_num_groups, transformer_dim=self.transformer_dim,
                       num_heads=self.num_heads, sample_size=self.sample_size, latent_channels=self.latent_channels)
        if not self.block_out_channels or any(c <= 0 for c in self.block_out_channels):
            raise ConfigError(f"block_out_channels must be non-empty and > 0, got: {self.block_out_channels}")
        if not self.transformer_depths or any(d < 0 for d in self.transformer_depths):
            raise ConfigError(f"transformer_depths must be non-empty and >= 0, got: {self.transformer_depths}")
        if self.transformer_dim % self.num_heads or (self.transformer_dim // self.num_heads) % 4:
            raise ConfigError(
                f"transformer_dim / num_heads must be a multiple of 4 (2D RoPE), got: {self.transformer_dim} / {self.num_heads}"
            )
        if self.kl_weight < 0 or self.ffn_ratio <= 0 or self.rope_base <= 1:
            raise ConfigError(
                f"need kl_weight >= 0, ffn_ratio > 0, rope_base > 1, got: {self.kl_weight}, {self.ffn_ratio}, {self.rope_base}"
            )
        if self.sample_size % self.downsample_factor:
            raise ConfigError(f"sample_size must be a multiple of the downsample factor {self.downsample_factor}, got: {self.sample_size}")
        if self.dc_shortcut:
            self._validate_shortcuts()

    def _validate_shortcuts(self) -> None:
        """The DC shortcuts average/duplicate whole channel groups: widths must divide."""
        widths = [*self.block_out_channels, self.transformer_dim]
        for a, b in zip(widths[:-1], widths[1:]):
            if (4 * a) % b or (4 * b) % a:
                raise ConfigError(f"dc_shortcut needs 4*{a} divisible by {b} and 4*{b} by {a} (stage widths), or dc_shortcut=False")
        if self.transformer_dim % self.latent_channels:
            raise ConfigError(
                f"dc_shortcut needs transformer_dim divisible by latent_channels, got: {self.transformer_dim} and {self.latent_channels}"
            )

    @property
    def resolved_out_channels(self) -> int:
        return self.out_channels or self.in_channels

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) + len(self.transformer_depths) - 1)

    @property
    def compression_ratio(self) -> float:
        """Input elements / latent elements: ``in_channels * f**2 / latent_channels``."""
        return self.in_channels * self.downsample_factor**2 / self.latent_channels


# ---- encoder / decoder ---------------------------------------------------------------------


class TransVAEEncoder(nn.Module):
    """(B, 3, H, W) -> posterior moments (B, 2*latent, H/f, W/f)."""

    def __init__(self, c: TransVAEConfig):
        super().__init__()
        chans, dim, sc = c.block_out_channels, c.transformer_dim, c.dc_shortcut
        self.conv_in = nn.Conv2d(c.in_channels, chans[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, ch in enumerate(chans):  # each stage ends by moving to the next stage's width
            layers += [ResBlock(ch, ch, c.norm_num_groups) for _ in range(c.layers_per_block)]
            layers.append(DCDownsample(ch, chans[i + 1] if i + 1 < len(chans) else dim, sc))
        self.cnn = nn.Sequential(*layers)
        grid = c.sample_size // 2 ** len(chans)
        stages: list[nn.Module] = []
        for j, depth in enumerate(c.transformer_depths):
            if j > 0:
                stages.append(DCDownsample(dim, dim, sc))
                grid //= 2
            stages.append(TransformerStage(dim, depth, c, grid))
        self.transformer = nn.Sequential(*stages)
        self.norm_out = nn.RMSNorm(dim, eps=1e-6)
        self.proj_out = nn.Conv2d(dim, 2 * c.latent_channels, 1)
        self.latent_channels, self.shortcut = c.latent_channels, sc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.transformer(self.cnn(self.conv_in(x)))  # (B, D, h, w)
        moments = self.proj_out(self.norm_out(h.movedim(1, -1)).movedim(-1, 1))  # (B, 2L, h, w)
        if self.shortcut:  # DC path into the posterior mean only
            mean, logvar = moments.chunk(2, dim=1)
            moments = torch.cat([mean + average_channels(h, self.latent_channels), logvar], dim=1)
        return moments


class TransVAEDecoder(nn.Module):
    """Mirror of the encoder: latents (B, L, h, w) -> image (B, 3, h*f, w*f)."""

    def __init__(self, c: TransVAEConfig):
        super().__init__()
        chans, dim, sc = tuple(reversed(c.block_out_channels)), c.transformer_dim, c.dc_shortcut
        self.proj_in = nn.Conv2d(c.latent_channels, dim, 1)
        grid = c.sample_size // c.downsample_factor
        stages: list[nn.Module] = []
        for j, depth in enumerate(reversed(c.transformer_depths)):
            if j > 0:
                stages.append(DCUpsample(dim, dim, sc))
                grid *= 2
            stages.append(TransformerStage(dim, depth, c, grid))
        self.transformer = nn.Sequential(*stages)
        layers: list[nn.Module] = []
        prev = dim
        for ch in chans:
            layers.append(DCUpsample(prev, ch, sc))
            layers += [ResBlock(ch, ch, c.norm_num_groups) for _ in range(c.layers_per_block)]
            prev = ch
        self.cnn = nn.Sequential(*layers)
        self.norm_out = group_norm(prev, c.norm_num_groups)
        self.conv_out = nn.Conv2d(prev, c.resolved_out_channels, 3, padding=1)
        self.dim, self.shortcut = dim, sc

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.proj_in(z)
        if self.shortcut:
            h = h + duplicate_channels(z, self.dim)
        h = self.cnn(self.transformer(h))
        return self.conv_out(F.silu(self.norm_out(h)))


# ---- model -----------------------------------------------------------------------------------


@register
class TransVAEModel(LatentModel):
    """Hybrid CNN + Transformer VAE with a diagonal Gaussian posterior and an N(0, I) prior."""

    config_class = TransVAEConfig

    def __init__(self, config: TransVAEConfig):
        super().__init__(config)
        self.encoder = TransVAEEncoder(config)
        self.decoder = TransVAEDecoder(config)

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        f = self.downsample_factor
        return (self.config.latent_channels, height // f, width // f)

    def encode(self, x: torch.Tensor) -> VariationalEncoderOutput:
        """Posterior over latents. ``latents`` is its mean (B, L, H/f, W/f)."""
        self.check_input(x)
        posterior = DiagonalGaussian.from_moments(self.encoder(x), dim=1)
        return VariationalEncoderOutput(latents=posterior.mode(), latent_dist=posterior)

    def decode(self, latents: torch.Tensor) -> DecoderOutput:
        """Latents (B, L, h, w) -> images (B, C, h*f, w*f)."""
        out = self.decoder(latents)
        if self.config.check_finite:
            check_finite(out, "decoder output")
        return DecoderOutput(sample=out)

    def forward(self, x: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None,
                **kwargs) -> AutoencoderOutput:
        """Negative-ELBO-style loss: ``rec (mean over elements) + kl_weight * KL (sum per sample, batch mean)``."""
        enc = self.encode(x)
        post = enc.latent_dist
        z = post.sample(generator) if sample_posterior else post.mode()
        x_hat = self.decode(z).sample
        rec = reconstruction_loss(x_hat, x, self.config.reconstruction_loss)
        kl = post.kl().mean()
        loss = rec + self.config.kl_weight * kl
        return AutoencoderOutput(reconstruction=x_hat, loss=loss, losses={"rec": rec, "kl": kl}, encoder_output=enc)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode ``num_samples`` N(0, I) draws at ``sample_size``. (N, C, S, S)."""
        if num_samples <= 0:
            raise ValueError(f"num_samples must be > 0, got: {num_samples}")
        s = self.config.sample_size
        z = torch.randn((num_samples, *self.latent_shape(s, s)), generator=generator, dtype=self.dtype).to(self.device)
        return self.decode(z).sample


# ---- named variants ----------------------------------------------------------------------------

TRANSVAE_VARIANTS: dict[str, dict] = {
    # f8, 16 channels: 12x fewer elements than pixels. ~0.6M parameters.
    "tiny": {"block_out_channels": [16, 32], "transformer_dim": 64, "transformer_depths": [1, 1], "num_heads": 2, "latent_channels": 16},
    # f16, 32 channels: 24x.
    "base": {"block_out_channels": [64, 128, 256], "transformer_dim": 512, "transformer_depths": [2, 2], "num_heads": 8,
             "latent_channels": 32, "sample_size": 256},
    # f16, 32 channels, deeper and wider.
    "large": {"block_out_channels": [128, 256, 512], "layers_per_block": 2, "transformer_dim": 768, "transformer_depths": [4, 4],
              "num_heads": 12, "latent_channels": 32, "sample_size": 256},
}


def transvae_config(variant: str, **overrides) -> TransVAEConfig:
    """Config of a named variant (``tiny``/``base``/``large``) with ``overrides`` applied."""
    if variant not in TRANSVAE_VARIANTS:
        raise ConfigError(f"unknown TransVAE variant {variant!r}; expected one of: {sorted(TRANSVAE_VARIANTS)}")
    return TransVAEConfig.from_dict({**TRANSVAE_VARIANTS[variant], **overrides})


def transvae_tiny(**overrides) -> TransVAEModel:
    """f8, 16 latent channels, one transformer block per stage; for tests and CPU training."""
    return TransVAEModel(transvae_config("tiny", **overrides))


def transvae_base(**overrides) -> TransVAEModel:
    """f16, 32 latent channels."""
    return TransVAEModel(transvae_config("base", **overrides))


def transvae_large(**overrides) -> TransVAEModel:
    """f16, 32 latent channels, twice the depth."""
    return TransVAEModel(transvae_config("large", **overrides))
