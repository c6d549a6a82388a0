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
    # ---- image ----
    "AsymmetricAutoencoderKL": dict(down_block_types=("DownEncoderBlock2D",) * 2, down_block_out_channels=(8, 16), layers_per_down_block=1,
                                    up_block_types=("UpDecoderBlock2D",) * 2, up_block_out_channels=(8, 16), layers_per_up_block=1,
                                    latent_channels=4, norm_num_groups=4, scaling_factor=0.5),
    "AutoencoderKLHunyuanImage": dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32), layers_per_block=1,
                                      spatial_compression_ratio=2, sample_size=16, scaling_factor=0.75),
    "AutoencoderKLKVAE": dict(channels=32, num_enc_blocks=1, num_dec_blocks=1, z_channels=4, ch_mult=(1, 1), sample_size=16),
    "AutoencoderRAE": dict(encoder_type="dinov2", encoder_hidden_size=64, encoder_patch_size=8, encoder_num_hidden_layers=1,
                           decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=4, decoder_intermediate_size=64,
                           patch_size=8, encoder_input_size=16, latents_mean=[[[0.1]]] * 64, latents_std=[[[2.0]]] * 64,
                           scaling_factor=1.5),
    "ConsistencyDecoderVAE": dict(latent_channels=4, encoder_block_out_channels=(8, 16),
                                  encoder_down_block_types=("DownEncoderBlock2D",) * 2,
                                  encoder_layers_per_block=1, encoder_norm_num_groups=4, decoder_block_out_channels=(8, 16),
                                  decoder_down_block_types=("ResnetDownsampleBlock2D",) * 2,
                                  decoder_up_block_types=("ResnetUpsampleBlock2D",) * 2,
                                  decoder_layers_per_block=1, decoder_norm_num_groups=4),
    # ---- video ----
    "AutoencoderKLAllegro": dict(down_block_types=("AllegroDownBlock3D",) * 4, up_block_types=("AllegroUpBlock3D",) * 4,
                                 block_out_channels=(4,) * 4,
                                 temporal_downsample_blocks=(True, False, False, False),
                                 temporal_upsample_blocks=(False, False, True, False),
                                 latent_channels=4, layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=2,
                                 sample_size=128),  # its tiles are 24 x sample_size^2 with fixed overlaps (8, 120, 80): sample_size > 120
    "AutoencoderKLHunyuanImageRefiner": dict(latent_channels=4, block_out_channels=(32, 32, 32), layers_per_block=1,
                                             spatial_compression_ratio=4,
                                             temporal_compression_ratio=4),
    "AutoencoderKLHunyuanVideo15": dict(latent_channels=4, block_out_channels=(32,) * 4, layers_per_block=1, spatial_compression_ratio=8,
                                        temporal_compression_ratio=2),
    "AutoencoderKLKVAEVideo": dict(ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=4, temporal_compress_times=2),
    "AutoencoderKLLTX2Video": dict(latent_channels=4, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(16, 32, 64),
                                   layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
                                   spatio_temporal_scaling=(True, True, True, True), decoder_spatio_temporal_scaling=(True, True, True),
                                   decoder_inject_noise=(False, False, False, False),
                                   downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
                                   upsample_residual=(True, True, True),
                                   upsample_factor=(2, 2, 2), patch_size=1, patch_size_t=1, decoder_causal=False,
                                   decoder_spatial_padding_mode="zeros", scaling_factor=0.8),
    "AutoencoderKLMagvit": dict(latent_channels=4, block_out_channels=[8, 8, 8], layers_per_block=1, norm_num_groups=8,
                                down_block_types=["SpatialDownBlock3D", "SpatialTemporalDownBlock3D", "SpatialTemporalDownBlock3D"],
                                up_block_types=["SpatialUpBlock3D", "SpatialTemporalUpBlock3D", "SpatialTemporalUpBlock3D"]),
    "AutoencoderKLMiniMaxH3": dict(latent_channels=4, block_out_channels=(8, 16), layers_per_block=1, spatial_downsample_factors=(2, 2),
                                   temporal_downsample_factors=(2, 2), norm_num_groups=8, decoder_num_layers=2,
                                   decoder_num_attention_heads=2,
                                   decoder_attention_head_dim=8, decoder_num_register_tokens=2, decoder_ffn_mult=2, **_STATS),
    "AutoencoderKLQwenImage21": dict(base_dim=4, decoder_base_dim=4, z_dim=4, dim_mult=[1, 1, 1], num_res_blocks=1,
                                     temperal_downsample=[False, True],
                                     scale_factor_spatial=4, scale_factor_temporal=2, **_STATS),
    "AutoencoderKLTemporalDecoder": dict(down_block_types=("DownEncoderBlock2D",) * 2, block_out_channels=(32, 32), layers_per_block=1,
                                         latent_channels=4, scaling_factor=0.6),
    "AutoencoderVidTok": dict(ch=8, ch_mult=[1, 2, 2], z_channels=4, num_res_blocks=1),
    "Kandinsky6SRVAE": dict(latent_channels=4, encoder_block_out_channels=(4, 8, 8), decoder_block_out_channels=(4, 8, 8),
                            layers_per_block=1,
                            temporal_compression_ratio=4, temporal_compression_start_level=0),
    "LTX2VideoDiffusionDecoderModel": dict(latent_channels=4, patch_size=2, decoder_head_dim=8, decoder_stage_channels=(16, 16, 8, 8, 8),
                                           decoder_stage_depths=(1,) * 5, decoder_stage_kernels=((3, 3, 3),) * 4,
                                           decoder_upsample_strides=((1, 1, 1), (2, 1, 1), (2, 2, 2), (2, 2, 2)),
                                           decoder_upsample_channel_reductions=(1, 2, 1, 1), decoder_stage5_kernel=(3, 3, 3),
                                           decoder_t_emb_dim=16,
                                           spatial_compression_ratio=8, temporal_compression_ratio=8, scaling_factor=0.8),
    # ---- audio ----
    "AutoencoderKLLTX2Audio": dict(base_channels=16, output_channels=2, ch_mult=(1, 2, 4), num_res_blocks=1, in_channels=2,
                                   latent_channels=4,
                                   mel_bins=16),  # base_channels = latent_channels * mel_bins / 4: the size of its statistics
    "AutoencoderKLKVAEAudio": dict(encoder_dim=4, encoder_rates=[2, 3], codebook_dim=4, decoder_dim=16, decoder_rates=[3, 2],
                                   num_channels=1),
    "AutoencoderKLMiniMaxH3Audio": dict(encoder_dim=4, encoder_rates=(2, 2), latent_dim=32, latent_channels=4, num_attention_heads=2,
                                        decoder_dim=16,
                                        decoder_rates=(2, 2), decoder_kernel_sizes=(4, 4), resblock_kernel_sizes=(3, 7),
                                        resblock_dilation_sizes=((1, 3), (1, 3)), **_STATS),
    "AutoencoderSAME": dict(audio_channels=2, patch_size=4, encoder_channels=16, encoder_c_mults=[1, 2], encoder_strides=[2, 2],
                            encoder_transformer_depths=[1, 1], latent_dim=8, use_differential_attention=False, dim_heads=8, ff_mult=2),
    "Cosmos3AVAEAudioTokenizer": dict(sampling_rate=16, hop_size=4, input_channels=1, stereo=True, normalize_volume=True, enc_dim=4,
                                      enc_num_blocks=1,
                                      enc_n_fft=8, enc_hop_length=2, enc_latent_dim=8, enc_c_mults=(1,), enc_strides=(2,),
                                      vocoder_input_dim=4,
                                      dec_dim=4, dec_c_mults=(1, 2), dec_strides=(2, 2), dec_out_channels=2),
    "LongCatAudioDiTVae": dict(in_channels=1, channels=8, c_mults=[1, 2], strides=[2, 2], latent_dim=4, encoder_latent_dim=8,
                               downsampling_ratio=4),
    "MMAudioVAE": dict(mel_bins=16, latent_channels=4, hidden_channels=16, channel_multipliers=(1, 2), layers_per_block=1, n_fft=64,
                       hop_length=16),
}
VIDEO = tuple(name for name, fam in FAMILIES.items() if fam.layout == "CTHW")
AUDIO = tuple(name for name, fam in FAMILIES.items() if fam.modality == "audio")
DECODE_ONLY = tuple(name for name, fam in FAMILIES.items() if fam.encoder(TINY.get(name, {})))


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
    if name in ("AutoencoderKLLTXVideo", "AutoencoderKLLTX2Video", "AutoencoderKLLTX2Audio", "LTX2VideoDiffusionDecoderModel"):
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
    if isinstance(out, tuple):
        out = out[0]
    if hasattr(out, "latent_dist"):
        return out.latent_dist.mode()
    return out.latent if hasattr(out, "latent") else out.latents


