"""TiTok (Yu et al. 2024, "An Image is Worth 32 Tokens for Reconstruction and Generation"):
a 1D tokenizer. An image becomes K discrete tokens, not a grid.

How it reads an image (B, 3, S, S), S = ``image_size``, p = ``patch_size``, G = S / p:

- encoder: a ViT over ``[cls, G*G patch tokens, K latent tokens]``; the K latent tokens are
  learned queries (one parameter each, plus their own position embedding). After the blocks only
  the latent tokens are kept, normed and projected to ``codebook_dim``: (B, K, codebook_dim);
- bottleneck: any of our quantizers by its JSON config (default: the reference's VQ, cosine
  codebook, commitment 0.25), on the (B, N, D) layout: indices (B, K);
- decoder: a ViT over ``[cls, G*G mask tokens, K projected codes]``; the mask tokens (one learned
  vector, plus position embeddings) read the image back from the codes; a linear head predicts
  each patch's pixels, and a 3x3 conv smooths patch seams (the reference's single-stage,
  ``is_legacy=False`` decoder head).

Not implemented: the reference's two-stage recipe, where stage 1 trains the decoder to predict
the *proxy codes* of a frozen MaskGIT-VQGAN (cross-entropy over its 1024 codes) and stage 2 fine-tunes
a pixel decoder behind it. It needs that pretrained proxy tokenizer's weights and a second loss path
in the trainer; this family trains single-stage, pixels directly (the reference's TiTok-VQ/VAE ``bl``
variants train the same way), with the stage-1 trainer's losses (L1/L2, perceptual, GAN).

Reference names (bytedance/1d-tokenizer, ``config.model.vq_model.*``) -> ours:

==================================  =================================================
reference                           latentflow ``TiTokConfig``
==================================  =================================================
``dataset.preprocessing.crop_size`` ``image_size``
``vit_enc_patch_size``              ``patch_size`` (one size for encoder and decoder)
``num_latent_tokens``               ``num_latent_tokens`` (K)
``vit_enc_model_size``              ``hidden_size`` / ``num_layers`` / ``num_heads``
                                    (small 512/8/8, base 768/12/12, large 1024/24/16)
``vit_dec_model_size``              ``decoder_hidden_size`` / ``decoder_num_layers`` /
                                    ``decoder_num_heads`` (None: as the encoder)
``token_size``                      ``codebook_dim`` (width of a token where it is quantized)
``codebook_size``                   ``codebook_size``
``use_l2_norm``                     ``quantizer.configuration.cosine`` (default true)
``commitment_cost``                 ``quantizer.configuration.beta`` (default 0.25)
``quantize_mode: vq``               ``quantizer.name`` (``vq``; ``lfq``, ``bsq``, ``gumbel`` also work)
``finetune_decoder`` (two-stage)    not implemented (see above)
==================================  =================================================

Reference figures, not ours: on ImageNet 256x256 the reference reports reconstruction rFID
2.21 for TiTok-L-32 (1.70 for TiTok-B-64, 1.71 for TiTok-S-128), with its two-stage recipe.
No weights are shipped or loaded here; nothing in this repository has measured these.

Example::

    model = TiTokModel(TiTokConfig(image_size=32, patch_size=8, num_latent_tokens=8, hidden_size=64,
                                   num_layers=2, num_heads=4, codebook_size=256, codebook_dim=8))
    tokens = model.tokenize(x)               # x (B, 3, 32, 32) -> (B, 8) uint8 (index_dtype_for(256))
    x_hat = model.detokenize(tokens)         # (B, 3, 32, 32)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from latentflow.auto import register
from latentflow.configuration import LatentConfig, check_positive
from latentflow.errors import ConfigError, InputError
from latentflow.modeling import check_finite
from latentflow.models.autoencoder import QuantizedLatentModel
from latentflow.models.layers import TransformerBlock
from latentflow.models.mae import unpatchify
from latentflow.outputs import DecoderOutput, QuantizedEncoderOutput
from latentflow.quantizers.base import (
    Quantizer,
    quantizer_class_for,
    quantizer_from_config,
)

NORM_EPS = 1e-5  # the reference's blocks use torch's LayerNorm default


# ---- helpers -------------------------------------------------------------------------------
def init_vit_weights(module: nn.Module) -> None:
    """The reference's init: truncated normal (std 0.02) for linear/conv weights, zero biases, unit LayerNorms."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def embedding(*shape: int) -> nn.Parameter:
    """A learned embedding, initialised as the reference's: ``width**-0.5 * randn``."""
    return nn.Parameter(shape[-1] ** -0.5 * torch.randn(*shape))


