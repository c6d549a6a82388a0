"""Building a codec from a model: what an encode job records about the encoder that made its latents.

The :class:`~latentflow.format.codec.Codec` itself is the on-disk contract (``latentflow.format``);
this module knows the model, the processors and the sources, so the format does not have to.

Example::

    codec = build_codec(model, ImageProcessorConfig(), StoreConfig(), ["s3://b/{0..9}.tar"], "bf16",
                        model_ref=ModelRef("models/kl-f8"))
"""

from __future__ import annotations

import json
from typing import Any

from latentflow.encode.encoder import codebook_size_of
from latentflow.encode.shard import build_processor
from latentflow.errors import ConfigError
from latentflow.format.codec import (
    Codec,
    ModelInfo,
    ModelRef,
    QuantizerInfo,
    StoreConfig,
    TrackColumn,
    public_url,
    stored_arrays,
)
from latentflow.format.text import TextColumn
from latentflow.hub import model_ref_from_user
from latentflow.media.config import (
    AudioProcessorConfig,
    AudioTrackConfig,
    GeometryConfig,
    ImageProcessorConfig,
    VideoProcessorConfig,
)
from latentflow.media.video_decode import decoder_info
from latentflow.quantizers.base import numpy_index_dtype_for
from latentflow.sources.shards import SourceConfig


def audio_format(model) -> tuple[int | None, int | None]:
    """``(sample rate, input channels)`` of an audio model (native: ``sampling_rate``; diffusers: its config's)."""
    config = model.config.to_dict()
    rate = getattr(model, "sampling_rate", None) or config.get("sampling_rate") or config.get("sample_rate")
    channels = getattr(model, "in_channels", None) or config.get("audio_channels")
    return (int(rate) if rate else None), (int(channels) if channels else None)


def _audio_shapes(model, processor) -> dict[str, dict[str, list[int]]]:
    """Per segment length ``"T"`` (samples): the latent's per-row shape (C, T / hop)."""
    shapes = {}
    for length in processor.lengths:
        try:
            shapes[str(length)] = {"latent": [int(s) for s in model.latent_shape(length)]}
        except Exception:  # a family that does not report shapes: the sink records the observed ones
            continue
    return shapes


def bucket_shapes(model, processor_config, kind: str = "continuous") -> dict[str, dict[str, list[int]]]:
    """Per bucket ``"HxW"`` (``"TxHxW"`` for clips, ``"T"`` samples for audio segments): the stored
    per-row shape of the latent (``model.latent_shape``) and of indices."""
    if isinstance(processor_config, AudioProcessorConfig):
        return _audio_shapes(model, build_processor(processor_config, model.downsample_factor, None, *audio_format(model)))
    processor = build_processor(processor_config, model.downsample_factor, getattr(model, "temporal_downsample_factor", None))
    cfg = processor.config
    sizes = (getattr(processor, "buckets", None) or getattr(getattr(processor, "_geometry", None), "buckets", None)
             or [(cfg.resolution,) * 2])
    frames = getattr(processor, "lengths", [None])
    shapes = {}
    for t in frames:
        for h, w in sizes:
            try:
                latent = [int(s) for s in (model.latent_shape(h, w) if t is None else model.latent_shape(h, w, frames=t))]
            except Exception:  # a family that does not report shapes: the sink records the observed ones
                continue
            name = f"{h}x{w}" if t is None else f"{t}x{h}x{w}"
            shapes[name] = {"latent": latent, "indices": latent[1:]} if kind == "discrete" else {"latent": latent}
    return shapes


def _source_urls(sources: Any) -> list[str]:
    if isinstance(sources, SourceConfig):
        urls = list(sources.urls) or [json.dumps(sources.hf_load_args, sort_keys=True)]
    elif isinstance(sources, str):
        urls = [sources]
    else:
        urls = list(sources or [])
    return [public_url(u) for u in urls]


def _quantizer_info(model, config: dict[str, Any]) -> QuantizerInfo:
    size = codebook_size_of(model)
    return QuantizerInfo(size, numpy_index_dtype_for(size).name, config.get("quantizer"))


def _temporal_stride(model) -> int | None:
    """A video model's temporal reduction (None for image models)."""
    return getattr(model, "temporal_downsample_factor", None) or None


def _decoder_info(config: VideoProcessorConfig) -> dict[str, str]:
    return decoder_info(config.decoder)


