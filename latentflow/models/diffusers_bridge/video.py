"""Video autoencoders (and image models built as video ones): clips (B, 3, T, H, W) in [-1, 1] -> latents
(B, C, T', H/f, W/f), codec layout ``CTHW``. Images (B, 3, H, W) encode as one-frame clips, as Qwen-Image does.

T' = (T - 1) // tf + 1 for causal encoders (the first frame alone), T // tf otherwise, unless ``frames`` says.
Each rule cites the diffusers pipeline function whose lines it reproduces.
"""

from __future__ import annotations

import math

import torch

from latentflow.models.diffusers_bridge.family import (
    PINNED,
    Family,
    buffer_stats_rule,
    causal_t,
    config_stats_rule,
    levels,
    no_rule,
    product,
    ratio,
    scale_rule,
    wan_spatial,
)
from latentflow.normalization import Normalization


# ---- geometry -------------------------------------------------------------------------------------
def _ltx_ratio(c: dict, axis: str, patch_key: str) -> int:
    """The configured ratio, else the patch times one 2x per ``spatio_temporal_scaling`` level (AutoencoderKLLTXVideo)."""
    return c.get(f"{axis}_compression_ratio") or c[patch_key] * 2 ** sum(c["spatio_temporal_scaling"])


def _ltx2_ratio(c: dict, axis: str, patch_key: str) -> int:
    """The configured ratio, else the patch times one 2x per ``downsample_type`` acting on the axis (LTX-2)."""
    acting = (axis, "spatiotemporal")
    return c.get(f"{axis}_compression_ratio") or c[patch_key] * 2 ** sum(t in acting for t in c["downsample_type"])


def _cosmos_ratio(c: dict, axis: str) -> int:
    """The patch, then one 2x downsample per level but the last two, up to the configured ratio (CosmosEncoder3d)."""
    patch = int(c["patch_size"])
    layers = int(math.log2(c[f"{axis}_compression_ratio"])) - int(math.log2(patch))
    return patch * 2 ** max(0, min(layers, len(c["encoder_block_out_channels"]) - 2))


def _magvit_t(c: dict) -> int:
    """One 2x per ``SpatialTemporalDownBlock3D`` but the last level's (which does not downsample)."""
    return 2 ** sum(t == "SpatialTemporalDownBlock3D" for t in c["down_block_types"][:-1])


def _vidtok_levels(c: dict) -> tuple[set[int], set[int]]:
    """(spatial, temporal) downsampling levels of VidTokEncoder3D: a level downsamples in time only if also in space."""
    n = len(c["ch_mult"])
    spatial = set(range(n - 1) if c.get("spatial_ds") is None else c["spatial_ds"])
    temporal = set([n - 2, n - 3] if c.get("tempo_ds") is None else c["tempo_ds"])
    return spatial, temporal & spatial


def _vidtok_check(c: dict, x: torch.Tensor) -> str | None:
    # VidTokEncoder3D needs at least one temporal group (its causal padding breaks on a single frame); non-causal
    # VidTok decodes latents in groups of num_latent_frames_batch_size (16 frames / tf), so shorter clips cannot decode.
    tf = 2 ** len(_vidtok_levels(c)[1])
    least = tf if c["is_causal"] else 16
    if x.ndim != 5 or x.shape[2] < least:
        return (f"AutoencoderVidTok encodes clips (B, 3, T, H, W) of T >= {least} frames (images and shorter clips do not "
                f"fit its temporal groups); got shape {tuple(x.shape)}")
    return None


