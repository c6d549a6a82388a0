"""``latentflow verify``: re-encode a random sample of committed rows and compare them with what is stored.

The integrity check of long-lived caches: the weights the codec points at changed, the preprocessing
changed (a library upgrade, an edited source), or the stored bytes rotted. A random sample of committed
rows is read back (from every format the shard was written in: Parquet and Zarr), their samples are read
again from the source shard, and re-encoded through the job's own path
(:func:`~latentflow.encode.shard.process_records` -> :func:`~latentflow.encode.shard.encode_processed`,
with the processor, store config and compute dtype recorded in the codec), so processing,
normalization and dtype casts are the job's, not a copy of them.

A row mismatches when, for any stored array (``latent``, ``logvar``, ``indices``, ``flip_*``), the
re-encoded values differ from the stored ones by more than the tolerance, relative to the row's largest
magnitude (``max|stored - fresh| / max|fresh|``); token indices must match exactly. The default tolerance
is 8 units in the last place of the coarsest precision the values went through: the stored dtype, the
compute dtype, and TF32 (cuDNN's default for float32 convolutions on GPUs, so a cache written on a GPU
verifies on a CPU): ``7.8e-3`` for float32/float16 storage, ``6.25e-2`` when bfloat16 is involved.

Not verified: the cached text-encoder columns (``codec.text``), and row metadata (captions, labels,
sizes) beyond the keys.

Example::

    report = verify_output("s3://bucket/latents", samples=32, seed=0, storage_options=opts)
    print(format_report(report)); sys.exit(0 if report.ok else 1)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow.parquet as pq

from latentflow.errors import CheckpointError, ConfigError, ShardReadError, one_line
from latentflow.format.codec import Codec
from latentflow.format.marker import CommitMarker
from latentflow.format.state import committed_shards, join, read_output_codec
from latentflow.format.tables import column_to_numpy
from latentflow.sources.records import Shard
from latentflow.sources.shards import SourceConfig, iter_shard, list_shards

DEFAULT_SAMPLES = 32
_EPS = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
_COMPUTE = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_TF32_EPS = 2.0**-10
_ULPS = 8


class VerifyError(ConfigError):
    """A mistake of the caller (not an output, unreachable source or model, unknown shard): one line naming the fix."""


def default_tolerance(codec: Codec) -> float:
    """8 ulp of the coarsest of: the stored dtype, the compute dtype, TF32 (see the module doc)."""
    eps = max(_EPS.get(codec.dtype, _EPS["float16"]), _EPS[_COMPUTE.get(codec.compute_dtype, "float32")], _TF32_EPS)
    return _ULPS * eps


# ---- the report ------------------------------------------------------------------------------


@dataclass
class Mismatch:
    """One sampled row that does not verify: where it was read from, and by how much it differs."""

    key: str
    format: str  # parquet, zarr, or "source" (the row could not be re-encoded)
    array: str
    max_abs: float = float("nan")
    rel: float = float("nan")
    note: str = ""

    def describe(self) -> str:
        what = self.note or f"max abs err {self.max_abs:.3g}, rel err {self.rel:.3g}"
        return f"{self.key} [{self.format} {self.array}]: {what}"


@dataclass
class ShardCheck:
    """What was checked in one shard."""

    shard_id: str
    formats: tuple[str, ...]
    keys: list[str] = field(default_factory=list)
    max_abs: float = 0.0
    max_rel: float = 0.0
    tokens_checked: int = 0
    tokens_differing: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def mismatched_keys(self) -> list[str]:
        return sorted({m.key for m in self.mismatches})

    def to_dict(self) -> dict[str, Any]:
        return {"shard_id": self.shard_id, "formats": list(self.formats), "rows_checked": len(self.keys),
                "rows_mismatched": len(self.mismatched_keys), "mismatched_keys": self.mismatched_keys,
                "max_abs_error": self.max_abs, "max_rel_error": self.max_rel, "tokens_checked": self.tokens_checked,
                "tokens_differing": self.tokens_differing, "mismatches": [m.__dict__ for m in self.mismatches]}


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_output`; ``ok`` when the weights are the recorded ones and no row mismatched."""

    output: str
    tolerance: float
    seed: int
    dtype: str
    compute_dtype: str
    device: str
    shards: list[ShardCheck]
    committed_rows: int
    weights_changed: str | None = None

    @property
    def rows_checked(self) -> int:
        return sum(len(s.keys) for s in self.shards)

    @property
    def rows_mismatched(self) -> int:
        return sum(len(s.mismatched_keys) for s in self.shards)

    @property
    def ok(self) -> bool:
        return self.weights_changed is None and self.rows_mismatched == 0

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "ok": self.ok, "tolerance": self.tolerance, "seed": self.seed, "dtype": self.dtype,
                "compute_dtype": self.compute_dtype, "device": self.device, "committed_rows": self.committed_rows,
                "rows_checked": self.rows_checked, "rows_mismatched": self.rows_mismatched,
                "weights_changed": self.weights_changed, "shards": [s.to_dict() for s in self.shards]}


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def format_report(report: VerifyReport, max_listed: int = 10) -> str:
    """The report as lines a user reads: one per shard, one per mismatched row (up to ``max_listed`` per shard), a verdict."""
    lines = [f"verify {report.output}: {report.rows_checked} of {_n(report.committed_rows, 'committed row')} in "
             f"{_n(len(report.shards), 'shard')} re-encoded on {report.device} (seed {report.seed}; stored {report.dtype}, "
             f"compute {report.compute_dtype}; tolerance {report.tolerance:.3g} relative to each row's largest value)"]
    if report.weights_changed:
        lines.append(f"WEIGHTS CHANGED: {report.weights_changed}")
    for s in report.shards:
        tokens = f", tokens differing {s.tokens_differing}/{s.tokens_checked}" if s.tokens_checked else ""
        status = "ok" if not s.mismatches else "DRIFT"
        lines.append(f"  {s.shard_id} [{'+'.join(s.formats)}]: rows checked {len(s.keys)}, mismatched "
                     f"{len(s.mismatched_keys)}, max abs err {s.max_abs:.3g}, max rel err {s.max_rel:.3g}{tokens}  {status}")
        for m in s.mismatches[:max_listed]:
            lines.append(f"    {m.describe()}")
        if len(s.mismatches) > max_listed:
            lines.append(f"    ... and {len(s.mismatches) - max_listed} more")
    if report.ok:
        lines.append(f"OK: {_n(report.rows_checked, 'row')} match their re-encoding")
    else:
        bad = [s for s in report.shards if s.mismatches]
        named = "; ".join(f"{s.shard_id}: {', '.join(s.mismatched_keys[:5])}" + (" ..." if len(s.mismatched_keys) > 5 else "")
                          for s in bad[:5])
        lines.append(f"MISMATCH: {report.rows_mismatched} of {_n(report.rows_checked, 'row')} in {_n(len(bad), 'shard')}"
                     + (f" ({named})" if named else "") + (" and the model weights changed" if report.weights_changed else ""))
    return "\n".join(lines)


