"""Stage 2 streams the cache: bucketed, unlabeled and captioned latents train a prior; labels are checked; resume is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentflow.errors import ConfigError, InputError
from latentflow.priors import build_prior, load_prior
from latentflow.training.config import TrainPriorConfig
from latentflow.training.prior_stage import PriorData, prior_config_for, train_prior


@pytest.fixture
def tiny_vae():
    from latentflow.models.vae import VariationalAutoencoderConfig, VariationalAutoencoderModel

    torch.manual_seed(0)
    model = VariationalAutoencoderModel(VariationalAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4))
    model.config.scaling_factor = 0.5
    return model.eval()


def write_latents(model, root, sizes=(10, 10, 10), buckets=False, labels=False, captions=True, logvar=False, seed=0) -> str:
    """An output written with ShardWriter from random latents (the model only names the codec; saved so
    samples decode). With ``buckets`` every third row is tall (40x24), the rest wide (24x40)."""
    from latentflow.encode.codec_builder import build_codec
    from latentflow.format.codec import StoreConfig
    from latentflow.media.config import ImageProcessorConfig
    from latentflow.store.writer import ShardWriter, finalize, prepare_output

    model_dir, out = str(root / "model"), str(root / "latents")
    model.save_pretrained(model_dir)
    codec = build_codec(model, ImageProcessorConfig(resolution=32, buckets=buckets), StoreConfig(logvar=logvar), "x.tar",
                        model_ref=model_dir)
    prepare_output(out, codec, overwrite=True)
    writer, rng = ShardWriter(out, codec), np.random.default_rng(seed)
    for s, n in enumerate(sizes):
        shapes = [((4, 20, 12) if i % 3 == 0 else (4, 12, 20)) if buckets else (4, 16, 16) for i in range(n)]
        z = [(2.0 * rng.normal(size=shape)).astype(np.float32) for shape in shapes]
        keys = [f"s{s}-{i:03d}" for i in range(n)]
        cols = {"key": keys, "latent": z if buckets else np.stack(z)}
        if captions:
            cols["caption"] = [f"cap {k}" for k in keys]
        if labels:
            cols["label"] = [i % 5 for i in range(n)]
        if logvar:
            cols["logvar"] = ([np.full(shape, -4.0, np.float32) for shape in shapes] if buckets
                              else np.full((n, 4, 16, 16), -4.0, np.float32))
        writer.write_shard(f"s{s}", cols, [])
    finalize(out, codec)
    return out


def flow_cfg(out: str, path: str, **data) -> TrainPriorConfig:
    return TrainPriorConfig.from_dict({
        "prior": {"kind": "flow", "config": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "patch_size": 2}},
        "data": {"path": path, "batch_size": 4, "val_fraction": 0.2, **data},
        "optim": {"lr": 3e-3, "warmup_steps": 1, "ema_decay": 0.0},
        "train": {"output_dir": out, "max_steps": 6, "log_every": 3, "checkpoint_every": 1000},
        "sample": {"num_samples": 2, "steps": 2}})


def test_flow_prior_trains_on_a_bucketed_unlabeled_captioned_cache(tiny_vae, tmp_path):
    from latentflow.read.latents import decode_latents

    path = write_latents(tiny_vae, tmp_path, sizes=(12, 9, 15), buckets=True, logvar=True)
    summary = train_prior(flow_cfg(str(tmp_path / "run"), path))
    assert summary["buckets"] == {"24x40": 24, "40x24": 12} and summary["steps"] == 6
    assert all(np.isfinite(r["loss"]) for r in summary["history"]) and np.isfinite(summary["metrics"]["flow_loss"])
    prior = load_prior(summary["final_prior"])
    assert tuple(prior.config.latent_shape) == (4, 12, 20)  # the largest bucket
    for size, image in [((12, 20), (24, 40)), ((20, 12), (40, 24))]:
        z = prior.sample(2, generator=torch.Generator().manual_seed(0), steps=2, latent_size=size)
        images = decode_latents(z, path, normalized=True)
        assert images.shape == (2, 3, *image) and torch.isfinite(images).all()
    assert (tmp_path / "run" / "samples.png").exists()


def test_class_conditioning_needs_a_label_on_every_row(tiny_vae, tmp_path):
    path = write_latents(tiny_vae, tmp_path)
    with pytest.raises(ConfigError, match="num_classes=3 .* no label"):
        train_prior(flow_cfg(str(tmp_path / "run"), path, num_classes=3))
    assert not (tmp_path / "run").exists()  # refused before training
    assert train_prior(flow_cfg(str(tmp_path / "uncond"), path, num_classes=0))["steps"] == 6


def test_class_conditional_prior_on_labeled_rows(tiny_vae, tmp_path):
    path = write_latents(tiny_vae, tmp_path, labels=True, captions=False)
    summary = train_prior(flow_cfg(str(tmp_path / "run"), path, num_classes=5))
    assert load_prior(summary["final_prior"]).config.num_classes == 5 and np.isfinite(summary["metrics"]["flow_loss"])
    with pytest.raises(InputError, match=r"labels must be in \[0, data.num_classes=2\)"):
        train_prior(flow_cfg(str(tmp_path / "bad"), path, num_classes=2))


def test_streamed_training_resumes_exactly(tiny_vae, tmp_path):
    path = write_latents(tiny_vae, tmp_path, logvar=True)
    whole = train_prior(flow_cfg(str(tmp_path / "whole"), path, batch_size=5))  # 24 rows: epochs of 5 batches, the last of 4 rows
    cfg = flow_cfg(str(tmp_path / "split"), path, batch_size=5)
    cfg.train.checkpoint_every = 3
    first = train_prior(cfg, until=3)
    assert first["data_position"] == {"epoch": 0, "batches": 3}
    rest = train_prior(cfg)  # resumes from step 3 and crosses an epoch boundary
    assert rest["data_position"] == whole["data_position"] == {"epoch": 1, "batches": 1}
    assert [r["loss"] for r in rest["history"]] == [r["loss"] for r in whole["history"][3:]]
    a, b = load_prior(whole["final_prior"]), load_prior(rest["final_prior"])
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_token_priors_need_one_bucket_shape():
    cfg = TrainPriorConfig.from_dict({"prior": {"kind": "gpt"}, "data": {"path": "x"}})
    data = PriorData("f", True, (12, 20), 32, {"24x40": 10, "40x24": 5})
    with pytest.raises(ConfigError, match="data.bucket=<one of them>"):
        prior_config_for(cfg, data)
    assert prior_config_for(cfg, PriorData("f", True, (12, 20), 32, {"24x40": 10}))["vocab_size"] == 32


@pytest.mark.parametrize("network", ["dit", "unet"])
def test_flow_prior_takes_every_bucket_shape_its_network_divides(network):
    extra = {"patch_size": 2} if network == "dit" else {"block_out_channels": [8, 16], "norm_num_groups": 4}
    prior = build_prior("flow", {"latent_shape": [4, 12, 20], "network": network, "hidden_size": 16, "num_layers": 1,
                                 "num_heads": 2, **extra})
    for shape in [(4, 12, 20), (4, 20, 12), (4, 16, 16)]:
        loss, _ = prior.loss(torch.randn(2, *shape))
        assert torch.isfinite(loss)
        assert prior.sample(1, steps=1, latent_size=shape[1:]).shape == (1, *shape)
    with pytest.raises(InputError, match=r"divisible by \(2, 2\)"):
        prior.loss(torch.randn(2, 4, 13, 20))
    with pytest.raises(InputError, match=r"\(B, 4, h, w\)"):
        prior.loss(torch.randn(2, 3, 12, 20))
