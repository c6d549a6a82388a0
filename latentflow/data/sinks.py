"""Exactly-once sinks: one Parquet file and one Zarr group per input shard, then a ``_done`` marker.

Output layout::

    <out>/latentflow.json                 codec + counts + stats + creation time (at finalize)
    <out>/README.md                       dataset card; its ``configs:`` points at parquet/*.parquet
    <out>/_codec.json                     the codec, written when a job starts (refuses mixing)
    <out>/parquet/<shard_id>.parquet      one file per input shard
    <out>/zarr/<H>x<W>/<shard_id>/...     one group per (bucket, input shard): latent, keys, ...
    <out>/_done/<shard_id>.json           commit marker: rows, key hash, checksum, stats, errors
    <out>/errors.parquet                  per-sample failures (at finalize)

Commit protocol per shard: on local disks write everything under ``_tmp/`` and rename it
to its final name; on object stores write in place (a single-object PUT is atomic, and the
Zarr groups are read only for shards with a marker); only then write the marker. A
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

from latentflow.data.codec import check_compatible
from latentflow.data.records import ERROR_COLUMNS
from latentflow.data.tables import column_to_numpy, parquet_table
from latentflow.errors import CodecMismatchError

FORMATS = ("parquet", "zarr")
CODEC_FILE = "_codec.json"
SUMMARY_FILE = "latentflow.json"
_SECRET_KEYS = ("storage_options", "key", "secret", "token", "password", "credentials", "client_kwargs")


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


class ShardWriter:
    """Writes the rows of one input shard at a time, with the commit protocol.

    Args:
        out_url: output directory (local path or fsspec URL).
        codec: the codec from :func:`~latentflow.data.codec.build_codec`.
        formats: any of ``("parquet", "zarr")``.
        storage_options: fsspec options; used, never written.
    """

    def __init__(self, out_url: str, codec: dict[str, Any], formats: tuple[str, ...] = FORMATS, storage_options: dict | None = None):
        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            raise ValueError(f"formats must be a non-empty subset of {list(FORMATS)}, got: {list(formats)}")
        self.out_url = str(out_url).rstrip("/")
        self.codec = codec
        self.formats = tuple(formats)
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = fsspec.url_to_fs(self.out_url, **self.storage_options)
        self.array_names = list(codec["stored"]["arrays"])
        self.variable = bool(codec["processor"].get("buckets"))

    # ---- public -------------------------------------------------------------------
    def write_shard(self, shard_id: str, table: pa.Table | dict[str, Any], errors: list[dict] | None = None) -> dict[str, Any]:
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
        # Object stores: a PUT is atomic and the marker gates the Zarr groups, so write in place
        # (a copy + delete per object would triple the requests). Local disks: stage, then rename.
        direct = not isinstance(self.fs, fsspec.implementations.local.LocalFileSystem)
        stage = self.root if direct else _join(self.root, "_tmp", f"{shard_id}-{uuid.uuid4().hex[:8]}")
        if direct:
            self._remove_stale(shard_id, self._final_paths(shard_id, columns))  # uncommit before writing
        moves = []
        if "parquet" in self.formats and columns["key"]:  # no file for an all-bad shard (datasets cannot read empty ones)
            moves.append(self._write_parquet(stage, shard_id, columns))
        if "zarr" in self.formats:
            moves += self._write_zarr(stage, shard_id, columns)
        if not direct:
            self._remove_stale(shard_id, {dst for _, dst in moves})
            self.fs.invalidate_cache()  # zarr wrote through its own filesystem instance
            for src, dst in moves:  # commit: move each file/group to its final name
                self._move(src, dst)
            self._rm_quiet(stage)
        marker = self._marker(shard_id, columns, errors or [], [self.fs.unstrip_protocol(d) if "://" in self.out_url else d for _, d in moves])
        self._write_json(_join(self.root, "_done", f"{shard_id}.json"), marker)
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
        shapes = next(iter(self.codec["shapes"].values()), {"latent": [1, 1, 1], "indices": [1, 1]})
        out = {}
        for name in self.array_names:
            base = name.removeprefix("flip_")
            kind = "indices" if base == "indices" else "latent"
            dtype = (self.codec.get("quantizer") or {}).get("index_dtype", "int64") if kind == "indices" else self.codec["dtype"]
            out[name] = np.zeros((0, *shapes.get(kind, [1, 1, 1])), dtype=dtype)
        return out

    # ---- parquet -------------------------------------------------------------------
    def _write_parquet(self, tmp: str, shard_id: str, columns: dict[str, Any]) -> tuple[str, str]:
        table = parquet_table(columns, self.array_names, self.variable, self.codec)
        src = _join(tmp, "parquet", f"{shard_id}.parquet")
        self.fs.makedirs(_join(tmp, "parquet"), exist_ok=True)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        with self.fs.open(src, "wb") as f:
            f.write(buf.getvalue())
        self.fs.makedirs(_join(self.root, "parquet"), exist_ok=True)
        return src, _join(self.root, "parquet", f"{shard_id}.parquet")

    # ---- zarr ------------------------------------------------------------------------
    def _write_zarr(self, tmp: str, shard_id: str, columns: dict[str, Any]) -> list[tuple[str, str]]:
        import zarr

        moves = []
        for bucket, rows in self._buckets(columns).items():
            rel = f"zarr/{bucket}/{shard_id}"
            group = zarr.open_group(self._url(_join(tmp, rel)), mode="w", storage_options=self._zarr_options(),
                                    attributes={"shard_id": shard_id, "codec_fingerprint": self.codec["fingerprint"]})
            for name in self.array_names:
                _write_rows(group, name, _stack(columns[name], rows))
            keys = group.create_array("keys", shape=(len(rows),), dtype=zarr.dtype.VariableLengthUTF8(), chunks=(max(len(rows), 1),))
            keys[:] = np.array([columns["key"][i] for i in rows], dtype=object)
            for name, width in (("original_size", 2), ("crop_box", 4)):
                if name in columns and all(columns[name][i] is not None for i in rows):
                    group.create_array(name, data=np.array([columns[name][i] for i in rows], dtype=np.int32).reshape(-1, width))
            if "index_in_shard" in columns:
                group.create_array("index_in_shard", data=np.array([columns["index_in_shard"][i] for i in rows], dtype=np.int64))
            self._ensure_zarr_parents(bucket)
            moves.append((_join(tmp, rel), _join(self.root, rel)))
        return moves

    def _final_paths(self, shard_id: str, columns: dict[str, Any]) -> set[str]:
        paths = set()
        if "parquet" in self.formats and columns["key"]:
            paths.add(_join(self.root, "parquet", f"{shard_id}.parquet"))
        if "zarr" in self.formats:
            paths |= {_join(self.root, "zarr", bucket, shard_id) for bucket in self._buckets(columns)}
        return paths

    def _buckets(self, columns: dict[str, Any]) -> dict[str, list[int]]:
        first = self.array_names[0]
        return _bucket_rows(columns[first], int(self.codec.get("downsample_factor", 1)), spatial_first=first == "indices")

    def _ensure_zarr_parents(self, bucket: str) -> None:
        """Root and bucket groups (identical content from every writer, so concurrent writes are harmless)."""
        import zarr

        if not self.fs.exists(_join(self.root, "zarr", "zarr.json")):
            zarr.open_group(self._url(_join(self.root, "zarr")), mode="a", storage_options=self._zarr_options(), attributes={"latentflow": self.codec})
        if not self.fs.exists(_join(self.root, "zarr", bucket, "zarr.json")):
            zarr.open_group(self._url(_join(self.root, "zarr", bucket)), mode="a", storage_options=self._zarr_options())

    def _url(self, path: str) -> str:
        return self.fs.unstrip_protocol(path) if "://" in self.out_url else path

    def _zarr_options(self) -> dict | None:
        return self.storage_options if "://" in self.out_url and not self.out_url.startswith("file://") else None

    # ---- marker ---------------------------------------------------------------------
    def _marker(self, shard_id: str, columns: dict[str, Any], errors: list[dict], files: list[str]) -> dict[str, Any]:
        keys = columns["key"]
        return {
            "shard_id": shard_id,
            "rows": len(keys),
            "keys_sha256": hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest(),
            "checksum": _checksum(columns, self.array_names),
            "buckets": {b: len(r) for b, r in self._buckets(columns).items()},
            "stats": {name: channel_stats(columns[name]) for name in self.array_names if _is_float(columns[name])},
            "errors": [{k: str(e.get(k, "")) for k in ERROR_COLUMNS} | {"shard": shard_id} for e in errors],
            "codec_fingerprint": self.codec["fingerprint"],
            "formats": list(self.formats),
            "files": files,
            "written_at": time.time(),
        }

    def _remove_stale(self, shard_id: str, keep: set[str]) -> None:
        """Outputs of an earlier attempt at this shard that this attempt does not replace (e.g. another bucket)."""
        marker = _join(self.root, "_done", f"{shard_id}.json")
        if self.fs.exists(marker):
            self.fs.rm(marker)  # uncommit first: from here until the new marker, the shard is not committed
        stale = self.fs.glob(_join(self.root, "zarr", "*", shard_id)) + self.fs.glob(_join(self.root, "parquet", f"{shard_id}.parquet"))
        for path in stale:
            if path not in keep:
                self.fs.rm(path, recursive=True)

    def _move(self, src: str, dst: str) -> None:
        """Replace ``dst`` by ``src``: a rename on local disks, copy-then-delete per object on object stores."""
        if self.fs.exists(dst):
            self.fs.rm(dst, recursive=True)
        if isinstance(self.fs, fsspec.implementations.local.LocalFileSystem):
            self.fs.mv(src, dst, recursive=True)
            return
        files = [src] if self.fs.isfile(src) else self.fs.find(src)
        for path in files:
            self.fs.copy(path, dst + path[len(src) :])
        self.fs.rm(files)

    def _write_json(self, path: str, value: dict) -> None:
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(path, "w") as f:
            f.write(json.dumps(value, sort_keys=True))

    def _rm_quiet(self, path: str) -> None:
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass


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


def _write_rows(group, name: str, data: np.ndarray) -> None:
    """One chunk per row (random access by row), all rows in one shard file (one writer per file)."""
    chunks = (1, *data.shape[1:])
    group.create_array(name, data=data, chunks=chunks, shards=(max(data.shape[0], 1), *data.shape[1:]))


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


def committed_shards(out_url: str, storage_options: dict | None = None) -> dict[str, dict]:
    """``{shard_id: marker}`` of every committed shard (a shard without a marker is not committed)."""
    fs, root = fsspec.url_to_fs(str(out_url), **(storage_options or {}))
    fs.invalidate_cache()  # markers are written by other processes; s3fs caches listings per process
    done = _join(root, "_done")
    if not fs.exists(done):
        return {}
    markers = {}
    for path in sorted(fs.glob(_join(done, "*.json"))):
        with fs.open(path, "r") as f:
            marker = json.load(f)
        markers[marker["shard_id"]] = marker
    return markers


def read_output_codec(out_url: str, storage_options: dict | None = None) -> dict | None:
    """The codec of an existing output (``latentflow.json`` or ``_codec.json``), or None for a new one."""
    fs, root = fsspec.url_to_fs(str(out_url), **(storage_options or {}))
    for name in (SUMMARY_FILE, CODEC_FILE):
        path = _join(root, name)
        if fs.exists(path):
            with fs.open(path, "r") as f:
                data = json.load(f)
            return data.get("codec", data)
    return None


def prepare_output(out_url: str, codec: dict, storage_options: dict | None = None, overwrite: bool = False) -> dict[str, dict]:
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
        foreign = sorted({m["codec_fingerprint"] for m in markers.values()} - {codec["fingerprint"]})
        if foreign:
            raise CodecMismatchError(f"{out_url!r} holds shards of encoder fingerprints {foreign}; use overwrite=True (--overwrite) or a new output")
    fs.makedirs(root, exist_ok=True)
    with fs.open(_join(root, CODEC_FILE), "w") as f:
        f.write(json.dumps(codec, sort_keys=True, indent=1))
    return committed_shards(out_url, storage_options)


def _scrub(value: Any) -> Any:
    """Drop anything that looks like credentials from a summary before it is written."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if str(k).lower() not in _SECRET_KEYS}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def merge_stats(markers: dict[str, dict], name: str = "latent") -> dict[str, list[float]] | None:
    """Per-channel count/sum/sumsq summed over markers, plus mean and std."""
    parts = [m["stats"][name] for m in markers.values() if name in m.get("stats", {}) and m["stats"][name]["count"]]
    if not parts:
        return None
    count = np.sum([p["count"] for p in parts], axis=0)
    total = np.sum([p["sum"] for p in parts], axis=0)
    sumsq = np.sum([p["sumsq"] for p in parts], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # channels with no finite rows stay NaN
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        std = np.sqrt(np.maximum(sumsq / np.maximum(count, 1) - mean**2, 0.0))
    return {"count": count.tolist(), "sum": total.tolist(), "sumsq": sumsq.tolist(), "mean": mean.tolist(), "std": std.tolist()}


def finalize(out_url: str, codec: dict, storage_options: dict | None = None, summary: dict | None = None) -> dict[str, Any]:
    """Write ``latentflow.json``, ``errors.parquet``, the dataset card, and consolidated Zarr metadata.

    Args:
        out_url: the output directory.
        codec: the job's codec.
        storage_options: fsspec options (never written).
        summary: job figures to record (rows/s, failed shards as ``failed_shards`` list, ...).

    Returns:
        the content written to ``latentflow.json``.
    """
    summary = _scrub(dict(summary or {}))
    fs, root = fsspec.url_to_fs(str(out_url), **(storage_options or {}))
    markers = committed_shards(out_url, storage_options)
    errors = [e for m in markers.values() for e in m.get("errors", [])] + list(summary.pop("shard_errors", []))
    _write_errors(fs, _join(root, "errors.parquet"), errors)
    _write_card(fs, _join(root, "README.md"), codec, markers)
    if fs.exists(_join(root, "zarr", "zarr.json")):
        _consolidate(out_url, fs, root, storage_options)
    if fs.exists(_join(root, "_tmp")):
        fs.rm(_join(root, "_tmp"), recursive=True)  # leftovers of crashed writers
    info = {
        "codec": codec,
        "counts": {"rows": sum(m["rows"] for m in markers.values()), "errors": len(errors), "shards": len(markers),
                   "buckets": _sum_buckets(markers)},
        "stats": {"latent": merge_stats(markers)},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "summary": summary,
    }
    with fs.open(_join(root, SUMMARY_FILE), "w") as f:
        f.write(json.dumps(info, indent=1, sort_keys=True))
    return info


def _sum_buckets(markers: dict[str, dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in markers.values():
        for b, n in m.get("buckets", {}).items():
            out[b] = out.get(b, 0) + n
    return out


def _write_errors(fs, path: str, errors: list[dict]) -> None:
    table = pa.table({c: pa.array([str(e.get(c, "")) for e in errors], type=pa.string()) for c in ERROR_COLUMNS})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    with fs.open(path, "wb") as f:
        f.write(buf.getvalue())


def _write_card(fs, path: str, codec: dict, markers: dict) -> None:
    model = codec["model"]
    card = (
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: parquet/*.parquet\n---\n\n"
        f"# Latents encoded by latentflow\n\nModel: `{model['class']}` (model_type `{model['model_type']}`, "
        f"weights sha256 `{model['weights_sha256']}`).\nStored: {', '.join(codec['stored']['arrays'])} as {codec['dtype']}.\n"
        f"Rows: {sum(m['rows'] for m in markers.values())} in {len(markers)} shards.\n\n"
        "```python\nimport latentflow\nds = latentflow.load_latents(\"<this directory>\")\n```\n"
    )
    with fs.open(path, "w") as f:
        f.write(card)


def _consolidate(out_url: str, fs, root: str, storage_options: dict | None) -> None:
    import zarr

    url = fs.unstrip_protocol(_join(root, "zarr")) if "://" in str(out_url) else _join(root, "zarr")
    remote = "://" in str(out_url) and not str(out_url).startswith("file://")
    store = zarr.storage.FsspecStore.from_url(url, storage_options=storage_options) if remote else url
    with warnings.catch_warnings():  # "consolidated metadata is not part of the v3 spec (yet)": known, wanted
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(store)
