"""The Arrow blocks that pass between the encode job's Ray stages, declared in one place.

Every block holds the rows of exactly one input shard (the unit of commit)::

    read task         RECORD_SCHEMA     kind, key, shard, shard_url, shard_rows, index_in_shard,
                                        image, caption, label, json, origin, error_stage/type/message
    preprocess task   + PIXELS_FIELDS   image dropped; pixels (bytes) + dtype + shape, original_size, crop_box;
                      + CLIP_FIELDS     a video record becomes one row per clip (key "<video>/clipNNNN")
                      + SEGMENT_ONLY_FIELDS  an audio record one row per segment (key "<file>/segNNNN", the
                                        waveform in pixels)
                      + TRACK_BLOCK_FIELDS   a clip's audio span (waveform bytes, shape, TRACK_FIELDS)
    encoder actor     + array columns   pixels dropped; bucket "HxW", array__<name> (bytes) + __shape + __dtype
    datasink          -> EncodedShard   (latentflow.encode.shard), committed by ShardWriter

Rows of ``kind`` ``sample`` are samples; ``error`` rows are failed samples (a record read as bad,
such as a ``duplicate_key``, is one from the read task on; they keep their
place so a shard's row count is checked at commit); a ``shard_failed`` or ``shard_empty``
row stands for a whole shard. The values themselves are the data layer's types:
:class:`~latentflow.sources.records.Record`, :class:`~latentflow.encode.shard.ProcessedSample`,
:class:`~latentflow.encode.shard.EncodedShard`; this module only converts them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from latentflow.encode.shard import (
    CLIP_METADATA,
    ROW_METADATA,
    SEGMENT_METADATA,
    ClipInfo,
    EncodedShard,
    ProcessedSample,
    SegmentInfo,
    TrackSpan,
)
from latentflow.media.config import SEGMENT_FIELDS, TRACK_FIELDS
from latentflow.sources.records import Record, Shard

KIND_SAMPLE, KIND_ERROR, KIND_FAILED, KIND_EMPTY = "sample", "error", "shard_failed", "shard_empty"
_ERROR_FIELDS = [("error_stage", pa.string()), ("error_type", pa.string()), ("error_message", pa.string())]
_ROW_FIELDS = [
    ("kind", pa.string()), ("key", pa.string()), ("shard", pa.string()), ("shard_url", pa.string()),
    ("shard_rows", pa.int64()), ("index_in_shard", pa.int64()),
]
_META_FIELDS = [("caption", pa.string()), ("label", pa.int64()), ("json", pa.string()), ("origin", pa.string())]
RECORD_SCHEMA = pa.schema(_ROW_FIELDS + [("image", pa.binary())] + _META_FIELDS + _ERROR_FIELDS)
PIXELS_FIELDS = [("pixels", pa.binary()), ("pixels_dtype", pa.string()), ("pixels_shape", pa.list_(pa.int32())),
                 ("original_size", pa.list_(pa.int32())), ("crop_box", pa.list_(pa.int32()))]
CLIP_FIELDS = [("video_key", pa.string()), ("clip_index", pa.int64()), ("start_time", pa.float64()), ("fps", pa.float64()),
               ("num_frames", pa.int64()), ("padded_frames", pa.int64())]  # video clip rows; null for images
# audio segment rows (waveforms (C, T) float32 in ``pixels``); start_time is CLIP_FIELDS' column
SEGMENT_ONLY_FIELDS = [(name, pa.type_for_alias(kind)) for name, kind in SEGMENT_FIELDS.items() if name not in dict(CLIP_FIELDS)]
# a video clip's audio track: the span's float32 waveform (C, N) and its TRACK_FIELDS; null without a track
TRACK_BLOCK_FIELDS = [("track_waveform", pa.binary()), ("track_shape", pa.list_(pa.int32())),
                      *((f"track_{name}", pa.type_for_alias(kind)) for name, kind in TRACK_FIELDS.items())]
PROCESSED_SCHEMA = pa.schema(_ROW_FIELDS + _META_FIELDS + _ERROR_FIELDS + PIXELS_FIELDS + CLIP_FIELDS + SEGMENT_ONLY_FIELDS
                             + TRACK_BLOCK_FIELDS)
ARRAY_PREFIX = "array__"  # encoder outputs: array__<name> (bytes) + array__<name>__shape + array__<name>__dtype


# ---- read task: records ----------------------------------------------------------------------


def records_table(shard: Shard, records: list[Record]) -> pa.Table:
    """The block of one shard's records (or a single ``shard_empty`` row)."""
    if not records:
        return shard_row(shard, KIND_EMPTY)
    rows = []
    for r in records:
        row = {**_shard_fields(shard, len(records)), "kind": KIND_SAMPLE, "key": r.key, "index_in_shard": r.index_in_shard,
               "image": r.image, "caption": r.caption, "label": r.label, "json": r.json, "origin": r.origin}
        if r.error is not None:  # read as bad (duplicate_key): an error row from the start
            mark_error(row, r.error.to_row(r.key, shard.shard_id))
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)


