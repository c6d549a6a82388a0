"""Sinks: write -> read round trips (Parquet via datasets, Zarr), exactly-once commits, idempotence, codec refusal."""

from __future__ import annotations

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from latentflow.errors import CodecMismatchError
from latentflow.format.codec import StoreConfig
from latentflow.format.state import committed_shards
from latentflow.media.config import ImageProcessorConfig
from latentflow.media.image import ImageProcessor
from latentflow.read.dataset import LatentDataset
from latentflow.read.latents import load_latents, read_codec
from latentflow.sources.shards import SourceConfig, list_shards, read_shard
from latentflow.store.writer import ShardWriter, finalize, prepare_output

PROC = ImageProcessorConfig(resolution=32)


def good_records(source: SourceConfig, processor_config=PROC, factor=2):
    """key -> processed image, for every record the processor accepts."""
    processor = ImageProcessor(processor_config, factor)
    out = {}
    for shard in list_shards(source):
        for r in read_shard(shard, source):
            if r.image is not None and not r.key.endswith("corrupt"):
                out[r.key] = processor.process(r.image, r.key)
    return out


def direct_latents(model, images) -> dict[str, np.ndarray]:
    keys = sorted(images)
    with torch.no_grad():
        z = model.encode(torch.from_numpy(np.stack([images[k].pixel_values for k in keys]))).latents.numpy()
    return dict(zip(keys, z))


def upload(urls, base, options):
    fs, _ = fsspec.url_to_fs(base, **options)
    for url in urls:
        fs.put(url, f"{base}/in/{url.rsplit('/', 1)[-1]}")
    return f"{base}/in"


def check_round_trip(model, source, out, options=None):
    images = good_records(source)
    expected = direct_latents(model, images)
    markers = committed_shards(out, options)
    assert sorted(m.rows for m in markers.values()) == [4, 4]
    assert sorted((e["stage"], e["error_type"]) for m in markers.values() for e in m.errors) == [
        ("decode", "corrupt_image"), ("decode", "corrupt_image"), ("read", "missing_image"), ("read", "missing_image")]
    ds = load_latents(out, storage_options=options)
    assert len(ds) == 8 and sorted(ds["key"]) == sorted(expected)  # exact rows, no duplicates
    rows = ds.with_format("torch")[:]
    assert rows["latent"].shape == (8, 4, 16, 16) and rows["latent"].dtype == torch.float32
    for key, z in zip(ds["key"], rows["latent"].numpy()):
        np.testing.assert_allclose(z, expected[key], atol=1e-5)
    for row in ds.select(range(2)):
        image = images[row["key"]]
        assert tuple(row["crop_box"]) == image.crop_box and tuple(row["original_size"]) == image.original_size
        assert row["caption"].startswith("a photo") and row["shard"] in markers
    zarr_rows = LatentDataset(out, storage_options=options)
    assert sorted(zarr_rows[i]["key"] for i in range(len(zarr_rows))) == sorted(expected)
    for i in range(len(zarr_rows)):
        np.testing.assert_allclose(zarr_rows[i]["latent"].numpy(), expected[zarr_rows[i]["key"]], atol=1e-5)
    return ds


def test_local_round_trip_parquet_zarr_and_datasets(vae, sample_tars, tmp_path, encode_job):
    import datasets

    source = SourceConfig(format="webdataset", urls=[str(sample_tars[0])])
    out = str(tmp_path / "out")
    codec = encode_job(vae, source, out)
    check_round_trip(vae, source, out)
    by_dir = datasets.load_dataset(out, split="train")  # README.md configs -> parquet/*.parquet
    assert len(by_dir) == 8 and by_dir.features["latent"].shape == (4, 16, 16)
    by_files = datasets.load_dataset("parquet", data_files=f"{out}/parquet/*.parquet", split="train").with_format("torch")
    assert by_files[0]["latent"].shape == (4, 16, 16) and by_files[0]["latent"].dtype == torch.float32
    errors = pq.read_table(f"{out}/errors.parquet").to_pylist()
    assert len(errors) == 4 and {e["shard"] for e in errors} == set(committed_shards(out))
    info = read_codec(out)
    assert info.fingerprint == codec.fingerprint
    schema = pq.read_schema(next(iter(committed_shards(out).values())).files[0])
    assert b"latentflow" in schema.metadata and b"huggingface" in schema.metadata


def test_s3_round_trip(vae, sample_tars, s3, encode_job):
    base, options = s3
    source = SourceConfig(format="webdataset", urls=[upload(sample_tars[1], base, options)], storage_options=options)
    out = f"{base}/latents"
    encode_job(vae, source, out, storage_options=options)
    check_round_trip(vae, source, out, options)
    fs, root = fsspec.url_to_fs(out, **options)
    assert fs.exists(f"{root}/latentflow.json") and fs.exists(f"{root}/README.md") and not fs.exists(f"{root}/_tmp")
    for name in ("latentflow.json", "_codec.json"):
        assert "testing" not in fs.cat(f"{root}/{name}").decode()  # credentials never written


