"""Edited captions: recompute the text columns of the rows whose caption changed, and nothing else.

A rerun of an encode job skips committed shards, so after captions are edited in the source (a
``<stem>.txt`` sidecar rewritten, a ``metadata.jsonl`` regenerated) their cached embeddings would be stale.
With ``refresh_captions=true`` the job reads each committed shard's captions from the source again
(records only: no image, video or audio is decoded or encoded), compares them with the captions its rows
were committed with, and rewrites only the shards where one differs:

* the rows' latents, and every other column, are read back from the shard's Parquet and written again
  bit for bit;
* each text encoder computes only the distinct new captions that no row of the shard already holds (a
  caption edited to another row's text reuses that row's stored embedding);
* a new caption that breaks the encoder's rules (``empty_caption='error'``, bytes that are not UTF-8) drops its
  row into ``errors.parquet``, as a first run does;
* the shard is committed again through the same writer (Parquet, Zarr, then the marker last).

Example::

    report = refresh_captions(plan, text_encoders)
    report.rows_changed, report.captions_encoded
"""

from __future__ import annotations

from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow.parquet as pq

from latentflow.encode.shard import ProcessedSample, encode_captions
from latentflow.errors import ConfigError
from latentflow.format.tables import column_to_numpy
from latentflow.sources.shards import read_shard
from latentflow.store.writer import ShardWriter


@dataclass(frozen=True)
class CaptionRefresh:
    """What a caption refresh did.

    Attributes:
        shards_checked: committed shards whose captions were read from the source again.
        shards_rewritten: shards with at least one changed caption, committed again.
        rows_changed: rows whose caption changed.
        captions_encoded: distinct new captions run through the text encoders (per encoder, summed).
        captions_reused: changed rows whose new caption another row of the shard already held.
        rows_dropped: changed rows whose new caption is an error row now.
    """

    shards_checked: int = 0
    shards_rewritten: int = 0
    rows_changed: int = 0
    captions_encoded: int = 0
    captions_reused: int = 0
    rows_dropped: int = 0


def _array_columns(codec) -> set[str]:
    """The columns stored as arrays: the latents, the text columns' embeddings, the tracks' latents."""
    names = set(codec.arrays) | {t.name for t in codec.tracks}
    return names | {t.name for t in codec.text} | {f"{t.name}_pooled" for t in codec.text}


def stored_columns(files: list[str], codec, storage_options: dict | None = None) -> dict[str, list]:
    """The committed rows of a shard's Parquet files as the writer's columns (arrays as numpy, others as values)."""
    arrays, columns = _array_columns(codec), {}
    for url in (f for f in files if f.endswith(".parquet")):
        with fsspec.open(url, "rb", **(storage_options or {})) as f:
            table = pq.read_table(f)
        for name in table.column_names:
            col = table.column(name)
            values = list(column_to_numpy(col)) if name in arrays else col.to_pylist()
            columns.setdefault(name, []).extend(values)
    return columns


def refresh_captions(plan, text_encoders, formats: tuple[str, ...] = ("parquet", "zarr")) -> CaptionRefresh:
    """Recompute the text columns of committed rows whose caption changed in the source (module docstring).

    Args:
        plan: the job's prepared :class:`~latentflow.jobs.plan.EncodePlan` (its committed shards, source, codec).
        text_encoders: the loaded :class:`~latentflow.encode.text.TextEncoder` s of ``plan.codec.text``, in order.
        formats: the sinks the job writes.

    Raises:
        ConfigError: the output has no text columns, or no Parquet copy to read the rows back from.
    """
    codec = plan.codec
    if not codec.text:
        raise ConfigError("refresh_captions recomputes cached text-encoder columns, and this job has no text_encoders")
    if "parquet" not in formats:
        raise ConfigError("refresh_captions reads the committed rows back from Parquet; keep parquet in formats")
    writer = ShardWriter(plan.output, codec, formats, plan.storage_options)
    totals = dict.fromkeys(CaptionRefresh.__dataclass_fields__, 0)
    for shard in plan.shards:
        marker = (plan.committed or {}).get(shard.shard_id)
        if marker is None or not marker.rows:
            continue
        totals["shards_checked"] += 1
        captions = {r.key: r.caption for r in read_shard(shard, plan.source) if r.error is None}
        columns = stored_columns(list(marker.files), codec, plan.storage_options)
        changed = [i for i, key in enumerate(columns["key"]) if _source_key(columns, i) in captions
                   and captions[_source_key(columns, i)] != columns["caption"][i]]
        if not changed:
            continue
        errors = _recompute(columns, changed, captions, text_encoders, shard.shard_id, totals)
        kept = [i for i in range(len(columns["key"])) if i not in errors]
        writer.write_shard(shard.shard_id, {name: [values[i] for i in kept] for name, values in columns.items()},
                           [*marker.errors, *errors.values()])
        totals["shards_rewritten"] += 1
        totals["rows_changed"] += len(changed)
        totals["rows_dropped"] += len(errors)
    return CaptionRefresh(**totals)


def _source_key(columns: dict[str, list], i: int) -> str:
    """The sample key a row came from: a clip's video, an audio segment's file, else the row's own key."""
    for name in ("video_key", "source_key"):
        if columns.get(name) and columns[name][i] is not None:
            return columns[name][i]
    return columns["key"][i]


def _recompute(columns: dict[str, list], changed: list[int], captions: dict[str, str | None], text_encoders,
               shard_id: str, totals: dict[str, int]) -> dict[int, dict]:
    """Set the new captions and their text columns on the changed rows, in place; returns ``{row: error row}``."""
    unchanged = {columns["caption"][i]: i for i in range(len(columns["key"])) if i not in set(changed)}
    for i in changed:
        columns["caption"][i] = captions[_source_key(columns, i)]
    reuse = {i: unchanged[columns["caption"][i]] for i in changed if columns["caption"][i] in unchanged}
    fresh = [i for i in changed if i not in reuse]
    totals["captions_reused"] += len(reuse)
    errors: dict[int, dict] = {}
    for encoder in text_encoders:
        names = [n for n in _text_columns(encoder.cfg.name) if n in columns]
        for i, j in reuse.items():
            for name in names:
                columns[name][i] = columns[name][j]
        samples = [ProcessedSample(columns["key"][i], np.empty(0, np.uint8), None, None, caption=columns["caption"][i]) for i in fresh]
        arrays: list[dict | None] = [{} for _ in fresh]
        for error in encode_captions(samples, arrays, encoder, shard_id):  # the first run's rules and dedup
            errors.setdefault(fresh[[s.key for s in samples].index(error["key"])], error)
        totals["captions_encoded"] += len({s.caption for s, a in zip(samples, arrays) if a is not None})
        for i, values in zip(fresh, arrays):
            for name, value in (values or {}).items():
                columns[name][i] = value
    return errors


def _text_columns(name: str) -> tuple[str, ...]:
    return (name, f"{name}_length", f"{name}_truncated", f"{name}_pooled")
