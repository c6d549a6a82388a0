"""Tiny random diffusers autoencoders, saved by diffusers itself: shared by the bridge tests.

Each entry is the smallest config of the class that still exercises its real blocks; statistics
the normalization reads (FLUX.2's BatchNorm, LTX's buffers, Cosmos' per-frame tables) are set to
non-trivial values so a wrong rule cannot pass by accident.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from latentflow.models.diffusers_bridge import FAMILIES

_STATS = dict(latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.5, 2.0, 1.25])

TINY: dict[str, dict] = {
    "AutoencoderTiny": dict(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
                            num_decoder_blocks=(1, 1), latent_channels=4),
    "AutoencoderDC": dict(latent_channels=4, attention_head_dim=4, encoder_block_types=("ResBlock", "EfficientViTBlock"),
                          decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 16),
                          decoder_block_out_channels=(8, 16), encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1),
                          encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)), scaling_factor=0.41407),
    "AutoencoderKLFlux2": dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                               up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4, norm_num_groups=4),
    "AutoencoderKLQwenImage": dict(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[False], **_STATS),
    "AutoencoderKLWan": dict(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[True],
                             scale_factor_temporal=2, scale_factor_spatial=2, **_STATS),
    "AutoencoderKLHunyuanVideo": dict(latent_channels=4, block_out_channels=(8, 8, 8), down_block_types=("HunyuanVideoDownBlock3D",) * 3,
                                      up_block_types=("HunyuanVideoUpBlock3D",) * 3, layers_per_block=1, norm_num_groups=4,
                                      spatial_compression_ratio=4, temporal_compression_ratio=4, mid_block_add_attention=False),
    "AutoencoderKLLTXVideo": dict(latent_channels=4, block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                                  layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1), spatio_temporal_scaling=(True, False),
                                  decoder_spatio_temporal_scaling=(True, False), decoder_inject_noise=(False, False, False),
                                  downsample_type=("conv", "conv"), upsample_residual=(False, False), upsample_factor=(1, 1),
                                  patch_size=1, patch_size_t=1, down_block_types=("LTXVideoDownBlock3D",) * 2),
    "AutoencoderKLCogVideoX": dict(block_out_channels=(8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2,
                                   temporal_compression_ratio=2, down_block_types=("CogVideoXDownBlock3D",) * 2,
                                   up_block_types=("CogVideoXUpBlock3D",) * 2),
    "AutoencoderKLMochi": dict(encoder_block_out_channels=(32,) * 4, decoder_block_out_channels=(32,) * 4, latent_channels=4,
                               layers_per_block=(1,) * 5, add_attention_block=(False,) * 5, temporal_expansions=(1, 1, 2),
                               spatial_expansions=(2, 1, 1), scaling_factor=1.25, **_STATS),
    "AutoencoderKLCosmos": dict(latent_channels=4, encoder_block_out_channels=(8,) * 4, decode_block_out_channels=(8,) * 4,
                                attention_resolutions=(), resolution=32, num_layers=1, patch_size=2, spatial_compression_ratio=4,
                                temporal_compression_ratio=4, latents_mean=[0.05 * i - 0.2 for i in range(12)],
                                latents_std=[0.5 + 0.1 * i for i in range(12)]),  # 4 channels x 3 latent frames
    "VQModel": dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                    layers_per_block=1, latent_channels=3, num_vq_embeddings=16, norm_num_groups=4, scaling_factor=0.5),
}
VIDEO = tuple(name for name, fam in FAMILIES.items() if fam.temporal)


def diffusers_or_skip():
    return pytest.importorskip("diffusers", reason="the bridge tests need diffusers: pip install 'latentflow[diffusers]'")


def diffusers_class_or_skip(name: str) -> type:
    diffusers = diffusers_or_skip()
    cls = getattr(diffusers, name, None)
    if cls is None:
        pytest.skip(f"{name} needs diffusers >= {FAMILIES[name].since}, installed: {diffusers.__version__}")
    return cls


def build(name: str, seed: int = 0) -> torch.nn.Module:
    """A tiny random diffusers ``name`` with non-trivial normalization statistics."""
    cls = diffusers_class_or_skip(name)
    torch.manual_seed(seed)
    model = cls(**TINY[name]).eval()
    g = torch.Generator().manual_seed(seed + 1)
    if name == "AutoencoderKLFlux2":
        model.bn.running_mean.copy_(torch.randn(model.bn.running_mean.shape, generator=g))
        model.bn.running_var.copy_(torch.rand(model.bn.running_var.shape, generator=g) + 0.5)
    if name == "AutoencoderKLLTXVideo":
        model.latents_mean.copy_(torch.randn(model.latents_mean.shape, generator=g))
        model.latents_std.copy_(torch.rand(model.latents_std.shape, generator=g) + 0.5)
    return model


def save(name: str, directory, seed: int = 0, **save_kwargs) -> torch.nn.Module:
    model = build(name, seed)
    model.save_pretrained(str(directory), **save_kwargs)
    return model


def images(n: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def reference_latents(vae: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What diffusers' own encode gives: the posterior mode, the deterministic latents, or VQ's pre-quant."""
    out = vae.encode(x)
    if hasattr(out, "latent_dist"):
        return out.latent_dist.mode()
    return out.latent if hasattr(out, "latent") else out.latents


def module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None
