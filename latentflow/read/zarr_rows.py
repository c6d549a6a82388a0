"""Fast reads of row ranges from the Zarr groups a :class:`~latentflow.store.writer.ShardWriter` writes.

The sink stores each per-row array as one shard file per group with one inner chunk per
row (``sharding_indexed``: ``bytes`` [+ ``zstd``], index at the end), and small per-row
metadata (keys, captions, labels, sizes) as single-chunk arrays. zarr-python decodes one
chunk per asyncio task (~0.3-1 ms per row here); reading the shard file's bytes in one
request and decoding its chunks in a loop is 6-10x faster. Layouts other than those two
fall back to zarr itself, so any valid group still reads.

Example::

    spec = array_spec(group["latent"].metadata)          # from (consolidated) metadata, no IO
    rows = read_array(fs, f"{root}/zarr/32x32/s1/latent", spec, n=128, start=0, stop=64)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

_EMPTY = np.uint64(2**64 - 1)  # an index entry for a chunk that was never written (all fill value)


@dataclass(frozen=True)
class ArraySpec:
    """How one array of a group is read.

    Attributes:
        kind: ``rows`` (one shard file, one chunk per row), ``chunk`` (one chunk holds every row)
            or ``zarr`` (another layout: read through zarr).
        dtype: numpy dtype of the values (``object`` for strings).
        row_shape: shape of one row.
        shard_rows: rows per shard file (``rows``) or per chunk (``chunk``).
        zstd: chunks are zstd-compressed.
        vlen: variable-length UTF-8 strings.
        fill: the fill value (rows never written read as it).
        chunk_key: the file of the first chunk/shard, relative to the array folder (``c/0/0/0/0``).
    """

    kind: str
    dtype: Any
    row_shape: tuple[int, ...]
    shard_rows: int = 0
    zstd: bool = False
    vlen: bool = False
    fill: Any = 0
    chunk_key: str = ""


def _inner(codecs) -> tuple[bool, bool] | None:
    """(zstd, vlen) when ``codecs`` is bytes|vlen-utf8 [+ zstd], else None (another layout)."""
    from zarr.codecs import BytesCodec, VLenUTF8Codec, ZstdCodec

    codecs = list(codecs)
    zstd = bool(codecs) and isinstance(codecs[-1], ZstdCodec)
    if zstd:
        codecs = codecs[:-1]
    if len(codecs) != 1:
        return None
    first = codecs[0]
    if isinstance(first, VLenUTF8Codec):
        return zstd, True
    if isinstance(first, BytesCodec) and (first.endian is None or first.endian.value == "little"):
        return zstd, False
    return None


def array_spec(metadata) -> ArraySpec:
    """The read plan of an array from its zarr v3 metadata (no IO)."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

    dtype = np.dtype(metadata.data_type.to_native_dtype())
    shape, chunks = tuple(metadata.shape), tuple(metadata.chunk_grid.chunk_shape)
    row_shape = shape[1:]
    key = metadata.encode_chunk_key((0,) * len(shape))
    fallback = ArraySpec("zarr", dtype, row_shape)
    if not shape or chunks[0] < shape[0] or chunks[1:] != row_shape:
        return fallback  # several chunks/shards along rows, or split rows: zarr reads them
    codecs = list(metadata.codecs)
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        shard = codecs[0]
        index_ok = (shard.index_location.value == "end" and len(shard.index_codecs) == 2
                    and isinstance(shard.index_codecs[0], BytesCodec) and isinstance(shard.index_codecs[1], Crc32cCodec))
        inner = _inner(shard.codecs)
        if index_ok and inner and not inner[1] and tuple(shard.chunk_shape) == (1, *row_shape) and dtype != object:  # noqa: E721 - a numpy dtype, not a type
            return ArraySpec("rows", dtype.newbyteorder("<"), row_shape, chunks[0], inner[0], False, metadata.fill_value, key)
        return fallback
    inner = _inner(codecs)
    if inner is None:
        return fallback
    return ArraySpec("chunk", dtype if inner[1] else dtype.newbyteorder("<"), row_shape, chunks[0], inner[0], inner[1],
                     metadata.fill_value, key)