def shard_row(shard: Shard, kind: str, error: tuple[str, str, str] | None = None) -> pa.Table:
    """A one-row block standing for a whole shard: ``shard_empty``, or ``shard_failed`` with its error."""
    stage, etype, message = error or (None, None, None)
    row = {**_shard_fields(shard, 0), "kind": kind, "index_in_shard": -1,
           "error_stage": stage, "error_type": etype, "error_message": message}
    return pa.Table.from_pylist([row], schema=RECORD_SCHEMA)


def _shard_fields(shard: Shard, rows: int) -> dict[str, Any]:
    return {"shard": shard.shard_id, "shard_url": shard.url, "shard_rows": rows}


def record_of(row: dict[str, Any]) -> Record:
    return Record(row["key"], row.get("image"), row["caption"], row["label"], row["json"], row["index_in_shard"],
                  origin=row.get("origin"))


def mark_error(row: dict[str, Any], err: dict[str, str]) -> None:
    """Turn a row into an ``error`` row (``err``: an ``errors.parquet`` row)."""
    row.update({"kind": KIND_ERROR, "error_stage": err["stage"], "error_type": err["error_type"], "error_message": err["message"]})


# ---- preprocess task: processed samples ----------------------------------------------------------


def processed_rows(row: dict[str, Any], samples: list[ProcessedSample] | None) -> list[dict[str, Any]]:
    """The processed rows of one record row: one per sample (clips of a video get their own keys),
    or the row itself (an error, or a whole-shard row) with empty pixel fields."""
    if not samples:
        return [with_pixels(row, None)]
    return [with_pixels({**row, "key": s.key}, s) for s in samples]


def with_pixels(row: dict[str, Any], sample: ProcessedSample | None) -> dict[str, Any]:
    """``row`` (image dropped) plus the sample's packed pixels, geometry and clip fields (None for non-samples)."""
    row.pop("image", None)
    px = sample.pixels if sample is not None else None
    clip = sample.clip if sample is not None else None
    row.update({name: getattr(clip, name) if clip else None for name, _ in CLIP_FIELDS})
    segment = sample.segment if sample is not None else None
    if segment is not None:
        row.update({name: getattr(segment, name) for name in SEGMENT_METADATA})
    track = sample.track if sample is not None else None
    if track is not None:
        row.update({"track_waveform": track.waveform.tobytes(), "track_shape": list(track.waveform.shape),
                    **{f"track_{name}": getattr(track, name) for name in TRACK_FIELDS}})
    row.update({
        "pixels": None if px is None else px.tobytes(), "pixels_dtype": None if px is None else str(px.dtype),
        "pixels_shape": None if px is None else list(px.shape),
        "original_size": None if sample is None or sample.original_size is None else list(sample.original_size),
        "crop_box": None if sample is None or sample.crop_box is None else list(sample.crop_box),
    })
    return row


def sample_of(row: dict[str, Any]) -> ProcessedSample:
    pixels = np.frombuffer(row["pixels"], dtype=row["pixels_dtype"]).reshape(row["pixels_shape"])
    clip = ClipInfo(*(row[name] for name, _ in CLIP_FIELDS)) if row.get("video_key") is not None else None
    segment = SegmentInfo(*(row[name] for name in SEGMENT_METADATA)) if row.get("source_key") is not None else None
    track = None
    if row.get("track_waveform") is not None:
        waveform = np.frombuffer(row["track_waveform"], dtype=np.float32).reshape(row["track_shape"])
        track = TrackSpan(waveform, *(row[f"track_{name}"] for name in TRACK_FIELDS))
    size, box = row["original_size"], row["crop_box"]
    return ProcessedSample(row["key"], pixels, None if size is None else tuple(size), None if box is None else tuple(box),
                           row["index_in_shard"], row["caption"], row["label"], row["json"], clip, segment, track)


