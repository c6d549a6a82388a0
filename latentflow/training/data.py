"""Training data: raw images streamed from shards (stage 1), cached latents (stage 2).

Both streams are deterministic functions of ``(seed, epoch)`` and expose a JSON
``position()`` that ``set_position`` restores exactly, so a resumed run reads the
same batches an uninterrupted run would have read.

Stage 1 (:class:`ImageStream`): the encode job's sources and processors. A
worker of rank ``r`` out of ``W`` owns shards ``r, r + W, ...`` (disjoint); each
epoch shuffles its shard order and the samples inside each shard. Streams cycle
forever, so every worker yields exactly one batch per step: equal batch counts.

Stage 2 (:class:`LatentCacheStream`): a latent output streamed through the data
layer's ``LatentDataset.iter_batches`` (flat memory, disjoint rows per worker, one
bucket shape per batch, resampled from ``mean + std * eps`` where logvar is stored and
normalized with the codec's rule). :class:`LatentStream` does the same over an
in-memory :class:`LatentTable` (tests, baselines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch

from latentflow.errors import CodecMismatchError, ConfigError, InputError
from latentflow.format.codec import Codec
from latentflow.normalization import Normalization


# ---- stage 1 ----------------------------------------------------------------------
class ImageStream:
    """Endless, resumable batches of images from shards.

    Args:
        shards: this dataset's shards (sorted); the worker takes ``shards[rank::world]``.
        read_shard: shard -> iterable of records (``.key``, ``.image``, ``.label``).
        process: record -> float32 array (3, H, W) in [-1, 1]; raise to skip a bad sample.
        batch_size: images per batch.
        seed: order seed; shuffle: shuffle shards and samples per epoch.
        skip_errors: exception types that mark one bad sample (skipped and counted).
    """

    def __init__(self, shards: list[Any], read_shard: Callable[[Any], Iterable[Any]],
                 process: Callable[[Any], np.ndarray], batch_size: int, seed: int = 0,
                 shuffle: bool = True, rank: int = 0, world: int = 1,
                 skip_errors: tuple[type[BaseException], ...] = ()):
        if len(shards) < world:
            raise ConfigError(f"{world} workers need at least {world} shards (disjoint shards per worker), got: {len(shards)}")
        self.shards = list(shards)[rank::world]
        self.read_shard, self.process = read_shard, process
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.skip_errors = skip_errors
        self.epoch, self.shard_cursor, self.sample_cursor = 0, 0, 0
        self.skipped = 0
        self.shards_seen: set[str] = set()  # shard URLs this stream has read (disjointness checks)
        self._records: list[Any] | None = None  # current shard, in this epoch's order

    def position(self) -> dict[str, int]:
        """Where the next batch starts (JSON-able)."""
        return {"epoch": self.epoch, "shard_cursor": self.shard_cursor, "sample_cursor": self.sample_cursor}

    def set_position(self, position: dict[str, int]) -> None:
        self.epoch = int(position["epoch"])
        self.shard_cursor = int(position["shard_cursor"])
        self.sample_cursor = int(position["sample_cursor"])
        self._records = None

    def reset(self) -> None:
        """Back to the first batch of epoch 0 (evaluation streams restart each evaluation)."""
        self.set_position({"epoch": 0, "shard_cursor": 0, "sample_cursor": 0})

    def _shard_order(self) -> list[int]:
        order = np.arange(len(self.shards))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        return order.tolist()

    def _load_shard(self) -> list[Any]:
        index = self._shard_order()[self.shard_cursor]
        shard = self.shards[index]
        self.shards_seen.add(str(getattr(shard, "url", shard)))
        records = list(self.read_shard(shard))
        if self.shuffle:
            perm = np.random.default_rng([self.seed, self.epoch, index]).permutation(len(records))
            records = [records[i] for i in perm]
        return records

    def _next_record(self) -> Any:
        for _ in range(len(self.shards) + 1):  # at most one empty pass over the shards
            if self._records is None:
                self._records = self._load_shard()
            if self.sample_cursor < len(self._records):
                record = self._records[self.sample_cursor]
                self.sample_cursor += 1
                return record
            self._advance_shard()
        raise InputError("every shard of this worker is empty; nothing to train on")

    def _advance_shard(self) -> None:
        self._records, self.sample_cursor = None, 0
        self.shard_cursor += 1
        if self.shard_cursor >= len(self.shards):
            self.shard_cursor, self.epoch = 0, self.epoch + 1

    def next_batch(self) -> dict[str, Any]:
        """``{"pixel_values": (B, 3, H, W) float32, "keys": [...], "labels": (B,) or None}``."""
        images, keys, labels = [], [], []
        attempts = 0
        while len(images) < self.batch_size:
            record = self._next_record()
            attempts += 1
            try:
                pixels = self.process(record)
            except self.skip_errors:
                self.skipped += 1
                if attempts > 100 * self.batch_size:
                    raise InputError(f"{self.skipped} of the last {attempts} samples failed to process")
                continue
            if images and pixels.shape != images[0].shape:
                raise InputError(
                    f"stage-1 batches need one image size; got {tuple(pixels.shape)} after {tuple(images[0].shape)} "
                    "(key {!r}): configure the processor with a fixed resolution / crop".format(record.key))
            images.append(pixels)
            keys.append(record.key)
            labels.append(getattr(record, "label", None))
        batch_labels = None if any(lab is None for lab in labels) else torch.tensor(labels)
        return {"pixel_values": torch.from_numpy(np.stack(images)), "keys": keys, "labels": batch_labels}


def build_image_stream(source: dict[str, Any], processor: dict[str, Any], downsample_factor: int,
                       batch_size: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1,
                       shard_slice: slice | None = None, video: dict[str, Any] | None = None,
                       temporal_stride: int | None = None) -> ImageStream:
    """An :class:`ImageStream` over the encode job's ``SourceConfig`` + processor dicts.

    Args:
        processor: an ``ImageProcessorConfig`` dict (images).
        shard_slice: which of the sorted shards to use (``slice(-k, None)`` holds out the last k).
        video: a ``VideoProcessorConfig`` dict: the stream yields clips (3, T, H, W) instead, one
            per video per epoch, picked among the video's clips by (seed, epoch, key); clip lengths
            are forced to the model's ``temporal_stride``.
    """
    from latentflow.encode.shard import build_processor, process_record, unpack_pixels
    from latentflow.media.config import ImageProcessorConfig, VideoProcessorConfig
    from latentflow.sources.records import SampleError, key_seed
    from latentflow.sources.shards import SourceConfig, list_shards, read_shard

    source_cfg = SourceConfig.from_dict(source)
    if video is not None and source_cfg.media is None:
        source_cfg = source_cfg.replace(media="video")
    config = VideoProcessorConfig.from_dict(video) if video is not None else ImageProcessorConfig.from_dict(processor)
    proc = build_processor(config, downsample_factor, temporal_stride)
    shards = list_shards(source_cfg)
    if shard_slice is not None:
        shards = shards[shard_slice]

    augment = proc.config.crop == "random"

    def process(record) -> np.ndarray:
        # the encode job's own per-record path; a bad sample raises SampleError (skipped, counted).
        # Random crops are fresh every epoch, still a deterministic function of (seed, epoch, key)
        # so a resumed run sees the same pixels.
        epoch_key = f"{record.key}@epoch{stream.epoch}"
        rows = process_record(record, proc, key=epoch_key if augment else None)
        rng = np.random.default_rng(key_seed(seed, epoch_key))
        pixels = unpack_pixels(rows[int(rng.integers(len(rows)))].pixels if video is not None else rows[0].pixels)
        if video is None and augment and proc.config.flip and rng.random() < 0.5:
            return np.ascontiguousarray(pixels[:, :, ::-1])
        return pixels

    stream = ImageStream(shards, lambda s: read_shard(s, source_cfg), process, batch_size, seed, shuffle,
                         rank, world, skip_errors=(SampleError,))
    return stream


# ---- stage 2 ------------------------------------------------------------------------
@dataclass
class LatentTable:
    """Cached latents held in memory (tests, small caches, the in-memory baseline of the benchmarks).

    The prior trainer streams a latent output with :class:`LatentCacheStream` instead; a table is
    for tensors built in a test or for :func:`load_latent_table` on a small, single-shape cache.

    Attributes:
        latents: continuous latents (N, C, h, w) float, or token indices (N, ...) integer.
        codec: the codec metadata written by the encode job (normalization, model, ...).
        fingerprint: the codec fingerprint.
        logvar: stored posterior log-variance (N, C, h, w), where the job stored it.
        labels: class labels (N,), where every row has one.
    """

    latents: torch.Tensor
    codec: Codec | None = None
    fingerprint: str = ""
    logvar: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    @property
    def discrete(self) -> bool:
        return not self.latents.is_floating_point()

    @property
    def normalization(self) -> Normalization:
        """The codec's rule (identity for a table built from tensors without a codec)."""
        return self.codec.normalization if self.codec else Normalization()

    @property
    def codebook_size(self) -> int | None:
        if self.codec and self.codec.quantizer:
            return self.codec.quantizer.codebook_size
        return int(self.latents.max()) + 1 if self.discrete and len(self) else None

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.latents.shape[1:])

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    def split(self, val_fraction: float) -> tuple["LatentTable", "LatentTable"]:
        """Deterministic split: the last ``val_fraction`` of rows is validation."""
        n_val = int(round(len(self) * val_fraction))
        cut = len(self) - n_val
        return self._rows(slice(0, cut)), self._rows(slice(cut, len(self)))

    def _rows(self, rows: slice) -> "LatentTable":
        pick = (lambda t: None if t is None else t[rows])
        return LatentTable(self.latents[rows], self.codec, self.fingerprint, pick(self.logvar), pick(self.labels))

    def check_fingerprint(self, expected: str | None) -> None:
        """Raise :class:`CodecMismatchError` when these latents come from another codec."""
        if expected and self.fingerprint != expected:
            raise CodecMismatchError(
                f"latent dataset codec fingerprint {self.fingerprint!r} differs from the one this prior was "
                f"trained on ({expected!r}); re-encode with the same model/processor or train a new prior")