def _zstd_decode(data) -> bytes:
    from numcodecs.zstd import decompress  # the codec's own function, without its per-call buffer checks

    return decompress(data)


def whole_file(path: str, spec: ArraySpec, n: int, start: int, stop: int) -> str | None:
    """The file a read of rows ``[start, stop)`` takes whole (fetch it with others in one batch), or None."""
    if spec.kind == "chunk" or (spec.kind == "rows" and start == 0 and stop == n):
        return f"{path}/{spec.chunk_key}"
    return None


def read_array(fs, path: str, spec: ArraySpec, n: int, start: int, stop: int,
               open_zarr: Callable[[str], Any], blob: bytes | Exception | None = None) -> np.ndarray:
    """Rows ``[start, stop)`` of the array at ``path`` (a folder; ``n`` rows in all).

    Args:
        fs: the fsspec filesystem of ``path``.
        spec: from :func:`array_spec`.
        open_zarr: path -> zarr array, for layouts the fast paths do not cover.
        blob: the :func:`whole_file` already fetched (bytes, or the exception fetching it raised).
    """
    if spec.kind == "zarr":
        return np.asarray(open_zarr(path)[start:stop])
    try:
        if isinstance(blob, Exception):
            raise blob
        return _read_chunks(fs, path, spec, n, start, stop, blob)
    except FileNotFoundError:  # zarr writes no file for chunks that are all fill value
        return np.full((stop - start, *spec.row_shape), "" if spec.vlen else spec.fill, dtype=spec.dtype)


def _read_chunks(fs, path: str, spec: ArraySpec, n: int, start: int, stop: int, blob: bytes | None) -> np.ndarray:
    if spec.kind == "rows":
        return _read_sharded_rows(fs, f"{path}/{spec.chunk_key}", spec, n, start, stop, blob)
    data = blob if blob is not None else fs.cat_file(f"{path}/{spec.chunk_key}")
    if spec.zstd:
        data = _zstd_decode(data)
    if spec.vlen:
        from numcodecs import VLenUTF8

        values = VLenUTF8().decode(data)
    else:
        values = np.frombuffer(data, dtype=spec.dtype).reshape(spec.shard_rows, *spec.row_shape)
    return np.asarray(values[start:stop])


def _read_sharded_rows(fs, url: str, spec: ArraySpec, n: int, start: int, stop: int, blob: bytes | None) -> np.ndarray:
    """One shard file: its index (at the end: (offset, length) uint64 per chunk, then a crc32c),
    then the bytes of the wanted rows' chunks in one request (the whole file for a whole group)."""
    index_bytes = 16 * spec.shard_rows + 4
    whole = start == 0 and stop == n
    if blob is None:
        blob = fs.cat_file(url) if whole else fs.cat_file(url, start=-index_bytes)
    index = np.frombuffer(blob, dtype="<u8", count=2 * spec.shard_rows, offset=len(blob) - index_bytes).reshape(-1, 2)[start:stop]
    out = np.empty((stop - start, *spec.row_shape), dtype=spec.dtype)
    flat = out.reshape(stop - start, -1)
    written = index[:, 0] != _EMPTY
    if not written.all():
        out[~written] = spec.fill
    if not written.any():
        return out
    base = 0
    if not whole:
        lo, hi = int(index[written, 0].min()), int((index[written, 0] + index[written, 1]).max())
        blob, base = fs.cat_file(url, start=lo, end=hi), lo
    view = memoryview(blob)
    for i in np.flatnonzero(written):
        off, length = int(index[i, 0]) - base, int(index[i, 1])
        chunk = view[off:off + length]
        flat[i] = np.frombuffer(_zstd_decode(chunk) if spec.zstd else chunk, dtype=spec.dtype)
    return out
