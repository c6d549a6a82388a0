"""Helpers of the trainer tests (a named module, so it never clashes with another directory's conftest)."""

from __future__ import annotations


def tiny_vae_config(shards: list[str], out: str, **train: object) -> dict:
    """A stage-1 job config dict for a (8, 16) VAE on 16x16 crops."""
    return {
        "model": {"config": {"model_type": "vae", "block_out_channels": [8, 16], "latent_channels": 4,
                             "norm_num_groups": 4, "sample_size": 16, "kl_weight": 1e-4}},
        "data": {"source": {"format": "webdataset", "urls": shards},
                 "processor": {"resolution": 16, "crop": "random", "min_size": 16},
                 "batch_size": 4, "holdout_shards": 1, "eval_batches": 1},
        "loss": {"reconstruction": "l1"},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "ema_decay": 0.9, "grad_clip": 1.0},
        "train": {"output_dir": out, "max_steps": 10, "seed": 0, "log_every": 5, "checkpoint_every": 5, **train},
    }
