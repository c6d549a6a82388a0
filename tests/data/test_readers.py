"""Readers: LatentDataset normalization/resampling/fingerprints, bucket batches, decode_latents, inspect + CLI."""

from __future__ import annotations

import dataclasses
import json

import fsspec
import numpy as np
import pytest
import torch

from latentflow.cli import main
from latentflow.encode.codec_builder import build_codec
from latentflow.errors import CheckpointError, CodecMismatchError, ConfigError
from latentflow.format.codec import StoreConfig
from latentflow.media.config import ImageProcessorConfig
from latentflow.read.dataset import BucketBatchSampler, LatentDataset
from latentflow.read.inspect import inspect
from latentflow.read.latents import decode_latents, load_latents
from latentflow.store.writer import ShardWriter, finalize, prepare_output

PROC = ImageProcessorConfig(resolution=32)


@pytest.fixture
def written(vae, tmp_path):
    """An output with 6 rows of known latents (mean 2 + 3 * noise per channel offset) and logvar."""
    vae.config.scaling_factor = 0.5
    vae.config.shift_factor = 1.0
    weights = tmp_path / "vae"
    vae.save_pretrained(str(weights))
    codec = build_codec(vae, PROC, StoreConfig(logvar=True), "x.tar", model_ref=str(weights))
    out = str(tmp_path / "out")
    prepare_output(out, codec)
    rng = np.random.default_rng(0)
    z = (2.0 + np.arange(4)[None, :, None, None] + 3.0 * rng.normal(size=(6, 4, 16, 16))).astype(np.float32)
    logvar = np.full_like(z, -2.0)
    writer = ShardWriter(out, codec)
    writer.write_shard("a", {"key": [f"a{i}" for i in range(3)], "latent": z[:3], "logvar": logvar[:3]}, [])
    writer.write_shard("b", {"key": [f"b{i}" for i in range(3)], "latent": z[3:], "logvar": logvar[3:]}, [])
    finalize(out, codec)
    return out, z, codec


def test_normalization_from_config_and_from_stats(written):
    out, z, _ = written
    raw = LatentDataset(out)
    by_key = {raw[i]["key"]: i for i in range(len(raw))}
    assert len(raw) == 6
    np.testing.assert_allclose(raw[by_key["a1"]]["latent"].numpy(), z[1])
    scaled = LatentDataset(out, normalize=True)
    np.testing.assert_allclose(scaled[by_key["a1"]]["latent"].numpy(), (z[1] - 1.0) * 0.5, rtol=1e-6)
    stats = LatentDataset(out, normalize="stats")
    all_z = torch.stack([stats[i]["latent"] for i in range(6)])  # (6, C, h, w)
    np.testing.assert_allclose(all_z.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(all_z.std(dim=(0, 2, 3), unbiased=False).numpy(), 1.0, atol=1e-3)


def test_resample_draws_around_the_mean(written):
    out, z, _ = written
    ds = LatentDataset(out, resample=True, seed=3)
    i = next(i for i in range(6) if ds[i]["key"] == "a0")
    draws = torch.stack([ds[i]["latent"] for _ in range(20)])
    noise = (draws - torch.from_numpy(z[0])) / np.exp(-1.0)  # std = exp(logvar / 2)
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1.0) < 0.05
    assert not torch.equal(draws[0], draws[1])


def test_fingerprint_refusals(written, tmp_path):
    out, _, codec = written
    assert len(LatentDataset(out, expected_fingerprint=codec.fingerprint)) == 6
    with pytest.raises(CodecMismatchError, match="expected deadbeef"):
        LatentDataset(out, expected_fingerprint="deadbeef")
    with pytest.raises(ConfigError, match="needs stored logvar"):
        _no_logvar_dataset(tmp_path, codec)


def _no_logvar_dataset(tmp_path, codec):
    out = str(tmp_path / "plain")
    plain = dataclasses.replace(codec, store=StoreConfig(), arrays=("latent",), fingerprint="")
    prepare_output(out, plain)
    return LatentDataset(out, resample=True)


def test_foreign_shard_in_zarr_is_refused(written):
    import zarr

    out, _, _ = written
    group = zarr.open_group(f"{out}/zarr/32x32/a", mode="a")
    group.attrs["codec_fingerprint"] = "someone-else"
    zarr.consolidate_metadata(f"{out}/zarr")
    with pytest.raises(CodecMismatchError, match="shard 'a'"):
        LatentDataset(out)


def test_shards_committed_after_finalize_are_found(written, vae):
    out, z, codec = written
    ShardWriter(out, codec).write_shard("c", {"key": ["c0"], "latent": z[:1], "logvar": z[:1]}, [])  # no finalize
    assert len(LatentDataset(out)) == 7


