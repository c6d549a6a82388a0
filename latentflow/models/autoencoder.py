"""Deterministic autoencoder, with a convolutional or an MLP network.

Conv: (B, C, H, W) -> (B, latent_channels, H/f, W/f), f = 2**(len(block_out_channels) - 1).
MLP:  (B, C, S, S) -> (B, latent_dim), S = sample_size fixed by the config.

Example::

    cfg = AutoencoderConfig(block_out_channels=(32, 64), latent_channels=4)
    model = AutoencoderModel(cfg)
    z = model.encode(x).latents              # (B, 4, H/2, W/2)
    x_hat = model.decode(z).sample
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from latentflow.auto import register
from latentflow.configuration import LatentConfig, check_positive
from latentflow.errors import ConfigError, InputError
from latentflow.modeling import LatentModel, check_finite
from latentflow.models.layers import MLP, ConvDecoder, ConvEncoder
from latentflow.outputs import AutoencoderOutput, DecoderOutput, EncoderOutput
from latentflow.quantizers.base import Quantizer


@dataclass
class AutoencoderConfig(LatentConfig):
    """Geometry and loss of the compact autoencoder families.

    Attributes:
        architecture: "conv" (spatial latents) or "mlp" (a flat latent vector).
        block_out_channels: conv widths per level; one downsampling between levels.
        latent_channels: conv latent channels.
        sample_size: image side; required by "mlp", used by ``sample`` for both.
        hidden_dims: MLP hidden widths; latent_dim: MLP latent size.
        reconstruction_loss: "mse" or "l1", averaged over every element (the ``rec`` term of
            :class:`~latentflow.outputs.AutoencoderOutput`'s loss convention).
    """

    model_type: ClassVar[str] = "autoencoder"

    in_channels: int = 3
    out_channels: int | None = None
    architecture: Literal["conv", "mlp"] = "conv"
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    latent_channels: int = 4
    sample_size: int = 32
    hidden_dims: tuple[int, ...] = (256,)
    latent_dim: int = 32
    reconstruction_loss: Literal["mse", "l1"] = "mse"

    def validate(self) -> None:
        super().validate()
        check_positive(type(self).__name__, in_channels=self.in_channels, latent_channels=self.latent_channels,
                       sample_size=self.sample_size, latent_dim=self.latent_dim,
                       layers_per_block=self.layers_per_block, norm_num_groups=self.norm_num_groups)
        if not self.block_out_channels or any(c <= 0 for c in self.block_out_channels):
            raise ConfigError(f"block_out_channels must be non-empty and > 0, got: {self.block_out_channels}")

    @property
    def resolved_out_channels(self) -> int:
        return self.out_channels or self.in_channels

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1) if self.architecture == "conv" else 1


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Squared ("mse") or absolute ("l1") error averaged over every element: the ``rec`` term of every family."""
    return F.mse_loss(x_hat, x) if kind == "mse" else F.l1_loss(x_hat, x)


class QuantizedLatentModel(LatentModel):
    """The shared half of every family with one quantizer (``self.quantizer``): VQ/FSQ/LFQ autoencoders, TiTok,
    MAGVIT-2. Token indices follow the index dtype rule (``index_dtype_for(codebook_size)``), ``detokenize`` goes
    through the codebook, and training adds the quantizer's already weighted terms to the reconstruction loss.

    Subclasses set ``quantizer`` and implement ``encode`` / ``decode``; ``token_ranks`` and ``token_layout``
    describe the indices ``detokenize`` takes (empty ``token_ranks``: any rank, e.g. residual levels).
    """

    latent_kind: ClassVar[str] = "discrete"
    token_ranks: ClassVar[tuple[int, ...]] = ()
    token_layout: ClassVar[str] = "(B, ...)"
    quantizer: Quantizer

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """Media -> code indices in the smallest integer dtype that holds them."""
        return self.encode(x).indices.to(self.quantizer.index_dtype)

    def check_token_indices(self, indices: torch.Tensor) -> None:
        if not isinstance(indices, torch.Tensor) or (self.token_ranks and indices.ndim not in self.token_ranks):
            got = tuple(indices.shape) if isinstance(indices, torch.Tensor) else type(indices).__name__
            raise InputError(f"{type(self).__name__} detokenizes indices {self.token_layout}, got: {got}")

    def detokenize(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices alone (any integer dtype) -> media."""
        self.check_token_indices(indices)
        return self.decode(self.quantizer.indices_to_codes(indices).to(self.dtype)).sample

    def decode_for_loss(self, latents: torch.Tensor) -> torch.Tensor:
        """The decoder output ``forward`` trains on (families skip checks that ``decode`` makes for users)."""
        return self.decode(latents).sample

    def forward(self, x: torch.Tensor, **kwargs: Any) -> AutoencoderOutput:
        """``loss = rec + quantizer terms`` (commitment, codebook or entropy: weighted by the quantizer config)."""
        enc = self.encode(x)
        x_hat = self.decode_for_loss(enc.latents)
        rec = reconstruction_loss(x_hat, x, self.config.reconstruction_loss)
        q = enc.quantizer_output
        return AutoencoderOutput(reconstruction=x_hat, loss=rec + q.loss, losses={"rec": rec, **q.losses}, encoder_output=enc)


def summed_error(x_hat: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Squared or absolute error summed over every non-batch dim, averaged over the batch (the ELBO's scale)."""
    err = (x_hat - x).pow(2) if kind == "mse" else (x_hat - x).abs()
    return err.flatten(1).sum(1).mean()


@register
class AutoencoderModel(LatentModel):
    """A deterministic autoencoder: no prior, so ``sample`` raises."""

    config_class = AutoencoderConfig
    latent_multiplier: ClassVar[int] = 1  # the VAE doubles the latent for mean and logvar

    def __init__(self, config: AutoencoderConfig):
        super().__init__(config)
        c = config
        if c.architecture == "conv":
            self.encoder = ConvEncoder(
                c.in_channels, c.latent_channels * self.latent_multiplier, c.block_out_channels, c.layers_per_block, c.norm_num_groups)
            self.decoder = ConvDecoder(
                c.latent_channels, c.resolved_out_channels, c.block_out_channels, c.layers_per_block, c.norm_num_groups)
        else:
            pixels = c.in_channels * c.sample_size**2
            self.encoder = MLP((pixels, *c.hidden_dims, c.latent_dim * self.latent_multiplier))
            self.decoder = MLP((c.latent_dim, *reversed(c.hidden_dims), c.resolved_out_channels * c.sample_size**2))

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        c = self.config
        if c.architecture == "mlp":
            return (c.latent_dim,)
        return (c.latent_channels, height // self.downsample_factor, width // self.downsample_factor)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        s = self.config.sample_size
        if self.config.architecture == "mlp" and tuple(x.shape[2:]) != (s, s):
            raise InputError(f"the MLP autoencoder takes {s}x{s} inputs (sample_size), got: {tuple(x.shape[2:])}")

    def _encode_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.encoder(x.flatten(1) if self.config.architecture == "mlp" else x)

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        return EncoderOutput(latents=self._encode_features(x))

    def decode(self, latents: torch.Tensor) -> DecoderOutput:
        c = self.config
        out = self.decoder(latents)
        if c.architecture == "mlp":
            out = out.view(-1, c.resolved_out_channels, c.sample_size, c.sample_size)
        if c.check_finite:
            check_finite(out, "decoder output")
        return DecoderOutput(sample=out)

    def forward(self, x: torch.Tensor, **kwargs) -> AutoencoderOutput:
        enc = self.encode(x)
        x_hat = self.decode(enc.latents).sample
        rec = reconstruction_loss(x_hat, x, self.config.reconstruction_loss)
        return AutoencoderOutput(reconstruction=x_hat, loss=rec, losses={"rec": rec}, encoder_output=enc)


def autoencoder_conv_small(**overrides) -> AutoencoderModel:
    """f4 conv autoencoder, 4 latent channels."""
    return AutoencoderModel(AutoencoderConfig.from_dict({"block_out_channels": [32, 64, 64], **overrides}))


def autoencoder_mlp_mnist(**overrides) -> AutoencoderModel:
    """MLP autoencoder for 28x28 greyscale digits."""
    return AutoencoderModel(AutoencoderConfig.from_dict(
        {"architecture": "mlp", "in_channels": 1, "sample_size": 28, "hidden_dims": [512, 256], "latent_dim": 16, **overrides}))
