"""Reading latents back: ``datasets`` over the Parquet files, a torch Dataset over Zarr, decoding, inspecting.

Only committed shards (with a ``_done`` marker) are read from Zarr, so a crashed job's
half-written groups never leak into training; every shard's codec fingerprint is checked
so latents of two encoders are never mixed.

``LatentDataset.iter_batches`` is the fast path (about 8x ``load_latents(...).with_format("torch")``
in ``benchmarks/read_latents.py``): it reads whole row ranges (a shard file per array, decoded
in one pass by :mod:`latentflow.data.zarr_rows`) and shuffles them in a bounded buffer
(:mod:`latentflow.data.batches`). Random access (``ds[i]``, a ``DataLoader``) keeps a few
decoded groups cached.

Example::

    ds = load_latents("s3://bucket/latents", storage_options=opts).with_format("torch")
    wide = load_latents("s3://bucket/latents", bucket="256x384")   # one bucket: Array3D columns
    train = LatentDataset("s3://bucket/latents", normalize=True, storage_options=opts)
    for batch in train.iter_batches(64, seed=0, epoch=0, rank=rank, world=world):
        batch["latent"], batch["caption"], batch["label"]          # one bucket shape per batch
    loader = DataLoader(train, batch_sampler=BucketBatchSampler(train, batch_size=32))
    images = decode_latents(batch["latent"], "s3://bucket/latents", normalized=True)
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any, Iterator

import fsspec
import numpy as np
import torch

from latentflow.data.batches import BatchPlan, Block, GroupRows
from latentflow.data.codec import Codec, as_codec
from latentflow.data.sinks import committed_shards, merge_stats, read_output_codec
from latentflow.data.zarr_rows import ArraySpec, array_spec, read_array, whole_file
from latentflow.errors import CodecMismatchError, ConfigError
from latentflow.normalization import Normalization


def _root(path: str, storage_options: dict | None) -> tuple[Any, str]:
    return fsspec.url_to_fs(str(path), **(storage_options or {}))


def read_codec(path: str, storage_options: dict | None = None) -> Codec:
    """The codec of a latent output directory (from ``latentflow.json``, or ``_codec.json`` while a job runs).

    Raises:
        FileNotFoundError: ``path`` holds no latentflow output.
    """
    codec = read_output_codec(path, storage_options)
    if codec is None:
        raise FileNotFoundError(f"{path!r} is not a latentflow output (no latentflow.json or _codec.json)")
    return codec


def load_latents(path: str, storage_options: dict | None = None, split: str = "train", bucket: str | None = None):
    """The Parquet latents of committed shards as a ``datasets.Dataset`` with typed array columns.

    Args:
        path: output directory (local or fsspec URL).
        storage_options: fsspec options.
        split: the split name to return.
        bucket: with aspect-ratio buckets, ``"HxW"`` reads only that bucket's files
            (``parquet/<H>x<W>/*.parquet``): ``ArrayND`` columns of one fixed shape. Without it a
            bucketed output comes back as nested lists (one tensor of its own shape per row).

    Returns:
        ``datasets.Dataset``; ``.with_format("torch")`` gives (C, h, w) tensors per row
        (float16 comes back as float32; cast with the codec's ``dtype`` if needed).

    The same per-bucket view without latentflow: ``datasets.load_dataset(path, "<H>x<W>", split="train")``.
    """
    import datasets

    codec = read_codec(path, storage_options)
    markers = committed_shards(path, storage_options)
    # only committed shards: a file a crashed writer left without its marker is never read
    files = sorted(f for m in markers.values() for f in m["files"] if f.endswith(".parquet"))
    if bucket is not None:
        files = [f for f in files if f.rsplit("/", 2)[-2] == bucket]
    if not files:
        found = sorted({b for m in markers.values() for b in m.get("buckets", {})})
        raise FileNotFoundError(f"{path!r} has no committed Parquet shards" + (f" of bucket {bucket!r} (buckets: {found})" if bucket else ""))
    protocol = str(path).split("://")[0] if "://" in str(path) else "file"
    kwargs = {"storage_options": {protocol: storage_options}} if storage_options else {}  # datasets keys them by protocol
    if codec.bucketed and bucket is None:  # files of several shapes: read every one as nested lists
        kwargs["features"] = _nested_features(files[0], storage_options)
    return datasets.load_dataset("parquet", data_files={split: files}, split=split, **kwargs)


def _nested_features(url: str, storage_options: dict | None):
    import datasets
    import pyarrow.parquet as pq

    from latentflow.data.tables import as_nested, schema_features

    fs, p = _root(url, storage_options)
    with fs.open(p, "rb") as f:
        features = schema_features(pq.read_schema(f))
    return datasets.Features.from_dict({k: as_nested(v) for k, v in features.items()})


# ---- torch dataset over zarr --------------------------------------------------------


_META = ("key", "caption", "json", "label", "original_size", "crop_box", "index_in_shard")
_STRINGS = ("key", "caption", "json")


@dataclass(frozen=True)
class _Group:
    """One committed Zarr group: ``<bucket>/<shard>``, its row count and how each array reads."""

    path: str
    bucket: str
    rows: int
    specs: dict


class LatentDataset(torch.utils.data.Dataset):
    """The Zarr latents of committed shards: random access by row, and fast shuffled batches.

    Args:
        path: output directory.
        normalize: False; True for the codec's rule (``codec.normalization``); ``"stats"`` for
            the per-channel mean/std measured over this dataset.
        resample: draw ``mean + exp(logvar / 2) * noise`` (needs stored logvar; flips too).
        expected_fingerprint: refuse (CodecMismatchError) unless the codec fingerprint equals it.
        storage_options: fsspec options.
        seed: seed of the item resampling noise (batches seed theirs by position).
        buckets: read only these bucket shapes (``"HxW"``); default: all.
        fields: which stored arrays and metadata to return (default: every stored array except
            ``logvar``/``flip_logvar``, which feed ``resample``, and every metadata column).
        cache_rows: random access (``__getitem__``) decodes and keeps whole groups while the dataset
            has at most this many rows (so a DataLoader over a small cache reads each group once);
            a bigger dataset reads each item's row alone (use :meth:`iter_batches` to go fast).

    Items are dicts: ``key``, ``bucket`` ("HxW"), ``latent`` (C, h, w) float32 (or ``indices``
    (h, w) int64 for discrete codecs), ``flip_*`` where stored, and where stored ``caption``,
    ``json``, ``label`` (int, or None), ``original_size``, ``crop_box``, ``index_in_shard``.
    :meth:`iter_batches` yields the same keys with rows stacked (strings as lists).

    Example::

        ds = LatentDataset("s3://bucket/latents", normalize=True, storage_options=opts)
        for batch in ds.iter_batches(64, seed=0, epoch=0, rank=rank, world=world, drop_last=True):
            batch["latent"]           # (64, C, h, w), one bucket shape per batch
    """

    def __init__(self, path: str, normalize: bool | str = False, resample: bool = False, expected_fingerprint: str | None = None,
                 storage_options: dict | None = None, seed: int = 0, buckets: list[str] | None = None,
                 fields: tuple[str, ...] | None = None, cache_rows: int = 8192):
        self.path, self.storage_options = str(path).rstrip("/"), storage_options
        self.codec = read_codec(path, storage_options)
        if expected_fingerprint is not None and expected_fingerprint != self.codec.fingerprint:
            raise CodecMismatchError(f"{path!r} was encoded with codec fingerprint {self.codec.fingerprint}, expected {expected_fingerprint}")
        arrays = self.codec.arrays
        if resample and "logvar" not in arrays:
            raise ConfigError(f"resample=True needs stored logvar; {path!r} stores {arrays}")
        self.normalize, self.resample, self.seed = normalize, resample, seed
        self.fields = tuple(fields) if fields is not None else tuple(a for a in arrays if not a.endswith("logvar")) + _META
        unknown = set(self.fields) - set(arrays) - set(_META)
        if unknown:
            raise ConfigError(f"fields {sorted(unknown)} are neither stored arrays {list(arrays)} nor metadata {list(_META)}")
        self._norm_config = self._normalization(normalize)
        self.fs, self._root = _root(self.path, storage_options)
        self.groups = self._build_index(buckets)
        self._set_rows([GroupRows(g.bucket, 0, g.rows) for g in self.groups])
        self._epoch_rng = np.random.default_rng(seed)
        self.cache_rows = cache_rows
        self._cache: dict[int, dict[str, np.ndarray]] = {}  # decoded groups (datasets of <= cache_rows rows)

    def _normalization(self, normalize: bool | str) -> Normalization | None:
        if not normalize:
            return None
        if normalize == "stats":
            markers = committed_shards(self.path, self.storage_options)
            stats = merge_stats(markers)
            if stats is None:
                raise ConfigError(f"{self.path!r} has no latent statistics to normalize with")
            return Normalization.from_values(latents_mean=stats["mean"], latents_std=[max(s, 1e-12) for s in stats["std"]], source="dataset")
        return self.codec.normalization

    # ---- the index: groups of committed shards (metadata only, no array reads) ---------------
    def _build_index(self, buckets: list[str] | None) -> list[_Group]:
        markers = committed_shards(self.path, self.storage_options)
        wanted = {s for s, m in markers.items() if m["rows"] and "zarr" in m.get("formats", ["zarr"])}
        root = self._open(f"{self.path}/zarr")
        found = {shard for _, bucket in root.groups() for shard, _ in bucket.groups()}
        if not wanted <= found:  # consolidated metadata older than the last commits (job not finalized yet)
            root = self._open(f"{self.path}/zarr", consolidated=False)
        specs: dict[ArraySpec, ArraySpec] = {}  # interned: groups of one bucket share them
        groups = []
        for bucket in sorted(name for name, _ in root.groups()):
            if buckets is not None and bucket not in buckets:
                continue
            for shard_id, group in sorted(root[bucket].groups()):
                if shard_id not in markers:
                    continue  # written but never committed (crashed writer)
                if group.attrs.get("codec_fingerprint") != self.codec.fingerprint:
                    raise CodecMismatchError(f"shard {shard_id!r} was written by encoder {group.attrs.get('codec_fingerprint')}, "
                                             f"the dataset's is {self.codec.fingerprint}")
                arrays = {name: specs.setdefault(spec, spec) for name, arr in group.arrays()
                          for spec in [array_spec(arr.metadata)]}
                groups.append(_Group(f"{bucket}/{shard_id}", bucket, int(group["keys"].shape[0]), arrays))
        return groups

    def _set_rows(self, rows: list[GroupRows]) -> None:
        self._rows = rows
        self._offsets = np.cumsum([0] + [r.stop - r.start for r in rows])

    def _open(self, url: str, consolidated: bool | None = None):
        import zarr

        remote = "://" in url and not url.startswith("file://")
        options = self.storage_options if remote else None
        return zarr.open_group(url, mode="r", storage_options=options, use_consolidated=consolidated)

    def _open_array(self, path: str):
        import zarr

        url = self.fs.unstrip_protocol(path) if "://" in self.path else path
        remote = "://" in url and not url.startswith("file://")
        return zarr.open_array(url, mode="r", storage_options=self.storage_options if remote else None)

    # ---- views ----------------------------------------------------------------------------
    def split(self, holdout_rows: int) -> tuple["LatentDataset", "LatentDataset"]:
        """``(rest, held_out)``: the first rows of every group, ``holdout_rows`` in all, spread over groups
        in proportion to their sizes (every shard and bucket is represented), and the rest."""
        sizes = np.array([r.stop - r.start for r in self._rows])
        total = int(sizes.sum())
        if not 0 <= holdout_rows <= total:
            raise ConfigError(f"holdout_rows must be in [0, {total}], got: {holdout_rows}")
        share = sizes * holdout_rows / max(total, 1)
        take = np.floor(share).astype(int)
        for i in np.argsort(-(share - take), kind="stable")[: holdout_rows - int(take.sum())]:
            take[i] += 1  # largest remainders
        held = [GroupRows(r.bucket, r.start, r.start + int(k)) for r, k in zip(self._rows, take)]
        rest = [GroupRows(r.bucket, r.start + int(k), r.stop) for r, k in zip(self._rows, take)]
        return self._view(rest), self._view(held)

    def _view(self, rows: list[GroupRows]) -> "LatentDataset":
        view = copy.copy(self)
        view._set_rows(rows)
        view._cache = {}
        return view

    @property
    def bucket_rows(self) -> dict[str, int]:
        """Rows per bucket shape in this dataset (or view)."""
        out: dict[str, int] = {}
        for r in self._rows:
            out[r.bucket] = out.get(r.bucket, 0) + r.stop - r.start
        return out

    def row_shape(self, bucket: str, name: str) -> tuple[int, ...]:
        """The per-row shape of stored array ``name`` in ``bucket`` (from metadata, no IO)."""
        for g, r in zip(self.groups, self._rows):
            if r.bucket == bucket and name in g.specs:
                return tuple(g.specs[name].row_shape)
        raise KeyError(f"no group of bucket {bucket!r} stores {name!r}")

    def has_field(self, name: str) -> bool:
        """Every group (with rows) stores ``name`` (e.g. ``label``: every row has a label)."""
        return all(name in self.groups[g].specs for g, r in enumerate(self._rows) if r.stop > r.start)

    # ---- reading ------------------------------------------------------------------------
    def _read(self, block: Block, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The wanted arrays of one row range; metadata a group lacks comes back as None per row."""
        group = self.groups[block.group]
        base = f"{self._root}/zarr/{group.path}"
        stored = {name: ("keys" if name == "key" else name) for name in fields}
        wanted = {name: whole_file(f"{base}/{stored[name]}", group.specs[stored[name]], group.rows, block.start, block.stop)
                  for name in fields if stored[name] in group.specs}
        paths = [p for p in wanted.values() if p]
        blobs = self.fs.cat(paths, on_error="return") if paths else {}  # one concurrent batch on object stores
        out = {}
        for name in fields:
            if stored[name] not in group.specs:
                out[name] = np.full(len(block), None, dtype=object)  # metadata this group lacks
                continue
            out[name] = read_array(self.fs, f"{base}/{stored[name]}", group.specs[stored[name]], group.rows,
                                   block.start, block.stop, self._open_array, blobs.get(wanted[name]))
        return out

    def _read_fields(self) -> tuple[str, ...]:
        extra = tuple(f"{n.removesuffix('latent')}logvar" for n in self.fields
                      if self.resample and n.endswith("latent") and f"{n.removesuffix('latent')}logvar" in self.codec.arrays)
        return tuple(dict.fromkeys(self.fields + extra))

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _locate(self, i: int) -> tuple[int, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} rows")
        i = i % len(self)
        g = int(np.searchsorted(self._offsets, i, side="right")) - 1
        return g, self._rows[g].start + i - int(self._offsets[g])

    def bucket_of(self, i: int) -> str:
        return self._rows[self._locate(i)[0]].bucket

    def _row_data(self, g: int, row: int) -> dict[str, np.ndarray]:
        """One row's arrays: from a cached whole group (small datasets), else read alone."""
        if len(self) > self.cache_rows:
            return self._read(Block(g, row, row + 1), self._read_fields())
        if g not in self._cache:
            self._cache[g] = self._read(Block(g, 0, self.groups[g].rows), self._read_fields())
        return {k: v[row:row + 1] for k, v in self._cache[g].items()}

    def __getitem__(self, i: int) -> dict[str, Any]:
        g, row = self._locate(i)
        batch = self._assemble(self._row_data(g, row), self.groups[g].bucket, None)
        item = {k: (v[0] if isinstance(v, (list, torch.Tensor)) else v) for k, v in batch.items()}
        if isinstance(item.get("label"), torch.Tensor):
            item["label"] = int(item["label"])
        return {k: v for k, v in item.items() if v is not None}  # what this row lacks is left out

    # ---- batches ------------------------------------------------------------------------
    def batch_plan(self, batch_size: int, shuffle: bool = True, seed: int = 0, epoch: int = 0, rank: int = 0, world: int = 1,
                   drop_last: bool = False, buffer_rows: int = 8192, block_rows: int | None = None) -> BatchPlan:
        """Which rows each batch of :meth:`iter_batches` holds (row counts only, no IO)."""
        return BatchPlan(self._rows, batch_size, shuffle, seed, epoch, rank, world, drop_last, buffer_rows, block_rows)

    def iter_batches(self, batch_size: int, shuffle: bool = True, seed: int = 0, epoch: int = 0, rank: int = 0, world: int = 1,
                     drop_last: bool = False, start: int = 0, buffer_rows: int = 8192,
                     block_rows: int | None = None) -> Iterator[dict[str, Any]]:
        """Batches of one epoch, read a window of whole row ranges at a time and shuffled within it.

        Args:
            batch_size: rows per batch; every batch holds one bucket shape.
            shuffle: shuffle blocks and rows (seeded by ``seed`` and ``epoch``); off: storage order.
            seed, epoch: the order (and the resampling noise) is a pure function of them.
            rank, world: disjoint blocks of rows per rank (counts may differ by up to one block).
            drop_last: drop each bucket's last incomplete batch.
            start: skip the first ``start`` batches without reading them (resume).
            buffer_rows: the shuffle buffer: about this many rows are in memory at once.
            block_rows: rows per contiguous block (default: whole groups up to 1024 rows).

        Yields:
            dicts of stacked tensors (``latent`` (B, C, h, w), ``label`` (B,) or None, ...) and
            lists (``key``, ``caption``, ``json``), plus ``bucket``; see the class docstring.
        """
        plan = self.batch_plan(batch_size, shuffle, seed, epoch, rank, world, drop_last, buffer_rows, block_rows)
        fields = self._read_fields()
        windows: dict[str, tuple[int, dict[str, np.ndarray]]] = {}  # the open window of each bucket
        for i, (bucket, window, rows) in enumerate(plan.batches(start), start=start):
            if windows.get(bucket, (-1,))[0] != window:
                windows.pop(bucket, None)  # free the last window before reading the next
                windows[bucket] = (window, self._read_window(plan.window_blocks(bucket, window), fields))
            data = windows[bucket][1]
            gen = torch.Generator().manual_seed(int(np.random.default_rng([seed, epoch, rank, i]).integers(2**62)))
            yield self._assemble({k: v[rows] for k, v in data.items()}, bucket, gen)

    def _read_window(self, blocks: list[Block], fields: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The blocks' rows, concatenated: stored arrays into one preallocated array each (the
        window is the reader's memory), metadata by concatenation (small, maybe mixed types)."""
        total, pos = sum(len(b) for b in blocks), 0
        out: dict[str, Any] = {}
        for block in blocks:
            part = self._read(block, fields)
            for name, values in part.items():
                if name in self.codec.arrays:
                    if name not in out:
                        out[name] = np.empty((total, *values.shape[1:]), dtype=values.dtype)
                    out[name][pos:pos + len(values)] = values
                else:
                    out.setdefault(name, []).append(values)
            pos += len(block)
        return {k: v if isinstance(v, np.ndarray) else np.concatenate(v) for k, v in out.items()}

    def _assemble(self, data: dict[str, np.ndarray], bucket: str, generator: torch.Generator | None) -> dict[str, Any]:
        """Rows as tensors: float latents (resampled, normalized), int64 indices and labels, metadata."""
        out: dict[str, Any] = {"bucket": bucket}
        for name in self.fields:
            values = data[name]
            if values.dtype == object and name not in _STRINGS and all(v is None for v in values):
                continue  # not stored for these rows
            if name in _STRINGS:
                out[name] = [None if v is None or (name != "key" and v == "") else str(v) for v in values]
            elif values.dtype == object:  # metadata some groups lack
                out[name] = None if any(v is None for v in values) else torch.as_tensor(np.stack(list(values)).astype(np.int64))
            elif name.endswith("indices") or name in _META:
                out[name] = torch.from_numpy(np.ascontiguousarray(values).astype(np.int64))
            else:
                out[name] = self._latent(name, values, data, generator)
        return out

    def _latent(self, name: str, values: np.ndarray, data: dict[str, np.ndarray], generator: torch.Generator | None) -> torch.Tensor:
        z = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))  # (B, C, h, w)
        logvar = f"{name.removesuffix('latent')}logvar"
        if self.resample and name.endswith("latent") and logvar in data:
            if generator is None:  # items: fresh noise every access
                generator = torch.Generator().manual_seed(int(self._epoch_rng.integers(2**62)))
            std = torch.exp(0.5 * torch.from_numpy(np.asarray(data[logvar], dtype=np.float32)).clamp(-30.0, 20.0))
            z = z + std * torch.randn(z.shape, generator=generator)
        if self._norm_config is not None and name.endswith("latent"):
            z = self._norm_config.normalize(z)
        return z


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of indices that share one bucket shape (so they stack), shuffled per epoch.

    Args:
        dataset: a :class:`LatentDataset` (anything with ``__len__`` and ``bucket_of(i)``).
        batch_size: rows per batch.
        shuffle: shuffle rows within buckets and the order of batches.
        drop_last: drop each bucket's last incomplete batch.
        seed: base seed; call :meth:`set_epoch` for a new order each epoch.
    """

    def __init__(self, dataset, batch_size: int, shuffle: bool = True, drop_last: bool = False, seed: int = 0):
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0, got: {batch_size}")
        self.batch_size, self.shuffle, self.drop_last, self.seed, self.epoch = batch_size, shuffle, drop_last, seed, 0
        self.buckets: dict[str, list[int]] = {}
        for i in range(len(dataset)):
            self.buckets.setdefault(dataset.bucket_of(i), []).append(i)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        batches = []
        for name in sorted(self.buckets):
            rows = list(self.buckets[name])
            if self.shuffle:
                rng.shuffle(rows)
            for s in range(0, len(rows), self.batch_size):
                batch = rows[s : s + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


# ---- decoding ---------------------------------------------------------------------------


def decode_latents(latents: torch.Tensor | np.ndarray, path_or_codec: str | Codec | dict, weights: str | None = None,
                   storage_options: dict | None = None, normalized: bool = False) -> torch.Tensor:
    """Rebuild the decoder from codec metadata + weights, and decode.

    Args:
        latents: (B, C, h, w) latents, (B, C, T', h, w) for video codecs (layout ``CTHW``), or
            (B, h, w[, levels]) integer indices for discrete codecs.
        path_or_codec: a latent output directory, or its codec (or the codec's JSON dict).
        weights: checkpoint location; default: the one recorded in the codec. Its sha256 must match.
        storage_options: fsspec options for both.
        normalized: the latents were normalized with the codec's rule (``LatentDataset(normalize=True)``);
            denormalized here with the codec's rule, whatever the model's own config says.

    Returns:
        (B, 3, H, W) images in [-1, 1]; (B, 3, T, H, W) frames for video codecs. To watch them:
        ``save_video_preview(frames, "clips.mp4", fps=preview_fps(path))`` (:mod:`latentflow.data.preview`;
        mp4 or GIF, local or fsspec URL, clips tiled into one grid).
    """
    if isinstance(path_or_codec, (Codec, dict)):
        codec = as_codec(path_or_codec)
    else:
        codec = read_codec(path_or_codec, storage_options)
    model = codec.load_model(storage_options, weights)
    z = torch.as_tensor(np.asarray(latents) if isinstance(latents, np.ndarray) else latents)
    with torch.inference_mode():
        if not z.is_floating_point():
            return model.detokenize(z.long())
        z = z.float()
        if normalized:
            z = codec.normalization.denormalize(z)
        return model.decode(z).sample


# ---- inspect -------------------------------------------------------------------------------


def inspect(path: str, storage_options: dict | None = None) -> dict[str, Any]:
    """Metadata, counts and per-channel statistics of a latent output, with a suggested scaling factor.

    Returns:
        dict with ``model``, ``latent_kind``, ``layout`` (``CHW`` or ``CTHW``), ``modality``, ``stored``,
        ``dtype``, ``shapes``, ``normalization``, ``counts`` (rows, shards, errors, rows per bucket),
        ``stats`` (per-channel mean/std), ``suggested_scaling_factor`` = 1 / std over all latent values
        (as Rombach et al. derived 0.18215); for video also ``clips`` (fps, num_frames, temporal stride,
        frame buckets, clip mode, resolution: the processor as run) and ``decoder`` (name, versions).
    """
    from latentflow.data.sinks import _sum_buckets

    codec = read_codec(path, storage_options)
    markers = committed_shards(path, storage_options)
    stats = merge_stats(markers)
    info: dict[str, Any] = {
        "path": str(path),
        "model": {"class": codec.model.cls, "model_type": codec.model.model_type, "weights_sha256": codec.model.weights_sha256,
                  "ref": codec.model.ref.to_dict() if codec.model.ref else None},
        "fingerprint": codec.fingerprint,
        "latent_kind": codec.latent_kind,
        "layout": codec.layout,
        "modality": codec.modality,
        "stored": codec.arrays,
        "dtype": codec.dtype,
        "shapes": codec.shapes,
        "normalization": codec.normalization.to_dict(),
        "counts": {"rows": sum(m["rows"] for m in markers.values()), "shards": len(markers),
                   "errors": sum(len(m.get("errors", [])) for m in markers.values()), "buckets": _sum_buckets(markers)},
        "stats": None,
        "suggested_scaling_factor": None,
    }
    if codec.modality == "video":
        p = codec.processor
        info["clips"] = {"fps": p.fps, "num_frames": p.num_frames, "temporal_stride": p.temporal_stride,
                         "frame_buckets": p.frame_buckets, "clip_mode": p.clip_mode, "num_clips": p.num_clips,
                         "clip_stride_s": p.clip_stride_s, "max_clips_per_video": p.max_clips_per_video,
                         "resolution": p.resolution, "short_clip": p.short_clip}
        info["decoder"] = codec.decoder
    if stats is not None:
        count, total, sumsq = (float(np.sum(stats[k])) for k in ("count", "sum", "sumsq"))
        std = float(np.sqrt(max(sumsq / count - (total / count) ** 2, 0.0)))
        info["stats"] = {"mean": stats["mean"], "std": stats["std"], "global_mean": total / count, "global_std": std}
        info["suggested_scaling_factor"] = 1.0 / std if std > 0 else None
    return info


def _format_clips(info: dict[str, Any]) -> list[str]:
    """The video lines of :func:`format_inspect`: clip config as run, and the decoder."""
    c, d = info["clips"], info.get("decoder") or {}
    mode = {"uniform": f"uniform, {c['num_clips']} per video", "slide": f"slide every {c['clip_stride_s']} s",
            "head": "head"}.get(c["clip_mode"], c["clip_mode"])
    lengths = f", frame buckets {c['frame_buckets']}" if c["frame_buckets"] else ""
    return [f"  clips:        {c['num_frames']} frames at {c['fps'] or 'native'} fps, temporal stride {c['temporal_stride']}"
            f"{lengths}; {mode} (at most {c['max_clips_per_video']}), {c['resolution']} px, short clips: {c['short_clip']}",
            f"  decoder:      {d.get('name', '?')} {d.get('version', '')} (FFmpeg {d.get('ffmpeg', '?')})"]


def format_inspect(info: dict[str, Any]) -> str:
    """A human-readable report of :func:`inspect`."""
    axes = "(C, T', h, w)" if info["layout"] == "CTHW" else "(C, h, w)"
    lines = [f"latentflow output: {info['path']}",
             f"  model:        {info['model']['class']} (model_type {info['model']['model_type']})",
             f"  weights:      sha256 {info['model']['weights_sha256']}",
             f"  fingerprint:  {info['fingerprint']}",
             f"  modality:     {info.get('modality', 'image')}",
             f"  latents:      {info['latent_kind']} ({info['layout']}: {axes}), stored {list(info['stored'])} as {info['dtype']}",
             f"  shapes:       {info['shapes']}"]
    if "clips" in info:
        lines += _format_clips(info)
    buckets = info["counts"].get("buckets") or {}
    lines += [f"  counts:       {info['counts']['rows']} rows, {info['counts']['shards']} shards, {info['counts']['errors']} errors"
              + (f"; rows per bucket {buckets}" if buckets else ""),
              f"  normalization: {info['normalization']}"]
    if info["stats"]:
        lines.append("  per-channel statistics:")
        lines += [f"    c{c}: mean {m:+.5f}  std {s:.5f}" for c, (m, s) in enumerate(zip(info["stats"]["mean"], info["stats"]["std"]))]
        lines.append(f"  global std: {info['stats']['global_std']:.5f}")
        lines.append(f"  suggested scaling_factor (1/std): {info['suggested_scaling_factor']:.5f}")
    return "\n".join(lines)
