"""Masked autoencoder (He et al., 2021): a ViT encoder over the visible patches and a
light decoder that predicts the pixels of the masked ones.

``forward`` masks ``mask_ratio`` of the patches at random (``noise=`` makes the mask
reproducible) and returns the loss on masked patches only. ``encode`` runs without
masking, for features; ``decode`` maps a full token set back to an image.

Shapes: L = (image_size / patch_size)**2 patches, tokens (B, 1 + L, D) with a cls token first.

Example::

    mae = MaskedAutoencoderModel(MaskedAutoencoderConfig(image_size=32, patch_size=4))
    out = mae(x)                                 # out.loss, out.pred (B, L, p*p*C), out.mask (B, L)
    feats = mae.encode(x).latents                # (B, 1 + L, D), nothing masked
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from latentflow.auto import register
from latentflow.configuration import LatentConfig
from latentflow.errors import ConfigError, InputError
from latentflow.modeling import LatentModel
from latentflow.models.layers import TransformerBlock, sincos_2d
from latentflow.outputs import DecoderOutput, MaskedAutoencoderOutput, MaskedEncoderOutput


@dataclass
class MaskedAutoencoderConfig(LatentConfig):
    model_type: ClassVar[str] = "mae"

    in_channels: int = 3
    image_size: int = 32
    patch_size: int = 4
    embed_dim: int = 64
    depth: int = 2
    num_heads: int = 4
    decoder_embed_dim: int = 32
    decoder_depth: int = 1
    decoder_num_heads: int = 4
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False

    def validate(self) -> None:
        super().validate()
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size must be a multiple of patch_size, got: {self.image_size} and {self.patch_size}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in [0, 1), got: {self.mask_ratio}")
        for dim, heads in ((self.embed_dim, self.num_heads), (self.decoder_embed_dim, self.decoder_num_heads)):
            if dim % heads or dim % 4:
                raise ConfigError(f"embedding dims must be divisible by their head count and by 4, got: {dim} with {heads} heads")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, p*p*C), patches in raster order, pixels (p, p, C) within a patch."""
    b, c, h, w = imgs.shape
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    """Inverse of :func:`patchify` for square images. (B, L, p*p*C) -> (B, C, H, W)."""
    b, n, _ = x.shape
    g = int(round(n**0.5))
    if g * g != n:
        raise InputError(f"unpatchify needs a square number of patches, got: {n}")
    x = x.reshape(b, g, g, p, p, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(b, channels, g * p, g * p)


def random_masking(x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
    """Keep a random ``1 - mask_ratio`` of the tokens of each sample.

    Args:
        x: (B, L, D) tokens.
        noise: (B, L) scores; the lowest are kept. Pass the same noise for the same mask.
    Returns:
        kept tokens (B, L_keep, D), mask (B, L) with 1 = removed, ids_restore (B, L).
    """
    b, n, d = x.shape
    keep = int(n * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(b, n, device=x.device)
    if noise.shape != (b, n):
        raise InputError(f"noise must have shape {(b, n)}, got: {tuple(noise.shape)}")
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
    mask = torch.ones(b, n, device=x.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return kept, mask, ids_restore


@register
class MaskedAutoencoderModel(LatentModel):
    config_class = MaskedAutoencoderConfig
    # checkpoints written before the shared TransformerBlock named its MLP "ffn"
    legacy_key_renames = ((".mlp.", ".ffn."),)

    def __init__(self, config: MaskedAutoencoderConfig):
        super().__init__(config)
        c = config
        p = c.patch_size
        self.patch_embed = nn.Linear(p * p * c.in_channels, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        grid = c.image_size // p
        self.register_buffer("pos_embed", torch.cat([torch.zeros(1, c.embed_dim), sincos_2d(c.embed_dim, grid)])[None], persistent=False)
        self.blocks = nn.ModuleList(TransformerBlock(c.embed_dim, c.num_heads, c.mlp_ratio) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.embed_dim, eps=1e-6)
        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        self.register_buffer("decoder_pos_embed",
                             torch.cat([torch.zeros(1, c.decoder_embed_dim), sincos_2d(c.decoder_embed_dim, grid)])[None],
                             persistent=False)
        self.decoder_blocks = nn.ModuleList(
            TransformerBlock(c.decoder_embed_dim, c.decoder_num_heads, c.mlp_ratio) for _ in range(c.decoder_depth))
        self.decoder_norm = nn.LayerNorm(c.decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(c.decoder_embed_dim, p * p * c.in_channels)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    @property
    def downsample_factor(self) -> int:
        return self.config.patch_size

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (1 + (height // self.config.patch_size) * (width // self.config.patch_size), self.config.embed_dim)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        s = self.config.image_size
        if tuple(x.shape[2:]) != (s, s):
            raise InputError(f"the MAE has fixed position embeddings for {s}x{s} inputs (image_size), got: {tuple(x.shape[2:])}")

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        return patchify(imgs, self.config.patch_size)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        return unpatchify(x, self.config.patch_size, self.config.in_channels)

    def _encoder(self, x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None):
        tokens = self.patch_embed(self.patchify(x)) + self.pos_embed[:, 1:]  # (B, L, D)
        mask = ids_restore = None
        if mask_ratio > 0:
            tokens, mask, ids_restore = random_masking(tokens, mask_ratio, noise)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        h = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            h = block(h)
        return self.norm(h), mask, ids_restore

    def encode(self, x: torch.Tensor, mask_ratio: float = 0.0, noise: torch.Tensor | None = None) -> MaskedEncoderOutput:
        """Tokens (B, 1 + L_visible, D); no masking unless ``mask_ratio > 0``."""
        self.check_input(x)
        latents, mask, ids_restore = self._encoder(x, mask_ratio, noise)
        return MaskedEncoderOutput(latents=latents, mask=mask, ids_restore=ids_restore)

    def _decoder(self, latents: torch.Tensor, ids_restore: torch.Tensor | None) -> torch.Tensor:
        h = self.decoder_embed(latents)  # (B, 1 + L_keep, Dd)
        if ids_restore is not None:
            b, n = ids_restore.shape
            masks = self.mask_token.expand(b, n + 1 - h.shape[1], -1)
            body = torch.cat([h[:, 1:], masks], dim=1)
            body = torch.gather(body, 1, ids_restore.unsqueeze(-1).expand(-1, -1, h.shape[2]))
            h = torch.cat([h[:, :1], body], dim=1)
        h = h + self.decoder_pos_embed
        for block in self.decoder_blocks:
            h = block(h)
        return self.decoder_pred(self.decoder_norm(h))[:, 1:]  # (B, L, p*p*C)

    def decode(self, latents: torch.Tensor, ids_restore: torch.Tensor | None = None) -> DecoderOutput:
        return DecoderOutput(sample=self.unpatchify(self._decoder(latents, ids_restore)))

    def loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error on removed patches only (per-patch normalized if norm_pix_loss)."""
        target = self.patchify(imgs)
        if self.config.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = (pred - target).pow(2).mean(-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward(self, x: torch.Tensor, mask_ratio: float | None = None, noise: torch.Tensor | None = None,
                **kwargs) -> MaskedAutoencoderOutput:
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        if ratio <= 0:
            raise InputError(f"forward trains on masked patches: mask_ratio must be > 0, got: {ratio}")
        enc = self.encode(x, ratio, noise)
        pred = self._decoder(enc.latents, enc.ids_restore)
        loss = self.loss(x, pred, enc.mask)
        return MaskedAutoencoderOutput(
            reconstruction=self.unpatchify(pred), loss=loss, losses={"rec": loss}, encoder_output=enc,
            pred=pred, mask=enc.mask, ids_restore=enc.ids_restore,
        )


def mae_tiny(**overrides) -> MaskedAutoencoderModel:
    """32x32 images, 4x4 patches, 2 blocks of width 64."""
    return MaskedAutoencoderModel(MaskedAutoencoderConfig.from_dict(overrides))


def mae_small(**overrides) -> MaskedAutoencoderModel:
    """64x64 images, 8x8 patches, 6 blocks of width 192."""
    cfg = {"image_size": 64, "patch_size": 8, "embed_dim": 192, "depth": 6, "num_heads": 6,
           "decoder_embed_dim": 128, "decoder_depth": 2, **overrides}
    return MaskedAutoencoderModel(MaskedAutoencoderConfig.from_dict(cfg))