def _minimax_frames(c: dict, t: int) -> int:
    """AutoencoderKLMiniMaxH3._encode: one frame alone; else ``clip_length`` chunks (the last padded by repeating the
    final frame), each causal, then the last ``token_drop`` latent frames dropped (so 17n + 5 frames round-trip)."""
    if t == 1:
        return 1
    clip = int(c["clip_length"])
    per_clip = (clip - 1) // product("temporal_downsample_factors")(c) + 1
    return -(-t // clip) * per_clip - int(c["token_drop"])


def _allegro_tile(c: dict) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(kernel, stride) of AutoencoderKLAllegro's tiled encode over (T, H, W): 24 frames, sample_size pixels."""
    s = int(c["sample_size"])
    return (24, s, s), (16, s - 120, s - 80)  # AutoencoderKLAllegro.__init__: tile_overlap_t/h/w = 8, 120, 80


def _allegro_check(c: dict, x: torch.Tensor) -> str | None:
    kernel, stride = _allegro_tile(c)
    dims = tuple(x.shape[2:]) if x.ndim == 5 else ()
    if not dims or any(d < k or (d - k) % s for d, k, s in zip(dims, kernel, stride)):
        return (f"AutoencoderKLAllegro encodes only through its tiles (its encode without tiling is not implemented): "
                f"clips (B, 3, T, H, W) with T = 24 + 16k, H = {kernel[1]} + {stride[1]}k, W = {kernel[2]} + {stride[2]}k; "
                f"got shape {tuple(x.shape)}")
    return None


# ---- encode / decode that need more than module.encode(x) -------------------------------------------
def _tiled_encode(module, x: torch.Tensor):
    module.use_tiling = True  # AutoencoderKLAllegro._encode raises without tiling
    return module.encode(x)


def _tiled_decode(module, z: torch.Tensor) -> torch.Tensor:
    module.use_tiling = True
    # AllegroPipeline.decode_latents: the decoder gives (B, T, C, H, W); permute(0, 2, 1, 3, 4) -> (B, C, T, H, W)
    return module.decode(z).sample.permute(0, 2, 1, 3, 4)


def _sliced_encode(module, x: torch.Tensor):
    module.use_slicing = True  # AutoencoderKLHunyuanVideo15's encoder breaks on batches > 1; its own slicing runs one by one
    return module.encode(x)


def _sliced_decode(module, z: torch.Tensor):
    module.use_slicing = True
    return module.decode(z)


def _framewise_encode(module, x: torch.Tensor):
    """AutoencoderKLTemporalDecoder's encoder is 2D: frames (B*T, 3, H, W), as StableVideoDiffusionPipeline
    encodes them; latents come back as (B, C, T, h, w)."""
    b, _, t = x.shape[:3]
    z = module.encode(x.transpose(1, 2).flatten(0, 1)).latent_dist
    return _Framewise(z, b, t)


class _Framewise:
    """The frame-batched posterior of :func:`_framewise_encode` seen as (B, C, T, h, w)."""

    def __init__(self, dist, b: int, t: int):
        self.latent_dist = self
        self.mean, self.logvar = (v.unflatten(0, (b, t)).transpose(1, 2) for v in (dist.mean, dist.logvar))

    def mode(self) -> torch.Tensor:
        return self.mean


def _framewise_decode(module, z: torch.Tensor):
    # StableVideoDiffusionPipeline.decode_latents: latents.flatten(0, 1), then vae.decode(latents, num_frames=T)
    b, _, t = z.shape[:3]
    frames = module.decode(z.transpose(1, 2).flatten(0, 1), num_frames=t).sample
    return frames.unflatten(0, (b, t)).transpose(1, 2)


# ---- rules -----------------------------------------------------------------------------------------
def _cosmos_rule(c: dict, module, pipeline: dict) -> Normalization:
    # CosmosVideoToWorldPipeline.prepare_latents (pipelines/cosmos/pipeline_cosmos_video2world.py):
    # mean/std .view(1, C, -1, 1, 1)[:, :, :T] (per channel AND latent frame), then (z - mean) * sigma_data / std,
    # sigma_data from the pipeline's scheduler (EDMEulerScheduler's default 0.5 when no pipeline folder is at hand).
    sigma = float(pipeline.get("scheduler", {}).get("sigma_data", 0.5))
    if c.get("latents_mean") is None:
        return Normalization("scale" if sigma != 1.0 else "none", sigma, source="pipeline")
    channels = int(c["latent_channels"])

    def per_frame(values: list[float]) -> list[list[float]]:  # flat (C * T,) -> (C, T), as .view(1, C, -1, 1, 1)
        t = len(values) // channels
        return [list(values[k * t:(k + 1) * t]) for k in range(channels)]

    return Normalization("per_channel_per_frame", sigma, 0.0, per_frame(c["latents_mean"]), per_frame(c["latents_std"]),
                         source="pipeline")


VIDEO: dict[str, Family] = {
    "AutoencoderKLQwenImage": Family("0.35.0", "image", "CTHW", lambda c: 2 ** len(c["temperal_downsample"]),
                                     config_stats_rule, causal_t, channels="z_dim"),
    "AutoencoderKLWan": Family("0.33.0", "video", "CTHW", wan_spatial, config_stats_rule,
                               lambda c: c.get("scale_factor_temporal") or causal_t(c), channels="z_dim"),
    # HunyuanVideoImageToVideoPipeline.prepare_latents: image_latents * self.vae.config.scaling_factor
    "AutoencoderKLHunyuanVideo": Family("0.32.0", "video", "CTHW", ratio("spatial_compression_ratio"), scale_rule,
                                        ratio("temporal_compression_ratio")),
    "AutoencoderKLLTXVideo": Family("0.32.0", "video", "CTHW", lambda c: _ltx_ratio(c, "spatial", "patch_size"),
                                    buffer_stats_rule, lambda c: _ltx_ratio(c, "temporal", "patch_size_t")),
    # CogVideoXVideoToVideoPipeline.prepare_latents: init_latents = self.vae_scaling_factor_image * init_latents (scale only)
    "AutoencoderKLCogVideoX": Family("0.30.0", "video", "CTHW", levels("block_out_channels"), scale_rule,
                                     ratio("temporal_compression_ratio")),
    "AutoencoderKLMochi": Family("0.32.0", "video", "CTHW", product("spatial_expansions"), config_stats_rule,
                                 product("temporal_expansions"), in_channels=lambda c: 3),
    "AutoencoderKLCosmos": Family("0.34.0", "video", "CTHW", lambda c: _cosmos_ratio(c, "spatial"), _cosmos_rule,
                                  lambda c: _cosmos_ratio(c, "temporal"), moments=False),
    # AllegroPipeline.decode_latents: latents = 1 / self.vae.config.scaling_factor * latents (pipelines/allegro/)
    "AutoencoderKLAllegro": Family(PINNED, "video", "CTHW", levels("block_out_channels"), scale_rule,
                                   ratio("temporal_compression_ratio"), causal=False, encode_fn=_tiled_encode,
                                   decode_fn=_tiled_decode, check=_allegro_check),
    # HunyuanImageRefinerPipeline._encode_vae_image: image_latents * self.vae.config.scaling_factor (after the
    # pipeline's own token reorder, a packing step, not a normalization). Its "temporal" downsample keeps the frames
    # (HunyuanImageRefinerDownsampleDCAE.forward folds space only): tf = 1.
    "AutoencoderKLHunyuanImageRefiner": Family(PINNED, "image", "CTHW", ratio("spatial_compression_ratio"), scale_rule,
                                               lambda c: 1),
    # HunyuanVideo15ImageToVideoPipeline._get_image_latents: image_latents * vae.config.scaling_factor
    # (pipelines/hunyuan_video1_5/pipeline_hunyuan_video1_5_image2video.py)
    "AutoencoderKLHunyuanVideo15": Family(PINNED, "video", "CTHW", ratio("spatial_compression_ratio"), scale_rule,
                                          ratio("temporal_compression_ratio"), encode_fn=_sliced_encode, decode_fn=_sliced_decode),
    # No diffusers pipeline uses it and its config has no scaling_factor: latents go on as encoded.
    "AutoencoderKLKVAEVideo": Family(PINNED, "video", "CTHW", levels("ch_mult"), no_rule, ratio("temporal_compress_times"),
                                     channels="z_channels"),
    # LTX2Pipeline.prepare_latents -> _normalize_latents(latents, self.vae.latents_mean, self.vae.latents_std,
    # self.vae.config.scaling_factor) (pipelines/ltx2/pipeline_ltx2.py): buffers, as LTX-Video
    "AutoencoderKLLTX2Video": Family(PINNED, "video", "CTHW", lambda c: _ltx2_ratio(c, "spatial", "patch_size"),
                                     buffer_stats_rule, lambda c: _ltx2_ratio(c, "temporal", "patch_size_t")),
    # EasyAnimateInpaintPipeline.prepare_latents: video * self.vae.config.scaling_factor; EasyAnimatePipeline.__call__
    # decodes 1 / scaling_factor * latents (pipelines/easyanimate/)
    "AutoencoderKLMagvit": Family(PINNED, "video", "CTHW", levels("block_out_channels"), scale_rule, _magvit_t),
    # No diffusers pipeline yet; the class documents the rule its pipeline applies: (latent - latents_mean) / latents_std
    # (AutoencoderKLMiniMaxH3's docstring), per channel from the config.
    "AutoencoderKLMiniMaxH3": Family(PINNED, "video", "CTHW", product("spatial_downsample_factors"), config_stats_rule,
                                     product("temporal_downsample_factors"), frames=_minimax_frames),
    # QwenImage21Pipeline._encode_vae_image: (image_latents - latents_mean) / latents_std (pipelines/qwenimage21/);
    # its images carry an alpha channel (in_channels 4 in the released config).
    "AutoencoderKLQwenImage21": Family(PINNED, "image", "CTHW", lambda c: c.get("scale_factor_spatial") or 2 ** (len(c["dim_mult"]) - 1),
                                       config_stats_rule, causal_t, channels="z_dim"),
    # StableVideoDiffusionPipeline.decode_latents: latents = 1 / self.vae.config.scaling_factor * latents; frames are
    # encoded one by one and decoded together (num_frames), so tf = 1 and T' = T.
    "AutoencoderKLTemporalDecoder": Family(PINNED, "video", "CTHW", levels("block_out_channels"), scale_rule, lambda c: 1,
                                           causal=False, encode_fn=_framewise_encode, decode_fn=_framewise_decode),
    # No diffusers pipeline uses it and its config has no scaling_factor: latents go on as encoded. T' = T // tf,
    # causal or not (a causal VidTok decodes T' latent frames to (T' - 1) * tf + 1 frames).
    "AutoencoderVidTok": Family(PINNED, "video", "CTHW", lambda c: 2 ** len(_vidtok_levels(c)[0]), no_rule,
                                lambda c: 2 ** len(_vidtok_levels(c)[1]), channels="z_channels", causal=False,
                                check=_vidtok_check),
    # Decode-only: LTX-2's diffusion decoder denoises AutoencoderKLLTX2Video latents (decode draws its noise from torch's
    # global generator: seed it for repeatable output). LTX2VideoDiffusionDecodePipeline._latent_stats /
    # _denormalize_latents (pipelines/ltx2/pipeline_ltx2_diffusion_decode.py): its own buffers, as LTX-2's VAE.
    "LTX2VideoDiffusionDecoderModel": Family(PINNED, "video", "CTHW", ratio("spatial_compression_ratio"), buffer_stats_rule,
                                             ratio("temporal_compression_ratio"), in_channels=lambda c: int(c["out_channels"]),
                                             encoder=lambda c: "it is LTX-2's diffusion decoder, with no encoder (encode with "
                                                               "the AutoencoderKLLTX2Video of the same checkpoint)"),
    # Kandinsky6SRPipeline.encode_video: latents * self.vae.config.scaling_factor (pipelines/kandinsky6/pipeline_kandinsky6_sr.py)
    "Kandinsky6SRVAE": Family(PINNED, "video", "CTHW", levels("encoder_block_out_channels"), scale_rule,
                              ratio("temporal_compression_ratio")),
}
