"""Fixtures of the data-layer tests: tiny real models, real photo shards, a local encode helper."""

from __future__ import annotations

import pytest
import torch

from latentflow.data.codec import build_codec
from latentflow.data.encoding import LatentEncoder, StoreConfig
from latentflow.data.local import encode_shard_locally
from latentflow.data.processors import ImageProcessor, ImageProcessorConfig
from latentflow.data.samples import write_sample_webdataset
from latentflow.data.sinks import ShardWriter, finalize, prepare_output
from latentflow.data.sources import SourceConfig, list_shards


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


def _encode_locally(model, source: SourceConfig, out_url: str, processor_config=None, store=None, formats=("parquet", "zarr"),
                   storage_options=None, model_location=None, overwrite=False):
    """Encode every shard of ``source`` into ``out_url`` in this process; returns the codec."""
    processor_config = processor_config or ImageProcessorConfig(resolution=32)
    store = store or StoreConfig()
    codec = build_codec(model, processor_config, store, source, "fp32", model_location=model_location)
    prepare_output(out_url, codec, storage_options, overwrite=overwrite)
    writer = ShardWriter(out_url, codec, formats, storage_options)
    processor = ImageProcessor(processor_config, model.downsample_factor)
    encoder = LatentEncoder(model, store)
    for shard in list_shards(source):
        encode_shard_locally(shard, source, processor, encoder, writer, batch_size=4)
    finalize(out_url, codec, storage_options, {"note": "test"})
    return codec
