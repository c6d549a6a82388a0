"""Hub ids: only the needed files are fetched, and with HF_HUB_OFFLINE=1 they resolve from a local
cache (laid out here by the test, as huggingface_hub writes it); the commit is pinned in the codec."""

from __future__ import annotations

import shutil

import pytest
import torch

from latentflow import hub
from latentflow.auto import AutoModel
from latentflow.encode.codec_builder import build_codec
from latentflow.errors import CheckpointError, ConfigError
from latentflow.format.codec import ModelRef, StoreConfig
from latentflow.media.config import ImageProcessorConfig
from tests.models.bridge_fixtures import images, reference_latents, save

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO_FILES = [
    "model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.bin",
    "vae/diffusion_pytorch_model.safetensors.index.json", "vae/diffusion_pytorch_model-00001-of-00002.safetensors",
    "vae/diffusion_pytorch_model.safetensors.index.fp16.json", "vae/diffusion_pytorch_model-00001-of-00002.fp16.safetensors",
]


def _selected(subfolder, variant):
    from huggingface_hub.utils import filter_repo_objects

    return sorted(filter_repo_objects(REPO_FILES, allow_patterns=hub.hub_allow_patterns(subfolder, variant)))


def test_allow_patterns_take_the_subfolder_config_and_the_variants_safetensors_only():
    assert _selected("vae", None) == ["model_index.json", "scheduler/scheduler_config.json", "vae/config.json",
                                      "vae/diffusion_pytorch_model-00001-of-00002.safetensors",
                                      "vae/diffusion_pytorch_model.safetensors",
                                      "vae/diffusion_pytorch_model.safetensors.index.json"]
    assert _selected("vae", "fp16") == ["model_index.json", "scheduler/scheduler_config.json", "vae/config.json",
                                        "vae/diffusion_pytorch_model-00001-of-00002.fp16.safetensors",
                                        "vae/diffusion_pytorch_model.fp16.safetensors",
                                        "vae/diffusion_pytorch_model.safetensors.index.fp16.json"]
    assert _selected(None, None) == []  # this repo's weights all sit in subfolders


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """``$HF_HUB_CACHE/models--org--tiny-pipe`` with ``refs/main`` -> ``snapshots/<COMMIT>/vae/...``."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--org--tiny-pipe" / "snapshots" / COMMIT
    ref = save("AutoencoderKLWan", snapshot / "vae")
    save("AutoencoderKLWan", snapshot / "vae", variant="fp16", seed=1)
    (cache / "models--org--tiny-pipe" / "refs").mkdir(parents=True)
    (cache / "models--org--tiny-pipe" / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snapshot, ref


def test_hub_id_resolves_offline_from_the_cache_and_pins_the_commit(hub_cache):
    snapshot, ref = hub_cache
    model = AutoModel.from_pretrained("org/tiny-pipe", subfolder="vae")
    assert model.hub_revision == COMMIT and set(model.weight_files) == {"diffusion_pytorch_model.safetensors"}
    with torch.no_grad():
        torch.testing.assert_close(model.encode(images()).latents, reference_latents(ref, images().unsqueeze(2)), atol=1e-5, rtol=0)
    pinned = AutoModel.from_pretrained("org/tiny-pipe", subfolder="vae", revision=COMMIT)
    assert pinned.weights_hash() == model.weights_hash()
    fp16 = AutoModel.from_pretrained("org/tiny-pipe", subfolder="vae", variant="fp16")
    assert set(fp16.weight_files) == {"diffusion_pytorch_model.fp16.safetensors"} and fp16.weights_hash() != model.weights_hash()


def test_codec_records_the_commit_and_rebuilds_from_it(hub_cache):
    model = AutoModel.from_pretrained("org/tiny-pipe", subfolder="vae")
    ref = ModelRef("org/tiny-pipe", subfolder="vae", revision=model.hub_revision)
    codec = build_codec(model, ImageProcessorConfig(resolution=16), StoreConfig(), ["x.tar"], model_ref=ref)
    assert codec.model.ref.revision == COMMIT and codec.layout == "CTHW"
    assert AutoModel.from_codec(codec).weights_hash() == model.weights_hash()


def test_unknown_revision_and_missing_repo_fail_clearly(hub_cache):
    with pytest.raises(CheckpointError, match=r"'org/tiny-pipe' \(revision='v9'.*local hub cache \(HF_HUB_OFFLINE=1\)"):
        AutoModel.from_pretrained("org/tiny-pipe", subfolder="vae", revision="v9")
    with pytest.raises(CheckpointError, match="'org/absent'"):
        AutoModel.from_pretrained("org/absent", subfolder="vae")


def test_revision_is_for_hub_ids_only(hub_cache, tmp_path):
    local = tmp_path / "local"
    shutil.copytree(hub_cache[0] / "vae", local)
    with pytest.raises(ConfigError, match="revision='main' applies to hub ids"):
        AutoModel.from_pretrained(str(local), revision="main")


def test_native_autoencoder_kl_from_the_hub_cache(tmp_path, monkeypatch):
    diffusers = pytest.importorskip("diffusers")
    cache = tmp_path / "hub"
    snapshot = cache / "models--org--sd" / "snapshots" / COMMIT
    diffusers.AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4).save_pretrained(
        str(snapshot / "vae"), variant="fp16")
    (cache / "models--org--sd" / "refs").mkdir(parents=True)
    (cache / "models--org--sd" / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = AutoModel.from_pretrained("org/sd", subfolder="vae", variant="fp16")
    assert type(model).__name__ == "AutoencoderKLModel" and model.hub_revision == COMMIT


def test_encode_job_loads_a_hub_id_and_pins_its_commit(hub_cache):
    from latentflow.auto import load_model
    from latentflow.jobs.config import EncodeJobConfig
    from latentflow.jobs.plan import model_load_kwargs

    config = EncodeJobConfig.from_dict({"model": "org/tiny-pipe", "model_subfolder": "vae", "model_revision": "main",
                                        "source": {"urls": ["unused/*.tar"]}})
    model = load_model(config.model, None, **model_load_kwargs(config))
    assert model.hub_revision == COMMIT
    # what the driver hands the encoder actors: the pinned commit, not the branch
    assert model_load_kwargs(config, model.hub_revision) == {"subfolder": "vae", "revision": COMMIT}
