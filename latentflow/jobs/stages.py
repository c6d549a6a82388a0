"""The two compute stages of an encode job, in the shapes Ray Data's ``map_batches`` wants.

1. :func:`preprocess_batch`: a plain function run in CPU tasks (fused with the read):
   decode, convert, resize, crop one shard's images with the job's ``ImageProcessor``.
   Pixels travel to the encoder as uint8 (4x fewer bytes through the object store and to
   the GPU than float32); the encoder rebuilds exactly the processor's float32 values from
   them on its device.
2. :class:`EncoderActor`: a callable class for an actor pool; the model is loaded once per
   actor with ``from_pretrained`` and runs per-bucket batches of one shard at a time.

Both are thin adapters over the data layer's one encode path (:mod:`latentflow.encode.shard`):
they take and return ``pyarrow.Table`` blocks of whole shards (:mod:`latentflow.jobs.schema`),
row order kept. Bad samples become ``kind="error"`` rows instead of exceptions.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import pyarrow as pa

from latentflow.encode.shard import (
    encode_processed,
    process_record,
    processor_from_spec,
)
from latentflow.jobs.schema import (
    KIND_SAMPLE,
    PROCESSED_SCHEMA,
    encoded_table,
    mark_error,
    processed_rows,
    record_of,
    sample_of,
)
from latentflow.sources.records import SampleError

logger = logging.getLogger(__name__)

_PROCESSORS: dict[str, Any] = {}


def _processor(spec: dict[str, Any]):
    """One processor per spec per worker process."""
    ident = json.dumps(spec, sort_keys=True)
    if ident not in _PROCESSORS:
        _PROCESSORS[ident] = processor_from_spec(spec)
    return _PROCESSORS[ident]


# ---- stage 1: preprocess (CPU tasks) -----------------------------------------------


def preprocess_batch(batch: pa.Table, spec: dict[str, Any]) -> pa.Table:
    """Decode and resize the images (or cut the videos into clips) of a block (one shard) with
    :func:`~latentflow.encode.shard.process_record`.

    Args:
        batch: a :data:`~latentflow.jobs.schema.RECORD_SCHEMA` block.
        spec: the processor, :func:`~latentflow.encode.shard.processor_spec` (image or video).

    Returns:
        a :data:`~latentflow.jobs.schema.PROCESSED_SCHEMA` block: image bytes replaced by packed
        pixels and geometry; failed samples turned into ``error`` rows.
    """
    processor = _processor(spec)
    rows = []
    for row in batch.to_pylist():
        samples = None
        if row["kind"] == KIND_SAMPLE:
            try:
                samples = process_record(record_of(row), processor)
            except SampleError as err:
                mark_error(row, err.to_row(row["key"], row["shard"]))
        rows += processed_rows(row, samples)
    if any(r["kind"] == KIND_SAMPLE for r in rows):  # clips: the shard's row count is what reaches the sink
        rows = [{**r, "shard_rows": len(rows)} for r in rows]
    return pa.Table.from_pylist(rows, schema=PROCESSED_SCHEMA)


# ---- stage 2: encode (actor pool) -----------------------------------------------------


class EncoderActor:
    """Callable class for ``map_batches(EncoderActor, compute=ActorPoolStrategy(size=n))``.

    Loads the model once (``AutoModel.from_pretrained``), then encodes each block's samples
    in per-bucket batches. The pixels column is replaced by the encoder's arrays.

    Args:
        model_ref: ``ModelRef.to_dict()`` of the plan: where the driver resolved the model (a hub
            id pinned to the commit it resolved to), loaded with ``AutoModel.from_ref``.
        store: ``StoreConfig.to_dict()``.
        dtype: ``fp32``, ``bf16`` or ``fp16``.
        batch_size: images per forward.
        device: ``cpu``, ``cuda`` or ``auto``.
        channels_last: channels-last memory format.
        torch_threads: intra-op threads (None: leave torch's default).
        storage_options: fsspec options to read the checkpoint (never stored).
        expected_weights_sha256: the weights sha256 the driver put in the codec; a mismatch
            (weights replaced mid-job) fails the actor instead of mixing encoders.
        text_encoders: ``TextEncoderConfig.to_dict()`` of each text encoder, loaded once here, resident
            beside the model; ``text_fingerprints``: their fingerprints in the codec (checked likewise).
        tracks: ``TrackColumn.to_dict()`` of each track (a video's audio track): its model loaded once here from
            the track codec's reference, weights sha256 checked, resident beside the model.
    """

    def __init__(
        self,
        model_ref: dict[str, Any],
        store: dict[str, Any],
        dtype: str = "fp32",
        batch_size: int = 8,
        device: str = "auto",
        channels_last: bool = False,
        torch_threads: int | None = None,
        storage_options: dict | None = None,
        expected_weights_sha256: str | None = None,
        text_encoders: list[dict[str, Any]] | None = None,
        text_fingerprints: dict[str, str] | None = None,
        tracks: list[dict[str, Any]] | None = None,
    ):
        import torch

        from latentflow.encode.encoder import LatentEncoder
        from latentflow.format.codec import ModelRef, StoreConfig, TrackColumn

        if torch_threads:
            torch.set_num_threads(torch_threads)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        ref = ModelRef.from_dict(model_ref)
        self.model = load_checked(ref, storage_options, expected_weights_sha256)
        texts = [load_text_encoder(t, storage_options, (text_fingerprints or {}).get(t["name"])).to(device)
                 for t in text_encoders or ()]  # resident beside the model, on its device
        track_encoders = {}
        for track in map(TrackColumn.from_dict, tracks or ()):  # resident beside the model, on its device
            track_model = load_checked(track.codec.model.ref, storage_options, track.codec.model.weights_sha256)
            track_encoders[track.name] = LatentEncoder(track_model, StoreConfig(dtype=track.codec.dtype), dtype=track.codec.compute_dtype,
                                                       device=device, channels_last=False)
        self.encoder = LatentEncoder(
            self.model, StoreConfig.from_dict(store), dtype=dtype, device=device, channels_last=channels_last,
            text_encoders=texts, tracks=track_encoders,
        )
        self.batch_size = batch_size
        self.pid = os.getpid()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        samples = [sample_of(r) for r in rows if r["kind"] == KIND_SAMPLE]
        shard = rows[0]["shard"] if rows else ""
        return encoded_table(rows, encode_processed(samples, self.encoder, shard, self.batch_size))


class TextEncoderActor:
    """Callable class for the text-encoder pool of its own (``text_pool``): the captions of each encoded
    block (one shard) through the job's text encoders, resident once per actor on its device, on the one
    encode path (:func:`~latentflow.encode.shard.encode_captions`: per-shard dedup, length batching, the
    caption rules). The block keeps its rows and latents and gains the text columns; a bad caption turns
    its row into an error row, as in the shared actor.

    Args:
        text_encoders, text_fingerprints, storage_options: as :class:`EncoderActor`'s.
        device: ``cpu`` or ``cuda``.
        torch_threads: intra-op threads (None: torch's default).
    """

    def __init__(self, text_encoders: list[dict[str, Any]], text_fingerprints: dict[str, str] | None = None,
                 device: str = "cpu", torch_threads: int | None = None, storage_options: dict | None = None):
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.text_encoders = [load_text_encoder(t, storage_options, (text_fingerprints or {}).get(t["name"])).to(device)
                              for t in text_encoders]
        self.pid = os.getpid()

    def __call__(self, batch: pa.Table) -> pa.Table:
        import numpy as np

        from latentflow.encode.shard import EncodedShard, ProcessedSample, encode_captions

        rows = batch.to_pylist()
        kept = [r for r in rows if r["kind"] == KIND_SAMPLE]
        shard = rows[0]["shard"] if rows else ""
        samples = [ProcessedSample(r["key"], np.empty(0, np.uint8), None, None, caption=r["caption"]) for r in kept]
        arrays: list[dict | None] = [{} for _ in kept]
        errors = [e for encoder in self.text_encoders for e in encode_captions(samples, arrays, encoder, shard)]
        good = [i for i, a in enumerate(arrays) if a is not None]
        columns = {"key": [kept[i]["key"] for i in good], "bucket": [kept[i]["bucket"] for i in good]}
        for i in good:
            for name, value in arrays[i].items():
                columns.setdefault(name, []).append(value)
        return encoded_table(rows, EncodedShard(shard, columns, tuple(errors)))


def load_checked(ref, storage_options: dict | None, expected_weights_sha256: str | None):
    """A model for an actor, from the plan's reference; weights replaced since the driver hashed them fail the
    actor (``CodecMismatchError``) instead of mixing encoders in one output."""
    from latentflow.auto import AutoModel
    from latentflow.errors import CodecMismatchError

    model = AutoModel.from_ref(ref, storage_options)
    if expected_weights_sha256 and model.weights_hash() != expected_weights_sha256:
        raise CodecMismatchError(f"weights at {ref.location!r} changed while the job ran: sha256 {model.weights_hash()} "
                                 f"!= {expected_weights_sha256} recorded in the codec")
    return model


def load_text_encoder(config: dict[str, Any], storage_options: dict | None, expected: str | None):
    """A text encoder for an actor; one whose files changed since the driver hashed them fails the actor."""
    from latentflow.encode.text import TextEncoder, TextEncoderConfig
    from latentflow.errors import CodecMismatchError

    encoder = TextEncoder(TextEncoderConfig.from_dict(config), storage_options)
    if expected and encoder.fingerprint() != expected:
        raise CodecMismatchError(f"text encoder {config['name']!r} at {config['model']!r} changed while the job ran: "
                                 f"fingerprint {encoder.fingerprint()} != {expected} recorded in the codec")
    return encoder