# Inputs each class takes through the bridge: (B, ...) in [-1, 1]; LTX-2 audio takes log-mel-like values.
_CLIPS = {"AutoencoderKLAllegro": (1, 3, 24, 128, 128), "AutoencoderKLMiniMaxH3": (1, 3, 22, 8, 8), "AutoencoderVidTok": (2, 3, 9, 16, 16)}
_AUDIO = {"AutoencoderKLLTX2Audio": (2, 2, 17, 16), "AutoencoderKLKVAEAudio": (2, 1, 36),
          "AutoencoderKLMiniMaxH3Audio": (2, 1, 32), "AutoencoderSAME": (2, 2, 128), "Cosmos3AVAEAudioTokenizer": (2, 2, 16),
          "LongCatAudioDiTVae": (2, 1, 64), "MMAudioVAE": (2, 1, 256)}


def sample_input(name: str, seed: int = 0) -> torch.Tensor:
    """The tiny input of ``name``: images (2, C, 16, 16), its clip shape, or its audio shape."""
    g = torch.Generator().manual_seed(seed)
    shape = _AUDIO.get(name) or _CLIPS.get(name)
    if shape is None:
        channels = 4 if name == "AutoencoderKLQwenImage21" else 3  # Qwen-Image 2.1 encodes RGBA
        shape = (2, channels, 16, 16)
    return torch.rand(shape, generator=g) * 2 - 1