def test_memory_filesystem_round_trip(vae, sample_tars, tmp_path, encode_job):
    fs = fsspec.filesystem("memory")
    for url in sample_tars[1]:
        fs.put(url, f"/{tmp_path.name}/in/{url.rsplit('/', 1)[-1]}")
    source = SourceConfig(format="webdataset", urls=[f"memory://{tmp_path.name}/in"])
    encode_job(vae, source, f"memory://{tmp_path.name}/out")
    check_round_trip(vae, source, f"memory://{tmp_path.name}/out")


def columns(keys, latents, index=None):
    return {"key": keys, "index_in_shard": index or list(range(len(keys))), "latent": latents}


def writer_for(vae, out, store=None, formats=("parquet", "zarr")):
    from latentflow.encode.codec_builder import build_codec

    codec = build_codec(vae, PROC, store or StoreConfig(), "x.tar")
    prepare_output(out, codec)
    return ShardWriter(out, codec, formats), codec


def test_rewrite_is_idempotent_and_dedups(vae, tmp_path):
    out = str(tmp_path / "out")
    writer, _ = writer_for(vae, out)
    z = np.random.default_rng(0).normal(size=(3, 4, 16, 16)).astype(np.float32)
    first = writer.write_shard("s1", columns(["c", "a", "b"], z, [2, 0, 1]), [])
    files = sorted(p for p in fsspec.filesystem("file").find(out) if "_done" not in p)
    # a retried batch hands the same row twice: still one row per key
    second = writer.write_shard("s1", columns(["c", "a", "b", "a"], np.concatenate([z, z[1:2]]), [2, 0, 1, 0]), [])
    assert sorted(p for p in fsspec.filesystem("file").find(out) if "_done" not in p) == files
    assert (first.rows, first.keys_sha256, first.checksum) == (second.rows, second.keys_sha256, second.checksum) == (
        3, second.keys_sha256, first.checksum)
    ds = load_latents(out)
    assert ds["key"] == ["a", "b", "c"]  # sorted by index in shard
    np.testing.assert_array_equal(np.asarray(ds.with_format("numpy")["latent"][:]), z[[1, 2, 0]])


def test_crash_before_marker_is_not_committed(vae, tmp_path):
    out = str(tmp_path / "out")
    writer, _ = writer_for(vae, out)
    z = np.zeros((2, 4, 16, 16), np.float32)
    writer.write_shard("done", columns(["a", "b"], z), [])
    writer.write_shard("crashed", columns(["c", "d"], z), [])
    (tmp_path / "out" / "_done" / "crashed.json").unlink()  # files committed, marker never written
    half = tmp_path / "out" / "_done" / "crashed.json.0badc0de.tmp"
    half.write_text('{"shard_id": "crash')  # a marker cut off before its rename
    assert (tmp_path / "out" / "parquet" / "crashed.parquet").exists()
    assert set(committed_shards(out)) == {"done"}
    finalize(out, writer.codec)
    assert not half.exists() and set(committed_shards(out)) == {"done"}
    assert sorted(load_latents(out)["key"]) == ["a", "b"]
    assert sorted(LatentDataset(out)[i]["key"] for i in range(2)) == ["a", "b"] and len(LatentDataset(out)) == 2


def test_all_bad_shard_commits_with_the_same_schema(vae, tmp_path):
    out = str(tmp_path / "out")
    writer, _ = writer_for(vae, out)
    writer.write_shard("good", columns(["a"], np.ones((1, 4, 16, 16), np.float32)), [])
    marker = writer.write_shard("bad", {"key": []}, [{"key": "x", "stage": "decode", "error_type": "corrupt_image", "message": "m"}])
    assert marker.rows == 0 and marker.errors[0]["shard"] == "bad"
    assert load_latents(out)["key"] == ["a"]


def test_other_encoder_is_refused_unless_overwrite(vae, tmp_path):
    from latentflow.encode.codec_builder import build_codec

    out = str(tmp_path / "out")
    writer, codec = writer_for(vae, out)
    writer.write_shard("s1", columns(["a"], np.zeros((1, 4, 16, 16), np.float32)), [])
    other = build_codec(vae, PROC.replace(crop="random"), StoreConfig(), "x.tar")
    with pytest.raises(CodecMismatchError, match="processor.crop"):
        prepare_output(out, other)
    assert set(prepare_output(out, codec)) == {"s1"}  # same encoder: resume, committed shards returned
    assert prepare_output(out, other, overwrite=True) == {}