def text_column(text_encoder) -> TextColumn:
    """The codec's entry for a loaded :class:`~latentflow.encode.text.TextEncoder` (its ``TextEncoderInfo``)."""
    return TextColumn(text_encoder.info.name, text_encoder.info.fingerprint(), text_encoder.info.to_dict())


def track_column(config: AudioTrackConfig, audio_model, video_config: VideoProcessorConfig, store: StoreConfig, sources: Any,
                 dtype: str = "fp32", model_ref: ModelRef | None = None) -> TrackColumn:
    """The codec's entry for a video job's audio track: the audio model's own codec, its processor as run
    for spans of the clips' durations (``num_frames / fps``; ``frame_buckets``' lengths as duration buckets).

    Raises:
        ConfigError: ``video.fps`` is not set (a clip's span would depend on each video's own rate).
    """
    if not video_config.fps:
        raise ConfigError("audio_track needs video.fps: each clip's audio span is num_frames / fps seconds; "
                          "set video.fps (e.g. video.fps=25)")
    seconds = sorted({n / video_config.fps for n in video_config.frame_buckets or []} | {video_config.num_frames / video_config.fps})
    processor = config.processor_config(seconds[-1]).replace(duration_buckets=seconds[:-1] or None)
    codec = build_codec(audio_model, processor, StoreConfig(dtype=store.dtype), sources, dtype, model_ref=model_ref)
    return TrackColumn(config.name, codec, config.required)


def build_codec(model, processor_config: ImageProcessorConfig | VideoProcessorConfig | AudioProcessorConfig, store: StoreConfig,
                sources: Any, dtype: str = "fp32",
                model_ref: ModelRef | str | None = None, text_encoders: list | tuple = (), tracks: list | tuple = ()) -> Codec:
    """The codec of an encode job.

    Args:
        model: the ``LatentModel`` that encodes.
        processor_config: the image, video or audio processor config (video: recorded with its clip
            lengths forced to the model's temporal stride, and with the decoder's name and version;
            audio: with the model's rate, channel rule and hop filled in, segment lengths forced to
            whole hops, layout ``CT`` and the decoder's record).
        store: what is stored.
        sources: a ``SourceConfig``, a URL or a list of URLs.
        dtype: compute dtype of the encoder (``fp32``, ``bf16``, ``fp16``).
        model_ref: where the weights load from again (a :class:`ModelRef`, or a location string).
        text_encoders: the job's loaded text encoders (each recorded as a :class:`TextColumn`).
        tracks: :class:`TrackColumn` s (a video's audio track, :func:`track_column`).
    """
    config = model.config.to_dict()
    kind = getattr(model, "latent_kind", "continuous")
    if isinstance(model_ref, str):
        model_ref = model_ref_from_user(model_ref)
    if isinstance(processor_config, GeometryConfig) and not processor_config.buckets and processor_config.bucket_step == "auto":
        # unused without buckets: recorded as null, as before "auto" existed, so square outputs keep their fingerprint
        processor_config = processor_config.replace(bucket_step=None)
    video = isinstance(processor_config, VideoProcessorConfig)
    audio = isinstance(processor_config, AudioProcessorConfig)
    decoder = None
    if video:
        processor_config = build_processor(processor_config, model.downsample_factor, _temporal_stride(model)).config  # as run
        decoder = _decoder_info(processor_config)
    elif audio:
        processor = build_processor(processor_config, model.downsample_factor, None, *audio_format(model))
        processor_config, decoder = processor.config, processor.decoder_info  # as run
    return Codec(
        model=ModelInfo(f"{type(model).__module__}.{type(model).__qualname__}", config.get("model_type"), config,
                        model.weights_hash(), model_ref),
        latent_kind=kind,
        layout="CT" if audio else "CTHW" if _temporal_stride(model) else "CHW",
        downsample_factor=int(model.downsample_factor),
        store=store,
        arrays=stored_arrays(kind, store),
        dtype=store.dtype,
        compute_dtype=dtype,
        shapes=bucket_shapes(model, processor_config, kind),
        normalization=model.normalization,
        processor=processor_config,
        decoder=decoder,
        sources=tuple(_source_urls(sources)),
        quantizer=_quantizer_info(model, config) if kind == "discrete" else None,
        text=tuple(text_column(t) for t in text_encoders),
        tracks=tuple(tracks),
    )
