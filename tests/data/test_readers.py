"""Readers: LatentDataset normalization/resampling/fingerprints, bucket batches, decode_latents, inspect + CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from latentflow.cli import main
from latentflow.data.codec import build_codec
from latentflow.data.encoding import StoreConfig
from latentflow.data.processors import ImageProcessorConfig
from latentflow.data.readers import BucketBatchSampler, LatentDataset, decode_latents, inspect, load_latents
from latentflow.data.sinks import ShardWriter, finalize, prepare_output
from latentflow.errors import CheckpointError, CodecMismatchError, ConfigError

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
    assert info["counts"] == {"rows": 6, "shards": 2, "errors": 0}
    np.testing.assert_allclose(info["stats"]["mean"], z.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(info["stats"]["std"], z.std(axis=(0, 2, 3)), rtol=1e-5)
    assert info["suggested_scaling_factor"] == pytest.approx(1.0 / z.astype(np.float64).std(), rel=1e-6)
    assert main(["inspect", out]) == 0
    text = capsys.readouterr().out
    assert f"suggested scaling_factor (1/std): {1.0 / z.astype(np.float64).std():.5f}" in text and "6 rows, 2 shards" in text
    assert main(["inspect", out, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["rows"] == 6
    assert main(["inspect", out + "-missing"]) == 1
