"""The commit marker: the second on-disk contract beside the codec.

A shard of a latent output is committed when ``_done/<shard_id>.json`` exists; the writer puts
it there last, after every file of the shard. Its content says what was committed (row count,
a hash of the keys, a checksum of the arrays, the files), so readers count rows and find files
without opening them, and a rerun skips the shard. Markers written before the format had a
version (``marker_version`` absent) read as version 1, unchanged.

Example::

    marker = CommitMarker(shard_id="shard-000", rows=16, keys_sha256=..., checksum=..., codec_fingerprint=...)
    CommitMarker.from_dict(json.loads(marker.to_json())) == marker
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from latentflow.errors import ConfigError

MARKER_VERSION = 2
ERROR_COLUMNS = ("key", "shard", "stage", "error_type", "message")  # one row of errors.parquet


@dataclass(frozen=True)
class CommitMarker:
    """What one committed shard holds.

    Attributes:
        shard_id: the input shard's id (it names every output file of the shard).
        rows: rows committed (0 for a shard whose samples all failed but whose errors are kept).
        keys_sha256: sha256 of the sorted keys, newline-joined.
        checksum: sha256 over the stored arrays' bytes in row order.
        codec_fingerprint: the codec the rows were written under.
        buckets: rows per bucket (``"HxW"``, ``"TxHxW"``).
        stats: per stored float array, per-channel ``count``/``sum``/``sumsq``.
        errors: the shard's failed samples, one dict per row of ``errors.parquet`` (:data:`ERROR_COLUMNS`).
        formats: the sinks written (``parquet``, ``zarr``).
        files: the shard's files (Parquet files and Zarr groups), as URLs.
        written_at: Unix time of the commit.
        text: per text column, ``rows``, ``unique`` (distinct embeddings stored), ``truncated`` and
            ``tokens`` (stored token rows) of the shard; empty without text encoders.
        marker_version: this format's version.
    """

    shard_id: str
    rows: int
    keys_sha256: str = ""
    checksum: str = ""
    codec_fingerprint: str = ""
    buckets: dict[str, int] = field(default_factory=dict)
    stats: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    errors: tuple[dict[str, str], ...] = ()
    formats: tuple[str, ...] = ("parquet", "zarr")
    files: tuple[str, ...] = ()
    written_at: float = 0.0
    text: dict[str, dict[str, int]] = field(default_factory=dict)
    marker_version: int = MARKER_VERSION

    def __post_init__(self) -> None:
        if self.rows < 0:
            raise ConfigError(f"CommitMarker.rows must be >= 0, got: {self.rows}")
        object.__setattr__(self, "errors", tuple(dict(e) for e in self.errors))
        object.__setattr__(self, "formats", tuple(self.formats))
        object.__setattr__(self, "files", tuple(self.files))

    @property
    def parquet_files(self) -> list[str]:
        return [f for f in self.files if f.endswith(".parquet")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "marker_version": self.marker_version, "shard_id": self.shard_id, "rows": self.rows,
            "keys_sha256": self.keys_sha256, "checksum": self.checksum, "codec_fingerprint": self.codec_fingerprint,
            "buckets": dict(self.buckets), "stats": self.stats, "errors": [dict(e) for e in self.errors],
            "formats": list(self.formats), "files": list(self.files), "written_at": self.written_at,
            **({"text": self.text} if self.text else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CommitMarker":
        """Read a marker of any version (version 1: no ``marker_version``, ``formats`` possibly absent)."""
        version = int(data.get("marker_version", 1))
        if version > MARKER_VERSION:
            raise ConfigError(f"commit marker version {version} is newer than this latentflow reads ({MARKER_VERSION}); "
                              "upgrade latentflow")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)} in commit marker of shard {data.get('shard_id')!r}")
        fields = {k: v for k, v in data.items() if k != "marker_version"}
        fields.setdefault("formats", ("zarr", "parquet") if version == 1 else ())
        return cls(**fields, marker_version=MARKER_VERSION)