# ---- encoder actor: encoded rows ----------------------------------------------------------------


def encoded_table(rows: list[dict[str, Any]], encoded: EncodedShard) -> pa.Table:
    """The actor's output block: ``rows`` (pixels dropped; samples, errors, shard rows) with each
    encoded sample's arrays and bucket, and the encoder's failures marked as errors."""
    by_key = {k: i for i, k in enumerate(encoded.columns.get("key", []))}
    failed = {e["key"]: e for e in encoded.errors}
    names = sorted(n for n in encoded.columns if n not in ROW_METADATA + CLIP_METADATA + SEGMENT_METADATA)
    for row in rows:
        for name in ("pixels", "pixels_dtype", "pixels_shape", *(f for f, _ in TRACK_BLOCK_FIELDS)):
            row.pop(name, None)
        i = by_key.get(row["key"]) if row["kind"] == KIND_SAMPLE else None
        if row["kind"] == KIND_SAMPLE and i is None and row["key"] in failed:
            mark_error(row, failed[row["key"]])
        row["bucket"] = encoded.columns["bucket"][i] if i is not None else None
        for name in names:
            value = None if i is None else np.ascontiguousarray(encoded.columns[name][i])
            row[ARRAY_PREFIX + name] = None if value is None else value.tobytes()
            row[f"{ARRAY_PREFIX}{name}__shape"] = None if value is None else list(value.shape)
            row[f"{ARRAY_PREFIX}{name}__dtype"] = None if value is None else str(value.dtype)
    return pa.Table.from_pylist(rows) if rows else pa.table({})


def array_names(table: pa.Table) -> list[str]:
    """The encoder arrays a block carries."""
    n = len(ARRAY_PREFIX)
    return sorted(c[n:] for c in table.column_names if c.startswith(ARRAY_PREFIX) and "__" not in c[n:])


def table_arrays(table: pa.Table, name: str) -> list[np.ndarray | None]:
    """The per-row arrays ``name`` of an encoded block (None where a row has none)."""
    data = table.column(ARRAY_PREFIX + name).to_pylist()
    shapes = table.column(f"{ARRAY_PREFIX}{name}__shape").to_pylist()
    dtypes = table.column(f"{ARRAY_PREFIX}{name}__dtype").to_pylist()
    return [None if d is None else np.frombuffer(d, dtype=t).reshape(s) for d, s, t in zip(data, shapes, dtypes)]


def error_rows(part: pa.Table) -> list[dict[str, str]]:
    """``errors.parquet`` rows (key, shard, stage, error_type, message) of one shard's block."""
    kinds = part.column("kind").to_pylist()
    rows = part.filter(pa.array([k in (KIND_ERROR, KIND_FAILED) for k in kinds]))
    return [
        {"key": r["key"] or "", "shard": r["shard"], "stage": r["error_stage"], "error_type": r["error_type"],
         "message": r["error_message"]}
        for r in rows.select(["key", "shard", "error_stage", "error_type", "error_message"]).to_pylist()
    ]


def encoded_shard(part: pa.Table, names: list[str]) -> EncodedShard:
    """The :class:`EncodedShard` of one shard's encoded block (``names``: the codec's stored arrays)."""
    kinds = part.column("kind").to_pylist()
    samples = part.filter(pa.array([k == KIND_SAMPLE for k in kinds]))
    clips = "video_key" in samples.column_names and samples.column("video_key").null_count < samples.num_rows
    segments = "source_key" in samples.column_names and samples.column("source_key").null_count < samples.num_rows
    meta = ROW_METADATA + (CLIP_METADATA if clips else ()) + (SEGMENT_METADATA if segments else ())
    columns: dict[str, list] = {n: samples.column(n).to_pylist() for n in meta if n in samples.column_names}
    present = set(array_names(samples))
    for name in [*names, *sorted(present - set(names))]:  # the codec's arrays, then cached columns (text encoders)
        columns[name] = table_arrays(samples, name) if name in present else []
    return EncodedShard(part.column("shard")[0].as_py(), columns, tuple(error_rows(part)))
