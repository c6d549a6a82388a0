"""A plain single-process encode loop: source shard -> processor -> encoder -> sink.

The reference the Ray pipeline is tested against, and a quick way to encode a small
dataset without Ray. Batches group images of one bucket shape.

Example::

    codec = encode_locally(model, SourceConfig(urls=["shards/*.tar"]), "out/latents")
"""

from __future__ import annotations

import uuid

from latentflow.encode.codec_builder import build_codec
from latentflow.encode.encoder import LatentEncoder
from latentflow.encode.shard import EncodedShard, build_processor, encode_shard
from latentflow.encode.text import TextEncoder
from latentflow.format.codec import Codec, ModelRef, StoreConfig
from latentflow.media.config import AudioProcessorConfig, ImageProcessorConfig
from latentflow.sources.records import Shard
from latentflow.sources.shards import SourceConfig, list_shards, read_shard
from latentflow.store.writer import ShardWriter, finalize, prepare_output


def encode_shard_locally(shard: Shard, source: SourceConfig, processor, encoder: LatentEncoder,
                         writer: ShardWriter, batch_size: int = 16) -> EncodedShard:
    """Read, process, encode and commit one shard in this process (a shard whose samples all
    failed is not committed, as in the Ray job)."""
    encoded = encode_shard(read_shard(shard, source), processor, encoder, shard.shard_id, batch_size)
    if not encoded.all_failed:
        writer.write_shard(shard.shard_id, encoded.columns, list(encoded.errors))
    return encoded


def encode_locally(model, source: SourceConfig, out_url: str, processor_config: ImageProcessorConfig | None = None,
                   store: StoreConfig | None = None, formats: tuple[str, ...] = ("parquet", "zarr"),
                   storage_options: dict | None = None, model_ref: ModelRef | str | None = None, overwrite: bool = False,
                   batch_size: int = 16, note: str = "encode_locally", text_encoders: list | tuple = ()) -> Codec:
    """Encode every shard of ``source`` into ``out_url`` in this process, with the job's commit protocol
    (shards already committed to ``out_url`` by this encoder setup are skipped, as in the job).

    Args:
        model: the encoder (any ``LatentModel``).
        source: where the shards are.
        out_url: output directory (local path or fsspec URL).
        processor_config, store: as in the encode job (defaults: 32 px center crops, the mean).
        model_ref: recorded in the codec so a reader can rebuild the decoder.
        text_encoders: :class:`~latentflow.encode.text.TextEncoderConfig` s whose caption columns are cached too.

    Returns:
        the codec written with the output.
    """
    processor_config = processor_config or ImageProcessorConfig(resolution=32)
    if isinstance(processor_config, AudioProcessorConfig) and source.media is None:
        source = source.replace(media="audio")  # as EncodeJobConfig does: audio files and videos' audio tracks
    store = store or StoreConfig()
    texts = [TextEncoder(t, storage_options) for t in text_encoders]
    codec = build_codec(model, processor_config, store, source, "fp32", model_ref=model_ref, text_encoders=texts)
    committed = prepare_output(out_url, codec, storage_options, overwrite=overwrite)
    writer = ShardWriter(out_url, codec, formats, storage_options, session=uuid.uuid4().hex)
    processor = build_processor(codec.processor, model.downsample_factor, getattr(model, "temporal_downsample_factor", None))
    encoder = LatentEncoder(model, store, text_encoders=texts)
    failed: list[EncodedShard] = []
    for shard in list_shards(source):
        if shard.shard_id in committed:  # resumed or appended: a committed shard is never encoded twice
            continue
        encoded = encode_shard_locally(shard, source, processor, encoder, writer, batch_size)
        failed += [encoded] if encoded.all_failed else []
    finalize(out_url, codec, storage_options, {"note": note, "failed_shards": [f.shard_id for f in failed],
                                               "shard_errors": [e for f in failed for e in f.errors]})
    return codec
