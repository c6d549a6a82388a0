"""The journey with bridged diffusers VAEs: a pipeline root (``subfolder="vae"``, ``variant="fp16"``) is
encoded by the plain loop and by the Ray job, and ``decode_latents`` on the output reconstructs what
diffusers' own decode gives on the stored latents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentflow.auto import AutoModel
from latentflow.encode.local import encode_locally
from latentflow.format.codec import ModelRef, StoreConfig
from latentflow.media.config import ImageProcessorConfig
from latentflow.read.dataset import LatentDataset
from latentflow.read.latents import decode_latents, read_codec
from latentflow.sources.shards import SourceConfig
from tests.models.bridge_fixtures import ENCODE_JOURNEY, VIDEO, save

PROCESSOR = ImageProcessorConfig(resolution=16)
ATOL = 1e-5


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[str]:
    from tests.samples import write_sample_webdataset

    return write_sample_webdataset(str(tmp_path_factory.mktemp("shards")), num_shards=1, samples_per_shard=4, min_side=24,
                                   max_side=40, seed=2, photo_names=("astronaut", "chelsea"))


def _pipeline_root(name: str, root, variant: str | None = None) -> torch.nn.Module:
    """A diffusers pipeline root with the VAE under ``vae/`` (only the VAE: the rest is not read)."""
    (root / "model_index.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text('{"_class_name": "SomePipeline", "vae": ["diffusers", "%s"]}' % name)
    return save(name, root / "vae", **({"variant": variant} if variant else {}))


def _rows(out: str) -> tuple[list[str], torch.Tensor]:
    items = [LatentDataset(out)[i] for i in range(len(LatentDataset(out)))]
    field = "indices" if "indices" in items[0] else "latent"
    return [it["key"] for it in items], torch.stack([torch.as_tensor(np.asarray(it[field])) for it in items])


@pytest.mark.parametrize("name", ENCODE_JOURNEY)
def test_encode_locally_then_decode_latents_equals_diffusers_decode(name, shards, tmp_path):
    variant = "fp16" if name in ("AutoencoderKLQwenImage", "AutoencoderDC") else None
    layout = "CTHW" if name in VIDEO else "CHW"
    ref = _pipeline_root(name, tmp_path / "pipe", variant)
    ref_model = ModelRef(str(tmp_path / "pipe"), subfolder="vae", variant=variant)
    model = AutoModel.from_ref(ref_model)
    out = str(tmp_path / "latents")
    codec = encode_locally(model, SourceConfig(format="webdataset", urls=shards), out, PROCESSOR, StoreConfig(), model_ref=ref_model)
    assert codec.layout == layout and read_codec(out).model.ref == ref_model
    assert codec.normalization == model.normalization and codec.model.weights_sha256 == model.weights_hash()
    keys, stored = _rows(out)
    assert len(keys) == 4 and tuple(stored.shape[1:]) == tuple(codec.shapes["16x16"]["latent" if stored.is_floating_point() else "indices"])
    decoded = decode_latents(stored, out)
    with torch.no_grad():
        if stored.is_floating_point():
            want = ref.decode(stored).sample
        else:  # VQModel stores code indices: diffusers decodes their codebook vectors
            want = ref.decode(ref.quantize.embedding(stored.long()).permute(0, 3, 1, 2)).sample
    torch.testing.assert_close(decoded, want.squeeze(2) if layout == "CTHW" else want, atol=ATOL, rtol=0)
    assert decoded.shape == (4, 3, 16, 16)


@pytest.mark.parametrize("name", ["AutoencoderKLFlux2", "AutoencoderKLCosmos"])  # batchnorm; per channel and frame
def test_normalized_reader_and_decode_invert_the_family_rule(name, shards, tmp_path):
    ref = _pipeline_root(name, tmp_path / "pipe")
    model = AutoModel.from_pretrained(str(tmp_path / "pipe"), subfolder="vae")
    out = str(tmp_path / "latents")
    encode_locally(model, SourceConfig(format="webdataset", urls=shards), out, PROCESSOR,
                   model_ref=ModelRef(str(tmp_path / "pipe"), subfolder="vae"))
    raw = torch.as_tensor(np.asarray(LatentDataset(out)[0]["latent"]))[None]
    unit = torch.as_tensor(np.asarray(LatentDataset(out, normalize=True)[0]["latent"]))[None]
    torch.testing.assert_close(unit, model.normalize_latents(raw), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        want = ref.decode(raw).sample
        torch.testing.assert_close(decode_latents(unit, out, normalized=True), want.squeeze(2) if want.ndim == 5 else want,
                                   atol=1e-4, rtol=0)


@pytest.mark.slow
def test_ray_encode_job_with_a_bridged_pipeline_root(ray_local, shards, tmp_path):
    from latentflow.jobs.config import EncodeJobConfig
    from latentflow.jobs.runner import run_encode_job

    ref = _pipeline_root("AutoencoderKLWan", tmp_path / "pipe", variant="fp16")
    out = str(tmp_path / "latents")
    config = EncodeJobConfig.from_dict({
        "model": str(tmp_path / "pipe"), "model_subfolder": "vae", "model_variant": "fp16", "output": out,
        "source": {"format": "webdataset", "urls": shards}, "processor": PROCESSOR.to_dict(), "batch_size": 2, "num_actors": 1,
    })
    summary = run_encode_job(config, progress=False)
    assert summary.rows == 4
    codec = read_codec(out)
    assert codec.layout == "CTHW" and codec.model.ref == ModelRef(str(tmp_path / "pipe"), "vae", "fp16", None)
    assert codec.normalization.rule == "per_channel"
    _, stored = _rows(out)
    assert tuple(stored.shape) == (4, 4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(decode_latents(stored, out), ref.decode(stored).sample.squeeze(2), atol=ATOL, rtol=0)
