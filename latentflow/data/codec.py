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

    codec = build_codec(model, ImageProcessorConfig(), StoreConfig(), ["s3://b/{0..9}.tar"], "bf16",
                        model_ref=ModelRef("models/kl-f8"))
    Codec.from_dict(codec.to_dict()) == codec
    check_compatible(read_codec(out), codec)    # raises CodecMismatchError naming the difference
    decoder = codec.load_model()                # rebuilt from the codec alone, weights sha256 checked
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from latentflow.data.configs import DataConfig, check_choice
from latentflow.data.processors import ImageProcessor, ImageProcessorConfig
from latentflow.data.video_processor import VideoProcessorConfig
from latentflow.errors import CheckpointError, CodecMismatchError, ConfigError
from latentflow.normalization import Normalization
from latentflow.version import __version__

FORMAT_VERSION = 2
LAYOUTS = ("CHW", "CTHW")
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


def public_url(url: str) -> str:
    """A URL without ``user:password@`` (credentials never reach an output)."""
    return _USERINFO.sub(r"\1", url)


# ---- what is stored -------------------------------------------------------------------------

STORE_DTYPES = ("float32", "float16")


@dataclass
class StoreConfig(DataConfig):
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

    @classmethod
    def from_user(cls, location: str, subfolder: str | None = None, variant: str | None = None,
                  revision: str | None = None) -> "ModelRef":
        """A reference as a user typed it: an existing relative local folder becomes absolute,
        so a reader in another working directory still finds it (``models/`` names stay names)."""
        if "://" not in location and os.path.isdir(location) and not _is_models_name(location):
            location = os.path.abspath(location)
        return cls(location, subfolder, variant, revision)

    @property
    def kind(self) -> str:
        """``url``, ``models``, ``local`` or ``hub``."""
        if "://" in self.location:
            return "url"
        if _is_models_name(self.location):
            return "models"
        return "local" if os.path.isabs(self.location) or os.path.exists(self.location) else "hub"

    def load(self, storage_options: dict | None = None, **kwargs: Any):
        """The model, through ``AutoModel.from_pretrained`` (any family, native or diffusers folder)."""
        from latentflow.auto import AutoModel

        extra = {k: v for k, v in (("variant", self.variant), ("revision", self.revision)) if v}
        return AutoModel.from_pretrained(self.location, storage_options=storage_options, subfolder=self.subfolder, **extra, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location, "subfolder": self.subfolder, "variant": self.variant, "revision": self.revision}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelRef":
        return cls(**_strict(cls, data, "model.ref"))


