"""The encode plan: everything a run decides once, on the driver, before Ray starts.

:func:`build_plan` loads the model once (for its geometry and fingerprint), resolves its typed
:class:`~latentflow.format.codec.ModelRef` once (a hub id pinned to the commit it resolved to),
builds the codec, lists the shards and reads the output's state. The runner and the actors take
what they need from the plan: actors load the model from ``plan.model_ref``, never from the
user's raw string again.

Example::

    plan = build_plan(EncodeJobConfig.from_yaml("configs/encode/default.yaml"))
    plan.pending        # shards not yet committed
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from latentflow import hub
from latentflow.auto import load_model
from latentflow.encode.codec_builder import build_codec, track_column
from latentflow.format.codec import Codec, ModelRef, TrackColumn
from latentflow.format.marker import CommitMarker
from latentflow.format.state import read_output_codec
from latentflow.jobs.config import EncodeJobConfig
from latentflow.jobs.preflight import check_before_ray
from latentflow.sources.records import Shard
from latentflow.sources.shards import SourceConfig
from latentflow.store.writer import prepare_output


def model_load_kwargs(config: EncodeJobConfig, revision: str | None = None) -> dict[str, str]:
    """``subfolder`` / ``variant`` / ``revision`` of the job's model, those that are set."""
    kwargs = {"subfolder": config.model_subfolder, "variant": config.model_variant, "revision": revision or config.model_revision}
    return {k: v for k, v in kwargs.items() if v}


def absolute_text_configs(configs) -> tuple:
    """The text encoder configs with local folders as absolute paths (as the model's ``ModelRef``): actors and
    the codec's readers (a prior sampling from prompts) find them whatever their working directory."""
    out = []
    for cfg in configs:
        local = "://" not in cfg.model and not hub.is_hub_id(cfg.model) and Path(cfg.model).is_dir()
        out.append(cfg.replace(model=str(Path(cfg.model).resolve())) if local else cfg)
    return tuple(out)


def load_text_encoders(configs, storage_options: dict | None = None) -> list:
    """The job's text encoders, loaded (weights and tokenizer hashed for the codec)."""
    from latentflow.encode.text import TextEncoder

    return [TextEncoder(cfg, storage_options) for cfg in configs]


def audio_track_column(config: EncodeJobConfig, codec: Codec, sources, storage_options: dict | None) -> TrackColumn:
    """The audio track's codec entry: its model loaded once here (geometry, rate, weights sha256), its reference resolved once."""
    track = config.audio_track
    kwargs = {"subfolder": track.model_subfolder} if track.model_subfolder else {}
    audio_model = load_model(track.model, storage_options, **kwargs)
    pinned = getattr(audio_model, "hub_revision", None)
    ref = hub.model_ref_from_user(track.model, track.model_subfolder, None, pinned)
    return track_column(track, audio_model, codec.processor, config.store, sources, config.dtype, model_ref=ref)


def merged_sources_codec(out_url: str, codec: Codec, storage_options: dict, overwrite: bool) -> Codec:
    """``codec`` whose source URLs also list those already recorded in the output (appending keeps them all)."""
    existing = None if overwrite else read_output_codec(out_url, storage_options)
    if not existing:
        return codec
    return codec.with_sources([*existing.sources, *codec.sources])


@dataclass(frozen=True)
class EncodePlan:
    """What one run of the encode job works from, decided once on the driver.

    Attributes:
        output: the output location.
        storage_options: fsspec options for the model and the output (used, never written).
        source: the source config, its own storage options resolved.
        shards: every shard the source lists.
        model_ref: where every actor loads the model from (a hub id pinned to its commit).
        codec: what the output records; its ``model.weights_sha256`` is what actors must load.
        downsample_factor, temporal_stride: the model's geometry (the processor needs it, not the model).
        committed: the output's committed shards when the run started (after :meth:`prepare`).
        text_encoders: the text encoder configs every actor loads (local folders made absolute).
    """

    output: str
    storage_options: dict[str, Any]
    source: SourceConfig
    shards: tuple[Shard, ...]
    model_ref: ModelRef
    codec: Codec
    downsample_factor: int
    temporal_stride: int | None = None
    committed: dict[str, CommitMarker] | None = None
    text_encoders: tuple = ()

    @property
    def pending(self) -> list[Shard]:
        """The shards this run encodes (all of them before :meth:`prepare`)."""
        done = self.committed or {}
        return [s for s in self.shards if s.shard_id not in done]

    def prepare(self, overwrite: bool = False) -> "EncodePlan":
        """Record the codec in the output (refusing another encoder's output unless ``overwrite``:
        ``CodecMismatchError``) and return the plan with the output's committed shards."""
        done = prepare_output(self.output, self.codec, self.storage_options, overwrite)
        return replace(self, committed=done)


def build_plan(config: EncodeJobConfig, shards: list | None = None) -> EncodePlan:
    """Check the config against the world (ConfigError before Ray starts; ``shards``: its result when the
    caller already checked), load the model once, resolve its reference once and build the codec. Nothing is written."""
    options = config.resolved_storage_options()
    shards = check_before_ray(config) if shards is None else shards  # the source matches shards, the output can be written (ConfigError)
    model = load_model(config.model, options, **model_load_kwargs(config))
    source = config.source.replace(storage_options=config.source_storage_options())
    # the codec pins the commit a hub id resolved to (not a branch name), so readers and actors load the same weights
    pinned = getattr(model, "hub_revision", None) or config.model_revision
    model_ref = hub.model_ref_from_user(config.model, config.model_subfolder, config.model_variant, pinned)
    text_configs = absolute_text_configs(config.text_encoders)
    text_encoders = load_text_encoders(text_configs, options)  # once on the driver: their infos go in the codec
    codec = build_codec(model, config.processor_config, config.store, source.urls, config.dtype, model_ref=model_ref,
                        text_encoders=text_encoders)
    if config.audio_track is not None:  # the track's codec needs the clip lengths as run (codec.processor)
        codec = replace(codec, tracks=(audio_track_column(config, codec, source.urls, options),), fingerprint="")
    codec = merged_sources_codec(config.output, codec, options, config.overwrite)
    return EncodePlan(config.output, options, source, tuple(shards), model_ref, codec, int(model.downsample_factor),
                      getattr(model, "temporal_downsample_factor", None) or None, text_encoders=text_configs)
