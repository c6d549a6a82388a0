"""The codec: the one contract between the writers of a latent output and its readers.

A :class:`Codec` is a frozen dataclass written beside the latents (``latentflow.json``,
``_codec.json``, Parquet schema metadata). It names the model by a typed reference
(:class:`ModelRef`) from which any reader rebuilds it, the normalization rule
(:class:`~latentflow.normalization.Normalization`), the latent layout, the processor and
store configs, the stored arrays and their dtypes, the per-bucket shapes and the sources.
It never holds storage options or credentials.

Its *fingerprint* hashes only the parts that define which encoder made the latents, so
appending new shards with the same encoder is fine while mixing encoders is refused.
Format version 2 (this module) reads version-1 outputs (plain dicts) unchanged.

Example::

    codec = build_codec(model, ...)             # latentflow.encode.codec_builder: the writer's side
    Codec.from_dict(codec.to_dict()) == codec
    check_compatible(read_codec(out), codec)    # raises CodecMismatchError naming the difference
    decoder = load_codec_model(codec)           # latentflow.read: rebuilt from the codec alone, sha256 checked

This module is the bottom layer: it imports only errors, configuration, normalization and the
processor configs (pure dataclasses), never a writer, a reader or a model.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from latentflow.configuration import Config, check_choice
from latentflow.errors import CodecMismatchError, ConfigError
from latentflow.format.text import TextColumn
from latentflow.media.config import TRACK_FIELDS, AudioProcessorConfig, ImageProcessorConfig, VideoProcessorConfig
from latentflow.normalization import Normalization
from latentflow.version import __version__

FORMAT_VERSION = 2
LAYOUTS = ("CHW", "CTHW", "CT")  # images, video clips, audio segments
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


def public_url(url: str) -> str:
    """A URL without ``user:password@`` (credentials never reach an output)."""
    return _USERINFO.sub(r"\1", url)


# ---- what is stored -------------------------------------------------------------------------

STORE_DTYPES = ("float32", "float16")


@dataclass
class StoreConfig(Config):
    """What an encode job stores per image.

    Attributes:
        latent: continuous models: ``"mean"`` (posterior mean, default) or ``"sample"``.
        seed: seed of ``"sample"``; the noise of each image is seeded by (seed, key).
        logvar: also store the posterior log-variance (continuous models with a posterior).
        flip: also encode the horizontally flipped image, stored as ``flip_*`` columns.
        quantized: discrete models: also store the quantized vectors beside the indices.
        dtype: dtype of stored float arrays: ``float32`` (default) or ``float16``.
    """

    latent: str = "mean"
    seed: int = 0
    logvar: bool = False
    flip: bool = False
    quantized: bool = False
    dtype: str = "float32"

    def validate(self) -> None:
        check_choice(type(self).__name__, "latent", self.latent, ("mean", "sample"))
        check_choice(type(self).__name__, "dtype", self.dtype, STORE_DTYPES)


# ---- the model reference ------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """Where a model loads from, as typed fields rather than one string.

    Attributes:
        location: a local folder, a name under ``models/``, an fsspec URL (``s3://...``) or a hub id.
        subfolder: inside ``location`` (``"vae"`` in a diffusers pipeline folder).
        variant: weights variant (``"fp16"`` reads ``diffusion_pytorch_model.fp16.safetensors``).
        revision: hub revision (commit) the weights were read at.
    """

    location: str
    subfolder: str | None = None
    variant: str | None = None
    revision: str | None = None

    def __post_init__(self) -> None:
        if not self.location:
            raise ConfigError("ModelRef.location must name a folder, URL, models/ name or hub id, got: ''")
        object.__setattr__(self, "location", public_url(self.location))

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location, "subfolder": self.subfolder, "variant": self.variant, "revision": self.revision}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelRef":
        return cls(**_strict(cls, data, "model.ref"))


def _strict(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = set(data) - set(cls.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} in codec {where}; expected some of {sorted(cls.__dataclass_fields__)}")
    return dict(data)


# ---- the codec ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """The model that made the latents: class, config, weights sha256 and where it loads from."""

    cls: str
    model_type: str | None
    config: dict[str, Any]
    weights_sha256: str
    ref: ModelRef | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.cls, "model_type": self.model_type, "config": self.config,
                "weights_sha256": self.weights_sha256, "ref": self.ref.to_dict() if self.ref else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelInfo":
        data = dict(data)
        ref = data.pop("ref", None)
        location = data.pop("location", None)  # version 1: a plain string
        if ref is None and location:
            ref = {"location": location}
        unknown = set(data) - {"class", "model_type", "config", "weights_sha256"}
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)} in codec model")
        return cls(data["class"], data.get("model_type"), data.get("config") or {}, data["weights_sha256"],
                   ModelRef.from_dict(ref) if ref else None)


@dataclass(frozen=True)
class QuantizerInfo:
    """Discrete codecs: how many codes, the stored index dtype, the quantizer's JSON config."""

    codebook_size: int
    index_dtype: str
    config: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"codebook_size": self.codebook_size, "index_dtype": self.index_dtype, "config": self.config}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantizerInfo":
        return cls(**_strict(cls, data, "quantizer"))