# ---- sampling and reading what is stored --------------------------------------------------------


def sample_positions(markers: dict[str, CommitMarker], samples: int, seed: int) -> dict[str, list[int]]:
    """``{shard_id: positions}`` of ``samples`` rows drawn uniformly without replacement over every committed row
    (positions index a shard's rows sorted by key); all rows when there are fewer."""
    ids = sorted(s for s, m in markers.items() if m.rows)
    counts = np.array([markers[s].rows for s in ids], dtype=np.int64)
    total = int(counts.sum())
    if not total:
        return {}
    picks = np.sort(np.random.default_rng(seed).choice(total, size=min(samples, total), replace=False))
    starts = np.concatenate([[0], np.cumsum(counts)])
    out: dict[str, list[int]] = {}
    for p in picks.tolist():
        i = int(np.searchsorted(starts, p, side="right") - 1)
        out.setdefault(ids[i], []).append(p - int(starts[i]))
    return out


def _rebased(out: str, url: str, folder: str) -> str:
    """A marker's file URL under ``out`` (markers record absolute URLs; the output may have moved since)."""
    cut = url.rfind(f"/{folder}/")
    return join(out, url[cut + 1:]) if cut >= 0 else url


@dataclass
class _Stored:
    """The stored rows of one shard in one format: ``{key: {array: value}}`` and the rows' ``index_in_shard``."""

    keys: list[str]
    rows: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict)