def resolve_quantizer(c: TiTokConfig) -> dict[str, Any]:
    """The quantizer's JSON config with ``dim = codebook_dim`` and ``codebook_size`` filled in, validated."""
    q = c.quantizer if c.quantizer is not None else {"name": "vq", "configuration": {"cosine": True}}
    if not isinstance(q, dict) or "name" not in q or set(q) - {"name", "configuration"}:
        raise ConfigError(f'TiTokConfig.quantizer must be {{"name": ..., "configuration": {{...}}}} or null, got: {q!r}')
    config_class = quantizer_class_for(q["name"]).config_class
    if "codebook_size" not in config_class.field_types():
        raise ConfigError(f"TiTokConfig: quantizer {q['name']!r} has no codebook_size setting; use one that has "
                          "(vq, lfq, bsq, gumbel), so codebook_size means the same in every TiTok")
    conf = dict(q.get("configuration", {}))
    for key, top, value in (("dim", "codebook_dim", c.codebook_dim), ("codebook_size", "codebook_size", c.codebook_size)):
        if conf.get(key, value) != value:
            raise ConfigError(f"TiTokConfig: quantizer {key} ({conf[key]}) must equal {top} ({value}); drop it to have it filled in")
        conf[key] = value
    config_class.from_dict(conf)  # raises on bad settings (e.g. an LFQ size that is not a power of two)
    return {"name": q["name"], "configuration": conf}


# ---- blocks ----------------------------------------------------------------------------------
class TiTokEncoder(nn.Module):
    """Images (B, C, S, S) -> latent tokens (B, K, codebook_dim), before quantization."""

    def __init__(self, c: TiTokConfig):
        super().__init__()
        d, g2, k = c.hidden_size, c.grid_size**2, c.num_latent_tokens
        self.patch_embed = nn.Conv2d(c.in_channels, d, c.patch_size, stride=c.patch_size)
        self.blocks = nn.ModuleList(TransformerBlock(d, c.num_heads, c.mlp_ratio, norm_eps=NORM_EPS) for _ in range(c.num_layers))
        self.ln_pre = nn.LayerNorm(d, eps=NORM_EPS)
        self.ln_post = nn.LayerNorm(d, eps=NORM_EPS)
        self.proj_out = nn.Linear(d, c.codebook_dim)
        self.apply(init_vit_weights)
        self.class_embedding = embedding(1, 1, d)
        self.position_embedding = embedding(1, 1 + g2, d)  # cls + patches
        self.latent_tokens = embedding(1, k, d)  # the K learned queries that become the tokens
        self.latent_position_embedding = embedding(1, k, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, G*G, D)
        h = torch.cat([self.class_embedding.expand(b, -1, -1), patches], dim=1) + self.position_embedding
        latents = (self.latent_tokens + self.latent_position_embedding).expand(b, -1, -1)  # (B, K, D)
        h = self.ln_pre(torch.cat([h, latents.to(h.dtype)], dim=1))  # (B, 1 + G*G + K, D)
        for block in self.blocks:
            h = block(h)
        k = latents.shape[1]
        return self.proj_out(self.ln_post(h[:, -k:]))  # (B, K, codebook_dim)