@dataclass(frozen=True)
class Codec:
    """Everything needed to interpret stored latents (see the module docstring).

    Attributes:
        model: class, config, weights sha256 and :class:`ModelRef` of the encoder.
        latent_kind: ``continuous`` or ``discrete``.
        layout: per-row latent layout, ``CHW`` (images), ``CTHW`` (video) or ``CT`` (audio).
        downsample_factor: spatial reduction of the encoder.
        store: what was stored (:class:`StoreConfig`).
        arrays: names of the arrays stored per row, in a fixed order.
        dtype: dtype of stored float arrays; ``compute_dtype``: the encoder's compute dtype.
        shapes: per bucket ``"HxW"``: ``{"latent": [C, h, w], "indices": [h, w]}`` (audio: per segment
            length in samples ``"T"``: ``{"latent": [C, t]}``).
        normalization: the rule from raw to unit-scale latents.
        processor: the processor config (``ImageProcessorConfig``, ``VideoProcessorConfig`` for clips,
            ``AudioProcessorConfig`` for audio segments; audio's decoder record: PyAV, libswresample, the
            target rate and channels and the remix rule).
        decoder: the media decoder and its version (video: PyAV or torchcodec), for the record.
        sources: the public source URLs (no credentials).
        quantizer: discrete codecs only.
        fingerprint: sha256 of the identity (model, weights, processor, store, dtypes; the text
            encoders' fingerprints where there are any).
        text: the cached text columns (:class:`~latentflow.format.text.TextColumn`), one per text encoder.
        tracks: latent columns of a second model beside the row's latents (:class:`TrackColumn`): the
            audio of each video clip's span, with the codec of the audio model that encoded it.
    """

    model: ModelInfo
    latent_kind: str
    downsample_factor: int
    store: StoreConfig
    arrays: tuple[str, ...]
    dtype: str
    compute_dtype: str
    shapes: dict[str, dict[str, list[int]]]
    normalization: Normalization
    processor: ImageProcessorConfig | VideoProcessorConfig | AudioProcessorConfig
    sources: tuple[str, ...] = ()
    quantizer: QuantizerInfo | None = None
    layout: str = "CHW"
    decoder: dict[str, str] | None = None
    text: tuple[TextColumn, ...] = ()
    tracks: tuple["TrackColumn", ...] = ()
    fingerprint: str = ""
    format_version: int = FORMAT_VERSION
    latentflow_version: str = __version__

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"codec layout must be one of {list(LAYOUTS)}, got: {self.layout!r}")
        object.__setattr__(self, "arrays", tuple(self.arrays))
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "text", tuple(self.text))
        object.__setattr__(self, "tracks", tuple(self.tracks))
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", _fingerprint(self._identity()))

    # ---- derived ---------------------------------------------------------------------
    @property
    def discrete(self) -> bool:
        return self.latent_kind == "discrete"

    @property
    def bucketed(self) -> bool:
        """Per-row shapes vary (aspect-ratio buckets)."""
        return bool(getattr(self.processor, "buckets", False) or getattr(self.processor, "frame_buckets", None)
                    or getattr(self.processor, "duration_buckets", None))

    @property
    def modality(self) -> str:
        """``image``, ``video`` or ``audio``: what the processor turned samples into."""
        if isinstance(self.processor, AudioProcessorConfig):
            return "audio"
        return "video" if isinstance(self.processor, VideoProcessorConfig) else "image"

    @property
    def index_dtype(self) -> np.dtype:
        return np.dtype(self.quantizer.index_dtype if self.quantizer else "int64")

    def array_dtype(self, name: str) -> np.dtype:
        """The stored dtype of array ``name`` (indices: the index dtype; others: ``dtype``)."""
        return self.index_dtype if name.endswith("indices") else np.dtype(self.dtype)

    def track(self, name: str) -> "TrackColumn":
        """The track column ``name`` (a ``ConfigError`` naming the ones there are when it has none)."""
        for track in self.tracks:
            if track.name == name:
                return track
        raise ConfigError(f"the output has no track column {name!r}; it has {[t.name for t in self.tracks] or 'none'}")

    def with_sources(self, sources: list[str] | tuple[str, ...]) -> "Codec":
        return replace(self, sources=tuple(sorted(set(sources))))

    # ---- JSON ---------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        """The parts that define which encoder made the latents (unchanged since format 1 for images)."""
        identity = {
            "model_type": self.model.model_type,
            "model_config": self.model.config,
            "weights_sha256": self.model.weights_sha256,
            "processor": self.processor.to_dict(),
            "stored": self._stored(),
            "dtype": self.dtype,
            "compute_dtype": self.compute_dtype,
        }
        identity = {**identity, "modality": self.modality} if self.modality != "image" else identity
        # text encoders and tracks join the identity only when configured: outputs without them keep their fingerprints
        identity = {**identity, "text": [t.identity() for t in self.text]} if self.text else identity
        return {**identity, "tracks": [t.identity() for t in self.tracks]} if self.tracks else identity

    def _stored(self) -> dict[str, Any]:
        return {**self.store.to_dict(), "arrays": list(self.arrays)}

    def to_dict(self) -> dict[str, Any]:
        """The JSON written to ``latentflow.json``, ``_codec.json`` and Parquet schema metadata."""
        return {
            "format_version": self.format_version,
            "latentflow_version": self.latentflow_version,
            "model": self.model.to_dict(),
            "latent_kind": self.latent_kind,
            "layout": self.layout,
            "downsample_factor": self.downsample_factor,
            "stored": self._stored(),
            "dtype": self.dtype,
            "compute_dtype": self.compute_dtype,
            "shapes": self.shapes,
            "normalization": self.normalization.to_dict(),
            "quantizer": self.quantizer.to_dict() if self.quantizer else None,
            "modality": self.modality,
            "processor": self.processor.to_dict(),
            "decoder": self.decoder,
            "sources": list(self.sources),
            "fingerprint": self.fingerprint,
            **({"text_encoders": [t.to_dict() for t in self.text]} if self.text else {}),
            **({"tracks": [t.to_dict() for t in self.tracks]} if self.tracks else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Codec":
        """Read a codec of format version 1 or 2 (extra top-level keys such as the counts of
        ``latentflow.json`` are ignored)."""
        version = int(data.get("format_version", 1))
        if version > FORMAT_VERSION:
            raise ConfigError(f"codec format_version {version} is newer than this latentflow reads ({FORMAT_VERSION}); upgrade latentflow")
        stored = dict(data["stored"])
        arrays = stored.pop("arrays")
        return cls(
            model=ModelInfo.from_dict(data["model"]),
            latent_kind=data["latent_kind"],
            downsample_factor=int(data["downsample_factor"]),
            store=StoreConfig.from_dict(stored),
            arrays=tuple(arrays),
            dtype=data["dtype"],
            compute_dtype=data["compute_dtype"],
            shapes=data.get("shapes") or {},
            normalization=Normalization.from_dict(data.get("normalization") or {}),
            processor=_processor_config(data.get("modality", "image"), data["processor"]),
            decoder=data.get("decoder"),
            sources=tuple(data.get("sources") or ()),
            quantizer=QuantizerInfo.from_dict(data["quantizer"]) if data.get("quantizer") else None,
            layout=data.get("layout", "CHW"),
            text=tuple(TextColumn.from_dict(t) for t in data.get("text_encoders") or ()),
            tracks=tuple(TrackColumn.from_dict(t) for t in data.get("tracks") or ()),
            fingerprint=data.get("fingerprint") or "",
            format_version=FORMAT_VERSION,
            latentflow_version=data.get("latentflow_version", "unknown"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class TrackColumn:
    """A latent column of a second model in every row: the audio of a video clip's time span.

    Rows carry ``<name>`` (the audio latents, (C, t), stored in the row codec's float dtype) and the
    :data:`~latentflow.media.config.TRACK_FIELDS` (``<name>_valid_length``, ``<name>_start_time``,
    ``<name>_duration``). Decode them with ``decode_latents(latents, output, column=name)``.

    Attributes:
        name: the column.
        codec: the audio model's codec (model, normalization, the audio processor as run, layout ``CT``).
        required: a video without audio was an error row (else its clips got silence, ``valid_length`` 0).
    """

    name: str
    codec: Codec
    required: bool = True

    @property
    def columns(self) -> tuple[str, ...]:
        """The per-row columns: the latents, then the span's fields."""
        return (self.name, *(f"{self.name}_{field}" for field in TRACK_FIELDS))

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "required": self.required, "codec": self.codec.fingerprint}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "required": self.required, "codec": self.codec.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrackColumn":
        data = _strict(cls, data, "track")
        return cls(data["name"], Codec.from_dict(data["codec"]), bool(data.get("required", True)))


_PROCESSOR_CONFIGS = {"image": ImageProcessorConfig, "video": VideoProcessorConfig, "audio": AudioProcessorConfig}


def _processor_config(modality: str, data: dict[str, Any]) -> ImageProcessorConfig | VideoProcessorConfig | AudioProcessorConfig:
    if modality not in _PROCESSOR_CONFIGS:
        raise ConfigError(f"codec modality must be one of {list(_PROCESSOR_CONFIGS)}, got: {modality!r}")
    return _PROCESSOR_CONFIGS[modality].from_dict(data)


def _fingerprint(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


# ---- what an encode job stores --------------------------------------------------------------


def stored_arrays(kind: str, store: StoreConfig) -> tuple[str, ...]:
    """Names of the arrays an encode job stores per row, in a fixed order."""
    if kind == "discrete":
        names = ["indices"] + (["latent"] if store.quantized else [])
    else:
        names = ["latent"] + (["logvar"] if store.logvar else [])
    return tuple(names + ([f"flip_{n}" for n in names] if store.flip else []))


# ---- compatibility ----------------------------------------------------------------------------


def as_codec(codec: "Codec | dict[str, Any]") -> Codec:
    """A :class:`Codec` from a codec or its JSON dict (any format version)."""
    return codec if isinstance(codec, Codec) else Codec.from_dict(codec)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def codec_differences(existing: Codec, new: Codec) -> list[str]:
    """Human-readable differences between the identities of two codecs (empty when compatible)."""
    old, cur = _flatten(existing._identity()), _flatten(new._identity())
    return [f"{k}: {old.get(k)!r} -> {cur.get(k)!r}" for k in sorted(set(old) | set(cur)) if old.get(k) != cur.get(k)]


_FIRST = ("model_type", "weights_sha256", "model_config", "processor")  # model identity, then the processor, then the rest


def _rank(difference: str) -> tuple[int, str]:
    key = difference.split(":", 1)[0].split(".", 1)[0]
    return (_FIRST.index(key) if key in _FIRST else len(_FIRST), difference)


def check_compatible(existing: Codec, new: Codec) -> None:
    """Refuse to mix latents from two encoders in one output.

    The message leads with the model when it changed (``model changed: A -> B``), then names every
    identity field that differs: model identity (type, weights, config), processor, then the rest.

    Raises:
        CodecMismatchError: naming every identity field that differs (model, weights, processor, store, dtype).
    """
    if existing.fingerprint == new.fingerprint:
        return
    diffs = sorted(codec_differences(existing, new), key=_rank) or [f"fingerprint: {existing.fingerprint} -> {new.fingerprint}"]
    old, cur = existing.model, new.model
    if (old.cls, old.model_type, old.weights_sha256) != (cur.cls, cur.model_type, cur.weights_sha256):
        where = (lambda m: f" ({m.ref.location})" if m.ref else "")
        diffs.insert(0, f"model changed: {old.cls.rsplit('.', 1)[-1]}{where(old)} -> {cur.cls.rsplit('.', 1)[-1]}{where(cur)}")
    shown = "; ".join(diffs[:8]) + (f"; ... and {len(diffs) - 8} more" if len(diffs) > 8 else "")
    raise CodecMismatchError(
        f"the output was written by a different encoder setup ({shown}). "
        "Use a new output location, or rerun with overwrite=True (--overwrite) to replace it."
    )