def _parquet_rows(fs, out: str, marker: CommitMarker, names: tuple[str, ...], wanted: set[str] | None) -> _Stored:
    keys, rows, index = [], {}, {}
    for url in marker.parquet_files:
        path = fs._strip_protocol(_rebased(out, url, "parquet"))
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            have = set(pf.schema_arrow.names)
            meta = pf.read(columns=[c for c in ("key", "index_in_shard") if c in have])
            file_keys = [str(k) for k in meta.column("key").to_pylist()]
            keys += file_keys
            take = [i for i, k in enumerate(file_keys) if wanted is None or k in wanted]
            if not take:
                continue
            arrays = pf.read(columns=[n for n in names if n in have]).take(take)
        for j, i in enumerate(take):
            rows[file_keys[i]] = {}
            if "index_in_shard" in meta.column_names:
                index[file_keys[i]] = int(meta.column("index_in_shard")[i].as_py())
        for name in arrays.column_names:
            values = column_to_numpy(arrays.column(name))
            for j, i in enumerate(take):
                rows[file_keys[i]][name] = np.asarray(values[j])
    return _Stored(keys, rows, index)


def _zarr_rows(out: str, marker: CommitMarker, names: tuple[str, ...], wanted: set[str] | None,
               storage_options: dict | None) -> _Stored:
    import zarr

    keys, rows, index = [], {}, {}
    remote = "://" in out and not out.startswith("file://")
    for bucket in sorted(marker.buckets):
        group = zarr.open_group(join(out, "zarr", bucket, marker.shard_id), mode="r",
                                storage_options=storage_options if remote else None, use_consolidated=False)
        group_keys = [str(k) for k in group["keys"][:]]
        keys += group_keys
        members = set(group.array_keys())
        positions = group["index_in_shard"][:] if "index_in_shard" in members else None
        for i, key in enumerate(group_keys):
            if wanted is not None and key not in wanted:
                continue
            rows[key] = {n: np.asarray(group[n][i]) for n in names if n in members}
            if positions is not None:
                index[key] = int(positions[i])
    return _Stored(keys, rows, index)


def _read_stored(fs, out: str, marker: CommitMarker, names: tuple[str, ...], wanted: set[str] | None,
                 storage_options: dict | None) -> dict[str, _Stored]:
    stored = {}
    if marker.parquet_files:
        stored["parquet"] = _parquet_rows(fs, out, marker, names, wanted)
    if "zarr" in marker.formats and marker.buckets:
        stored["zarr"] = _zarr_rows(out, marker, names, wanted, storage_options)
    return stored


# ---- the source, the model, the re-encode -------------------------------------------------------


def infer_source(codec: Codec, overrides: list[str] | None = None, storage_options: dict | None = None) -> SourceConfig:
    """The job's source as far as the codec records it (its URLs; the format guessed from them; the media
    kind from the codec's modality), with ``key=value`` overrides for what it does not record (``format``,
    ``image_column``, ``key_column``, ``shard_size``, ``row_groups``, ``split``, or other ``urls``)."""
    import json

    from latentflow.config_cli import apply_overrides

    urls = list(codec.sources)
    if len(urls) == 1 and urls[0].startswith("{"):  # hf load_dataset arguments, recorded as JSON
        data: dict[str, Any] = {"format": "hf", "urls": [], "hf_load_args": json.loads(urls[0])}
    else:
        data = {"format": _guess_format(urls), "urls": urls}
    if codec.modality in ("video", "audio"):
        data["media"] = codec.modality  # as the encode job sets it for a video: or audio: section
    given = {o.split("=", 1)[0].strip() for o in overrides or ()}
    data = apply_overrides(data, list(overrides or []), SourceConfig)
    if "urls" in given and "format" not in given:
        data["format"] = _guess_format([data["urls"]] if isinstance(data["urls"], str) else list(data["urls"]))
    if storage_options and data.get("storage_options") is None:
        data["storage_options"] = storage_options
    return SourceConfig.from_dict(data)


def _guess_format(urls: list[str]) -> str:
    names = [u.split("?", 1)[0].rstrip("/").lower() for u in urls]
    if names and all(n.endswith(".parquet") or n.endswith(".parquet}") for n in names):
        return "parquet"
    if names and all(re.search(r"\.tar\}?$", n) for n in names):
        return "webdataset"
    if names and all(re.search(r"\.arrow$", n) for n in names):
        return "hf"
    if names and not any(re.search(r"\.[a-z0-9]{2,7}\}?$", n.rsplit("/", 1)[-1]) for n in names):
        return "folder"  # directories (a saved HF dataset too: pass --source format=hf)
    return "webdataset"


