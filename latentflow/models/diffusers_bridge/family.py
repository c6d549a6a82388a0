"""What the bridge knows about one diffusers autoencoder class (:class:`Family`), and the rules several share.

The per-modality tables (:mod:`.image`, :mod:`.video`, :mod:`.audio`) hold one :class:`Family` per class;
``FAMILIES`` in :mod:`latentflow.models.diffusers_bridge` joins them. A rule is
``(diffusers config, module, pipeline JSON) -> Normalization`` and cites the pipeline function it reproduces.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from latentflow.errors import ConfigError
from latentflow.normalization import Normalization

INSTALL_HINT = "pip install 'latentflow[diffusers]'"
PINNED = "0.42.1"  # ``since`` of classes added after the first bridge: the pinned release, known to export them
MODALITIES = ("image", "video", "audio")
LAYOUTS = ("CHW", "CTHW", "CT", "CTF")  # audio: (C, T) waveform latents, (C, T, F) spectrogram latents (LTX-2 audio)


@dataclass(frozen=True)
class Family:
    """What the bridge needs to know about one diffusers autoencoder class.

    Attributes:
        since: first diffusers release with the class (named when the installed one lacks it).
        modality: ``image``, ``video`` or ``audio``: what ``encode`` takes and ``decode`` gives back.
        layout: per-sample latent layout recorded in the codec: ``CHW``, ``CTHW``, ``CT`` or ``CTF``.
        spatial: config -> spatial downsampling factor; for audio, samples (or mel frames) per latent frame.
        rule: (config, module, pipeline JSON) -> the pipeline's :class:`Normalization`.
        temporal: config -> temporal downsampling factor of video classes; None for image and audio classes.
        channels: config key of the latent channels, or config -> channels.
        in_channels: config -> input channels (RGB 3 unless the class says otherwise).
        moments: encode's posterior is a diagonal Gaussian (False: deterministic latents).
        discrete: encode quantizes (VQModel).
        causal: video latent frames are ``(T - 1) // tf + 1`` (the first frame alone); else ``T // tf``.
        frames: (config, T) -> latent frames, for classes whose count neither formula gives.
        encoder: config -> None when the class encodes, else why it cannot (decode-only classes).
        encode_fn / decode_fn: (module, x) -> diffusers output, when the class needs more than ``encode(x)``/``decode(z)``.
        check: (config, x) -> a complaint about the input the generic checks miss, or None.
        unit_range: the class takes and gives pixels in [0, 1] (the bridge converts from and to [-1, 1]).
        decodes_to: what ``decode`` returns when it is not the input modality (``mel``: a mel spectrogram).
    """

    since: str
    modality: str
    layout: str
    spatial: Callable[[dict], int]
    rule: Callable[[dict, Any, dict], Normalization]
    temporal: Callable[[dict], int] | None = None
    channels: str | Callable[[dict], int] = "latent_channels"
    in_channels: Callable[[dict], int] = lambda c: int(c.get("in_channels", 3))
    moments: bool = True
    discrete: bool = False
    causal: bool = True
    frames: Callable[[dict, int], int] | None = None
    encoder: Callable[[dict], str | None] = lambda c: None
    encode_fn: Callable[[Any, torch.Tensor], Any] | None = None
    decode_fn: Callable[[Any, torch.Tensor], Any] | None = None
    check: Callable[[dict, torch.Tensor], str | None] | None = None
    unit_range: bool = False
    decodes_to: str | None = None

    def __post_init__(self) -> None:
        assert self.modality in MODALITIES and self.layout in LAYOUTS, (self.modality, self.layout)


# ---------------------------------------------------------------------------
# geometry helpers
# ---------------------------------------------------------------------------
def levels(key: str) -> Callable[[dict], int]:
    """2 ** (number of levels - 1): one 2x resample between consecutive levels."""
    return lambda c: 2 ** (len(c[key]) - 1)


def causal_t(c: dict) -> int:
    """One 2x per ``temperal_downsample`` flag (the Wan/Qwen-Image causal encoder)."""
    return 2 ** sum(bool(t) for t in c["temperal_downsample"])


def wan_spatial(c: dict) -> int:
    """One 2x downsample per ``temperal_downsample`` entry, times Wan 2.2's patchify (``patch_size``)."""
    return c.get("scale_factor_spatial") or 2 ** len(c["temperal_downsample"]) * (c.get("patch_size") or 1)


