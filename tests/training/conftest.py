"""Fixtures of the trainer tests: tiny WebDataset shards of real photo crops, tiny configs."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def photo_shards(tmp_path_factory) -> list[str]:
    """4 WebDataset tars x 6 real-photo crops (plus one corrupt sample per shard)."""
    from tests.samples import write_sample_webdataset

    root = tmp_path_factory.mktemp("shards")
    return write_sample_webdataset(str(root), num_shards=4, samples_per_shard=6, min_side=40, max_side=64,
                                   seed=1, include_bad=True)


def encode_dataset(model, shards: list[str], root, name: str, logvar: bool = False) -> str:
    """Save ``model``, encode ``shards`` with it through the data layer's plain loop, return the output dir."""
    from latentflow.encode.local import encode_locally
    from latentflow.format.codec import StoreConfig
    from latentflow.media.config import ImageProcessorConfig
    from latentflow.sources.shards import SourceConfig

    model_dir, out = str(root / f"{name}-model"), str(root / f"{name}-latents")
    model.eval().save_pretrained(model_dir)
    encode_locally(model, SourceConfig(format="webdataset", urls=shards), out, ImageProcessorConfig(resolution=16),
                   StoreConfig(logvar=logvar), model_ref=model_dir, batch_size=8, note="trainer tests")
    return out


@pytest.fixture(scope="session")
def vae_latents(photo_shards, tmp_path_factory) -> str:
    """Latents (mean + logvar) of a tiny VAE over the photo shards."""
    import torch

    from latentflow.models.vae import VariationalAutoencoderConfig, VariationalAutoencoderModel

    torch.manual_seed(0)
    model = VariationalAutoencoderModel(VariationalAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4))
    return encode_dataset(model, photo_shards, tmp_path_factory.mktemp("vae"), "vae", logvar=True)


@pytest.fixture(scope="session")
def vq_latents(photo_shards, tmp_path_factory) -> str:
    """Token indices of a tiny VQ autoencoder (codebook 32) over the photo shards."""
    import torch

    from latentflow.models.vq_autoencoder import VectorQuantizedAutoencoderModel, VQAutoencoderConfig

    torch.manual_seed(0)
    cfg = VQAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4,
                              quantizer={"name": "vq", "configuration": {"codebook_size": 32}})
    return encode_dataset(VectorQuantizedAutoencoderModel(cfg), photo_shards, tmp_path_factory.mktemp("vq"), "vq")