def _stem(shard_id: str) -> str:
    return shard_id.rsplit("-", 1)[0]


def match_shards(wanted: list[str], source: SourceConfig) -> dict[str, Shard]:
    """The source's shards for the committed ``wanted`` ids: by id, else (sources moved, or given again
    with other URLs) by the readable stem of the id when exactly one listed shard has it.

    Raises:
        VerifyError: the source lists nothing here, or a wanted shard is not among its shards.
    """
    where = ", ".join(source.urls[:3]) + (" ..." if len(source.urls) > 3 else "") if source.urls else str(source.hf_load_args)
    fix = ("run verify from the directory the encode job ran in (the codec records source paths as given), "
           "or point it at the data with --source urls=<...> (and format=... as in the job's source: section)")
    try:
        shards = list_shards(source)
    except (ConfigError, OSError) as err:
        raise VerifyError(f"the output's source ({source.format}: {where}) is not reachable: {one_line(err, typed=False)}; {fix}") from None
    by_id = {s.shard_id: s for s in shards}
    by_stem: dict[str, list[Shard]] = {}
    for s in shards:
        by_stem.setdefault(_stem(s.shard_id), []).append(s)
    out, missing = {}, []
    for shard_id in wanted:
        found = by_id.get(shard_id) or (by_stem[_stem(shard_id)][0] if len(by_stem.get(_stem(shard_id), [])) == 1 else None)
        if found is None:
            missing.append(shard_id)
        else:
            out[shard_id] = found
    if missing:
        raise VerifyError(f"committed shard {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                          + f" is not among the {len(shards)} shards of the source ({source.format}: {where}); {fix}")
    return out


def load_model(codec: Codec, storage_options: dict | None = None):
    """``(model, weights_changed)``: the model the codec points at, and a sentence when its weights are not the
    recorded ones (the model is returned anyway, so the drift it causes is measured too).

    Raises:
        VerifyError: the codec records no location, or nothing loads from it.
    """
    from latentflow import hub
    from latentflow.auto import AutoModel

    ref = codec.model.ref
    if ref is None:
        raise VerifyError("the codec records no model location, so the encoder cannot be rebuilt; "
                          "this output cannot be verified (re-encode it with a model folder, URL or hub id)")
    try:
        model = AutoModel.from_ref(ref, storage_options)
    except (CheckpointError, ConfigError, OSError) as err:
        raise VerifyError(f"the model at {ref.location!r} recorded in the codec does not load: {one_line(err, typed=False)}; "
                          "restore it there (verify rebuilds the encoder from the codec alone)") from None
    found = model.weights_hash()
    changed = None
    if codec.model.weights_sha256 not in (found, hub.state_dict_sha256(model.state_dict())):
        changed = (f"weights at {ref.location!r} have sha256 {found}, the codec records "
                   f"{codec.model.weights_sha256}; the rows below are re-encoded with the weights found")
    return model.eval(), changed


def _encoder(model, codec: Codec, device: str):
    import torch

    from latentflow.encode.encoder import LatentEncoder

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    return LatentEncoder(model, codec.store, dtype=codec.compute_dtype, device=device)


def reencode(shard: Shard, source: SourceConfig, processor, encoder, keys: set[str], index: set[int],
             batch_size: int = 16) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """Re-encode the rows ``keys`` of one shard through the job's path.

    Records are read until every wanted one (by ``index_in_shard``, or by key: a video's clips and an audio
    file's segments are keyed ``<record key>/clipNNNN`` / ``/segNNNN``) has been seen.

    Returns:
        ``({row key: {array: value}}, {row key: why it could not be re-encoded}``).

    Raises:
        VerifyError: the source shard cannot be read any more.
    """
    from latentflow.encode.shard import encode_processed, process_records

    record_keys = keys | {k.rsplit("/", 1)[0] for k in keys}
    records, seen = [], set()
    try:
        for record in iter_shard(shard, source):
            if record.index_in_shard in index or record.key in record_keys:
                records.append(record)
                seen.add(record.index_in_shard)
                if index and seen >= index:  # every wanted record read: the rest of the shard is not needed
                    break
    except (ShardReadError, OSError) as err:
        raise VerifyError(f"source shard {shard.url!r} cannot be read: {one_line(err, typed=False)}; restore the source, or point "
                          "verify at a copy with --source urls=<...>") from None
    samples, errors = process_records(records, processor, shard.shard_id)
    samples = [s for s in samples if s.key in keys]  # a video's other clips are not re-encoded
    encoded = encode_processed(samples, encoder, shard.shard_id, batch_size, errors)
    names = [n for n in encoded.columns if n not in ("key",)]
    fresh = {key: {n: encoded.columns[n][i] for n in names} for i, key in enumerate(encoded.columns.get("key", []))}
    failed = {}
    for e in encoded.errors:
        for key in [k for k in keys if k == e.get("key") or k.rsplit("/", 1)[0] == e.get("key")]:
            failed[key] = f"re-encode failed ({e.get('stage')}/{e.get('error_type')}): {' '.join(str(e.get('message', '')).split())}"
    for key in keys - set(fresh) - set(failed):
        failed[key] = "not found in its source shard any more (the source changed)"
    return fresh, failed


# ---- comparing ---------------------------------------------------------------------------------------


def compare(stored: np.ndarray, fresh: np.ndarray, tolerance: float, exact: bool) -> tuple[float, float, int, bool]:
    """``(max abs err, rel err, differing tokens, ok)`` of one stored array against its re-encoding."""
    a, b = np.asarray(stored), np.asarray(fresh)
    if a.shape != b.shape:
        return float("inf"), float("inf"), int(b.size), False
    if exact:
        differing = int(np.count_nonzero(a != b))
        err = float(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)))) if a.size else 0.0
        return err, float(differing > 0), differing, differing == 0
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if not (np.isfinite(a64).all() and np.isfinite(b64).all()):
        return float("inf"), float("inf"), 0, False
    err = float(np.max(np.abs(a64 - b64))) if a.size else 0.0
    scale = float(np.max(np.abs(b64))) if b.size else 0.0
    rel = err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))
    return err, rel, 0, rel <= tolerance