def _is_models_name(location: str) -> bool:
    from latentflow import hub

    return "/" not in location.strip("/") and (hub.models_dir() / location).is_dir() and not os.path.isdir(location)


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
        layout: per-row latent layout, ``CHW`` (images) or ``CTHW`` (video).
        downsample_factor: spatial reduction of the encoder.
        store: what was stored (:class:`StoreConfig`).
        arrays: names of the arrays stored per row, in a fixed order.
        dtype: dtype of stored float arrays; ``compute_dtype``: the encoder's compute dtype.
        shapes: per bucket ``"HxW"``: ``{"latent": [C, h, w], "indices": [h, w]}``.
        normalization: the rule from raw to unit-scale latents.
        processor: the processor config (``ImageProcessorConfig``, or ``VideoProcessorConfig`` for clips).
        decoder: the media decoder and its version (video: PyAV or torchcodec), for the record.
        sources: the public source URLs (no credentials).
        quantizer: discrete codecs only.
        fingerprint: sha256 of the identity (model, weights, processor, store, dtypes).
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
    processor: ImageProcessorConfig | VideoProcessorConfig
    sources: tuple[str, ...] = ()
    quantizer: QuantizerInfo | None = None
    layout: str = "CHW"
    decoder: dict[str, str] | None = None
    fingerprint: str = ""
    format_version: int = FORMAT_VERSION
    latentflow_version: str = __version__

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"codec layout must be one of {list(LAYOUTS)}, got: {self.layout!r}")
        object.__setattr__(self, "arrays", tuple(self.arrays))
        object.__setattr__(self, "sources", tuple(self.sources))
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", _fingerprint(self._identity()))

    # ---- derived ---------------------------------------------------------------------
    @property
    def discrete(self) -> bool:
        return self.latent_kind == "discrete"

    @property
    def bucketed(self) -> bool:
        """Per-row shapes vary (aspect-ratio buckets)."""
        return bool(self.processor.buckets or getattr(self.processor, "frame_buckets", None))

    @property
    def modality(self) -> str:
        """``image`` or ``video``: what the processor turned samples into."""
        return "video" if isinstance(self.processor, VideoProcessorConfig) else "image"

    @property
    def index_dtype(self) -> np.dtype:
        return np.dtype(self.quantizer.index_dtype if self.quantizer else "int64")

    def array_dtype(self, name: str) -> np.dtype:
        """The stored dtype of array ``name`` (indices: the index dtype; others: ``dtype``)."""
        return self.index_dtype if name.endswith("indices") else np.dtype(self.dtype)

    def with_sources(self, sources: list[str] | tuple[str, ...]) -> "Codec":
        return replace(self, sources=tuple(sorted(set(sources))))

    def load_model(self, storage_options: dict | None = None, weights: str | None = None):
        """Rebuild the encoder/decoder from the codec alone (``weights`` overrides the location).

        Raises:
            CheckpointError: no location is recorded, or the weights found are not the ones
                that made these latents (sha256 differs).
        """
        ref = ModelRef.from_user(weights) if weights else self.model.ref
        if ref is None:
            raise CheckpointError("the codec records no model location; pass weights=<checkpoint dir, URL or models/ name>")
        model = ref.load(storage_options)
        if self.model.weights_sha256 not in (model.fingerprint(), _state_sha(model)):
            raise CheckpointError(f"weights at {ref.location!r} (sha256 {model.fingerprint()}) are not the ones that encoded "
                                  f"these latents (sha256 {self.model.weights_sha256})")
        return model.eval()

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
        return {**identity, "modality": "video"} if self.modality == "video" else identity

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
            fingerprint=data.get("fingerprint") or "",
            format_version=FORMAT_VERSION,
            latentflow_version=data.get("latentflow_version", "unknown"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _processor_config(modality: str, data: dict[str, Any]) -> ImageProcessorConfig | VideoProcessorConfig:
    if modality not in ("image", "video"):
        raise ConfigError(f"codec modality must be 'image' or 'video', got: {modality!r}")
    return (VideoProcessorConfig if modality == "video" else ImageProcessorConfig).from_dict(data)


def _fingerprint(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _state_sha(model) -> str:
    from latentflow import hub

    return hub.state_dict_sha256(model.state_dict())


# ---- building -------------------------------------------------------------------------------


def stored_arrays(kind: str, store: StoreConfig) -> tuple[str, ...]:
    """Names of the arrays an encode job stores per row, in a fixed order."""
    if kind == "discrete":
        names = ["indices"] + (["latent"] if store.quantized else [])
    else:
        names = ["latent"] + (["logvar"] if store.logvar else [])
    return tuple(names + ([f"flip_{n}" for n in names] if store.flip else []))


def bucket_shapes(model, processor_config, kind: str = "continuous") -> dict[str, dict[str, list[int]]]:
    """Per bucket ``"HxW"`` (``"TxHxW"`` for clips): the stored per-row shape of the latent
    (``model.latent_shape``) and of indices."""
    from latentflow.data.encode import build_processor

    processor = build_processor(processor_config, model.downsample_factor, getattr(model, "temporal_downsample_factor", None))
    cfg = processor.config
    sizes = getattr(processor, "buckets", None) or getattr(getattr(processor, "_geometry", None), "buckets", None) or [(cfg.resolution,) * 2]
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
    from latentflow.data.sources import SourceConfig

    if isinstance(sources, SourceConfig):
        urls = list(sources.urls) or [json.dumps(sources.hf_load_args, sort_keys=True)]
    elif isinstance(sources, str):
        urls = [sources]
    else:
        urls = list(sources or [])
    return [public_url(u) for u in urls]


def _quantizer_info(model, config: dict[str, Any]) -> QuantizerInfo:
    from latentflow.data.encoding import codebook_size_of  # the model layer: torch
    from latentflow.quantizers.base import numpy_index_dtype_for

    size = codebook_size_of(model)
    return QuantizerInfo(size, numpy_index_dtype_for(size).name, config.get("quantizer"))


def _temporal_stride(model) -> int | None:
    """A video model's temporal reduction (None for image models)."""
    return getattr(model, "temporal_downsample_factor", None) or None


def _decoder_info(config: VideoProcessorConfig) -> dict[str, str]:
    from latentflow.data.video import decoder_info

    return decoder_info(config.decoder)


def build_codec(model, processor_config: ImageProcessorConfig | VideoProcessorConfig, store: StoreConfig, sources: Any, dtype: str = "fp32",
                model_ref: ModelRef | str | None = None) -> Codec:
    """The codec of an encode job.

    Args:
        model: the ``LatentModel`` that encodes.
        processor_config: the image or video processor config (video: recorded with its clip
            lengths forced to the model's temporal stride, and with the decoder's name and version).
        store: what is stored.
        sources: a ``SourceConfig``, a URL or a list of URLs.
        dtype: compute dtype of the encoder (``fp32``, ``bf16``, ``fp16``).
        model_ref: where the weights load from again (a :class:`ModelRef`, or a location string).
    """
    config = model.config.to_dict()
    kind = getattr(model, "latent_kind", "continuous")
    if isinstance(model_ref, str):
        model_ref = ModelRef.from_user(model_ref)
    video = isinstance(processor_config, VideoProcessorConfig)
    if video:
        from latentflow.data.encode import build_processor

        processor_config = build_processor(processor_config, model.downsample_factor, _temporal_stride(model)).config  # as run
    return Codec(
        model=ModelInfo(f"{type(model).__module__}.{type(model).__qualname__}", config.get("model_type"), config,
                        model.fingerprint(), model_ref),
        latent_kind=kind,
        layout="CTHW" if _temporal_stride(model) else "CHW",
        downsample_factor=int(model.downsample_factor),
        store=store,
        arrays=stored_arrays(kind, store),
        dtype=store.dtype,
        compute_dtype=dtype,
        shapes=bucket_shapes(model, processor_config, kind),
        normalization=model.normalization,
        processor=processor_config,
        decoder=_decoder_info(processor_config) if video else None,
        sources=tuple(_source_urls(sources)),
        quantizer=_quantizer_info(model, config) if kind == "discrete" else None,
    )


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


def check_compatible(existing: Codec, new: Codec) -> None:
    """Refuse to mix latents from two encoders in one output.

    Raises:
        CodecMismatchError: naming every identity field that differs (model, weights, processor, store, dtype).
    """
    if existing.fingerprint == new.fingerprint:
        return
    diffs = codec_differences(existing, new) or [f"fingerprint: {existing.fingerprint} -> {new.fingerprint}"]
    shown = "; ".join(diffs[:8]) + (f"; ... and {len(diffs) - 8} more" if len(diffs) > 8 else "")
    raise CodecMismatchError(
        f"the output was written by a different encoder setup ({shown}). "
        "Use a new output location, or rerun with overwrite=True (--overwrite) to replace it."
    )
