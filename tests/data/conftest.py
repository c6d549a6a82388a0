"""Fixtures of the data-layer tests: tiny real models, real photo shards, a local encode helper."""

from __future__ import annotations

import pytest
import torch

from latentflow.encode.local import encode_locally
from latentflow.sources.shards import SourceConfig
from tests.samples import write_sample_webdataset


@pytest.fixture
def vae():
    from latentflow.models.vae import VariationalAutoencoderConfig, VariationalAutoencoderModel

    torch.manual_seed(0)
    return VariationalAutoencoderModel(VariationalAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4)).eval()


@pytest.fixture(scope="session")
def sample_tars(tmp_path_factory):
    """2 WebDataset shards of 4 real-photo crops each, plus one corrupt and one image-less sample per shard."""
    root = tmp_path_factory.mktemp("wds")
    urls = write_sample_webdataset(str(root), num_shards=2, samples_per_shard=4, min_side=40, max_side=90, include_bad=True,
                                   photo_names=("astronaut", "chelsea", "coffee", "rocket"))
    return root, urls


@pytest.fixture
def encode_job():
    """The plain-loop encode job (``_encode_locally``)."""
    return _encode_locally


def _encode_locally(model, source: SourceConfig, out_url: str, **kwargs):
    """Encode every shard of ``source`` into ``out_url`` in this process; returns the codec."""
    return encode_locally(model, source, out_url, batch_size=4, note="test", **kwargs)
