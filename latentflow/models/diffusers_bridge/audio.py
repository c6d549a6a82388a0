"""Audio autoencoders: waveforms (B, channels, N) in [-1, 1] -> latents (B, C, N / hop), codec layout ``CT``.

LTX-2's audio VAE is the exception: it encodes mel spectrograms (B, 2, T, mel_bins) -> (B, C, T', mel_bins / 4),
layout ``CTF``, its native input (diffusers ships no mel front end for it; the pipeline only decodes). MMAudio's
VAE takes mono waveforms and decodes to mel spectrograms (``decodes_to="mel"``; its vocoder makes waveforms).

``spatial`` of an audio family is its hop: samples (mel frames, for ``CTF``) per latent frame.
Each rule cites the diffusers pipeline function whose lines it reproduces. ``AutoencoderOobleck`` (Stable Audio) is
native (:mod:`latentflow.models.audio_vae`), as ``AutoencoderKL`` is.
"""

from __future__ import annotations

import torch

from latentflow.models.diffusers_bridge.family import PINNED, Family, config_stats_rule, levels, no_rule, product
from latentflow.normalization import Normalization


def _ltx2_audio_rule(c: dict, module, pipeline: dict) -> Normalization:
    # LTX2Pipeline.prepare_audio_latents (pipelines/ltx2/pipeline_ltx2.py): _pack_audio_latents (B, C, L, M) -> (B, L, C*M),
    # then _normalize_audio_latents: (latents - audio_vae.latents_mean) / audio_vae.latents_std over the packed C*M
    # features. On the unpacked (B, C, L, M) latents that is one statistic per (channel, latent mel bin).
    channels = int(c["latent_channels"])
    mean, std = module.latents_mean.view(channels, -1).tolist(), module.latents_std.view(channels, -1).tolist()
    return Normalization("per_channel_per_bin", mean=mean, std=std, source="buffers")


def _mmaudio_rule(c: dict, module, pipeline: dict) -> Normalization:
    # Kandinsky6TI2VAPipeline.__call__ (pipelines/kandinsky6/pipeline_kandinsky6_ti2va.py): audio_latents /
    # self.audio_vae.config.scaling_factor before audio_vae.decode, so the denoiser sees z * scaling_factor.
    factor = float(c["scaling_factor"])
    return Normalization("scale" if factor != 1.0 else "none", factor)


def _cosmos3_encoder(c: dict) -> str | None:
    if not c.get("encoder_enabled", True):
        return "its config sets encoder_enabled=False (decoder-only weights, Cosmos3's released sound tokenizer)"
    return None


def _mono_encode(module, x: torch.Tensor):
    """MMAudioVAE.encode takes mono waveforms (B, N): the bridge's (B, 1, N) loses its channel axis."""
    return module.encode(x[:, 0])


def _mode_encode(module, x: torch.Tensor):
    """LongCatAudioDiTVae.encode samples by default; the bridge stores the posterior mode, as every other class."""
    return module.encode(x, sample_posterior=False)


AUDIO: dict[str, Family] = {
    "AutoencoderKLLTX2Audio": Family(PINNED, "audio", "CTF", levels("ch_mult"), _ltx2_audio_rule),
    # No diffusers pipeline uses it and its config has no scaling_factor: latents go on as encoded.
    "AutoencoderKLKVAEAudio": Family(PINNED, "audio", "CT", product("encoder_rates"), no_rule, channels="codebook_dim",
                                     in_channels=lambda c: int(c["num_channels"])),
    # No diffusers pipeline yet; the class documents that its pipeline applies (z - latents_mean) / latents_std per
    # channel from the config (autoencoder_kl_minimax_h3_audio.py's module docstring). Mono: stereo is two batch items.
    "AutoencoderKLMiniMaxH3Audio": Family(PINNED, "audio", "CT", product("encoder_rates"), config_stats_rule,
                                          in_channels=lambda c: 1),
    # StableAudio3Audio2AudioPipeline._encode_reference_audio: self.vae.encode(audio).latents, unscaled; StableAudio3Pipeline
    # .__call__: self.vae.decode(latents) (pipelines/stable_audio_3/): no rule. Deterministic latents.
    "AutoencoderSAME": Family(PINNED, "audio", "CT", lambda c: int(c["patch_size"]) * product("encoder_strides")(c), no_rule,
                              channels="latent_dim", in_channels=lambda c: int(c["audio_channels"]), moments=False),
    # The class refuses latent_mean/std ("does not apply latent normalization", Cosmos3AVAEAudioTokenizer.__init__) and
    # Cosmos3OmniPipeline normalizes only its video latents: no rule.
    "Cosmos3AVAEAudioTokenizer": Family(PINNED, "audio", "CT", lambda c: int(c.get("hop_size") or product("dec_strides")(c)),
                                        no_rule, channels="vocoder_input_dim",
                                        in_channels=lambda c: int(c["input_channels"]) * (2 if c["stereo"] else 1),
                                        encoder=_cosmos3_encoder),
    # LongCatAudioDiTVae divides by config.scale inside encode and multiplies inside decode; LongCatAudioDiTPipeline
    # .__call__ decodes the denoiser's latents as they are (pipelines/longcat_audio_dit/): no further rule.
    "LongCatAudioDiTVae": Family(PINNED, "audio", "CT",
                                 lambda c: product("strides")(c) if c.get("strides") else int(c["downsampling_ratio"]),
                                 no_rule, channels="latent_dim", moments=False, encode_fn=_mode_encode),
    "MMAudioVAE": Family(PINNED, "audio", "CT", lambda c: 2 * int(c["hop_length"]), _mmaudio_rule,
                         in_channels=lambda c: 1, encode_fn=_mono_encode, decodes_to="mel"),
}