class LatentStream:
    """Endless, resumable, shuffled batches of rows of a :class:`LatentTable`.

    Continuous latents are resampled (when ``resample`` and logvar is stored) with a
    generator seeded by the position, then normalized (when ``normalize``).
    """

    def __init__(self, table: LatentTable, batch_size: int, seed: int = 0, normalize: bool = True,
                 resample: bool = True, rank: int = 0, world: int = 1):
        if len(table) < batch_size * world:
            raise ConfigError(f"batch_size {batch_size} x {world} workers needs >= {batch_size * world} rows, got: {len(table)}")
        self.table, self.batch_size, self.seed = table, batch_size, seed
        self.normalize, self.resample, self.rank, self.world = normalize, resample, rank, world
        self.epoch, self.cursor = 0, 0

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def set_position(self, position: dict[str, int]) -> None:
        self.epoch, self.cursor = int(position["epoch"]), int(position["cursor"])

    def _order(self) -> np.ndarray:
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.table))
        usable = len(perm) - len(perm) % (self.batch_size * self.world)  # equal batches per worker
        return perm[:usable][self.rank::self.world]

    def next_batch(self) -> dict[str, Any]:
        """``{"latents": (B, ...) , "labels": (B,) or None}`` (float latents or long indices)."""
        order = self._order()
        if self.cursor + self.batch_size > len(order):
            self.epoch, self.cursor = self.epoch + 1, 0
            order = self._order()
        rows = torch.from_numpy(order[self.cursor:self.cursor + self.batch_size].copy())
        gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, self.cursor, self.rank)) % (2**63))
        self.cursor += self.batch_size
        return self.rows(rows, gen)

    def rows(self, rows: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, Any]:
        return table_rows(self.table, rows, self.normalize, self.resample, generator)


