"""The cached columns beside the latents in a shard's Zarr groups: text-encoder outputs (each distinct
embedding stored once per group) and a video clip's audio track, with the figures the commit marker records.

Their Parquet columns are :func:`latentflow.format.tables.text_parquet_columns` and
:func:`~latentflow.format.tables.track_parquet_columns`; the layout they follow is :mod:`latentflow.format.text`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from latentflow.media.config import TRACK_FIELDS


def write_rows(group, name: str, data: np.ndarray) -> None:
    """One chunk per row (random access by row), all rows in one shard file (one writer per file)."""
    chunks = (1, *data.shape[1:])
    group.create_array(name, data=data, chunks=chunks, shards=(max(data.shape[0], 1), *data.shape[1:]))


def unique_rows(text, columns: dict[str, Any], rows: list[int]) -> tuple[list[int], np.ndarray]:
    """Content-addressed dedup of one text column over ``rows``: ``(positions in columns of the distinct
    embeddings, in first-seen order; (len(rows),) index of each row's)``. Rows with the same values
    (the same caption under the same encoder) share one stored embedding."""
    first: dict[bytes, int] = {}
    unique, ref = [], np.zeros(len(rows), dtype=np.int32)
    for j, i in enumerate(rows):
        digest = hashlib.sha1()
        for name in (text.name, f"{text.name}_pooled"):
            if name in columns:
                digest.update(np.ascontiguousarray(columns[name][i]).tobytes() + b"|")
        digest.update(str(int(np.asarray(columns[f"{text.name}_length"][i]).reshape(-1)[0])).encode())
        key = digest.digest()
        if key not in first:
            first[key] = len(unique)
            unique.append(i)
        ref[j] = first[key]
    return unique, ref


def write_text(group, text, columns: dict[str, Any], rows: list[int]) -> None:
    """One text encoder's columns of a (bucket, shard) group, each distinct embedding once
    (layout: :mod:`latentflow.format.text`): ``<name>`` (sum of unique L, D), ``<name>__offsets``,
    ``<name>__ref``; ``<name>_length``/``<name>_truncated`` per row, ``<name>_pooled`` per unique embedding."""
    from latentflow.format.text import OFFSETS, REF

    if f"{text.name}_length" not in columns:  # a shard whose samples all failed
        return
    unique, ref = unique_rows(text, columns, rows)
    name, dtype = text.name, text.numpy_dtype
    if text.hidden_width:
        values = [np.asarray(columns[name][i], dtype=dtype).reshape(-1, text.hidden_width) for i in unique]
        flat = np.concatenate(values) if values else np.zeros((0, text.hidden_width), dtype)
        group.create_array(name, data=flat, chunks=(max(len(flat), 1), text.hidden_width))
        group.create_array(name + OFFSETS, data=np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int64))
    group.create_array(name + REF, data=ref)
    group.create_array(f"{name}_length", data=np.asarray([columns[f"{name}_length"][i] for i in rows], dtype=np.int32).reshape(-1))
    group.create_array(f"{name}_truncated", data=np.asarray([columns[f"{name}_truncated"][i] for i in rows], dtype=bool).reshape(-1))
    if text.pooled_width:
        pooled = np.asarray([columns[f"{name}_pooled"][i] for i in unique], dtype=dtype).reshape(-1, text.pooled_width)
        group.create_array(f"{name}_pooled", data=pooled)


def write_track(group, track, columns: dict[str, Any], rows: list[int]) -> None:
    """A video clip's audio track in a (bucket, shard) group: ``<name>`` (rows, C, t) one chunk per row, as the
    latents, and its :data:`~latentflow.media.config.TRACK_FIELDS` per row."""
    if track.name not in columns:  # a shard whose samples all failed
        return
    write_rows(group, track.name, np.stack([np.asarray(columns[track.name][i], dtype=track.codec.dtype) for i in rows]))
    for field, kind in TRACK_FIELDS.items():
        name = f"{track.name}_{field}"
        group.create_array(name, data=np.asarray([columns[name][i] for i in rows], dtype=kind).reshape(-1))


def text_counts(text, columns: dict[str, Any]) -> dict[str, int]:
    """A shard's figures for one text column: rows, distinct embeddings, truncated captions, stored tokens."""
    rows = list(range(len(columns["key"])))
    if f"{text.name}_length" not in columns or not rows:
        return {"rows": 0, "unique": 0, "truncated": 0, "tokens": 0}
    unique, _ = unique_rows(text, columns, rows)
    tokens = sum(len(columns[text.name][i]) for i in unique) if text.name in columns else 0
    return {"rows": len(rows), "unique": len(unique), "truncated": int(np.asarray(columns[f"{text.name}_truncated"], dtype=bool).sum()),
            "tokens": int(tokens)}
