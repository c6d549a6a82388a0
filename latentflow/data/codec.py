"""Codec metadata: everything needed to interpret stored latents, written beside them.

The codec names the model (class, ``model_type``, full config, weights sha256), what was
stored and in which dtype, the per-bucket shapes, the normalization constants, the quantizer
config and codebook size, the full processor config and the source URLs. It never holds
storage options or credentials.

Its *fingerprint* hashes only the parts that define which encoder made the latents, so
appending new shards with the same encoder is fine while mixing encoders is refused.

Example::

    codec = build_codec(model, ImageProcessorConfig(), StoreConfig(), ["s3://b/{0..9}.tar"], "bf16")
    check_compatible(read_codec(out), codec)    # raises CodecMismatchError naming the difference
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from latentflow.data.encoding import StoreConfig, codebook_size_of, index_dtype
from latentflow.data.processors import ImageProcessor, ImageProcessorConfig
from latentflow.data.sources import SourceConfig
from latentflow.errors import CodecMismatchError
from latentflow.version import __version__

FORMAT_VERSION = 1
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


def _public_url(url: str) -> str:
    """A URL without ``user:password@`` (credentials never reach an output)."""
    return _USERINFO.sub(r"\1", url)


def _source_urls(sources: Any) -> list[str]:
    if isinstance(sources, SourceConfig):
        urls = list(sources.urls) or [json.dumps(sources.hf_load_args, sort_keys=True)]
    elif isinstance(sources, str):
        urls = [sources]
    else:
        urls = list(sources or [])
    return [_public_url(u) for u in urls]


def stored_arrays(kind: str, store: StoreConfig) -> list[str]:
    """Names of the arrays an encode job stores per row, in a fixed order."""
    if kind == "discrete":
        names = ["indices"] + (["latent"] if store.quantized else [])
    else:
        names = ["latent"] + (["logvar"] if store.logvar else [])
    return names + ([f"flip_{n}" for n in names] if store.flip else [])


def bucket_shapes(model, processor_config: ImageProcessorConfig, kind: str = "continuous") -> dict[str, dict[str, list[int]]]:
    """Per bucket ``"HxW"``: the stored per-row shape of the latent (``model.latent_shape``) and of indices."""
    processor = ImageProcessor(processor_config, model.downsample_factor)
    res = processor_config.resolution
    shapes = {}
    for h, w in processor.buckets or [(res, res)]:
        try:
            latent = [int(s) for s in model.latent_shape(h, w)]
        except Exception:  # a family that does not report shapes: the sink records the observed ones
            continue
        shapes[f"{h}x{w}"] = {"latent": latent, "indices": latent[1:]} if kind == "discrete" else {"latent": latent}
    return shapes


def build_codec(model, processor_config: ImageProcessorConfig, store: StoreConfig, sources: Any, dtype: str = "fp32", model_location: str | None = None) -> dict[str, Any]:
    """The codec metadata of an encode job (JSON-able).

    Args:
        model: the ``LatentModel`` that encodes.
        processor_config: the image processor config.
        store: what is stored.
        sources: a :class:`SourceConfig`, a URL or a list of URLs.
        dtype: compute dtype of the encoder (``fp32``, ``bf16``, ``fp16``).
        model_location: where the weights can be loaded from again (path, URL or ``models/`` name).

    Returns:
        the codec dict, as written to ``latentflow.json``, Parquet schema metadata and Zarr attributes.
    """
    config = model.config.to_dict()
    kind = getattr(model, "latent_kind", "continuous")
    codec: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "latentflow_version": __version__,
        "model": {
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "model_type": config.get("model_type"),
            "config": config,
            "weights_sha256": model.fingerprint(),
            "location": _public_url(model_location) if model_location else None,
        },
        "latent_kind": kind,
        "downsample_factor": int(model.downsample_factor),
        "stored": {**store.to_dict(), "arrays": stored_arrays(kind, store)},
        "dtype": store.dtype,
        "compute_dtype": dtype,
        "shapes": bucket_shapes(model, processor_config, kind),
        "normalization": {k: config.get(k) for k in ("scaling_factor", "shift_factor", "latents_mean", "latents_std")},
        "quantizer": None,
        "processor": processor_config.to_dict(),
        "sources": _source_urls(sources),
    }
    if kind == "discrete":
        size = codebook_size_of(model)
        codec["quantizer"] = {"codebook_size": size, "index_dtype": index_dtype(size).name, "config": config.get("quantizer")}
    codec["fingerprint"] = codec_fingerprint(codec)
    return codec


def _identity(codec: dict[str, Any]) -> dict[str, Any]:
    """The parts of a codec that define which encoder made the latents."""
    model = codec["model"]
    return {
        "model_type": model["model_type"],
        "model_config": model["config"],
        "weights_sha256": model["weights_sha256"],
        "processor": codec["processor"],
        "stored": codec["stored"],
        "dtype": codec["dtype"],
        "compute_dtype": codec["compute_dtype"],
    }


def codec_fingerprint(codec: dict[str, Any]) -> str:
    """sha256 over the identity-defining parts (model, weights, processor, what is stored, dtypes)."""
    blob = json.dumps(_identity(codec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def codec_differences(existing: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between the identities of two codecs (empty when compatible)."""
    old, cur = _flatten(_identity(existing)), _flatten(_identity(new))
    return [f"{k}: {old.get(k)!r} -> {cur.get(k)!r}" for k in sorted(set(old) | set(cur)) if old.get(k) != cur.get(k)]


def check_compatible(existing_codec: dict[str, Any], new_codec: dict[str, Any]) -> None:
    """Refuse to mix latents from two encoders in one output.

    Raises:
        CodecMismatchError: naming every identity field that differs (model, weights, processor, store, dtype).
    """
    diffs = codec_differences(existing_codec, new_codec)
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; ... and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        raise CodecMismatchError(
            f"the output was written by a different encoder setup ({shown}). "
            "Use a new output location, or rerun with overwrite=True (--overwrite) to replace it."
        )