def reference_encode(name: str, vae: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """diffusers' own encode of the bridge's input ``x``, written as a caller of the diffusers class would."""
    if name in VIDEO and x.ndim == 4:
        x = x.unsqueeze(2)  # (B, C, 1, H, W): how QwenImagePipeline encodes images
    if name == "AutoencoderRAE":  # takes [0, 1] pixels
        return vae.encode((x + 1) / 2).latent
    if name == "AutoencoderKLTemporalDecoder":  # StableVideoDiffusionPipeline: frames through the 2D encoder
        b, _, t = x.shape[:3]
        return vae.encode(x.transpose(1, 2).flatten(0, 1)).latent_dist.mode().unflatten(0, (b, t)).transpose(1, 2)
    if name == "AutoencoderKLAllegro":
        vae.enable_tiling()
    if name == "AutoencoderKLHunyuanVideo15":  # one sample at a time (its encoder breaks on batches > 1)
        return torch.cat([reference_latents(vae, xi) for xi in x.split(1)])
    if name == "MMAudioVAE":  # mono waveforms (B, N)
        return vae.encode(x[:, 0]).latent_dist.mode()
    if name == "LongCatAudioDiTVae":  # its encode samples unless told not to
        return vae.encode(x, sample_posterior=False).latents
    return reference_latents(vae, x)


def reference_decode(name: str, vae: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """diffusers' own decode of raw latents ``z``, in the bridge's output range and shape."""
    if name in VIDEO and z.ndim == 4:
        z = z.unsqueeze(2)
    if name == "AutoencoderKLTemporalDecoder":  # StableVideoDiffusionPipeline.decode_latents: decode(z, num_frames)
        b, _, t = z.shape[:3]
        out = vae.decode(z.transpose(1, 2).flatten(0, 1), num_frames=t).sample.unflatten(0, (b, t)).transpose(1, 2)
    else:
        if name == "AutoencoderKLAllegro":
            vae.enable_tiling()
        if name == "AutoencoderKLHunyuanVideo15":
            out = torch.cat([vae.decode(zi).sample for zi in z.split(1)])
        else:
            out = vae.decode(z)
            out = out if isinstance(out, torch.Tensor) else out.sample
        if name == "AutoencoderKLAllegro":  # AllegroPipeline.decode_latents: (B, T, C, H, W) -> (B, C, T, H, W)
            out = out.permute(0, 2, 1, 3, 4)
    if name == "AutoencoderRAE":
        out = out * 2 - 1
    return out.squeeze(2) if name in VIDEO and out.ndim == 5 and out.shape[2] == 1 else out


def module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# The image encode job's journey (tests/models/test_diffusers_encode.py) feeds 16x16 RGB images and compares with
# diffusers' plain batched decode(z): classes that take other input (audio, clip-only, RGBA) or whose decode is not
# that call (a noise-drawing decoder, per-frame num_frames, batch-1 only, [0, 1] pixels) are left to the bridge tests.
_NOT_IN_JOURNEY = ("AutoencoderKLQwenImage21", "ConsistencyDecoderVAE", "AutoencoderKLTemporalDecoder", "AutoencoderKLHunyuanVideo15",
                   "AutoencoderRAE")
ENCODE_JOURNEY = tuple(sorted(n for n in TINY if n not in AUDIO and n not in DECODE_ONLY and n not in _CLIPS and n not in _NOT_IN_JOURNEY))