def test_bucket_batch_sampler_keeps_buckets_together():
    class Fake:
        buckets = ["32x32"] * 5 + ["24x40"] * 3

        def __len__(self):
            return len(self.buckets)

        def bucket_of(self, i):
            return self.buckets[i]

    sampler = BucketBatchSampler(Fake(), batch_size=2, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(8)) and len(batches) == len(sampler) == 5
    assert all(len({Fake.buckets[i] for i in b}) == 1 for b in batches)
    sampler.set_epoch(1)
    assert list(sampler) != batches
    assert all(len(b) == 2 for b in BucketBatchSampler(Fake(), 2, drop_last=True))


def test_decode_latents_rebuilds_the_decoder(written, vae, tmp_path):
    out, z, _ = written
    latents = torch.from_numpy(load_latents(out).with_format("numpy")[:2]["latent"])
    with torch.no_grad():
        expected = vae.decode(latents).sample
    torch.testing.assert_close(decode_latents(latents, out), expected)
    normalized = (latents - 1.0) * 0.5
    torch.testing.assert_close(decode_latents(normalized, out, normalized=True), expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        next(vae.parameters()).add_(1.0)
    vae.save_pretrained(str(tmp_path / "other"))
    with pytest.raises(CheckpointError, match="not the ones that encoded"):
        decode_latents(latents, out, weights=str(tmp_path / "other"))


def test_decode_indices_of_a_discrete_codec(tmp_path):
    from latentflow.models.vq_autoencoder import VectorQuantizedAutoencoderModel, VQAutoencoderConfig

    model = VectorQuantizedAutoencoderModel(VQAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4,
                                                                quantizer={"name": "vq", "configuration": {"codebook_size": 64}})).eval()
    model.save_pretrained(str(tmp_path / "vq"))
    codec = build_codec(model, PROC, StoreConfig(), "x.tar", model_ref=str(tmp_path / "vq"))
    indices = torch.randint(0, 64, (2, 16, 16)).to(torch.uint8)
    with torch.no_grad():
        expected = model.detokenize(indices.long())
    torch.testing.assert_close(decode_latents(indices, codec), expected)


