"""A plain single-process encode loop: source shard -> processor -> encoder -> sink.

The reference the Ray pipeline is tested against, and a quick way to encode a small
dataset without Ray. Batches group images of one bucket shape.

Example::

    codec = encode_locally(model, SourceConfig(urls=["shards/*.tar"]), "out/latents")
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from latentflow.data.codec import ModelRef, build_codec
from latentflow.data.encoding import LatentEncoder, StoreConfig
from latentflow.data.processors import ImageProcessor, ImageProcessorConfig, ProcessedImage
from latentflow.data.records import Record, SampleError, Shard
from latentflow.data.sinks import ShardWriter, finalize, prepare_output
from latentflow.data.sources import SourceConfig, list_shards, read_shard


def process_records(records: list[Record], processor: ImageProcessor, shard_id: str) -> tuple[list[tuple[Record, ProcessedImage]], list[dict]]:
    """Process every record; bad ones become error rows instead of exceptions."""
    good, errors = [], []
    for record in records:
        try:
            good.append((record, processor.process(record.image, record.key)))
        except SampleError as err:
            errors.append(err.to_row(record.key, shard_id))
    return good, errors


def encode_processed(good: list[tuple[Record, ProcessedImage]], encoder: LatentEncoder, shard_id: str, batch_size: int = 16) -> tuple[dict[str, list], list[dict]]:
    """Encode processed images batch by batch (one bucket per batch); returns row columns and error rows."""
    columns: dict[str, list] = {}
    errors: list[dict] = []
    by_bucket: dict[tuple[int, int], list[tuple[Record, ProcessedImage]]] = {}
    for item in good:
        by_bucket.setdefault(item[1].bucket, []).append(item)
    for bucket in sorted(by_bucket):
        items = by_bucket[bucket]
        for s in range(0, len(items), batch_size):
            batch = items[s : s + batch_size]
            out = encoder.encode_batch(np.stack([p.pixel_values for _, p in batch]), [r.key for r, _ in batch])
            errors += [{**e, "shard": shard_id} for e in out.pop("errors")]
            _append_rows(columns, batch, out)
    return columns, errors


def _append_rows(columns: dict[str, list], batch: list[tuple[Record, ProcessedImage]], out: dict[str, Any]) -> None:
    rows = out.pop("row").tolist()
    out.pop("key")
    for j, i in enumerate(rows):
        record, image = batch[i]
        values = {"key": record.key, "index_in_shard": record.index_in_shard, "caption": record.caption, "label": record.label,
                  "json": record.json, "original_size": list(image.original_size), "crop_box": list(image.crop_box)}
        values.update({name: arr[j] for name, arr in out.items()})
        for name, value in values.items():
            columns.setdefault(name, []).append(value)


def encode_shard_locally(shard: Shard, source: SourceConfig, processor: ImageProcessor, encoder: LatentEncoder, writer: ShardWriter, batch_size: int = 16) -> dict[str, Any]:
    """Read, process, encode and commit one shard in this process. Returns its marker."""
    good, errors = process_records(read_shard(shard, source), processor, shard.shard_id)
    columns, encode_errors = encode_processed(good, encoder, shard.shard_id, batch_size)
    if not columns:
        columns = {"key": []}
    return writer.write_shard(shard.shard_id, columns, errors + encode_errors)


def encode_locally(model, source: SourceConfig, out_url: str, processor_config: ImageProcessorConfig | None = None,
                   store: StoreConfig | None = None, formats: tuple[str, ...] = ("parquet", "zarr"),
                   storage_options: dict | None = None, model_ref: ModelRef | str | None = None, overwrite: bool = False,
                   batch_size: int = 16, note: str = "encode_locally") -> Codec:
    """Encode every shard of ``source`` into ``out_url`` in this process, with the job's commit protocol.

    Args:
        model: the encoder (any ``LatentModel``).
        source: where the shards are.
        out_url: output directory (local path or fsspec URL).
        processor_config, store: as in the encode job (defaults: 32 px center crops, the mean).
        model_ref: recorded in the codec so a reader can rebuild the decoder.

    Returns:
        the codec written with the output.
    """
    processor_config = processor_config or ImageProcessorConfig(resolution=32)
    store = store or StoreConfig()
    codec = build_codec(model, processor_config, store, source, "fp32", model_ref=model_ref)
    prepare_output(out_url, codec, storage_options, overwrite=overwrite)
    writer = ShardWriter(out_url, codec, formats, storage_options, session=uuid.uuid4().hex)
    processor, encoder = ImageProcessor(processor_config, model.downsample_factor), LatentEncoder(model, store)
    for shard in list_shards(source):
        encode_shard_locally(shard, source, processor, encoder, writer, batch_size)
    finalize(out_url, codec, storage_options, {"note": note})
    return codec
