"""Reading latents back: ``datasets`` over the Parquet files, a torch Dataset over Zarr, decoding, inspecting.

Only committed shards (with a ``_done`` marker) are read from Zarr, so a crashed job's
half-written groups never leak into training; every shard's codec fingerprint is checked
so latents of two encoders are never mixed.

``LatentDataset.iter_batches`` is the fast path (about 8x ``load_latents(...).with_format("torch")``
in ``benchmarks/read_latents.py``): it reads whole row ranges (a shard file per array, decoded
in one pass by :mod:`latentflow.read.zarr_rows`) and shuffles them in a bounded buffer
(:mod:`latentflow.read.batches`). Random access (``ds[i]``, a ``DataLoader``) keeps a few
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

from latentflow.errors import CodecMismatchError, ConfigError
from latentflow.format.state import committed_shards, merge_stats
from latentflow.media.config import SEGMENT_FIELDS
from latentflow.normalization import Normalization
from latentflow.read.batches import BatchPlan, Block, GroupRows
from latentflow.read.latents import read_codec
from latentflow.read.zarr_rows import ArraySpec, array_spec, read_array, whole_file

# ---- torch dataset over zarr --------------------------------------------------------


_CLIP = ("video_key", "clip_index", "start_time", "fps", "num_frames", "padded_frames")  # video clip rows
_SEGMENT = tuple(n for n in SEGMENT_FIELDS if n not in _CLIP)  # audio segment rows (start_time shared)
_META = ("key", "caption", "json", "label", "original_size", "crop_box", "index_in_shard", *_CLIP, *_SEGMENT)
_STRINGS = ("key", "caption", "json", "video_key", *(n for n, kind in SEGMENT_FIELDS.items() if kind == "string"))
_FLOATS = ("start_time", "fps", *(n for n, kind in SEGMENT_FIELDS.items() if kind == "float64"))


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
    ``json``, ``label`` (int, or None), ``original_size``, ``crop_box``, ``index_in_shard``; video clip
    rows also ``video_key``, ``clip_index``, ``start_time`` (s), ``fps``, ``num_frames``, ``padded_frames``.
    Audio segment rows (codec layout ``CT``): ``latent`` (C, t), ``source_key``, ``segment_index``,
    ``start_time``, ``duration`` (s), ``sample_rate``, ``channels``, ``valid_length`` and ``mask`` (t,) bool,
    True on the latent frames of real audio (``arange(t) < valid_length``; the rest is padding).
    Clips with an audio track (``codec.tracks``) also carry ``audio`` (C, t) (normalized by the track
    codec's own rule when ``normalize``), ``audio_valid_length``, ``audio_start_time``, ``audio_duration``
    and ``audio_mask`` (t,) bool.
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
            raise CodecMismatchError(
                f"{path!r} was encoded with codec fingerprint {self.codec.fingerprint}, expected {expected_fingerprint}")
        arrays = self.codec.arrays
        if resample and "logvar" not in arrays:
            raise ConfigError(f"resample=True needs stored logvar; {path!r} stores {arrays}")
        self.normalize, self.resample, self.seed = normalize, resample, seed
        self._text = {t.name: t for t in self.codec.text}  # cached text-encoder columns
        self._text_fields = {**{n: t for n, t in self._text.items() if t.hidden_width},
                             **{f"{n}_pooled": t for n, t in self._text.items() if t.pooled_width}}
        self._tracks = {t.name: t for t in self.codec.tracks}  # a video clip's audio track: <name> and its span fields
        track_fields = tuple(c for t in self.codec.tracks for c in t.columns)
        self.fields = (tuple(fields) if fields is not None else
                       tuple(a for a in arrays if not a.endswith("logvar")) + _META + tuple(self._text_fields) + track_fields)
        unknown = set(self.fields) - set(arrays) - set(_META) - set(self._text_fields) - set(track_fields)
        if unknown:
            raise ConfigError(f"fields {sorted(unknown)} are neither stored arrays {list(arrays)} nor metadata {list(_META)}")
        self._norm_config = self._normalization(normalize)
        self.fs, self._root = fsspec.url_to_fs(str(self.path), **(storage_options or {}))
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
            return Normalization.from_values(latents_mean=stats["mean"], latents_std=[max(s, 1e-12) for s in stats["std"]],
                                             source="dataset")
        return self.codec.normalization

    # ---- the index: groups of committed shards (metadata only, no array reads) ---------------
    def _build_index(self, buckets: list[str] | None) -> list[_Group]:
        markers = committed_shards(self.path, self.storage_options)
        wanted = {s for s, m in markers.items() if m.rows and "zarr" in m.formats}
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
                  for name in fields if stored[name] in group.specs and name not in self._text_fields}
        paths = [p for p in wanted.values() if p]
        blobs = self.fs.cat(paths, on_error="return") if paths else {}  # one concurrent batch on object stores
        out = {}
        for name in fields:
            if name in self._text_fields:
                out[name] = self._read_text(base, name, block)
                continue
            if stored[name] not in group.specs:
                out[name] = np.full(len(block), None, dtype=object)  # metadata this group lacks
                continue
            out[name] = read_array(self.fs, f"{base}/{stored[name]}", group.specs[stored[name]], group.rows,
                                   block.start, block.stop, self._open_array, blobs.get(wanted[name]))
        return out

    def _read_text(self, base: str, name: str, block: Block) -> np.ndarray:
        """One text column's rows of a block, (L, D) (or (D,) pooled) arrays in an object array: each row's
        distinct embedding through ``<name>__ref`` (layout: :mod:`latentflow.format.text`)."""
        from latentflow.format.text import OFFSETS, REF

        text = self._text_fields[name]
        ref = np.asarray(self._open_array(f"{base}/{text.name}{REF}")[block.start:block.stop])
        out = np.empty(len(block), dtype=object)
        if not len(ref):
            return out
        lo, hi = int(ref.min()), int(ref.max()) + 1
        if name == text.name:
            offsets = np.asarray(self._open_array(f"{base}/{name}{OFFSETS}")[lo:hi + 1])
            values = np.asarray(self._open_array(f"{base}/{name}")[int(offsets[0]):int(offsets[-1])])
            for j, u in enumerate(ref - lo):
                out[j] = values[offsets[u] - offsets[0]:offsets[u + 1] - offsets[0]]
        else:
            pooled = np.asarray(self._open_array(f"{base}/{name}")[lo:hi])
            for j, u in enumerate(ref - lo):
                out[j] = pooled[u]
        return out

    def _text_batch(self, name: str, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Rows of a text column as float32 tensors: ``<name>`` (B, L_max, D) padded with zeros at the end
        and ``<name>_mask`` (B, L_max) bool, True on each caption's tokens; pooled: (B, D)."""
        from latentflow.format.text import STORAGE_NUMPY

        dtype = self._text_fields[name].dtype
        def tensor(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(np.ascontiguousarray(a, dtype=STORAGE_NUMPY[dtype]))
            return (t.view(torch.bfloat16) if dtype == "bf16" else t).float()
        if name.endswith("_pooled") and name not in self._text:
            return {name: torch.stack([tensor(r) for r in rows])}
        longest = max((len(r) for r in rows), default=0)
        width = self._text_fields[name].hidden_width
        values, mask = torch.zeros(len(rows), longest, width), torch.zeros(len(rows), longest, dtype=torch.bool)
        for i, r in enumerate(rows):
            values[i, :len(r)] = tensor(r)
            mask[i, :len(r)] = True
        return {name: values, f"{name}_mask": mask}

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
        spans = [c for t in self.codec.tracks for c in t.columns[1:]]
        for name in ("label", *_CLIP, *_SEGMENT, *spans):  # scalars per row: plain Python numbers
            if isinstance(item.get(name), torch.Tensor):
                item[name] = item[name].item()
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
            lists (``key``, ``caption``, ``json``, ``video_key``), plus ``bucket``; see the class docstring.
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
            if name in self._text_fields:
                out.update(self._text_batch(name, values))
                continue
            if values.dtype == object and name not in _STRINGS and all(v is None for v in values):
                continue  # not stored for these rows
            if name in _STRINGS:
                out[name] = [None if v is None or (name != "key" and v == "") else str(v) for v in values]
            elif values.dtype == object:  # metadata some groups lack
                out[name] = None if any(v is None for v in values) else torch.as_tensor(np.stack(list(values)).astype(np.int64))
            elif name in _FLOATS or (name.endswith(("_start_time", "_duration")) and name.rsplit("_", 2)[0] in self._tracks):
                out[name] = torch.from_numpy(np.ascontiguousarray(values).astype(np.float64))
            elif name in self._tracks:  # the track's latents, normalized by the track codec's own rule
                z = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
                out[name] = self._tracks[name].codec.normalization.normalize(z) if self.normalize else z
            elif name.endswith("indices") or name in _META or name.endswith("_valid_length"):
                out[name] = torch.from_numpy(np.ascontiguousarray(values).astype(np.int64))
            else:
                out[name] = self._latent(name, values, data, generator)
        if isinstance(out.get("valid_length"), torch.Tensor) and isinstance(out.get("latent"), torch.Tensor):
            # audio: the padding mask at latent length, (B, t) bool (padding is always at the end of a segment)
            out["mask"] = torch.arange(out["latent"].shape[-1])[None] < out["valid_length"][:, None]
        for name in self._tracks:  # a clip's audio: (B, t) bool, True on real audio (0 frames: the video had none)
            if isinstance(out.get(name), torch.Tensor) and isinstance(out.get(f"{name}_valid_length"), torch.Tensor):
                out[f"{name}_mask"] = torch.arange(out[name].shape[-1])[None] < out[f"{name}_valid_length"][:, None]
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


# ---- inspect -------------------------------------------------------------------------------