def test_inspect_reports_stats_and_scaling_factor(written, capsys):
    out, z, _ = written
    info = inspect(out)
    assert {k: info["counts"][k] for k in ("rows", "shards", "errors")} == {"rows": 6, "shards": 2, "errors": 0}
    np.testing.assert_allclose(info["stats"]["mean"], z.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(info["stats"]["std"], z.std(axis=(0, 2, 3)), rtol=1e-5)
    assert info["suggested_scaling_factor"] == pytest.approx(1.0 / z.astype(np.float64).std(), rel=1e-6)
    assert main(["inspect", out]) == 0
    text = capsys.readouterr().out
    assert f"suggested scaling_factor (1/std): {1.0 / z.astype(np.float64).std():.5f}" in text and "6 rows, 2 shards" in text
    assert main(["inspect", out, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["rows"] == 6
    assert main(["inspect", out + "-missing"]) == 1


# ---- batches: whole row ranges, shuffled in a buffer, disjoint per rank ---------------------------
def write_output(vae, out, sizes, buckets=False, seed=0, resolution=32, flip=False):
    """An output written with ShardWriter: shards of ``sizes`` rows with captions, labels, JSON, sizes;
    with ``buckets``, every third row is tall (40x24), the rest wide (24x40). Returns {key: row}."""
    proc = ImageProcessorConfig(resolution=resolution, buckets=buckets)
    codec = build_codec(vae, proc, StoreConfig(flip=flip), "x.tar")
    prepare_output(out, codec, overwrite=True)
    writer, rng, rows = ShardWriter(out, codec), np.random.default_rng(seed), {}
    side = resolution // 2
    for s, n in enumerate(sizes):
        keys = [f"s{s}-{i:03d}" for i in range(n)]
        shapes = [((4, 20, 12) if i % 3 == 0 else (4, 12, 20)) if buckets else (4, side, side) for i in range(n)]
        latents = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
        cols = {"key": keys, "index_in_shard": list(range(n)), "latent": latents if buckets else np.stack(latents),
                "caption": [f"cap {k}" for k in keys], "label": [i % 5 for i in range(n)], "json": [json.dumps({"k": k}) for k in keys],
                "original_size": [[64 + i, 48] for i in range(n)], "crop_box": [[0, 0, 32, 32]] * n}
        if flip:
            cols["flip_latent"] = [z[..., ::-1].copy() for z in latents] if buckets else np.stack(latents)[..., ::-1].copy()
        writer.write_shard(f"s{s}", cols, [])
        rows.update({k: {"latent": z, "caption": f"cap {k}", "label": i % 5, "original_size": [64 + i, 48]}
                     for i, (k, z) in enumerate(zip(keys, latents))})
    finalize(out, codec)
    return rows


def epoch_keys(ds, batch_size, **kwargs):
    return [k for b in ds.iter_batches(batch_size, **kwargs) for k in b["key"]]


def test_iter_batches_reads_every_row_once_disjoint_per_rank_and_deterministic(vae, tmp_path):
    out = str(tmp_path / "out")
    rows = write_output(vae, out, [7, 16, 1, 12, 9, 13])
    ds = LatentDataset(out)
    one = epoch_keys(ds, 8, seed=1, epoch=0)
    assert sorted(one) == sorted(rows) and len(one) == 58  # exactly once
    assert epoch_keys(ds, 8, seed=1, epoch=0) == one  # a pure function of (seed, epoch)
    assert epoch_keys(ds, 8, seed=1, epoch=1) != one and epoch_keys(ds, 8, seed=2, epoch=0) != one
    for world in (2, 3):
        per_rank = [epoch_keys(ds, 4, seed=1, epoch=3, rank=r, world=world) for r in range(world)]
        assert sorted(k for keys in per_rank for k in keys) == sorted(rows)  # disjoint, complete
        assert all(per_rank)
    batches = list(ds.iter_batches(8, seed=1, epoch=2, drop_last=True))
    assert all(len(b["key"]) == 8 for b in batches) and len(batches) == 58 // 8
    tail = [b["key"] for b in ds.iter_batches(8, seed=1, epoch=2, drop_last=True, start=3)]
    assert tail == [b["key"] for b in batches[3:]]  # resume by batch position
    assert epoch_keys(ds, 8, shuffle=False) == sorted(rows)  # storage order: shards, then rows


def test_batches_carry_latents_and_metadata(vae, tmp_path):
    out = str(tmp_path / "out")
    rows = write_output(vae, out, [5, 6])
    ds = LatentDataset(out)
    for batch in ds.iter_batches(4, seed=0):
        assert batch["latent"].shape == (len(batch["key"]), 4, 16, 16) and batch["latent"].dtype == torch.float32
        assert batch["bucket"] == "32x32" and batch["label"].dtype == torch.int64
        for i, key in enumerate(batch["key"]):
            np.testing.assert_array_equal(batch["latent"][i].numpy(), rows[key]["latent"])
            assert batch["caption"][i] == rows[key]["caption"] and int(batch["label"][i]) == rows[key]["label"]
            assert json.loads(batch["json"][i]) == {"k": key} and batch["original_size"][i].tolist() == rows[key]["original_size"]
            assert batch["crop_box"][i].tolist() == [0, 0, 32, 32]
    item = ds[3]
    assert item["caption"] == rows[item["key"]]["caption"] and item["label"] == rows[item["key"]]["label"]
    np.testing.assert_array_equal(item["latent"].numpy(), rows[item["key"]]["latent"])


def test_bucketed_batches_hold_one_shape_and_interleave_buckets(vae, tmp_path):
    vae.config.scaling_factor, vae.config.shift_factor = 0.5, 1.0
    out = str(tmp_path / "out")
    rows = write_output(vae, out, [12, 9, 15], buckets=True, flip=True)
    ds = LatentDataset(out, normalize=True)
    assert ds.codec.normalization.rule == "shift_scale" and ds.bucket_rows == {"24x40": 24, "40x24": 12}
    batches = list(ds.iter_batches(4, seed=0))
    assert sorted(k for b in batches for k in b["key"]) == sorted(rows)
    shapes = {"24x40": (4, 12, 20), "40x24": (4, 20, 12)}
    for b in batches:
        assert tuple(b["latent"].shape[1:]) == shapes[b["bucket"]] == tuple(b["flip_latent"].shape[1:])
        for i, key in enumerate(b["key"]):
            expected = (rows[key]["latent"] - 1.0) * 0.5  # the codec's rule: shift_scale
            np.testing.assert_allclose(b["latent"][i].numpy(), expected, rtol=1e-6)
            np.testing.assert_allclose(b["flip_latent"][i].numpy(), expected[..., ::-1], rtol=1e-6)
    first_half = {b["bucket"] for b in batches[: len(batches) // 2]}
    assert first_half == {"24x40", "40x24"}  # buckets interleave in proportion, not one after the other
    assert len(LatentDataset(out, buckets=["40x24"])) == 12


def test_shuffle_buffer_bounds_what_is_read_at_once(vae, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    write_output(vae, out, [40, 40, 40, 40])
    ds = LatentDataset(out)
    plan = ds.batch_plan(8, buffer_rows=32, block_rows=10)
    assert sum(plan.window.values()) <= 32 and len(plan) == 20
    reads = []
    original = LatentDataset._read
    monkeypatch.setattr(LatentDataset, "_read", lambda self, block, fields: reads.append(len(block)) or original(self, block, fields))
    window_rows, seen = [], 0
    for batch in ds.iter_batches(8, buffer_rows=32, block_rows=10):
        seen += len(batch["key"])
        window_rows.append(sum(reads))
        reads.clear()
    assert seen == 160 and max(window_rows) <= 32  # never more than one buffer read between two batches
    # the buffer mixes blocks of several shards
    first = next(ds.iter_batches(8, buffer_rows=32, block_rows=10))
    assert len({k.split("-")[0] for k in first["key"]}) > 1


def test_resampled_batches_are_seeded_by_position(written):
    out, z, _ = written
    ds = LatentDataset(out, resample=True)
    a = [b["latent"] for b in ds.iter_batches(2, seed=0, epoch=0)]
    b = [b["latent"] for b in ds.iter_batches(2, seed=0, epoch=0)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    raw = {k: v for bt in LatentDataset(out).iter_batches(6, shuffle=False) for k, v in zip(bt["key"], bt["latent"])}
    batch = next(ds.iter_batches(6, seed=0))
    noise = torch.stack([(batch["latent"][i] - raw[k]) / np.exp(-1.0) for i, k in enumerate(batch["key"])])
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1.0) < 0.05


def test_fast_row_reads_match_zarr(vae, tmp_path):
    import zarr

    from latentflow.read.zarr_rows import array_spec, read_array

    out = str(tmp_path / "out")
    codec = build_codec(vae, PROC, StoreConfig(dtype="float16"), "x.tar")
    prepare_output(out, codec)
    z = np.random.default_rng(0).normal(size=(9, 4, 16, 16)).astype(np.float16)
    z[4] = 0  # a row of fill values: zarr writes no chunk for it
    ShardWriter(out, codec).write_shard("s", {"key": [f"k{i}" for i in range(9)], "latent": z, "caption": ["c"] * 9}, [])
    group = zarr.open_group(f"{out}/zarr/32x32/s", mode="r")
    fs = fsspec.filesystem("file")
    for name in ("latent", "keys", "caption"):
        spec = array_spec(group[name].metadata)
        assert spec.kind == ("rows" if name == "latent" else "chunk")
        for start, stop in [(0, 9), (2, 7), (4, 5)]:
            got = read_array(fs, f"{out}/zarr/32x32/s/{name}", spec, 9, start, stop, None)
            np.testing.assert_array_equal(got, group[name][start:stop])
    assert LatentDataset(out)[4]["latent"].abs().sum() == 0


def test_bucketed_output_loads_typed_per_bucket_and_all_rows_by_default(vae, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out = str(tmp_path / "out")
    write_output(vae, out, [6, 3], buckets=True)
    wide = datasets.load_dataset(out, "24x40", split="train")
    assert wide.features["latent"] == datasets.Array3D(shape=(4, 12, 20), dtype="float32") and len(wide) == 6
    assert set(wide["bucket"]) == {"24x40"}
    tall = load_latents(out, bucket="40x24")
    assert tall.features["latent"].shape == (4, 20, 12) and len(tall) == 3
    every = datasets.load_dataset(out, split="train").with_format("numpy")
    assert len(every) == 9 and {r["latent"].shape for r in every} == {(4, 12, 20), (4, 20, 12)}
    assert sorted(load_latents(out)["key"]) == sorted(every["key"])
    with pytest.raises(FileNotFoundError, match="bucket '8x8'"):
        load_latents(out, bucket="8x8")


def test_overwrite_at_another_resolution_is_not_read_from_a_stale_cache(vae, tmp_path):
    """datasets caches a local folder by its card's configs: the card's content version must change."""
    import os
    import subprocess
    import sys

    out = str(tmp_path / "out")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "0"}
    code = ("import datasets, numpy as np; ds = datasets.load_dataset(%r, split='train').with_format('numpy'); "
            "print(len(ds), tuple(ds[0]['latent'].shape), sorted(ds['key'])[0])" % out)

    def load_in_a_fresh_process():
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()

    write_output(vae, out, [3], resolution=32)
    assert load_in_a_fresh_process() == ["3", "(4,", "16,", "16)", "s0-000"]
    write_output(vae, out, [5, 2], resolution=16, seed=1)
    assert load_in_a_fresh_process() == ["7", "(4,", "8,", "8)", "s0-000"]
