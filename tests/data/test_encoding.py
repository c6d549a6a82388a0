"""LatentEncoder and codec: parity with a direct model.encode, seeded samples, flips, non-finite rows, indices."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from latentflow.encode.codec_builder import build_codec
from latentflow.encode.encoder import LatentEncoder
from latentflow.errors import CodecMismatchError, ConfigError
from latentflow.format.codec import Codec, StoreConfig, check_compatible
from latentflow.media.config import ImageProcessorConfig
from latentflow.quantizers.base import numpy_index_dtype_for


@pytest.fixture
def pixels():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (B, 3, H, W)


def vq(codebook_size: int):
    from latentflow.models.vq_autoencoder import VectorQuantizedAutoencoderModel, VQAutoencoderConfig

    torch.manual_seed(0)
    cfg = VQAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4,
                              quantizer={"name": "vq", "configuration": {"codebook_size": codebook_size}})
    return VectorQuantizedAutoencoderModel(cfg).eval()


def test_mean_and_logvar_equal_direct_encode(vae, pixels):
    out = LatentEncoder(vae, StoreConfig(logvar=True)).encode_batch(pixels, ["a", "b", "c"])
    with torch.no_grad():
        ref = vae.encode(pixels).latent_dist
    np.testing.assert_allclose(out["latent"], ref.mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(out["logvar"], ref.logvar.numpy(), atol=1e-5)
    assert out["latent"].dtype == np.float32 and list(out["key"]) == ["a", "b", "c"] and out["errors"] == []
    assert out["row"].tolist() == [0, 1, 2]


def test_sample_is_seeded_per_key_not_per_batch(vae, pixels):
    enc = LatentEncoder(vae, StoreConfig(latent="sample", seed=7))
    full = enc.encode_batch(pixels, ["a", "b", "c"])["latent"]
    part = enc.encode_batch(pixels[1:], ["b", "c"])["latent"]
    np.testing.assert_allclose(part, full[1:], atol=1e-5)
    mean = LatentEncoder(vae).encode_batch(pixels, ["a", "b", "c"])["latent"]
    assert not np.allclose(full, mean)
    other = LatentEncoder(vae, StoreConfig(latent="sample", seed=8)).encode_batch(pixels, ["a", "b", "c"])["latent"]
    assert not np.allclose(full, other)


def test_flip_latents_are_encodes_of_the_flipped_image(vae, pixels):
    out = LatentEncoder(vae, StoreConfig(flip=True)).encode_batch(pixels, ["a", "b", "c"])
    with torch.no_grad():
        ref = vae.encode(torch.flip(pixels, dims=[-1])).latents
    np.testing.assert_allclose(out["flip_latent"], ref.numpy(), atol=1e-5)


def test_float16_storage_and_bf16_compute(vae, pixels):
    out = LatentEncoder(vae, StoreConfig(dtype="float16"), dtype="bf16").encode_batch(pixels, ["a", "b", "c"])
    assert out["latent"].dtype == np.float16
    with torch.no_grad():
        ref = vae.encode(pixels).latents.numpy()
    assert np.abs(out["latent"].astype(np.float32) - ref).max() < 0.05 * np.abs(ref).max()


def test_non_finite_rows_become_sample_errors(vae, pixels):
    pixels = pixels.clone()
    pixels[1, 0, 3, 3] = float("nan")
    out = LatentEncoder(vae).encode_batch(pixels, ["a", "b", "c"])
    assert out["row"].tolist() == [0, 2] and list(out["key"]) == ["a", "c"] and out["latent"].shape[0] == 2
    assert [(e["key"], e["stage"], e["error_type"]) for e in out["errors"]] == [("b", "encode", "non_finite")]


def test_plain_autoencoder_refuses_logvar():
    from latentflow.models.autoencoder import AutoencoderConfig, AutoencoderModel

    model = AutoencoderModel(AutoencoderConfig(block_out_channels=(8, 16), latent_channels=4))
    with pytest.raises(ConfigError, match="no posterior"):
        LatentEncoder(model, StoreConfig(logvar=True)).encode_batch(torch.zeros(1, 3, 16, 16), ["a"])


@pytest.mark.parametrize("codebook_size, dtype", [(256, np.uint8), (300, np.int16)])
def test_discrete_indices_in_smallest_dtype(codebook_size, dtype, pixels):
    model = vq(codebook_size)
    out = LatentEncoder(model, StoreConfig(quantized=True)).encode_batch(pixels, ["a", "b", "c"])
    with torch.no_grad():
        ref = model.encode(pixels)
    assert out["indices"].dtype == dtype
    np.testing.assert_array_equal(out["indices"], model.tokenize(pixels).numpy())
    np.testing.assert_allclose(out["latent"], ref.latents.numpy(), atol=1e-5)


def test_index_dtype_boundaries():
    # one definition: int16 up to 32768 codes (room for -1 = dropped), the quantizers' own rule
    assert [numpy_index_dtype_for(n).name for n in (2, 256, 257, 32768, 32769, 65537)] == [
        "uint8", "uint8", "int16", "int16", "int32", "int32"]


def test_codec_holds_identity_and_no_credentials(vae):
    codec = build_codec(vae, ImageProcessorConfig(resolution=32), StoreConfig(logvar=True), ["s3://AKIA:secret@bucket/x.tar"], "bf16")
    text = codec.to_json()
    assert "secret" not in text and codec.sources == ("s3://bucket/x.tar",)
    assert codec.model.weights_sha256 == vae.weights_hash() and codec.model.model_type == "vae"
    assert codec.shapes == {"32x32": {"latent": [4, 16, 16]}}
    assert codec.arrays == ("latent", "logvar") and codec.compute_dtype == "bf16" and codec.layout == "CHW"
    assert Codec.from_dict(json.loads(text)) == codec
    discrete = build_codec(vq(300), ImageProcessorConfig(resolution=32), StoreConfig(), "x.tar")
    assert discrete.quantizer.codebook_size == 300 and discrete.quantizer.index_dtype == "int16"
    assert Codec.from_dict(discrete.to_dict()) == discrete


def test_codec_mismatch_names_what_differs(vae):
    base = build_codec(vae, ImageProcessorConfig(resolution=32), StoreConfig(), "a.tar")
    check_compatible(base, build_codec(vae, ImageProcessorConfig(resolution=32), StoreConfig(), "other-sources.tar"))  # appending: fine
    with torch.no_grad():
        next(vae.parameters()).add_(1.0)
    with pytest.raises(CodecMismatchError, match="weights_sha256"):
        check_compatible(base, build_codec(vae, ImageProcessorConfig(resolution=32), StoreConfig(), "a.tar"))
    with pytest.raises(CodecMismatchError, match="processor.crop: 'center' -> 'random'"):
        check_compatible(base, dataclasses.replace(base, processor=ImageProcessorConfig(resolution=32, crop="random"), fingerprint=""))


def test_a_format_1_codec_still_reads(vae):
    """Outputs written before the typed codec (format_version 1: a plain dict, ``model.location``,
    normalization as four keys) read as a Codec with their fingerprint and rule."""
    v2 = build_codec(vae, ImageProcessorConfig(resolution=32), StoreConfig(logvar=True), ["x.tar"], model_ref="some/dir")
    v1 = {k: v for k, v in v2.to_dict().items() if k not in ("layout", "modality", "decoder")}
    v1["format_version"] = 1
    v1["model"] = {**{k: v for k, v in v1["model"].items() if k != "ref"}, "location": "some/dir"}
    v1["normalization"] = {"scaling_factor": 0.5, "shift_factor": 0.1, "latents_mean": None, "latents_std": None}
    read = Codec.from_dict(v1)
    assert read.fingerprint == v2.fingerprint and read.model.ref.location == "some/dir" and read.layout == "CHW"
    assert read.normalization.rule == "shift_scale" and read.normalization.scaling_factor == 0.5
    assert read.format_version == 2 and Codec.from_dict(read.to_dict()) == read
