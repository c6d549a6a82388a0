"""Ray Train: a 2-worker DDP (gloo) run of stage 1 completes; workers read disjoint shards, equal steps, same weights."""

from __future__ import annotations

import json

import pytest
from training_helpers import tiny_vae_config

from latentflow.training.config import TrainAutoencoderConfig
from latentflow.training.distributed import run_distributed


@pytest.mark.slow
def test_two_worker_ray_train_run_reads_disjoint_shards(ray_local, photo_shards, tmp_path):
    raw = tiny_vae_config(photo_shards, str(tmp_path / "ddp"), max_steps=4, checkpoint_every=4,
                          num_workers=2, cpus_per_worker=0.5)
    raw["data"]["holdout_shards"] = 0  # 4 shards -> 2 per worker
    raw["optim"]["ema_decay"] = 0.0
    cfg = TrainAutoencoderConfig.from_dict(raw)
    summaries = run_distributed("autoencoder", cfg, storage_path=str(tmp_path / "ray"))
    assert [s["rank"] for s in summaries] == [0, 1] and all(s["world"] == 2 for s in summaries)
    seen = [set(s["shards_seen"]) for s in summaries]
    assert seen[0] and seen[1] and not seen[0] & seen[1]  # disjoint shards
    assert seen[0] | seen[1] <= set(photo_shards)
    assert [s["steps"] for s in summaries] == [4, 4]  # equal batch counts
    assert summaries[0]["weights_sha256"] == summaries[1]["weights_sha256"]  # DDP kept the replicas identical
    assert summaries[0]["losses"] != summaries[1]["losses"]  # ...while each saw different images
    log = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # rank 0 alone writes the log
    assert (tmp_path / "ddp" / "checkpoints" / "step-0000004" / "trainer_state.json").exists()
    # preempted after step 2, then rerun: every worker continues with exactly the uninterrupted losses
    raw["train"]["output_dir"] = str(tmp_path / "cut")
    cut_cfg = TrainAutoencoderConfig.from_dict(raw)
    run_distributed("autoencoder", cut_cfg, storage_path=str(tmp_path / "ray"), until=2)
    resumed = run_distributed("autoencoder", cut_cfg, storage_path=str(tmp_path / "ray"))
    for full, again in zip(summaries, resumed):
        assert again["losses"] == full["losses"][2:]
        assert again["weights_sha256"] == full["weights_sha256"]


@pytest.mark.slow
def test_two_worker_prior_run_on_cached_tokens(ray_local, vq_latents, tmp_path):
    from latentflow.training.config import TrainPriorConfig

    cfg = TrainPriorConfig.from_dict({
        "prior": {"kind": "gpt", "config": {"hidden_size": 16, "num_layers": 1, "num_heads": 2}},
        "data": {"path": vq_latents, "batch_size": 4, "val_fraction": 0.25},
        "train": {"output_dir": str(tmp_path / "prior"), "max_steps": 3, "checkpoint_every": 3,
                  "num_workers": 2, "cpus_per_worker": 0.5},
        "sample": {"num_samples": 2}})
    summaries = run_distributed("prior", cfg, storage_path=str(tmp_path / "ray"))
    assert [s["steps"] for s in summaries] == [3, 3]
    assert summaries[0]["losses"] != summaries[1]["losses"]  # disjoint rows per worker
    assert "nll_bits_per_token" in summaries[0]["metrics"]
    assert (tmp_path / "prior" / "samples.png").exists()