def ratio(key: str) -> Callable[[dict], int]:
    return lambda c: int(c[key])


def product(key: str) -> Callable[[dict], int]:
    def prod(c: dict) -> int:
        out = 1
        for r in c[key]:
            out *= int(r)
        return out

    return prod


# ---------------------------------------------------------------------------
# shared rules
# ---------------------------------------------------------------------------
def no_rule(c: dict, module, pipeline: dict) -> Normalization:
    """Latents go to the denoiser as the class gives them (the rule's cite is in the family table)."""
    return Normalization("none")


def scale_rule(c: dict, module, pipeline: dict) -> Normalization:
    # StableDiffusionImg2ImgPipeline.prepare_latents: init_latents = self.vae.config.scaling_factor * init_latents
    # (pipelines/stable_diffusion/pipeline_stable_diffusion_img2img.py) and every pipeline that divides by the factor
    # before vae.decode; TAESD (scaling_factor 1.0) and a factor of None (HunyuanImage's class default) give "none".
    return Normalization.from_values(c.get("scaling_factor"), c.get("shift_factor"), source="config")


def config_stats_rule(c: dict, module, pipeline: dict) -> Normalization:
    # QwenImageImg2ImgPipeline._encode_vae_image (pipelines/qwenimage/pipeline_qwenimage_img2img.py) and
    # WanImageToVideoPipeline.prepare_latents (pipelines/wan/pipeline_wan_i2v.py): (z - latents_mean) * (1 / latents_std);
    # MochiPipeline.__call__ (pipelines/mochi/pipeline_mochi.py) inverts z * latents_std / scaling_factor + latents_mean.
    if c.get("latents_mean") is None:
        return scale_rule(c, module, pipeline)
    return Normalization("per_channel", float(c.get("scaling_factor", 1.0) or 1.0), 0.0, c["latents_mean"], c["latents_std"])


def buffer_stats_rule(c: dict, module, pipeline: dict) -> Normalization:
    # LTXImageToVideoPipeline.prepare_latents -> _normalize_latents(init_latents, self.vae.latents_mean, self.vae.latents_std)
    # and LTXPipeline.__call__ -> _denormalize_latents(..., self.vae.config.scaling_factor) (pipelines/ltx/); LTX-2's
    # LTX2Pipeline.prepare_latents / __call__ (pipelines/ltx2/pipeline_ltx2.py) are the same lines: statistics are buffers
    # of the checkpoint, (z - mean) * scaling_factor / std.
    return Normalization("per_channel", float(c.get("scaling_factor", 1.0) or 1.0), 0.0, module.latents_mean.tolist(),
                         module.latents_std.tolist(), source="buffers")


def checkpoint_factor_rule(c: dict, module, pipeline: dict) -> Normalization:
    # SanaPipeline.__call__: self.vae.decode(latents / self.vae.config.scaling_factor) (pipelines/sana/pipeline_sana.py);
    # KandinskyV22Img2ImgPipeline.prepare_latents: self.movq.config.scaling_factor * init_latents
    # (pipelines/kandinsky2_2/pipeline_kandinsky2_2_img2img.py). Scale only, never a shift.
    factor = float(c.get("scaling_factor", 1.0) or 1.0)
    return Normalization("scale" if factor != 1.0 else "none", factor)


# ---------------------------------------------------------------------------
# the class itself
# ---------------------------------------------------------------------------
def supported(families: dict[str, Family], native: tuple[str, ...]) -> list[str]:
    return sorted(native + tuple(families))


def diffusers_class(class_name: str, families: dict[str, Family], native: tuple[str, ...]) -> type:
    """The diffusers class named ``class_name``, with the errors a user can act on."""
    if class_name not in families:
        raise ConfigError(f"diffusers class {class_name!r} is not an autoencoder latentflow supports; "
                          f"supported: {supported(families, native)}")
    try:
        diffusers = importlib.import_module("diffusers")
    except ImportError as err:
        raise ConfigError(f"this folder holds a diffusers {class_name}; loading it needs diffusers: {INSTALL_HINT}") from err
    cls = getattr(diffusers, class_name, None)
    if cls is None:
        since = families[class_name].since
        raise ConfigError(f"diffusers {class_name} needs diffusers >= {since}, installed: "
                          f"{diffusers.__version__}; pip install -U 'diffusers>={since}'")
    return cls
