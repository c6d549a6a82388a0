"""The two compute stages of an encode job, in the shapes Ray Data's ``map_batches`` wants.

1. :func:`preprocess_batch`: a plain function run in CPU tasks (fused with the read):
   decode, convert, resize, crop one shard's images with the job's ``ImageProcessor``.
   Pixels travel to the encoder as uint8 (4x fewer bytes through the object store and to
   the GPU than float32); the encoder rebuilds exactly the processor's float32 values from
   them on its device.
2. :class:`EncoderActor`: a callable class for an actor pool; the model is loaded once per
   actor with ``from_pretrained`` and runs per-bucket batches of one shard at a time.

Both take and return ``pyarrow.Table`` blocks that hold whole shards, row order kept.
Bad samples become ``kind="error"`` rows (stage, type, message) instead of exceptions.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import pyarrow as pa

from latentflow.data.processors import ImageProcessor, ImageProcessorConfig
from latentflow.data.records import SampleError
from latentflow.pipeline.datasource import KIND_ERROR, KIND_SAMPLE

logger = logging.getLogger(__name__)

PIXELS, PIXELS_DTYPE, PIXELS_SHAPE = "pixels", "pixels_dtype", "pixels_shape"
ARRAY_PREFIX = "array__"  # encoder outputs travel as <prefix><name> (bytes) + <prefix><name>__shape + __dtype
_GEOMETRY = ("original_size", "crop_box", "bucket")

_PROCESSORS: dict[str, ImageProcessor] = {}


def _processor(config: dict[str, Any], downsample_factor: int) -> ImageProcessor:
    """One ImageProcessor per (config, factor) per worker process."""
    ident = json.dumps([config, downsample_factor], sort_keys=True)
    if ident not in _PROCESSORS:
        _PROCESSORS[ident] = ImageProcessor(ImageProcessorConfig.from_dict(config), downsample_factor)
    return _PROCESSORS[ident]


# ---- stage 1: preprocess (CPU tasks) -----------------------------------------------


def preprocess_batch(batch: pa.Table, processor_config: dict[str, Any], downsample_factor: int) -> pa.Table:
    """Decode and resize the images of a block; the image bytes are dropped.

    Args:
        batch: rows of :data:`~latentflow.pipeline.datasource.RECORD_SCHEMA`.
        processor_config: ``ImageProcessorConfig.to_dict()``.
        downsample_factor: the model's spatial reduction.

    Returns:
        the rows with ``pixels`` (bytes, (3, H, W)), its dtype and shape, ``original_size``,
        ``crop_box``, ``bucket``; failed samples turned into ``kind="error"`` rows.
    """
    processor = _processor(processor_config, downsample_factor)
    rows = batch.drop_columns(["image"]).to_pylist()
    images = batch.column("image").to_pylist()
    for row, image in zip(rows, images):
        _preprocess_row(processor, row, image)
    return pa.Table.from_pylist(rows, schema=_preprocessed_schema(batch.schema))


def _preprocess_row(processor: ImageProcessor, row: dict[str, Any], image: bytes | None) -> None:
    row.update({PIXELS: None, PIXELS_DTYPE: None, PIXELS_SHAPE: None, **{g: None for g in _GEOMETRY}})
    if row["kind"] != KIND_SAMPLE:
        return
    try:
        out = processor.process(image, row["key"])
    except SampleError as err:
        mark_error(row, err.stage, err.error_type, err.message)
        return
    except Exception as err:  # noqa: BLE001 - an unexpected processor failure is still one sample's
        mark_error(row, "process", type(err).__name__, str(err))
        return
    pixels = pack_pixels(out.pixel_values)  # (3, H, W)
    row.update({
        PIXELS: pixels.tobytes(), PIXELS_DTYPE: str(pixels.dtype), PIXELS_SHAPE: list(pixels.shape),
        "original_size": list(out.original_size), "crop_box": list(out.crop_box), "bucket": list(out.bucket),
    })


def mark_error(row: dict[str, Any], stage: str, error_type: str, message: str) -> None:
    row.update({"kind": KIND_ERROR, "error_stage": stage, "error_type": error_type, "error_message": message})


def pack_pixels(values: np.ndarray) -> np.ndarray:
    """uint8 codes when they rebuild ``values`` bit-exactly (the processor's ``u8 / 127.5 - 1``), else float32."""
    codes = np.rint((values + 1.0) * 127.5)
    if codes.min() >= 0 and codes.max() <= 255:
        codes = codes.astype(np.uint8)
        if np.array_equal(unpack_pixels(codes), values):
            return codes
    return np.ascontiguousarray(values, dtype=np.float32)


def unpack_pixels(packed: np.ndarray) -> np.ndarray:
    """float32 pixel values in [-1, 1] from :func:`pack_pixels` output."""
    if packed.dtype == np.uint8:
        return packed.astype(np.float32) / 127.5 - 1.0
    return packed.astype(np.float32, copy=False)


def _preprocessed_schema(schema: pa.Schema) -> pa.Schema:
    fields = [f for f in schema if f.name != "image"]
    fields += [
        pa.field(PIXELS, pa.binary()), pa.field(PIXELS_DTYPE, pa.string()), pa.field(PIXELS_SHAPE, pa.list_(pa.int32())),
        *(pa.field(g, pa.list_(pa.int32())) for g in _GEOMETRY),
    ]
    return pa.schema(fields)


# ---- stage 2: encode (actor pool) -----------------------------------------------------


class EncoderActor:
    """Callable class for ``map_batches(EncoderActor, compute=ActorPoolStrategy(size=n))``.

    Loads the model once (``AutoModel.from_pretrained``), then encodes each block's samples
    in per-bucket batches. The pixels column is replaced by the encoder's arrays.

    Args:
        model: checkpoint location (directory, fsspec URL or ``models/`` name).
        store: ``StoreConfig.to_dict()``.
        dtype: ``fp32``, ``bf16`` or ``fp16``.
        batch_size: images per forward.
        device: ``cpu``, ``cuda`` or ``auto``.
        channels_last: channels-last memory format.
        torch_threads: intra-op threads (None: leave torch's default).
        storage_options: fsspec options to read the checkpoint (never stored).
        expected_fingerprint: the weights sha256 the driver put in the codec; a mismatch
            (weights replaced mid-job) fails the actor instead of mixing encoders.
    """

    def __init__(
        self,
        model: str,
        store: dict[str, Any],
        dtype: str = "fp32",
        batch_size: int = 8,
        device: str = "auto",
        channels_last: bool = False,
        torch_threads: int | None = None,
        storage_options: dict | None = None,
        expected_fingerprint: str | None = None,
    ):
        import torch

        from latentflow.auto import AutoModel
        from latentflow.data.encoding import LatentEncoder, StoreConfig
        from latentflow.errors import CodecMismatchError

        if torch_threads:
            torch.set_num_threads(torch_threads)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.model = AutoModel.from_pretrained(model, storage_options=storage_options)
        if expected_fingerprint and self.model.fingerprint() != expected_fingerprint:
            raise CodecMismatchError(
                f"weights at {model!r} changed while the job ran: sha256 {self.model.fingerprint()} "
                f"!= {expected_fingerprint} recorded in the codec"
            )
        self.encoder = LatentEncoder(
            self.model, StoreConfig.from_dict(store), dtype=dtype, device=device, channels_last=channels_last
        )
        self.batch_size = batch_size
        self.pid = os.getpid()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.drop_columns([PIXELS, PIXELS_DTYPE, PIXELS_SHAPE]).to_pylist()
        pixels = batch.column(PIXELS).to_pylist()
        dtypes = batch.column(PIXELS_DTYPE).to_pylist()
        shapes = batch.column(PIXELS_SHAPE).to_pylist()
        arrays: list[dict[str, np.ndarray] | None] = [None] * len(rows)
        for idx in _bucket_batches(rows, shapes, self.batch_size):
            images = [np.frombuffer(pixels[i], dtype=dtypes[i]).reshape(shapes[i]) for i in idx]
            self._encode(rows, arrays, idx, images)
        return arrays_table(rows, arrays)

    def _encode(self, rows: list[dict], arrays: list, idx: list[int], images: list[np.ndarray]) -> None:
        import torch

        if all(im.dtype == np.uint8 for im in images):  # the usual case: normalized by the encoder, on its device
            x = torch.from_numpy(np.stack(images))  # (B, 3, H, W)
        else:  # a mix: unpack each before stacking (stacking would turn codes into floats 0..255)
            x = torch.from_numpy(np.stack([unpack_pixels(im) for im in images]))
        out = self.encoder.encode_batch(x, [rows[i]["key"] for i in idx])
        kept = out.pop("row").tolist()  # positions in this batch that encoded to finite arrays
        out.pop("key")
        errors = {e["key"]: e for e in out.pop("errors")}
        for j, pos in enumerate(kept):
            arrays[idx[pos]] = {name: value[j] for name, value in out.items()}
        for i in idx:
            err = errors.get(rows[i]["key"])
            if err is not None:
                mark_error(rows[i], err["stage"], err["error_type"], err["message"])


def _bucket_batches(rows: list[dict], shapes: list, batch_size: int) -> list[list[int]]:
    """Row indices of the samples, grouped by pixel shape (bucket), chunked to ``batch_size``."""
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        if row["kind"] == KIND_SAMPLE:
            groups.setdefault(tuple(shapes[i]), []).append(i)
    return [idx[s : s + batch_size] for idx in groups.values() for s in range(0, len(idx), batch_size)]


def arrays_table(rows: list[dict], arrays: list[dict[str, np.ndarray] | None]) -> pa.Table:
    """Rows plus the encoder's per-sample arrays as ``array__<name>`` bytes + shape + dtype columns."""
    names = sorted({n for a in arrays if a for n in a})
    for row, arr in zip(rows, arrays):
        for name in names:
            value = None if arr is None else np.ascontiguousarray(arr[name])
            row[ARRAY_PREFIX + name] = None if value is None else value.tobytes()
            row[f"{ARRAY_PREFIX}{name}__shape"] = None if value is None else list(value.shape)
            row[f"{ARRAY_PREFIX}{name}__dtype"] = None if value is None else str(value.dtype)
    table = pa.Table.from_pylist(rows) if rows else pa.table({})
    return table


def table_arrays(table: pa.Table, name: str) -> list[np.ndarray | None]:
    """Inverse of :func:`arrays_table` for one array name."""
    data = table.column(ARRAY_PREFIX + name).to_pylist()
    shapes = table.column(f"{ARRAY_PREFIX}{name}__shape").to_pylist()
    dtypes = table.column(f"{ARRAY_PREFIX}{name}__dtype").to_pylist()
    return [None if d is None else np.frombuffer(d, dtype=t).reshape(s) for d, s, t in zip(data, shapes, dtypes)]


def array_names(table: pa.Table) -> list[str]:
    return sorted(c[len(ARRAY_PREFIX):] for c in table.column_names if c.startswith(ARRAY_PREFIX) and "__" not in c[len(ARRAY_PREFIX):])
