"""Image autoencoders: (B, 3, H, W) in [-1, 1] -> latents (B, C, H/f, W/f), codec layout ``CHW``.

Each rule cites the diffusers pipeline function whose lines it reproduces (0.42.1's ``pipelines/``); a class no
diffusers pipeline uses says so, and follows what the class itself documents.
"""

from __future__ import annotations

from math import isqrt

import torch

from latentflow.models.diffusers_bridge.family import (
    PINNED,
    Family,
    checkpoint_factor_rule,
    levels,
    no_rule,
    scale_rule,
)
from latentflow.normalization import Normalization


def _flux2_rule(c: dict, module, pipeline: dict) -> Normalization:
    # Flux2Pipeline._encode_vae_image (pipelines/flux2/pipeline_flux2.py): _patchify_latents (2x2 -> channels), then
    # (z - bn.running_mean) / sqrt(bn.running_var + config.batch_norm_eps). Statistics are checkpoint buffers.
    bn = module.bn
    return Normalization("batchnorm", mean=bn.running_mean.tolist(), std=bn.running_var.tolist(),
                         eps=float(c["batch_norm_eps"]), patch_size=int(c["patch_size"][0]), source="buffers")


def _rae_grid(c: dict) -> int:
    """Tokens per side of AutoencoderRAE's frozen encoder: encoder_input_size / encoder_patch_size."""
    return isqrt((int(c["encoder_input_size"]) // int(c["encoder_patch_size"])) ** 2)


def _rae_check(c: dict, x: torch.Tensor) -> str | None:
    # The encoder resizes any input to encoder_input_size, the decoder always paints image_size: only inputs of that
    # size come back at their own size, so the geometry (and latent_shape) holds only for them.
    side = int(c.get("image_size") or int(c["patch_size"]) * _rae_grid(c))
    if tuple(x.shape[-2:]) != (side, side):
        return f"AutoencoderRAE reconstructs {side}x{side} images (its image_size); resize to that, got: {tuple(x.shape[-2:])}"
    return None


IMAGE: dict[str, Family] = {
    "AutoencoderTiny": Family("0.20.0", "image", "CHW",
                              lambda c: c["upsampling_scaling_factor"] ** (len(c["encoder_block_out_channels"]) - 1),
                              scale_rule, moments=False),
    "AutoencoderDC": Family("0.32.0", "image", "CHW", levels("encoder_block_out_channels"), checkpoint_factor_rule,
                            moments=False),
    "AutoencoderKLFlux2": Family("0.36.0", "image", "CHW", levels("block_out_channels"), _flux2_rule),
    # KandinskyV22Img2ImgPipeline.prepare_latents: scaling_factor * init_latents (checkpoint_factor_rule)
    "VQModel": Family("0.20.0", "image", "CHW", levels("block_out_channels"), checkpoint_factor_rule,
                      channels="vq_embed_dim", moments=False, discrete=True),
    # StableDiffusionInpaintPipeline._encode_vae_image: self.vae.config.scaling_factor * image_latents
    # (pipelines/stable_diffusion/pipeline_stable_diffusion_inpaint.py); decode without the masked image, as
    # AsymmetricAutoencoderKL.decode(z) allows.
    "AsymmetricAutoencoderKL": Family(PINNED, "image", "CHW", levels("down_block_out_channels"), scale_rule),
    # HunyuanImagePipeline.__call__: self.vae.decode(latents / self.vae.config.scaling_factor)
    # (pipelines/hunyuan_image/pipeline_hunyuanimage.py)
    "AutoencoderKLHunyuanImage": Family(PINNED, "image", "CHW", lambda c: int(c["spatial_compression_ratio"]), scale_rule),
    # No diffusers pipeline uses it and its config has no scaling_factor: latents go on as encoded.
    "AutoencoderKLKVAE": Family(PINNED, "image", "CHW", levels("ch_mult"), no_rule, channels="z_channels"),
    # AutoencoderRAE normalizes inside encode ((z - latents_mean) / (latents_std + 1e-5) * scaling_factor,
    # AutoencoderRAE._encode) and inverts it in decode; no diffusers pipeline adds a rule: "none". It takes and
    # paints pixels in [0, 1] (ImageNet statistics inside), so the bridge converts from and to [-1, 1].
    "AutoencoderRAE": Family(PINNED, "image", "CHW", lambda c: int(c["patch_size"]), no_rule,
                             channels="encoder_hidden_size", in_channels=lambda c: int(c["num_channels"]), moments=False,
                             check=_rae_check, unit_range=True),
    # Used as the `vae` of StableDiffusionPipeline: __call__ decodes latents / self.vae.config.scaling_factor
    # (pipelines/stable_diffusion/pipeline_stable_diffusion.py). Its decoder is a consistency model that draws noise:
    # decode follows torch's global generator (seed it for repeatable output).
    "ConsistencyDecoderVAE": Family(PINNED, "image", "CHW", levels("encoder_block_out_channels"), scale_rule,
                                    in_channels=lambda c: int(c["encoder_in_channels"])),
}
