"""Reading latents back: ``datasets`` over the Parquet files, a torch Dataset over Zarr, decoding, inspecting.

Only committed shards (with a ``_done`` marker) are read from Zarr, so a crashed job's
half-written groups never leak into training; every shard's codec fingerprint is checked
so latents of two encoders are never mixed.

Example::

    ds = load_latents("s3://bucket/latents", storage_options=opts).with_format("torch")
    train = LatentDataset("s3://bucket/latents", normalize=True, storage_options=opts)
    loader = DataLoader(train, batch_sampler=BucketBatchSampler(train, batch_size=32))
    images = decode_latents(batch["latent"], "s3://bucket/latents")
"""

from __future__ import annotations

import functools
import random
from typing import Any, Iterator

import fsspec
import numpy as np
import torch

from latentflow.data.codec import Codec, as_codec
from latentflow.data.sinks import committed_shards, merge_stats, read_output_codec
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


def load_latents(path: str, storage_options: dict | None = None, split: str = "train"):
    """The Parquet latents as a ``datasets.Dataset`` with correctly shaped array columns.

    Args:
        path: output directory (local or fsspec URL).
        storage_options: fsspec options.
        split: the split name to return.

    Returns:
        ``datasets.Dataset``; ``.with_format("torch")`` gives (C, h, w) tensors per row
        (float16 comes back as float32; cast with the codec's ``dtype`` if needed).
    """
    import datasets

    read_codec(path, storage_options)
    markers = committed_shards(path, storage_options)
    # only committed shards: a file a crashed writer left without its marker is never read
    files = sorted(f for m in markers.values() for f in m["files"] if f.endswith(".parquet"))
    if not files:
        raise FileNotFoundError(f"{path!r} has no committed Parquet shards")
    protocol = str(path).split("://")[0] if "://" in str(path) else "file"
    kwargs = {"storage_options": {protocol: storage_options}} if storage_options else {}  # datasets keys them by protocol
    return datasets.load_dataset("parquet", data_files={split: files}, split=split, **kwargs)


# ---- torch dataset over zarr --------------------------------------------------------


