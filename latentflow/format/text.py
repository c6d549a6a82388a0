"""A cached text column in the codec: which text encoder wrote it, and how its rows are stored.

A :class:`TextColumn` is the codec's entry for one text encoder of an encode job
(``text_encoders=[{name: t5, model: <folder>}]``). ``info`` is the encoder's
``TextEncoderInfo.to_dict()`` (weights and tokenizer sha256, layer, pooling, max_length, padding
rule, storage dtype, pinned hub commit); ``fingerprint`` hashes what determines the values. The
codec's identity holds ``(name, fingerprint)`` of each column, so a rerun with another text encoder
is refused like a rerun with another VAE.

Per row, a column ``t5`` stores:

==================  =========================================================================
``t5``              ``(L, D)`` hidden states (``L`` = the caption's own tokens when ``padding='trim'``)
``t5_length``       int32: the caption's tokens
``t5_truncated``    bool: the caption was longer than ``max_length`` and was cut
``t5_pooled``       ``(D_pooled,)`` where the encoder stores a pooled vector
==================  =========================================================================

Storage dtypes: ``fp16``/``fp32`` as numpy float16/float32; ``bf16`` as its uint16 bit pattern
(numpy and ``datasets`` have no bf16): ``torch.from_numpy(a).view(torch.bfloat16)`` reads it exactly.

Parquet holds one value per row (``Array2D(shape=(None, D))``, variable first dimension). Zarr
holds each distinct embedding of a (bucket, shard) group once: ``t5`` is the rows' unique
embeddings concatenated on tokens ``(sum L_u, D)``, ``t5__offsets`` ``(U + 1,)`` their bounds, and
``t5__ref`` ``(N,)`` the unique embedding of each row (``t5_pooled`` is ``(U, D)``, indexed by ``t5__ref``
too).

This module is part of the bottom layer: it imports no encoder, writer or reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentflow.errors import ConfigError

STORAGE_NUMPY = {"bf16": "uint16", "fp16": "float16", "fp32": "float32"}
OFFSETS, REF = "__offsets", "__ref"  # Zarr: the unique embeddings' bounds, each row's unique embedding


@dataclass(frozen=True)
class TextColumn:
    """One text encoder's column(s) in an output.

    Attributes:
        name: the column (``t5``); also the prefix of ``<name>_length``, ``<name>_truncated``, ``<name>_pooled``.
        fingerprint: sha256 of what determines the values (``TextEncoderInfo.fingerprint()``).
        info: ``TextEncoderInfo.to_dict()``: provenance and every processing field.
    """

    name: str
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.name or not self.fingerprint:
            raise ConfigError(f"TextColumn needs a name and a fingerprint, got: {self.name!r}, {self.fingerprint!r}")
        if self.dtype not in STORAGE_NUMPY:
            raise ConfigError(f"text column {self.name!r}: dtype must be one of {list(STORAGE_NUMPY)}, got: {self.dtype!r}")

    # ---- what is stored ------------------------------------------------------------------
    @property
    def dtype(self) -> str:
        """Storage dtype: ``bf16`` (uint16 bit pattern), ``fp16`` or ``fp32``."""
        return self.info.get("dtype", "bf16")

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(STORAGE_NUMPY[self.dtype])

    @property
    def hidden_width(self) -> int | None:
        return self.info.get("hidden_width")

    @property
    def pooled_width(self) -> int | None:
        return self.info.get("pooled_width")

    @property
    def padding(self) -> str:
        """``trim`` (the caption's own tokens) or ``max_length`` (what the family attends to, pads included)."""
        return self.info.get("padding", "trim")

    @property
    def columns(self) -> tuple[str, ...]:
        """The per-row columns this encoder writes."""
        names = [self.name] if self.hidden_width else []
        names += [f"{self.name}_length", f"{self.name}_truncated"]
        return tuple(names + ([f"{self.name}_pooled"] if self.pooled_width else []))

    def identity(self) -> dict[str, str]:
        return {"name": self.name, "fingerprint": self.fingerprint}

    # ---- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint, "info": dict(self.info)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TextColumn":
        unknown = set(data) - {"name", "fingerprint", "info"}
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)} in codec text_encoders; expected name, fingerprint, info")
        return cls(data["name"], data["fingerprint"], dict(data.get("info") or {}))


def text_columns(columns: tuple[TextColumn, ...]) -> tuple[str, ...]:
    """Every per-row column the text encoders of a codec write."""
    return tuple(c for col in columns for c in col.columns)


def text_totals(columns: tuple[TextColumn, ...], markers: dict) -> dict[str, dict[str, Any]]:
    """Per text column, over the committed shards: rows, distinct embeddings stored (``unique``; deduplicated
    per shard), ``dedup_ratio`` (rows / unique), truncated captions and stored token rows, and the bytes per
    caption as stored against a 512-token (or ``max_length``) padded fp32 row."""
    out = {}
    for text in columns:
        total = {"rows": 0, "unique": 0, "truncated": 0, "tokens": 0}
        for m in markers.values():
            for k, v in m.text.get(text.name, {}).items():
                total[k] = total.get(k, 0) + v
        item = text.numpy_dtype.itemsize
        stored = total["tokens"] * (text.hidden_width or 0) * item + total["unique"] * (text.pooled_width or 0) * item
        padded = (text.info.get("max_length") or 512) * (text.hidden_width or 0) * 4 + (text.pooled_width or 0) * 4
        per_caption = stored / max(total["rows"], 1)
        out[text.name] = {**total, "dedup_ratio": round(total["rows"] / max(total["unique"], 1), 4),
                          "bytes_per_caption": round(per_caption, 1), "padded_fp32_bytes": padded,
                          "vs_padded_fp32": round(padded / per_caption, 2) if per_caption else None}
    return out
