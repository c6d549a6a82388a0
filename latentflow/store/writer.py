"""Exactly-once sinks: one Parquet file and one Zarr group per input shard, then a ``_done`` marker.

Output layout::

    <out>/latentflow.json                 codec + counts + stats + creation time (at finalize)
    <out>/README.md                       dataset card: ``configs:`` (default + one per bucket), typed
                                          features, and a content version (refreshes datasets' cache)
    <out>/_codec.json                     the codec, written when a job starts (refuses mixing)
    <out>/parquet/<shard_id>.parquet      one file per input shard (with buckets:
                                          parquet/<H>x<W>/<shard_id>.parquet, one per bucket)
    <out>/zarr/<H>x<W>/<shard_id>/...     one group per (bucket, input shard): latent, keys, caption, label, ...
    <out>/_done/<shard_id>.json           commit marker: rows, key hash, checksum, stats, errors
    <out>/errors.parquet                  per-sample failures (at finalize)

Commit protocol per shard: build the Parquet file and the Zarr groups in memory; on local
disks write them under ``_tmp/`` and rename each to its final name; on object stores delete
the old marker, then PUT every object in one concurrent batch (a single-object PUT is atomic,
and the Zarr groups are read only for shards with a marker); only then write the marker. A
shard without a marker is not committed, whatever files exist; rewriting a shard
replaces its files under the same names, so reruns are idempotent. Zarr groups belong
to one shard each, so no two writers ever touch one chunk or shard file.

Example::

    writer = ShardWriter("s3://bucket/latents", codec, storage_options=opts)
    marker = writer.write_shard("train-0001-5d41402abc", columns, errors=[])
    finalize("s3://bucket/latents", codec, opts, summary={})
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
import warnings
from typing import Any

import fsspec
import fsspec.implementations.local
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from latentflow.errors import CodecMismatchError
from latentflow.format.card import write_card
from latentflow.format.codec import Codec, as_codec, check_compatible
from latentflow.format.marker import ERROR_COLUMNS, CommitMarker
from latentflow.format.state import (
    CODEC_FILE,
    SUMMARY_FILE,
    OutputState,
    committed_shards,
    join,
    merge_stats,
    read_json,
    read_output_codec,
)
from latentflow.format.tables import column_to_numpy, parquet_table
from latentflow.format.text import text_totals
from latentflow.media.config import SEGMENT_FIELDS
from latentflow.store.columns import text_counts, write_rows, write_text, write_track

FORMATS = ("parquet", "zarr")
_SECRET_KEYS = ("storage_options", "key", "secret", "token", "password", "credentials", "client_kwargs")


class ShardWriter:
    """Writes the rows of one input shard at a time, with the commit protocol.

    Args:
        out_url: output directory (local path or fsspec URL).
        codec: the codec from :func:`~latentflow.encode.codec_builder.build_codec`.
        formats: any of ``("parquet", "zarr")``.
        storage_options: fsspec options; used, never written.
        session: an id shared by the writers of one job; with it, each process writes the
            Zarr root and bucket group documents (identical from every writer) once per job
            instead of once per shard.
    """

    def __init__(self, out_url: str, codec: dict[str, Any], formats: tuple[str, ...] = FORMATS, storage_options: dict | None = None,
                 session: str | None = None):
        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            raise ValueError(f"formats must be a non-empty subset of {list(FORMATS)}, got: {list(formats)}")
        self.out_url = str(out_url).rstrip("/")
        self.codec = as_codec(codec)
        self.formats = tuple(formats)
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = fsspec.url_to_fs(self.out_url, **self.storage_options)
        self.array_names = list(codec.arrays)
        self.variable = codec.bucketed
        self.session = session

    # ---- public -------------------------------------------------------------------
    def write_shard(self, shard_id: str, table: pa.Table | dict[str, Any], errors: list[dict] | None = None) -> CommitMarker:
        """Write and commit one input shard; returns its marker.

        Args:
            shard_id: the input shard's id (names every output file).
            table: the rows: a pyarrow Table or a dict of columns with ``key``, optional
                metadata (``index_in_shard``, ``caption``, ``label``, ``json``, ``original_size``,
                ``crop_box``) and the stored arrays named in the codec (``latent``, ``logvar``, ...).
            errors: per-sample error rows (key, stage, error_type, message) of this shard.

        Returns:
            the marker written to ``_done/<shard_id>.json``.
        """
        columns = self._normalize(shard_id, table)
        objects, units = self._objects(shard_id, columns)
        if self._local:
            self._commit_staged(shard_id, objects, units)
        else:
            self._commit_in_place(shard_id, objects, units)
        if self.session:
            _KNOWN_PARENTS.update((self.session, self.out_url, rel) for rel in objects if _is_parent(rel))
        files = [self.fs.unstrip_protocol(join(self.root, u)) if "://" in self.out_url else join(self.root, u) for u in units]
        marker = self._marker(shard_id, columns, errors or [], files)
        self._put({f"_done/{shard_id}.json": marker.to_json().encode()}, atomic=True)
        return marker

    # ---- rows ----------------------------------------------------------------------
    def _normalize(self, shard_id: str, table: pa.Table | dict[str, Any]) -> dict[str, Any]:
        """Columns as lists / ndarrays, sorted by (index_in_shard, key), duplicate keys dropped."""
        data = {n: table.column(n) for n in table.column_names} if isinstance(table, pa.Table) else dict(table)
        keys = [str(k) for k in _to_list(data.get("key", []))]
        if not keys:  # an all-bad shard still commits (its errors), with a schema like the others'
            data.update(self.empty_arrays())
        missing = [n for n in ["key", *self.array_names] if n not in data]
        if missing:
            raise ValueError(f"shard {shard_id!r}: rows lack columns {missing}; got {sorted(data)}")
        order_by = _to_list(data["index_in_shard"]) if "index_in_shard" in data else [0] * len(keys)
        seen, order = set(), []
        for i in sorted(range(len(keys)), key=lambda i: (order_by[i], keys[i])):
            if keys[i] not in seen:  # a retried batch must never duplicate a row
                seen.add(keys[i])
                order.append(i)
        out: dict[str, Any] = {"key": [keys[i] for i in order], "shard": [shard_id] * len(order)}
        for name, col in data.items():
            if name in self.array_names:
                arr = column_to_numpy(col)
                out[name] = arr[order] if isinstance(arr, np.ndarray) else [arr[i] for i in order]
            elif name not in ("key", "shard"):
                values = _to_list(col)
                out[name] = [values[i] for i in order]
        return out

    def empty_arrays(self) -> dict[str, np.ndarray]:
        """Zero-row arrays of the codec's first bucket shape and the stored dtypes."""
        shapes = next(iter(self.codec.shapes.values()), {"latent": [1, 1, 1], "indices": [1, 1]})
        out = {}
        for name in self.array_names:
            base = name.removeprefix("flip_")
            kind = "indices" if base == "indices" else "latent"
            out[name] = np.zeros((0, *shapes.get(kind, [1, 1, 1])), dtype=self.codec.array_dtype(name))
        return out

    # ---- the shard's objects, built in memory ----------------------------------------
    def _objects(self, shard_id: str, columns: dict[str, Any]) -> tuple[dict[str, bytes], list[str]]:
        """Every file of the shard as ``{path relative to the output: bytes}``, and the units a
        commit replaces whole (the Parquet file, one Zarr group per bucket).

        Building them in memory first means the store sees one PUT per object, all in one
        concurrent batch, and no existence checks or listings from zarr itself.
        """
        objects: dict[str, bytes] = {}
        units: list[str] = []
        if "parquet" in self.formats and columns["key"]:  # no file for an all-bad shard (datasets cannot read empty ones)
            for rel, rows in self._parquet_files(shard_id, columns).items():
                buf = io.BytesIO()
                pq.write_table(parquet_table(rows, self.array_names, False, self.codec), buf, compression="zstd")
                objects[rel] = buf.getvalue()
                units.append(rel)
        if "zarr" in self.formats:
            objects.update(self._zarr_objects(shard_id, columns))
            units += sorted({f"zarr/{bucket}/{shard_id}" for bucket in self._buckets(columns)})
        return objects, units

    def _parquet_files(self, shard_id: str, columns: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """``{relative path: columns}``: ``parquet/<shard>.parquet``, or with buckets one file per
        bucket, ``parquet/<H>x<W>/<shard>.parquet``, so every file has one fixed (typed) shape."""
        buckets = self._buckets(columns)
        files = {}
        for bucket, rows in buckets.items():
            part = {name: (_stack(col, rows) if name in self.array_names else [col[i] for i in rows]) for name, col in columns.items()}
            part["bucket"] = [bucket] * len(rows)
            files[f"parquet/{bucket}/{shard_id}.parquet" if self.variable else f"parquet/{shard_id}.parquet"] = part
        return files

    def _zarr_objects(self, shard_id: str, columns: dict[str, Any]) -> dict[str, bytes]:
        import zarr

        store: dict[str, Any] = {}
        memory = zarr.storage.MemoryStore(store_dict=store)
        zarr.open_group(memory, mode="w", attributes={"latentflow": self.codec.to_dict()})
        for bucket, rows in self._buckets(columns).items():
            group = zarr.open_group(memory, mode="w", path=f"{bucket}/{shard_id}",
                                    attributes={"shard_id": shard_id, "codec_fingerprint": self.codec.fingerprint})
            for name in self.array_names:
                write_rows(group, name, _stack(columns[name], rows))
            keys = group.create_array("keys", shape=(len(rows),), dtype=zarr.dtype.VariableLengthUTF8(), chunks=(max(len(rows), 1),))
            keys[:] = np.array([columns["key"][i] for i in rows], dtype=object)
            for name, width in (("original_size", 2), ("crop_box", 4)):
                if name in columns and all(columns[name][i] is not None for i in rows):
                    group.create_array(name, data=np.array([columns[name][i] for i in rows], dtype=np.int32).reshape(-1, width))
            if "index_in_shard" in columns:
                group.create_array("index_in_shard", data=np.array([columns["index_in_shard"][i] for i in rows], dtype=np.int64))
            _write_row_metadata(group, columns, rows)
            for text in self.codec.text:
                write_text(group, text, columns, rows)
            for track in self.codec.tracks:
                write_track(group, track, columns, rows)
        objects = {f"zarr/{path}": value.to_bytes() for path, value in store.items()}
        # the root and bucket groups: identical from every writer, so each process writes them once
        return {rel: data for rel, data in objects.items() if not (_is_parent(rel) and (self.session, self.out_url, rel) in _KNOWN_PARENTS)}

    def _buckets(self, columns: dict[str, Any]) -> dict[str, list[int]]:
        if self.codec.layout in ("CTHW", "CT") and columns.get("bucket") and all(b is not None for b in columns["bucket"]):
            # clips: the processor's "TxHxW", audio: its "T" (samples do not follow from latent frames alone)
            groups: dict[str, list[int]] = {}
            for i, bucket in enumerate(columns["bucket"]):
                groups.setdefault(str(bucket), []).append(i)
            return groups
        first = self.array_names[0]
        return _bucket_rows(columns[first], self.codec.downsample_factor, spatial_first=first == "indices")

    # ---- commit ------------------------------------------------------------------------
    @property
    def _local(self) -> bool:
        return isinstance(self.fs, fsspec.implementations.local.LocalFileSystem)

    def _commit_in_place(self, shard_id: str, objects: dict[str, bytes], units: list[str]) -> None:
        """Object stores: a single-object PUT is atomic and the marker gates the shard's files,
        so uncommit (delete the marker), drop an earlier attempt's leftovers, PUT every object."""
        self._rm_file(f"_done/{shard_id}.json")  # from here until the new marker, the shard is not committed
        stale = [p for p in self._previous_attempt(shard_id, units) if _relative(self.root, p) not in objects]
        if stale:
            self.fs.rm(stale)
        self._put(objects)

    def _commit_staged(self, shard_id: str, objects: dict[str, bytes], units: list[str]) -> None:
        """Local disks: write under ``_tmp/``, then rename each unit to its final name."""
        stage = f"_tmp/{shard_id}-{uuid.uuid4().hex[:8]}"
        self._put({f"{stage}/{rel}": data for rel, data in objects.items()})
        self._rm_file(f"_done/{shard_id}.json")  # uncommit first
        finals = {join(self.root, u) for u in units}
        for path in self._previous_attempt(shard_id, units):
            if path not in finals:
                self.fs.rm(path, recursive=True)
        parents = [rel for rel in objects if _is_parent(rel)]
        for rel in [*units, *parents]:
            dst = join(self.root, rel)
            if rel in units and self.fs.exists(dst):
                self.fs.rm(dst, recursive=True)
            self.fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
            self.fs.mv(join(self.root, stage, rel), dst, recursive=True)
        self.fs.rm(join(self.root, stage), recursive=True)

    def _previous_attempt(self, shard_id: str, units: list[str]) -> list[str]:
        """Files of an earlier attempt at this shard: in its groups (one listing each), in other
        buckets' groups (only when images are bucketed), and a Parquet file this attempt lacks."""
        found = []
        buckets = [u.split("/")[1] for u in units if u.startswith("zarr/")]
        if self.variable and "zarr" in self.formats:
            zarr_root = join(self.root, "zarr")
            listed = self.fs.ls(zarr_root, detail=False, refresh=True) if self.fs.exists(zarr_root) else []
            buckets += [p.rsplit("/", 1)[-1] for p in listed if p.rsplit("/", 1)[-1] not in buckets and not p.endswith(".json")]
        for bucket in buckets:
            group = join(self.root, "zarr", bucket, shard_id)
            found += self.fs.find(group) if not self._local else ([group] if self.fs.exists(group) else [])
        parquet = join(self.root, "parquet", f"{shard_id}.parquet")
        if f"parquet/{shard_id}.parquet" not in units and self.fs.exists(parquet):
            found.append(parquet)
        if self.variable and "parquet" in self.formats:  # per-bucket files of buckets this attempt lacks
            pattern = join(self.root, "parquet", "*", f"{shard_id}.parquet")
            found += [p for p in self.fs.glob(pattern) if _relative(self.root, p) not in units]
        return found

    def _put(self, objects: dict[str, bytes], atomic: bool = False) -> None:
        """Write ``{relative path: bytes}``: one concurrent batch of PUTs on object stores;
        on local disks each file (``atomic``: via a temporary name and a rename)."""
        paths = {join(self.root, rel): data for rel, data in objects.items()}
        if not self._local:
            self.fs.pipe(paths)
            return
        for path, data in paths.items():
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp" if atomic else path
            self.fs.pipe_file(tmp, data)
            if atomic:
                self.fs.mv(tmp, path)

    def _rm_file(self, rel: str) -> None:
        try:
            self.fs.rm_file(join(self.root, rel))
        except FileNotFoundError:
            pass

    # ---- marker ---------------------------------------------------------------------
    def _marker(self, shard_id: str, columns: dict[str, Any], errors: list[dict], files: list[str]) -> CommitMarker:
        keys = columns["key"]
        return CommitMarker(
            shard_id=shard_id,
            rows=len(keys),
            keys_sha256=hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest(),
            checksum=_checksum(columns, self.array_names + [t.name for t in self.codec.tracks if t.name in columns]),
            codec_fingerprint=self.codec.fingerprint,
            buckets={b: len(r) for b, r in self._buckets(columns).items()},
            stats={name: channel_stats(columns[name]) for name in self.array_names if _is_float(columns[name])},
            errors=tuple({k: str(e.get(k, "")) for k in ERROR_COLUMNS} | {"shard": shard_id} for e in errors),
            formats=self.formats,
            files=tuple(files),
            written_at=time.time(),
            text={t.name: text_counts(t, columns) for t in self.codec.text},
        )


# (session, output, path) of the Zarr root/bucket group documents this process already wrote
_KNOWN_PARENTS: set[tuple[str, str, str]] = set()


def _is_parent(rel: str) -> bool:
    parts = rel.split("/")
    return parts[0] == "zarr" and parts[-1] == "zarr.json" and len(parts) in (2, 3)


def _relative(root: str, path: str) -> str:
    return path[len(root.rstrip("/")) + 1 :]


# ---- helpers ---------------------------------------------------------------------------


def _to_list(col: Any) -> list:
    if isinstance(col, (pa.ChunkedArray, pa.Array)):
        return col.to_pylist()
    if isinstance(col, np.ndarray):
        return list(col) if col.ndim > 1 else col.tolist()
    return list(col)


def _row_shape(arr: Any, i: int) -> tuple[int, ...]:
    return tuple(arr.shape[1:]) if isinstance(arr, np.ndarray) else tuple(arr[i].shape)


def _bucket_rows(arr: Any, factor: int = 1, spatial_first: bool = False) -> dict[str, list[int]]:
    """Row positions grouped by bucket, named ``"<H>x<W>"`` in pixels (latent size times ``factor``).

    ``spatial_first``: rows are (h, w[, levels]) indices rather than (C, h, w) latents.
    """
    groups: dict[str, list[int]] = {}
    for i in range(len(arr)):
        shape = _row_shape(arr, i)
        hw = shape[:2] if spatial_first else shape[-2:]
        name = "x".join(str(s * factor) for s in hw) if len(hw) == 2 else "x".join(map(str, shape)) or "scalar"
        groups.setdefault(name, []).append(i)
    return groups


def _stack(arr: Any, rows: list[int]) -> np.ndarray:
    return arr[rows] if isinstance(arr, np.ndarray) else np.stack([arr[i] for i in rows])


def _write_row_metadata(group, columns: dict[str, Any], rows: list[int]) -> None:
    """Captions, JSON and labels beside the arrays, so a Zarr reader carries them without the Parquet
    files: ``caption``/``json`` as strings ("" where missing), ``label`` only when every row has one."""
    import zarr

    for name in ("caption", "json"):
        values = [columns[name][i] for i in rows] if name in columns else []
        if any(v is not None for v in values):
            arr = group.create_array(name, shape=(len(rows),), dtype=zarr.dtype.VariableLengthUTF8(), chunks=(max(len(rows), 1),))
            arr[:] = np.array(["" if v is None else str(v) for v in values], dtype=object)
    labels = [columns["label"][i] for i in rows] if "label" in columns else []
    if labels and all(v is not None for v in labels):
        group.create_array("label", data=np.asarray(labels, dtype=np.int64))
    _write_clip_metadata(group, columns, rows)


CLIP_COLUMNS = {"video_key": None, "clip_index": np.int64, "start_time": np.float64, "fps": np.float64,
                "num_frames": np.int64, "padded_frames": np.int64,
                **{name: None if kind == "string" else np.dtype(kind) for name, kind in SEGMENT_FIELDS.items()}}  # audio segments


def _write_clip_metadata(group, columns: dict[str, Any], rows: list[int]) -> None:
    """Video clip rows: where each clip came from (``video_key``, ``clip_index``, ``start_time``, ``fps``,
    ``num_frames``, ``padded_frames``); audio segment rows: the fields of ``SEGMENT_FIELDS``
    (``valid_length`` among them); beside the arrays so :class:`LatentDataset` items carry them.
    A column is written only when every row has it (image rows have none)."""
    import zarr

    for name, dtype in CLIP_COLUMNS.items():
        values = [columns[name][i] for i in rows] if name in columns else []
        if not values or any(v is None for v in values):
            continue
        if dtype is None:
            arr = group.create_array(name, shape=(len(rows),), dtype=zarr.dtype.VariableLengthUTF8(), chunks=(max(len(rows), 1),))
            arr[:] = np.array([str(v) for v in values], dtype=object)
        else:
            group.create_array(name, data=np.asarray(values, dtype=dtype))


def _is_float(arr: Any) -> bool:
    dtype = arr.dtype if isinstance(arr, np.ndarray) else (arr[0].dtype if len(arr) else np.dtype(np.float32))
    return np.issubdtype(dtype, np.floating)


def channel_stats(arr: Any) -> dict[str, list[float]]:
    """Per-channel count, sum and sum of squares (float64) over rows (N, C, ...) for mergeable statistics."""
    rows = [arr] if isinstance(arr, np.ndarray) else [a[None] for a in arr]
    channels = rows[0].shape[1] if rows and rows[0].ndim > 1 else 0
    count, total, sumsq = np.zeros(channels), np.zeros(channels), np.zeros(channels)
    for block in rows:
        if block.shape[0] == 0:
            continue
        flat = block.astype(np.float64).swapaxes(0, 1).reshape(channels, -1)  # (C, N*h*w)
        count += flat.shape[1]
        total += flat.sum(axis=1)
        sumsq += (flat * flat).sum(axis=1)
    return {"count": count.tolist(), "sum": total.tolist(), "sumsq": sumsq.tolist()}


def _checksum(columns: dict[str, Any], names: list[str]) -> str:
    """sha256 over the stored arrays' bytes, rows in key order (independent of file layout)."""
    digest = hashlib.sha256()
    order = sorted(range(len(columns["key"])), key=lambda i: columns["key"][i])
    for name in names:
        arr = columns[name]
        for i in order:
            digest.update(np.ascontiguousarray(arr[i]).tobytes())
    return digest.hexdigest()


# ---- job-level: prepare, committed, finalize ----------------------------------------------


def prepare_output(out_url: str, codec: Codec, storage_options: dict | None = None, overwrite: bool = False) -> dict[str, CommitMarker]:
    """Start (or resume, or append to) an output. Returns the already committed shards.

    Raises:
        CodecMismatchError: the output holds latents of another encoder setup and ``overwrite`` is False.
    """
    fs, root = fsspec.url_to_fs(str(out_url), **(storage_options or {}))
    if overwrite and fs.exists(root):
        fs.rm(root, recursive=True)
    existing = read_output_codec(out_url, storage_options)
    if existing is not None:
        check_compatible(existing, codec)
    else:
        markers = committed_shards(out_url, storage_options)
        foreign = sorted({m.codec_fingerprint for m in markers.values()} - {codec.fingerprint})
        if foreign:
            raise CodecMismatchError(f"{out_url!r} holds shards of encoder fingerprints {foreign}; "
                                     "use overwrite=True (--overwrite) or a new output")
    fs.makedirs(root, exist_ok=True)
    with fs.open(join(root, CODEC_FILE), "w") as f:
        f.write(json.dumps(codec.to_dict(), sort_keys=True, indent=1))
    return committed_shards(out_url, storage_options)


def _scrub(value: Any) -> Any:
    """Drop anything that looks like credentials from a summary before it is written."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if str(k).lower() not in _SECRET_KEYS}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def finalize(out_url: str, codec: Codec, storage_options: dict | None = None, summary: dict | None = None) -> dict[str, Any]:
    """Write ``latentflow.json``, ``errors.parquet``, the dataset card, and consolidated Zarr metadata.

    Args:
        out_url: the output directory.
        codec: the job's codec.
        storage_options: fsspec options (never written).
        summary: this run's figures (rows/s, failed shards as ``failed_shards`` list, ...): kept as
            ``summary`` and appended to ``runs``, the list of every run that wrote this output.

    Returns:
        the content written to ``latentflow.json``: ``counts`` are the output's totals, recomputed
        from the committed markers (rows, shards, ``sample_errors``, ``failed_shards``: shards this
        run could not read or whose samples all failed; they have no marker and the next run
        retries them). ``sample_errors`` also counts the samples of such all-failed shards (the
        keyed rows of ``shard_errors``), so every sample read is a row or a sample error:
        ``samples == rows + sample_errors``; ``errors`` adds one keyless row per unreadable shard.
    """
    summary = dict(summary or {})
    shard_errors = list(summary.pop("shard_errors", []))  # error rows: their "key" is a sample key, not a secret
    summary = _scrub(summary)
    fs, root = fsspec.url_to_fs(str(out_url), **(storage_options or {}))
    state = OutputState.read(out_url, storage_options)
    markers = state.markers
    errors = [e for m in markers.values() for e in m.errors] + shard_errors
    _write_errors(fs, join(root, "errors.parquet"), errors)
    write_card(fs, join(root, "README.md"), codec, markers)
    if fs.exists(join(root, "zarr", "zarr.json")):
        _consolidate(out_url, fs, root, storage_options)
    if fs.exists(join(root, "_tmp")):
        fs.rm(join(root, "_tmp"), recursive=True)  # leftovers of crashed writers
    half_written = fs.glob(join(root, "_done", "*.tmp")) if fs.exists(join(root, "_done")) else []
    if half_written:
        fs.rm(half_written)  # markers a crashed local writer never renamed into place
    previous = read_json(fs, join(root, SUMMARY_FILE))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    failed = list(summary.get("failed_shards", []))
    sample_errors = state.sample_errors + sum(1 for e in shard_errors if e.get("key"))  # an unreadable shard's has no key
    info = {
        "codec": codec.to_dict(),
        "counts": {"rows": state.rows, "errors": len(errors), "shards": state.shards, "sample_errors": sample_errors,
                   "samples": state.rows + sample_errors, "failed_shards": len(failed), "buckets": state.buckets},
        "failed_shards": failed,
        **({"text": text_totals(codec.text, markers)} if codec.text else {}),
        "stats": {"latent": merge_stats(markers)},
        "created_at": previous.get("created_at", now),
        "updated_at": now,
        "summary": summary,
        "runs": [*previous.get("runs", []), {**summary, "finished_at": now}],
    }
    with fs.open(join(root, SUMMARY_FILE), "w") as f:
        f.write(json.dumps(info, indent=1, sort_keys=True))
    return info


def _write_errors(fs, path: str, errors: list[dict]) -> None:
    table = pa.table({c: pa.array([str(e.get(c, "")) for e in errors], type=pa.string()) for c in ERROR_COLUMNS})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    with fs.open(path, "wb") as f:
        f.write(buf.getvalue())


def _consolidate(out_url: str, fs, root: str, storage_options: dict | None) -> None:
    import zarr

    url = fs.unstrip_protocol(join(root, "zarr")) if "://" in str(out_url) else join(root, "zarr")
    remote = "://" in str(out_url) and not str(out_url).startswith("file://")
    store = zarr.storage.FsspecStore.from_url(url, storage_options=storage_options) if remote else url
    with warnings.catch_warnings():  # "consolidated metadata is not part of the v3 spec (yet)": known, wanted
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(store)