def _check_shard(check: ShardCheck, stored: dict[str, _Stored], fresh: dict, failed: dict, names: tuple[str, ...],
                 codec: Codec, tolerance: float) -> None:
    for key in check.keys:
        if key in failed:
            check.mismatches.append(Mismatch(key, "source", "*", note=failed[key]))
            continue
        for fmt, rows in stored.items():
            if key not in rows.rows:
                check.mismatches.append(Mismatch(key, fmt, "*", note=f"row missing from the {fmt} files"))
                continue
            for name in names:
                if name not in rows.rows[key] or name not in fresh[key]:
                    check.mismatches.append(Mismatch(key, fmt, name, note="array missing from the stored row"))
                    continue
                exact = name.endswith("indices")
                err, rel, differing, ok = compare(rows.rows[key][name], fresh[key][name], tolerance, exact)
                if exact:
                    check.tokens_checked += int(np.asarray(fresh[key][name]).size)
                    check.tokens_differing += differing
                check.max_abs, check.max_rel = max(check.max_abs, err), max(check.max_rel, rel)
                if not ok:
                    note = f"{differing} of {np.asarray(fresh[key][name]).size} token indices differ" if exact else ""
                    check.mismatches.append(Mismatch(key, fmt, name, err, rel, note))


def _verify_shard(fs, out: str, marker: CommitMarker, positions: list[int], shard: Shard, source: SourceConfig, processor,
                  encoder, codec: Codec, tolerance: float, storage_options: dict | None, batch_size: int) -> ShardCheck:
    """Read the rows at ``positions`` (in key order) of one committed shard, re-encode them, compare."""
    names = tuple(codec.arrays)
    try:
        listing = _read_stored(fs, out, marker, names, set(), storage_options)
        keys = sorted(next(iter(listing.values())).keys) if listing else []
        chosen = sorted({keys[p] for p in positions if p < len(keys)})
        stored = _read_stored(fs, out, marker, names, set(chosen), storage_options) if chosen else {}
    except (OSError, ValueError, KeyError) as err:  # storage lost or corrupted: drift, not a usage mistake
        check = ShardCheck(marker.shard_id, tuple(marker.formats))
        check.mismatches.append(Mismatch("*", "+".join(marker.formats), "*", note=f"stored files unreadable: {one_line(err, typed=False)}"))
        return check
    check = ShardCheck(marker.shard_id, tuple(stored), chosen)
    if len(keys) != marker.rows:
        check.mismatches.append(Mismatch("*", next(iter(listing), "files"), "*",
                                         note=f"{len(keys)} rows stored, the commit marker records {marker.rows}"))
    if not chosen:
        return check
    index = {i for s in stored.values() for i in s.index.values()}
    fresh, failed = reencode(shard, source, processor, encoder, set(chosen), index, batch_size)
    _check_shard(check, stored, fresh, failed, names, codec, tolerance)
    return check