def table_rows(table: LatentTable, rows: torch.Tensor, normalize: bool = True, resample: bool = False,
               generator: torch.Generator | None = None) -> dict[str, Any]:
    """Rows of a table as a prior sees them: long indices, or float latents (resampled, normalized)."""
    labels = None if table.labels is None else table.labels[rows].long()
    if table.discrete:
        return {"latents": table.latents[rows].long(), "labels": labels}
    z = table.latents[rows].float()
    if resample and table.logvar is not None:
        std = torch.exp(0.5 * table.logvar[rows].float().clamp(-30.0, 20.0))
        z = z + std * torch.randn(z.shape, generator=generator)
    if normalize:
        z = table.normalization.normalize(z)
    return {"latents": z, "labels": labels}


class LatentCacheStream:
    """Endless, resumable batches of a latent output, streamed through ``LatentDataset.iter_batches``.

    Memory stays flat in the dataset size (one shuffle buffer of rows); worker ``rank`` of
    ``world`` reads disjoint blocks of rows; every batch holds one bucket shape. Latents come
    out as the dataset makes them (resampled from mean/logvar and normalized with the codec's
    rule, when the dataset was opened so).

    Args:
        dataset: a ``LatentDataset`` (or a view from its ``split``).
        batch_size: rows per batch; each bucket's last batch of a worker's epoch holds what is left
            (a partial batch, as kohya's bucketed trainers do), so a small or unevenly bucketed cache
            trains whatever its size.
        seed: the order of every epoch is a function of (seed, epoch).
        rank, world: this worker and the worker count.
        labels: return the ``label`` column as ``labels`` (class conditioning); else ``labels`` is None.
        buffer_rows: the shuffle buffer.

    Every worker gets at least one block of rows in every epoch (``default_block_rows`` cuts a
    dataset of at least ``world`` rows into at least ``world`` blocks), hence at least one batch, and
    the stream is endless: each worker takes exactly one batch per step whatever its share of a bucket,
    so DDP workers never wait on one another. A dataset with fewer rows than workers is refused.

    ``position()`` is ``{"epoch", "batches"}`` (batches consumed in that epoch); ``set_position``
    restores it exactly, reading nothing for the skipped batches.
    """

    def __init__(self, dataset: Any, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1,
                 labels: bool = False, buffer_rows: int = 4096, text: str | None = None):
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0, got: {batch_size}")
        if len(dataset) < world:
            raise ConfigError(f"{len(dataset)} training rows cannot give each of {world} workers its own rows; "
                              f"use at most {len(dataset)} workers (--num-workers)")
        self.dataset, self.batch_size, self.seed, self.rank, self.world = dataset, batch_size, seed, rank, world
        self.labels, self.buffer_rows, self.text = labels, buffer_rows, text
        self.epoch, self.batches = 0, 0
        self._iter: Any = None

    def _plan(self, epoch: int, rank: int | None = None):
        rank = self.rank if rank is None else rank
        return self.dataset.batch_plan(self.batch_size, True, self.seed, epoch, rank, self.world, False, self.buffer_rows)

    def describe(self) -> str:
        """One line: rows, buckets, batches per worker in epoch 0, and the partial batches it holds."""
        plans = [self._plan(0, r) for r in range(self.world)]
        b = self.batch_size
        partial = sorted((n % b, bucket) for p in plans for bucket, n in p.rows.items() if n % b)
        line = (f"data: {len(self.dataset)} training rows in {len(self.dataset.bucket_rows)} bucket shape(s), batch_size {b}, "
                f"{self.world} worker(s): {'/'.join(str(len(p)) for p in plans)} batches per epoch")
        if partial:
            line += (f"; {len(partial)} of them partial (each bucket's last batch per worker and epoch holds the rest: "
                     f"smallest {partial[0][0]} rows, bucket {partial[0][1]})")
        return line

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches}

    def set_position(self, position: dict[str, int]) -> None:
        self.epoch, self.batches, self._iter = int(position["epoch"]), int(position["batches"]), None

    def next_batch(self) -> dict[str, Any]:
        """``{"latents": (B, C, h, w) float or (B, h, w) long, "labels": (B,) or None, "captions": [...] or None, "bucket"}``
        (B = ``batch_size``, or fewer in a bucket's last batch of the epoch)."""
        for _ in range(2):  # the end of an epoch: on to the next, which has a batch for every worker
            if self._iter is None:
                self._iter = self.dataset.iter_batches(self.batch_size, True, self.seed, self.epoch, self.rank, self.world,
                                                       drop_last=False, start=self.batches, buffer_rows=self.buffer_rows)
            batch = next(self._iter, None)
            if batch is not None:
                self.batches += 1
                return prior_batch(batch, self.labels, self.text)
            self.epoch, self.batches, self._iter = self.epoch + 1, 0, None
        raise InputError(f"worker {self.rank} of {self.world} has no rows in epoch {self.epoch - 1}")


