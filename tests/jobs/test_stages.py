"""The pipeline's pieces without a Ray cluster: read tasks per shard, preprocess, the encoder actor class,
per-bucket batching, non-finite latents, and the commit step of the Datasink."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from pipeline_helpers import (
    RESOLUTION,
    bad_samples,
    good_samples,
    read_errors,
    read_rows,
    reference_latents,
    tiny_vae,
    truncated_tar,
    write_tar,
)

from latentflow.encode.codec_builder import build_codec
from latentflow.encode.shard import pack_pixels, processor_spec, unpack_pixels
from latentflow.format.codec import StoreConfig
from latentflow.format.state import committed_shards
from latentflow.jobs.datasink import LatentDatasink, commit_shard
from latentflow.jobs.datasource import ShardDatasource, read_shard_block
from latentflow.jobs.schema import KIND_FAILED, table_arrays
from latentflow.jobs.stages import EncoderActor, preprocess_batch
from latentflow.media.config import ImageProcessorConfig
from latentflow.sources.shards import SourceConfig, list_shards
from latentflow.store.writer import finalize, prepare_output

PROCESSOR = ImageProcessorConfig(resolution=RESOLUTION, max_pixels=300 * 300, min_size=8)


def _read(url: str, shards=None, retries: int = 0) -> pa.Table:
    source = SourceConfig(urls=[url])
    [block] = read_shard_block((shards or list_shards(source))[0], source, {}, retries)
    return block


def _actor(model_dir: str, **kwargs) -> EncoderActor:
    return EncoderActor({"location": str(model_dir)}, StoreConfig().to_dict(), batch_size=2, device="cpu", torch_threads=1, **kwargs)


def test_one_read_task_per_pending_shard(photos, tmp_path):
    for i in range(3):
        write_tar(str(tmp_path / f"s-{i}.tar"), good_samples(photos, f"s{i}", 2))
    source = SourceConfig(urls=[str(tmp_path)])
    shards = list_shards(source)
    tasks = ShardDatasource(shards[1:], source).get_read_tasks(parallelism=64)
    assert len(tasks) == 2  # whatever parallelism Ray asks for: one per shard, never split
    blocks = [list(t())[0] for t in tasks]
    assert [b.column("shard").to_pylist() for b in blocks] == [[shards[1].shard_id] * 2, [shards[2].shard_id] * 2]


def test_truncated_shard_becomes_one_failed_row(photos, tmp_path):
    url = truncated_tar(str(tmp_path / "cut.tar"), good_samples(photos, "c", 3))
    block = _read(url, retries=1)
    assert block.num_rows == 1 and block.column("kind").to_pylist() == [KIND_FAILED]
    assert "after 2 attempts" in block.column("error_message")[0].as_py()


def test_pixels_travel_as_uint8_and_come_back_bit_exact():
    codes = np.random.default_rng(0).integers(0, 256, size=(3, 8, 8)).astype(np.uint8)
    values = codes.astype(np.float32) / 127.5 - 1.0
    packed = pack_pixels(values)
    assert packed.dtype == np.uint8 and np.array_equal(unpack_pixels(packed), values)
    odd = values + 1e-3  # not the processor's normalization: kept as float32
    assert pack_pixels(odd).dtype == np.float32 and np.array_equal(unpack_pixels(pack_pixels(odd)), odd)


def test_preprocess_and_actor_match_direct_encode(photos, tiny_model_dir, tmp_path):
    samples = good_samples(photos, "p", 5)
    block = _read(write_tar(str(tmp_path / "p.tar"), samples + bad_samples(photos, "p")))
    pre = preprocess_batch(block, processor_spec(PROCESSOR, 2))
    assert sorted(pre.filter(pa.compute.equal(pre["kind"], "error"))["error_type"].to_pylist()) == sorted(
        ["corrupt_image", "missing_image", "too_small", "decompression_bomb"]
    )
    out = _actor(tiny_model_dir)(pre)
    assert out.column("key").to_pylist() == block.column("key").to_pylist()  # row order kept
    latents = dict(zip(out.column("key").to_pylist(), table_arrays(out, "latent")))
    reference = reference_latents(tiny_model_dir, samples, PROCESSOR)
    for key, ref in reference.items():
        np.testing.assert_allclose(latents[key], ref, atol=1e-5, rtol=1e-4)


def test_buckets_are_batched_separately(photos, tiny_model_dir, tmp_path):
    wide, tall = photos["astronaut"][:64, :128], photos["coffee"][:128, :64]
    from pipeline_helpers import jpeg

    samples = [{"__key__": f"b{i}", "jpg": jpeg(img)} for i, img in enumerate([wide, tall, wide, tall, wide])]
    block = _read(write_tar(str(tmp_path / "b.tar"), samples))
    cfg = PROCESSOR.replace(buckets=True, bucket_max_aspect=2.0)
    out = _actor(tiny_model_dir)(preprocess_batch(block, processor_spec(cfg, 2)))
    shapes = [a.shape for a in table_arrays(out, "latent")]
    buckets = out.column("bucket").to_pylist()
    assert len(set(shapes)) == 2
    assert all(s == (4, int(b.split("x")[0]) // 2, int(b.split("x")[1]) // 2) for s, b in zip(shapes, buckets))


def test_non_finite_latents_are_per_sample_errors_and_an_all_failed_shard_is_not_committed(photos, tmp_path):
    model = tiny_vae(0)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    model_dir = str(tmp_path / "nan-model")
    model.save_pretrained(model_dir)
    samples = good_samples(photos, "n", 3)
    block = _read(write_tar(str(tmp_path / "n.tar"), samples))
    encoded = _actor(model_dir)(preprocess_batch(block, processor_spec(PROCESSOR, 2)))
    assert set(encoded.column("error_type").to_pylist()) == {"non_finite"}

    out = str(tmp_path / "out")
    codec = build_codec(model, PROCESSOR, StoreConfig(), [str(tmp_path / "n.tar")])
    prepare_output(out, codec)
    sink = LatentDatasink(out, codec, ("parquet", "zarr"))
    [result] = sink.write([encoded], ctx=None)
    finalize(out, codec, summary={"shard_errors": result["errors"], "failed_shards": [result["url"]]})
    # every sample failed: no marker, reported as failed, so a rerun after the fix retries the shard
    assert result["failed"] and result["rows"] == 0 and len(result["errors"]) == 3
    assert read_rows(out) == {} and committed_shards(out) == {}
    assert {(e["key"], e["stage"], e["error_type"]) for e in read_errors(out)} == {(s["__key__"], "encode", "non_finite") for s in samples}


def test_a_partial_shard_is_never_committed(photos, tiny_model_dir, tmp_path):
    block = _read(write_tar(str(tmp_path / "x.tar"), good_samples(photos, "x", 3)))
    encoded = _actor(tiny_model_dir)(preprocess_batch(block, processor_spec(PROCESSOR, 2)))
    with pytest.raises(RuntimeError, match="write got 2 of its 3 rows"):
        commit_shard(writer=None, part=encoded.slice(0, 2))


def test_uint8_pixels_encode_bit_exactly_like_float_and_a_mixed_batch_is_unpacked(photos, tiny_model_dir, tmp_path):
    from latentflow.encode.encoder import LatentEncoder
    PIXELS, PIXELS_DTYPE = "pixels", "pixels_dtype"  # noqa: N806 - schema.PIXELS_FIELDS

    codes = torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(3, 3, 32, 32)).astype(np.uint8))
    encoder = LatentEncoder(tiny_vae(0), StoreConfig(), device="cpu", channels_last=False)
    from_codes = encoder.encode_batch(codes, ["a", "b", "c"])["latent"]
    from_floats = encoder.encode_batch(torch.from_numpy(unpack_pixels(codes.numpy())), ["a", "b", "c"])["latent"]
    assert np.array_equal(from_codes, from_floats)

    # one row's pixels sent as float32 (values uint8 cannot hold) in the same bucket batch as uint8 rows
    block = _read(write_tar(str(tmp_path / "m.tar"), good_samples(photos, "m", 3)))
    pre = preprocess_batch(block, processor_spec(PROCESSOR, 2))
    actor = EncoderActor({"location": str(tiny_model_dir)}, StoreConfig().to_dict(), batch_size=3, device="cpu", torch_threads=1)
    alone = actor(pre)
    pixels = pre.column(PIXELS).to_pylist()
    assert set(pre.column(PIXELS_DTYPE).to_pylist()) == {"uint8"}
    shape = pre.column("pixels_shape")[0].as_py()
    pixels[0] = unpack_pixels(np.frombuffer(pixels[0], np.uint8).reshape(shape)).tobytes()
    dtypes = ["float32", "uint8", "uint8"]
    mixed = pre.set_column(pre.schema.get_field_index(PIXELS), PIXELS, pa.array(pixels, pa.binary()))
    mixed = mixed.set_column(mixed.schema.get_field_index(PIXELS_DTYPE), PIXELS_DTYPE, pa.array(dtypes))
    for got, want in zip(table_arrays(actor(mixed), "latent"), table_arrays(alone, "latent")):
        assert np.array_equal(got, want)
