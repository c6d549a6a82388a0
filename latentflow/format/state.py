"""The state of a latent output, read from what is on disk: committed shards, counts, buckets, statistics.

Writers and readers both learn the state through this module (a reader never imports a writer):
which shards are committed (their :class:`~latentflow.format.marker.CommitMarker`), the output's
codec, and what the markers add up to.

Layout of an output (the writer's side is :mod:`latentflow.store.writer`)::

    <out>/latentflow.json          codec + cumulative counts + runs (SUMMARY_FILE)
    <out>/_codec.json              the codec alone, written before the first shard (CODEC_FILE)
    <out>/_done/<shard>.json       one commit marker per committed shard, written last
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np

from latentflow.format.codec import Codec
from latentflow.format.marker import CommitMarker

CODEC_FILE = "_codec.json"
SUMMARY_FILE = "latentflow.json"


def join(root: str, *parts: str) -> str:
    """``root/part/...`` for fsspec paths (no os.path: object stores use ``/``)."""
    return "/".join([root.rstrip("/"), *parts])


def committed_shards(out_url: str, storage_options: dict | None = None) -> dict[str, CommitMarker]:
    """``{shard_id: marker}`` of every committed shard (a shard without a marker is not committed)."""
    fs, root = fsspec.url_to_fs(str(out_url), **(storage_options or {}))
    fs.invalidate_cache()  # markers are written by other processes; s3fs caches listings per process
    done = join(root, "_done")
    if not fs.exists(done):
        return {}
    paths = sorted(fs.glob(join(done, "*.json")))
    contents = fs.cat(paths) if paths else {}  # one concurrent batch of GETs on object stores
    markers = {}
    for path in paths:
        marker = CommitMarker.from_dict(json.loads(contents[path]))
        markers[marker.shard_id] = marker
    return markers


def read_output_codec(out_url: str, storage_options: dict | None = None) -> Codec | None:
    """The codec of an existing output (``latentflow.json`` or ``_codec.json``), or None for a new one."""
    fs, root = fsspec.url_to_fs(str(out_url), **(storage_options or {}))
    for name in (SUMMARY_FILE, CODEC_FILE):
        path = join(root, name)
        if fs.exists(path):
            with fs.open(path, "r") as f:
                data = json.load(f)
            return Codec.from_dict(data.get("codec", data))
    return None


def merge_stats(markers: dict[str, CommitMarker], name: str = "latent") -> dict[str, list[float]] | None:
    """Per-channel count/sum/sumsq summed over markers, plus mean and std."""
    parts = [m.stats[name] for m in markers.values() if name in m.stats and m.stats[name]["count"]]
    if not parts:
        return None
    count = np.sum([p["count"] for p in parts], axis=0)
    total = np.sum([p["sum"] for p in parts], axis=0)
    sumsq = np.sum([p["sumsq"] for p in parts], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # channels with no finite rows stay NaN
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        std = np.sqrt(np.maximum(sumsq / np.maximum(count, 1) - mean**2, 0.0))
    return {"count": count.tolist(), "sum": total.tolist(), "sumsq": sumsq.tolist(), "mean": mean.tolist(), "std": std.tolist()}


def read_json(fs, path: str) -> dict[str, Any]:
    """A JSON object file, or ``{}`` when it is missing or unreadable (an earlier writer crashed mid-write)."""
    try:
        with fs.open(path, "r") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def sum_buckets(markers: dict[str, CommitMarker]) -> dict[str, int]:
    """Rows per bucket over the committed shards."""
    out: dict[str, int] = {}
    for m in markers.values():
        for b, n in m.buckets.items():
            out[b] = out.get(b, 0) + n
    return out


@dataclass(frozen=True)
class OutputState:
    """What the committed shards of an output add up to."""

    markers: dict[str, CommitMarker]

    @classmethod
    def read(cls, out_url: str, storage_options: dict | None = None) -> "OutputState":
        return cls(committed_shards(out_url, storage_options))

    @property
    def rows(self) -> int:
        return sum(m.rows for m in self.markers.values())

    @property
    def shards(self) -> int:
        return len(self.markers)

    @property
    def sample_errors(self) -> int:
        return sum(len(m.errors) for m in self.markers.values())

    @property
    def buckets(self) -> dict[str, int]:
        return sum_buckets(self.markers)

    def parquet_files(self) -> list[str]:
        return sorted(f for m in self.markers.values() for f in m.parquet_files)