class TiTokDecoder(nn.Module):
    """Quantized tokens (B, K, codebook_dim) -> images (B, C, S, S) through G*G mask tokens."""

    def __init__(self, c: TiTokConfig):
        super().__init__()
        d, g2, k, p = c.resolved_decoder_hidden_size, c.grid_size**2, c.num_latent_tokens, c.patch_size
        heads, layers = c.decoder_num_heads or c.num_heads, c.decoder_num_layers or c.num_layers
        self.patch_size, self.channels = p, c.resolved_out_channels
        self.embed = nn.Linear(c.codebook_dim, d)
        self.blocks = nn.ModuleList(TransformerBlock(d, heads, c.mlp_ratio, norm_eps=NORM_EPS) for _ in range(layers))
        self.ln_pre = nn.LayerNorm(d, eps=NORM_EPS)
        self.ln_post = nn.LayerNorm(d, eps=NORM_EPS)
        self.to_pixels = nn.Linear(d, p * p * self.channels)
        self.apply(init_vit_weights)
        self.class_embedding = embedding(1, 1, d)
        self.mask_token = embedding(1, 1, d)
        self.position_embedding = embedding(1, 1 + g2, d)  # cls + mask tokens
        self.latent_position_embedding = embedding(1, k, d)
        self.conv_out = nn.Conv2d(self.channels, self.channels, 3, padding=1)  # last: where the GAN weight is measured

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, g2 = z.shape[0], self.position_embedding.shape[1] - 1
        queries = torch.cat([self.class_embedding, self.mask_token.expand(-1, g2, -1)], dim=1) + self.position_embedding
        codes = self.embed(z) + self.latent_position_embedding  # (B, K, D)
        h = self.ln_pre(torch.cat([queries.expand(b, -1, -1).to(codes.dtype), codes], dim=1))  # (B, 1 + G*G + K, D)
        for block in self.blocks:
            h = block(h)
        patches = self.to_pixels(self.ln_post(h[:, 1 : 1 + g2]))  # (B, G*G, p*p*C)
        return self.conv_out(unpatchify(patches, self.patch_size, self.channels))  # (B, C, S, S)


# ---- config ------------------------------------------------------------------------------------
@dataclass
class TiTokConfig(LatentConfig):
    """A TiTok 1D tokenizer; the defaults are TiTok-S-128's shape (the reference's smallest).

    Attributes:
        image_size: the one input size (learned position embeddings); inputs are (B, C, S, S).
        patch_size: pixels per patch side, for the encoder and the decoder.
        num_latent_tokens: K, tokens per image.
        hidden_size, num_layers, num_heads: the encoder ViT.
        decoder_hidden_size, decoder_num_layers, decoder_num_heads: the decoder ViT (None: as the encoder).
        codebook_size: codes in the quantizer (filled into its configuration).
        codebook_dim: width of a token where it is quantized (the quantizer's ``dim``).
        quantizer: ``{"name": ..., "configuration": {...}}`` without ``dim``/``codebook_size``;
            None: the reference's VQ (``{"name": "vq", "configuration": {"cosine": true}}``, beta 0.25).
        reconstruction_loss: "mse" or "l1", averaged per element.
    """

    model_type: ClassVar[str] = "titok"

    in_channels: int = 3
    out_channels: int | None = None
    image_size: int = 256
    patch_size: int = 16
    num_latent_tokens: int = 128
    hidden_size: int = 512
    num_layers: int = 8
    num_heads: int = 8
    decoder_hidden_size: int | None = None
    decoder_num_layers: int | None = None
    decoder_num_heads: int | None = None
    mlp_ratio: float = 4.0
    codebook_size: int = 4096
    codebook_dim: int = 12
    quantizer: dict[str, Any] | None = None
    reconstruction_loss: Literal["mse", "l1"] = "mse"

    def validate(self) -> None:
        super().validate()
        check_positive(type(self).__name__, in_channels=self.in_channels, image_size=self.image_size,
                       patch_size=self.patch_size, num_latent_tokens=self.num_latent_tokens,
                       hidden_size=self.hidden_size, num_layers=self.num_layers, num_heads=self.num_heads,
                       codebook_size=self.codebook_size, codebook_dim=self.codebook_dim,
                       out_channels=self.out_channels, decoder_hidden_size=self.decoder_hidden_size,
                       decoder_num_layers=self.decoder_num_layers, decoder_num_heads=self.decoder_num_heads,
                       mlp_ratio=self.mlp_ratio)
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size must be a multiple of patch_size, got: {self.image_size} and {self.patch_size}")
        for width, heads in ((self.hidden_size, self.num_heads),
                             (self.resolved_decoder_hidden_size, self.decoder_num_heads or self.num_heads)):
            if width % heads:
                raise ConfigError(f"hidden sizes must be divisible by their head count, got: {width} with {heads} heads")
        resolve_quantizer(self)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def resolved_out_channels(self) -> int:
        return self.out_channels or self.in_channels

    @property
    def resolved_decoder_hidden_size(self) -> int:
        return self.decoder_hidden_size or self.hidden_size

    @property
    def resolved_quantizer(self) -> dict[str, Any]:
        return resolve_quantizer(self)