def prior_batch(batch: dict[str, Any], labels: bool, text: str | None = None) -> dict[str, Any]:
    """A ``LatentDataset`` batch as a prior's: ``latents``, ``labels`` (when asked), ``captions``, ``bucket``,
    and for audio latents ``mask`` (B, t), True on real frames (padding: False); with ``text`` (a cached text
    column), ``text`` (B, L, D) and ``text_mask`` (B, L), padded per batch."""
    latents = batch["indices"] if "indices" in batch else batch["latent"]
    out = {"latents": latents, "labels": batch.get("label") if labels else None,
           "captions": batch.get("caption"), "bucket": batch["bucket"]}
    if batch.get("mask") is not None:
        out["mask"] = batch["mask"]
    if text is not None:
        out["text"], out["text_mask"] = batch[text], batch[f"{text}_mask"]
    return out


def load_latent_table(path: str, storage_options: dict | None = None, expected_fingerprint: str | None = None,
                      bucket: str | None = None) -> LatentTable:
    """A whole latent output (or one bucket of it) in memory, read through ``LatentDataset``.

    Rows are sorted by key (a deterministic order whatever the shard layout). Continuous
    latents come with ``logvar`` when it was stored; ``labels`` when every row has one.
    Memory grows with the dataset: training streams with :class:`LatentCacheStream` instead.

    Raises:
        CodecMismatchError: the dataset's codec fingerprint is not ``expected_fingerprint``.
        ConfigError: the output holds several bucket shapes and ``bucket`` names none of them.
        InputError: no rows.
    """
    from latentflow.read.dataset import LatentDataset
    from latentflow.read.latents import read_codec

    codec = read_codec(path, storage_options)
    LatentTable(torch.zeros(0), codec, codec.fingerprint).check_fingerprint(expected_fingerprint)
    column = "indices" if "indices" in codec.arrays else "latent"
    fields = (column, "key", "label") + (("logvar",) if column == "latent" and "logvar" in codec.arrays else ())
    ds = LatentDataset(path, storage_options=storage_options, buckets=[bucket] if bucket else None, fields=fields)
    if len(ds) == 0:
        raise InputError(f"latent dataset {path!r}" + (f" has no rows of bucket {bucket!r}" if bucket else " has no rows"))
    if len(ds.bucket_rows) > 1:
        raise ConfigError(f"{path!r} holds several bucket shapes {sorted(ds.bucket_rows)}; one tensor holds one: pass "
                          "bucket='<HxW>', or stream them with LatentDataset.iter_batches / LatentCacheStream")
    parts = list(ds.iter_batches(4096, shuffle=False))
    keys = [k for p in parts for k in p["key"]]
    order = torch.from_numpy(np.argsort(np.asarray(keys), kind="stable"))
    latents = torch.cat([p[column] for p in parts])[order]
    table = LatentTable(latents, codec, codec.fingerprint)
    if "logvar" in fields:
        table.logvar = torch.cat([p["logvar"] for p in parts])[order]
    if all(p.get("label") is not None for p in parts):
        table.labels = torch.cat([p["label"] for p in parts])[order]
    return table
