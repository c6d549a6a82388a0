"""Video through the one encode path: the shipped Big Buck Bunny shard cut into clips, encoded by a
causal video VAE into (C, T', h, w) rows, read back typed (Array4D) and through LatentDataset, decoded
to frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latentflow.encode.local import encode_locally
from latentflow.encode.shard import build_processor, process_records
from latentflow.format.codec import ModelRef
from latentflow.media.config import VideoProcessorConfig
from latentflow.sources.shards import SourceConfig, list_shards, read_shard

ROOT = Path(__file__).resolve().parents[2]
SHARD = ROOT / "data" / "videos" / "bbb-000000.tar"
VIDEO = VideoProcessorConfig(num_frames=9, resolution=32, clip_mode="uniform", num_clips=2)


def tiny_video_vae(tmp_path: Path):
    from latentflow.models.causal_video_vae import CausalVideoAutoencoderKLConfig, CausalVideoAutoencoderKLModel

    torch.manual_seed(0)
    cfg = CausalVideoAutoencoderKLConfig(base_dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1,
                                         temperal_downsample=(False, True))
    model = CausalVideoAutoencoderKLModel(cfg).eval()
    model.save_pretrained(str(tmp_path / "video-vae"))
    return model, str(tmp_path / "video-vae")


def test_clips_encode_into_typed_video_latents_and_decode_back(tmp_path):
    import datasets

    import latentflow

    model, model_dir = tiny_video_vae(tmp_path)
    source = SourceConfig(urls=[str(SHARD)], media="video")
    out = str(tmp_path / "latents")
    codec = encode_locally(model, source, out, processor_config=VIDEO, model_ref=ModelRef(model_dir))
    assert codec.layout == "CTHW" and codec.modality == "video" and codec.decoder["name"] == "pyav"
    assert codec.processor.num_frames == 9 and codec.processor.temporal_stride == 2

    # every clip the processor cuts is one row: 4 videos x 2 uniform clips
    processor = build_processor(VIDEO, model.downsample_factor, model.temporal_downsample_factor)
    [shard] = list_shards(source)
    clips, errors = process_records(read_shard(shard, source), processor, shard.shard_id)
    assert errors == [] and len(clips) == 8

    ds = datasets.load_dataset(out, split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == 8 and type(ds.features["latent"]).__name__ == "Array4D"
    assert tuple(ds.features["latent"].shape) == (4, 5, 8, 8)  # (C, 1 + 8/2, 32/4, 32/4): f4, 2x in time
    rows = ds.with_format("numpy")[:]
    assert sorted(rows["key"]) == sorted(c.key for c in clips)
    assert set(rows["num_frames"]) == {9} and set(rows["clip_index"]) == {0, 1}
    assert len(set(rows["video_key"])) == 4 and all(isinstance(c, str) and c for c in rows["caption"])

    # the stored latents are the model's posterior means of exactly those clips
    by_key = {c.key: c for c in clips}
    x = torch.stack([torch.from_numpy(by_key[k].pixels.astype(np.float32) / 127.5 - 1) for k in rows["key"][:2]])
    with torch.no_grad():
        expected = model.encode(x).latent_dist.mean
    np.testing.assert_allclose(rows["latent"][:2], expected.numpy(), atol=1e-5, rtol=1e-4)

    reader = latentflow.LatentDataset(out)
    assert len(reader) == 8 and reader[0]["latent"].shape == (4, 5, 8, 8)
    frames = latentflow.decode_latents(torch.from_numpy(rows["latent"][:2]), out)
    assert frames.shape == (2, 3, 9, 32, 32) and torch.isfinite(frames).all()
    assert latentflow.read_codec(out) == codec


def test_channels_last_3d_encodes_clips_like_contiguous(tmp_path):
    from latentflow.encode.encoder import LatentEncoder
    from latentflow.format.codec import StoreConfig

    model, _ = tiny_video_vae(tmp_path)
    clips = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    fast = LatentEncoder(model, StoreConfig(), channels_last=True).encode_batch(clips, ["a", "b"])["latent"]
    plain = LatentEncoder(model, StoreConfig(), channels_last=False).encode_batch(clips, ["a", "b"])["latent"]
    assert fast.shape == (2, 4, 5, 8, 8)
    np.testing.assert_allclose(fast, plain, atol=1e-5)


def test_the_shipped_video_default_config_encodes_the_shipped_clips(tmp_path):
    import datasets

    import latentflow
    from latentflow.auto import AutoModel
    from latentflow.jobs.config import EncodeJobConfig

    cfg = EncodeJobConfig.from_yaml(str(ROOT / "configs/encode/video_default.yaml"), [f"output={tmp_path / 'out'}"])
    assert cfg.model == "video-vae-tiny" and cfg.source.media == "video"
    model = AutoModel.from_pretrained(cfg.model)
    source = cfg.source.replace(urls=[str(ROOT / u) for u in cfg.source.urls])
    codec = encode_locally(model, source, cfg.output, processor_config=cfg.video, model_ref=ModelRef(cfg.model))
    assert codec.processor.num_frames == 17 and codec.layout == "CTHW"
    ds = datasets.load_dataset(cfg.output, split="train", cache_dir=str(tmp_path / "hf")).with_format("torch")
    assert ds.num_rows == 8 and tuple(ds.features["latent"].shape) == (16, 5, 8, 8)
    frames = latentflow.decode_latents(ds[:2]["latent"], cfg.output)
    assert frames.shape == (2, 3, 17, 64, 64) and torch.isfinite(frames).all()