# ---- model -----------------------------------------------------------------------------------------
@register
class TiTokModel(QuantizedLatentModel):
    """ViT encoder -> K latent tokens -> quantizer -> ViT decoder. ``latents`` are the quantized tokens (B, K, codebook_dim)."""

    config_class = TiTokConfig

    def __init__(self, config: TiTokConfig):
        super().__init__(config)
        self.encoder = TiTokEncoder(config)
        self.quantizer: Quantizer = quantizer_from_config(config.resolved_quantizer)
        self.decoder = TiTokDecoder(config)

    @property
    def downsample_factor(self) -> int:
        """Pixels per patch side (inputs must be multiples; in fact exactly ``image_size``)."""
        return self.config.patch_size

    @property
    def num_latent_tokens(self) -> int:
        return self.config.num_latent_tokens

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        """(K, codebook_dim) whatever the size: the tokens are 1D."""
        return (self.config.num_latent_tokens, self.config.codebook_dim)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        s = self.config.image_size
        if tuple(x.shape[2:]) != (s, s):
            raise InputError(f"TiTok has learned position embeddings for {s}x{s} inputs (image_size), "
                             f"got: {tuple(x.shape[2:])}; resize or crop to {s}x{s}")

    def _check_tokens(self, latents: torch.Tensor) -> None:
        want = (self.config.num_latent_tokens, self.config.codebook_dim)
        if not isinstance(latents, torch.Tensor) or latents.ndim != 3 or tuple(latents.shape[1:]) != want:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise InputError(f"TiTok decodes quantized tokens of shape (B, {want[0]}, {want[1]}), got: {got}")

    def encode(self, x: torch.Tensor) -> QuantizedEncoderOutput:
        """Images (B, C, S, S) -> quantized tokens (B, K, codebook_dim), pre-quant tokens, indices (B, K)."""
        self.check_input(x)
        pre_quant = self.encoder(x)  # (B, K, codebook_dim)
        q = self.quantizer(pre_quant)
        return QuantizedEncoderOutput(latents=q.quantized, pre_quant=pre_quant, indices=q.indices, quantizer_output=q)

    def decode(self, latents: torch.Tensor) -> DecoderOutput:
        """Quantized tokens (B, K, codebook_dim) -> images (B, C, S, S)."""
        self._check_tokens(latents)
        out = self.decoder(latents)
        if self.config.check_finite:
            check_finite(out, "decoder output")
        return DecoderOutput(sample=out)

    def check_token_indices(self, indices: torch.Tensor) -> None:
        k = self.config.num_latent_tokens
        if not isinstance(indices, torch.Tensor) or indices.ndim != 2 or indices.shape[1] != k:
            got = tuple(indices.shape) if isinstance(indices, torch.Tensor) else type(indices).__name__
            raise InputError(f"TiTok detokenizes indices of shape (B, {k}), got: {got}")

    def decode_for_loss(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents)


# ---- presets (the reference's tokenizer shapes at 256x256, patch 16, 4096 codes of width 12) -----------
PRESETS: dict[str, dict[str, Any]] = {
    name: {"image_size": 256, "patch_size": 16, "num_latent_tokens": tokens, "hidden_size": width, "num_layers": layers,
           "num_heads": heads, "codebook_size": 4096, "codebook_dim": 12}
    for name, width, layers, heads, tokens in (("titok_s_128", 512, 8, 8, 128), ("titok_b_64", 768, 12, 12, 64),
                                               ("titok_l_32", 1024, 24, 16, 32))
}


def titok_s_128(**overrides: Any) -> TiTokModel:
    """TiTok-S-128: ViT-S encoder and decoder (512 wide, 8 layers, 8 heads), 128 tokens (51.8 M parameters)."""
    return TiTokModel(TiTokConfig.from_dict({**PRESETS["titok_s_128"], **overrides}))


def titok_b_64(**overrides: Any) -> TiTokModel:
    """TiTok-B-64: ViT-B encoder and decoder (768 wide, 12 layers, 12 heads), 64 tokens (171.9 M parameters)."""
    return TiTokModel(TiTokConfig.from_dict({**PRESETS["titok_b_64"], **overrides}))


def titok_l_32(**overrides: Any) -> TiTokModel:
    """TiTok-L-32: ViT-L encoder and decoder (1024 wide, 24 layers, 16 heads), 32 tokens (606.9 M parameters)."""
    return TiTokModel(TiTokConfig.from_dict({**PRESETS["titok_l_32"], **overrides}))


__all__ = ["PRESETS", "TiTokConfig", "TiTokModel", "titok_b_64", "titok_l_32", "titok_s_128"]