def test_float16_is_stored_as_float16_and_read_back_as_float32(vae, tmp_path):
    out = str(tmp_path / "out")
    writer, _ = writer_for(vae, out, StoreConfig(dtype="float16"))
    z = np.random.default_rng(1).normal(size=(2, 4, 16, 16)).astype(np.float16)
    writer.write_shard("s1", columns(["a", "b"], z), [])
    ds = load_latents(out)
    assert ds.features["latent"].dtype == "float16"
    t = ds.with_format("torch")[:]["latent"]
    assert t.dtype == torch.float32 and torch.equal(t, torch.from_numpy(z.astype(np.float32)))  # exact values, upcast dtype


def test_buckets_store_variable_shapes(vae, tmp_path):
    from latentflow.encode.codec_builder import build_codec

    out = str(tmp_path / "out")
    proc = ImageProcessorConfig(resolution=32, buckets=True)
    codec = build_codec(vae, proc, StoreConfig(), "x.tar")
    prepare_output(out, codec)
    wide, tall = np.ones((4, 12, 20), np.float32), np.full((4, 20, 12), 2, np.float32)
    marker = ShardWriter(out, codec).write_shard("s1", {"key": ["w", "t"], "latent": [wide, tall]}, [])
    assert marker.buckets == {"24x40": 1, "40x24": 1}
    rows = {r["key"]: r for r in load_latents(out).with_format("numpy")}
    assert rows["w"]["latent"].shape == (4, 12, 20) and rows["t"]["latent"].shape == (4, 20, 12)
    assert {LatentDataset(out).bucket_of(i) for i in range(2)} == {"24x40", "40x24"}


def test_discrete_indices_round_trip(tmp_path, sample_tars, encode_job):
    from latentflow.models.vq_autoencoder import VectorQuantizedAutoencoderModel, VQAutoencoderConfig

    torch.manual_seed(0)
    model = VectorQuantizedAutoencoderModel(VQAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4,
                                                                quantizer={"name": "vq", "configuration": {"codebook_size": 300}})).eval()
    source = SourceConfig(format="webdataset", urls=[str(sample_tars[0])])
    out = str(tmp_path / "out")
    encode_job(model, source, out)
    images = good_records(source)
    ds = load_latents(out)
    assert ds.features["indices"].dtype == "int16" and len(ds) == 8
    got = ds.with_format("torch")[:]["indices"]
    keys = ds["key"]
    with torch.no_grad():
        ref = model.tokenize(torch.from_numpy(np.stack([images[k].pixel_values for k in keys])))
    assert torch.equal(got.long(), ref)
    item = LatentDataset(out)[0]
    assert item["indices"].shape == (16, 16) and item["indices"].dtype == torch.int64


@pytest.mark.parametrize("where", ["local", "memory"])
def test_rewrite_drops_files_of_an_earlier_attempt(vae, tmp_path, where):
    """A retried shard whose earlier attempt wrote another bucket, an extra array, or a Parquet file
    this attempt has no rows for leaves none of them behind (object stores write in place)."""
    import uuid

    from latentflow.encode.codec_builder import build_codec

    out = str(tmp_path / "out") if where == "local" else f"memory://sinks-{uuid.uuid4().hex}/out"
    fs, root = fsspec.url_to_fs(out)
    codec = build_codec(vae, ImageProcessorConfig(resolution=32, buckets=True), StoreConfig(), "x.tar")
    prepare_output(out, codec)
    wide, tall = np.ones((4, 12, 20), np.float32), np.full((4, 20, 12), 2, np.float32)
    first = ShardWriter(out, codec).write_shard("s1", {"key": ["w", "t"], "latent": [wide, tall]}, [])
    assert first.buckets == {"24x40": 1, "40x24": 1}
    fs.makedirs(f"{root}/zarr/24x40/s1/stale", exist_ok=True)
    fs.pipe(f"{root}/zarr/24x40/s1/stale/zarr.json", b"{}")  # e.g. an array a crashed attempt wrote
    second = ShardWriter(out, codec).write_shard("s1", {"key": ["w"], "latent": [wide]}, [])
    assert second.buckets == {"24x40": 1}
    assert not fs.find(f"{root}/zarr/40x24/s1") and not fs.exists(f"{root}/zarr/24x40/s1/stale/zarr.json")
    assert load_latents(out)["key"] == ["w"] and [LatentDataset(out)[i]["key"] for i in range(len(LatentDataset(out)))] == ["w"]
    ShardWriter(out, codec).write_shard("s1", {"key": []}, [{"key": "w", "stage": "decode", "error_type": "corrupt_image", "message": "m"}])
    assert not fs.exists(f"{root}/parquet/s1.parquet") and committed_shards(out)["s1"].rows == 0