class LatentDataset(torch.utils.data.Dataset):
    """Random access by row over the Zarr latents of committed shards.

    Args:
        path: output directory.
        normalize: False; True for the model's own scaling/shift (or latents_mean/std);
            ``"stats"`` for the per-channel mean/std measured over this dataset.
        resample: draw ``mean + exp(logvar / 2) * noise`` each time (needs stored logvar).
        expected_fingerprint: refuse (CodecMismatchError) unless the codec fingerprint equals it.
        storage_options: fsspec options.
        seed: seed of the resampling noise (with the row index, for reproducible epochs use a new seed each).

    Items are dicts: ``key``, ``latent`` (C, h, w) float32 (or ``indices`` for discrete codecs),
    ``original_size`` and ``crop_box`` when stored, ``bucket`` ("hxw").
    """

    def __init__(self, path: str, normalize: bool | str = False, resample: bool = False, expected_fingerprint: str | None = None,
                 storage_options: dict | None = None, seed: int = 0):
        self.path, self.storage_options = str(path).rstrip("/"), storage_options
        self.codec = read_codec(path, storage_options)
        if expected_fingerprint is not None and expected_fingerprint != self.codec.fingerprint:
            raise CodecMismatchError(f"{path!r} was encoded with codec fingerprint {self.codec.fingerprint}, expected {expected_fingerprint}")
        arrays = self.codec.arrays
        if resample and "logvar" not in arrays:
            raise ConfigError(f"resample=True needs stored logvar; {path!r} stores {arrays}")
        self.normalize, self.resample, self.seed = normalize, resample, seed
        self._norm_config = self._normalization(normalize)
        self.groups, self.index = self._build_index()
        self._epoch_rng = np.random.default_rng(seed)

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

    def _build_index(self) -> tuple[list[str], list[tuple[int, int]]]:
        markers = committed_shards(self.path, self.storage_options)
        wanted = {s for s, m in markers.items() if m["rows"] and "zarr" in m.get("formats", ["zarr"])}
        root = self._open(f"{self.path}/zarr")
        found = {shard for _, bucket in root.groups() for shard, _ in bucket.groups()}
        if not wanted <= found:  # consolidated metadata older than the last commits (job not finalized yet)
            root = self._open(f"{self.path}/zarr", consolidated=False)
        groups, index = [], []
        for bucket in sorted(name for name, _ in root.groups()):
            for shard_id, group in sorted(root[bucket].groups()):
                if shard_id not in markers:
                    continue  # written but never committed (crashed writer)
                if group.attrs.get("codec_fingerprint") != self.codec.fingerprint:
                    raise CodecMismatchError(f"shard {shard_id!r} was written by encoder {group.attrs.get('codec_fingerprint')}, "
                                             f"the dataset's is {self.codec.fingerprint}")
                groups.append(f"{bucket}/{shard_id}")
                index += [(len(groups) - 1, row) for row in range(group["keys"].shape[0])]
        return groups, index

    def _open(self, url: str, consolidated: bool | None = None):
        import zarr

        remote = "://" in url and not url.startswith("file://")
        options = self.storage_options if remote else None
        return zarr.open_group(url, mode="r", storage_options=options, use_consolidated=consolidated)

    @functools.lru_cache(maxsize=256)
    def _group(self, g: int):
        return self._open(f"{self.path}/zarr/{self.groups[g]}")

    def __len__(self) -> int:
        return len(self.index)

    def bucket_of(self, i: int) -> str:
        return self.groups[self.index[i][0]].split("/", 1)[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        g, row = self.index[i]
        group = self._group(g)
        item: dict[str, Any] = {"key": str(group["keys"][row]), "bucket": self.bucket_of(i)}
        for name in ("original_size", "crop_box"):
            if name in group:
                item[name] = torch.from_numpy(np.asarray(group[name][row]))
        if "indices" in self.codec.arrays:
            item["indices"] = torch.from_numpy(np.asarray(group["indices"][row]).astype(np.int64))
        if "latent" in self.codec.arrays:
            item["latent"] = self._latent(group, row, i)
        return item

    def _latent(self, group, row: int, i: int) -> torch.Tensor:
        z = torch.from_numpy(np.asarray(group["latent"][row], dtype=np.float32))  # (C, h, w)
        if self.resample:
            logvar = torch.from_numpy(np.asarray(group["logvar"][row], dtype=np.float32))
            gen = torch.Generator().manual_seed(int(self._epoch_rng.integers(2**62)) ^ i)
            z = z + torch.exp(0.5 * logvar) * torch.randn(z.shape, generator=gen)
        if self._norm_config is not None:
            z = self._norm_config.normalize(z[None])[0]
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
        latents: (B, C, h, w) latents, or (B, h, w[, levels]) integer indices for discrete codecs.
        path_or_codec: a latent output directory, or its codec (or the codec's JSON dict).
        weights: checkpoint location; default: the one recorded in the codec. Its sha256 must match.
        storage_options: fsspec options for both.
        normalized: the latents were normalized with the codec's rule (``LatentDataset(normalize=True)``);
            denormalized here with the codec's rule, whatever the model's own config says.

    Returns:
        (B, 3, H, W) images in [-1, 1].
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
        dict with ``model``, ``latent_kind``, ``stored``, ``dtype``, ``shapes``, ``normalization``,
        ``counts`` (rows, shards, errors, buckets), ``stats`` (per-channel mean/std), and
        ``suggested_scaling_factor`` = 1 / std over all latent values (as Rombach et al. derived 0.18215).
    """
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
        "stored": codec.arrays,
        "dtype": codec.dtype,
        "shapes": codec.shapes,
        "normalization": codec.normalization.to_dict(),
        "counts": {"rows": sum(m["rows"] for m in markers.values()), "shards": len(markers),
                   "errors": sum(len(m.get("errors", [])) for m in markers.values())},
        "stats": None,
        "suggested_scaling_factor": None,
    }
    if stats is not None:
        count, total, sumsq = (float(np.sum(stats[k])) for k in ("count", "sum", "sumsq"))
        std = float(np.sqrt(max(sumsq / count - (total / count) ** 2, 0.0)))
        info["stats"] = {"mean": stats["mean"], "std": stats["std"], "global_mean": total / count, "global_std": std}
        info["suggested_scaling_factor"] = 1.0 / std if std > 0 else None
    return info


def format_inspect(info: dict[str, Any]) -> str:
    """A human-readable report of :func:`inspect`."""
    lines = [f"latentflow output: {info['path']}",
             f"  model:        {info['model']['class']} (model_type {info['model']['model_type']})",
             f"  weights:      sha256 {info['model']['weights_sha256']}",
             f"  fingerprint:  {info['fingerprint']}",
             f"  latents:      {info['latent_kind']} ({info['layout']}), stored {list(info['stored'])} as {info['dtype']}",
             f"  shapes:       {info['shapes']}",
             f"  counts:       {info['counts']['rows']} rows, {info['counts']['shards']} shards, {info['counts']['errors']} errors",
             f"  normalization: {info['normalization']}"]
    if info["stats"]:
        lines.append("  per-channel statistics:")
        lines += [f"    c{c}: mean {m:+.5f}  std {s:.5f}" for c, (m, s) in enumerate(zip(info["stats"]["mean"], info["stats"]["std"]))]
        lines.append(f"  global std: {info['stats']['global_std']:.5f}")
        lines.append(f"  suggested scaling_factor (1/std): {info['suggested_scaling_factor']:.5f}")
    return "\n".join(lines)