# ---- the command -------------------------------------------------------------------------------------


def verify_output(path: str, samples: int = DEFAULT_SAMPLES, seed: int = 0, shards: list[str] | None = None,
                  device: str = "auto", tolerance: float | None = None, storage_options: dict | None = None,
                  source_overrides: list[str] | None = None, batch_size: int = 16) -> VerifyReport:
    """Re-encode ``samples`` random committed rows of the output at ``path`` and compare them with what is stored.

    Args:
        path: the output (local path or fsspec URL).
        samples: rows to check, drawn uniformly over the committed rows (of ``shards``); all when fewer.
        seed: the draw's seed (the same seed checks the same rows).
        shards: only these committed shard ids.
        device: ``auto`` (a GPU when there is one), ``cpu``, ``cuda``, ``cuda:1``, ...
        tolerance: the largest relative error a row may have; None: :func:`default_tolerance`.
        storage_options: fsspec options for the output, the model and the source.
        source_overrides: ``key=value`` settings of the source the codec does not record (:func:`infer_source`).
        batch_size: samples per forward.

    Returns:
        the :class:`VerifyReport` (``ok`` False on drift or changed weights).

    Raises:
        VerifyError: ``path`` is not an output, a shard id is unknown, or the source or model is unreachable.
    """
    from latentflow.encode.shard import processor_from_spec, processor_spec

    if samples <= 0:
        raise VerifyError(f"--samples must be > 0, got: {samples}")
    if tolerance is not None and not tolerance >= 0:
        raise VerifyError(f"--tolerance must be >= 0, got: {tolerance}")
    out = str(path).rstrip("/")
    try:
        codec = read_output_codec(out, storage_options)
    except (OSError, ValueError) as err:
        raise VerifyError(f"{out!r} cannot be read as a latentflow output: {one_line(err, typed=False)}; "
                          "check the path and --storage-options") from None
    if codec is None:
        raise VerifyError(f"{out!r} is not a latentflow output (no latentflow.json or _codec.json); "
                          "pass the output directory of an encode job")
    markers = committed_shards(out, storage_options)
    if shards:
        unknown = [s for s in shards if s not in markers]
        if unknown:
            known = sorted(markers)
            raise VerifyError(f"shard {unknown[0]!r} is not committed in {out!r}; committed: "
                              f"{', '.join(known[:5])}{' ...' if len(known) > 5 else ''} (latentflow inspect lists them)")
        markers = {s: markers[s] for s in shards}
    tolerance = default_tolerance(codec) if tolerance is None else float(tolerance)
    picks = sample_positions(markers, samples, seed)
    try:
        source = infer_source(codec, source_overrides, storage_options)
    except ConfigError as err:
        raise VerifyError(f"--source: {one_line(err, typed=False)}") from None
    matched = match_shards(sorted(picks), source) if picks else {}
    model, weights_changed = load_model(codec, storage_options)
    encoder = _encoder(model, codec, device)
    processor = processor_from_spec(processor_spec(codec.processor, codec.downsample_factor))  # as the job's tasks build it
    fs, _ = fsspec.url_to_fs(out, **(storage_options or {}))
    checks = []
    for shard_id, positions in sorted(picks.items()):
        checks.append(_verify_shard(fs, out, markers[shard_id], positions, matched[shard_id], source, processor, encoder,
                                    codec, tolerance, storage_options, batch_size))
    return VerifyReport(out, tolerance, seed, codec.dtype, codec.compute_dtype, str(encoder.device), checks,
                        sum(m.rows for m in markers.values()), weights_changed)


__all__ = ["verify_output", "format_report", "VerifyReport", "ShardCheck", "Mismatch", "VerifyError", "default_tolerance",
           "infer_source", "match_shards", "sample_positions", "reencode", "compare", "DEFAULT_SAMPLES"]
