"""Stage 1: a tiny VAE trains on streamed WebDataset shards; resume reproduces the uninterrupted run exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from training_helpers import tiny_vae_config

from latentflow.auto import AutoModel
from latentflow.errors import ConfigError
from latentflow.training.config import TrainAutoencoderConfig, load_config
from latentflow.training.entrypoints import train_autoencoder


def _cfg(shards, out, **train):
    return TrainAutoencoderConfig.from_dict(tiny_vae_config(shards, out, **train))


def test_tiny_run_lowers_reconstruction_loss_and_writes_outputs(photo_shards, tmp_path):
    out = tmp_path / "run"
    summary = train_autoencoder(_cfg(photo_shards, str(out), max_steps=24, checkpoint_every=24, eval_every=24))
    rec = [r["rec"] for r in summary["history"]]
    first, last = np.mean(rec[:3]), np.mean(rec[-3:])
    assert last < 0.6 * first, (first, last)  # a clear margin, not noise
    assert summary["skipped_samples"] > 0  # the corrupt / image-less samples were skipped, not fatal
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 25))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["psnr"] > 10 and 0 < metrics["ssim"] <= 1
    grid = np.asarray(Image.open(out / "reconstructions.png"))
    assert grid.shape == (2 + 2 * 18, 2 + 4 * 18, 3)  # 4 held-out inputs above, reconstructions below
    assert Image.open(out / "loss_curve.png").size[0] > 100
    model = AutoModel.from_pretrained(str(out / "final"))  # save_pretrained format
    assert model.config.block_out_channels == (8, 16)


def test_resume_reproduces_the_uninterrupted_losses_exactly(photo_shards, tmp_path):
    full = train_autoencoder(_cfg(photo_shards, str(tmp_path / "full"), max_steps=8, checkpoint_every=4))
    # the interrupted run stops at step 4 (its checkpoint), then a new process-like call resumes
    cut = train_autoencoder(_cfg(photo_shards, str(tmp_path / "cut"), max_steps=8, checkpoint_every=4), until=4)
    assert [r["step"] for r in cut["history"]] == [1, 2, 3, 4]
    assert [r["loss"] for r in cut["history"]] == [r["loss"] for r in full["history"][:4]]
    resumed = train_autoencoder(_cfg(photo_shards, str(tmp_path / "cut"), max_steps=8, checkpoint_every=4))
    assert [r["step"] for r in resumed["history"]] == [5, 6, 7, 8]
    expected = [(r["loss"], r["rec"], r["model/kl"]) for r in full["history"][4:]]
    got = [(r["loss"], r["rec"], r["model/kl"]) for r in resumed["history"]]
    assert got == expected  # bit-exact: same weights, optimizer moments, RNG, data position
    assert resumed["data_position"] == full["data_position"]


def test_job_config_rejects_unknown_keys_and_applies_overrides(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("train:\n  max_steps: 5\n  bogus: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        load_config(TrainAutoencoderConfig, str(path))
    path.write_text("data:\n  source: {format: folder, urls: [x]}\ntrain:\n  max_steps: 5\n")
    cfg = load_config(TrainAutoencoderConfig, str(path), ["train.max_steps=7", "optim.lr=0.01"])
    assert cfg.train.max_steps == 7 and cfg.optim.lr == 0.01
    with pytest.raises(ConfigError, match="max_steps must be > 0"):
        load_config(TrainAutoencoderConfig, str(path), ["train.max_steps=0"])
    with pytest.raises(ConfigError, match="must be int"):
        load_config(TrainAutoencoderConfig, str(path), ["train.max_steps='7'"])


def test_quantized_model_reports_codebook_usage_and_perplexity(photo_shards, tmp_path):
    raw = tiny_vae_config(photo_shards, str(tmp_path / "vq"), max_steps=2, checkpoint_every=2)
    raw["model"]["config"] = {"model_type": "vq_autoencoder", "block_out_channels": [8, 16], "latent_channels": 4,
                              "norm_num_groups": 4, "quantizer": {"name": "vq", "configuration": {"codebook_size": 16}}}
    summary = train_autoencoder(TrainAutoencoderConfig.from_dict(raw))
    m = summary["metrics"]
    assert 0 < m["codebook_usage"] <= 1 and 1 <= m["codebook_perplexity"] <= 16
    assert any(k.startswith("model/") and k != "model/rec" for k in summary["history"][0])  # the VQ terms are logged
