"""A video autoencoder trains through jobs/train_autoencoder.py on video shards: the stage-1 stream cuts
clips with the encode job's own video processor, and held-out PSNR is scored per frame."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_train_autoencoder_on_the_shipped_video_shard(tmp_path):
    config = {
        "model": {"config": {"model_type": "causal_video_autoencoder_kl", "base_dim": 8, "z_dim": 4, "dim_mult": [1, 2],
                             "num_res_blocks": 1, "temperal_downsample": [True], "sample_size": 32, "sample_frames": 5}},
        "data": {"source": {"format": "webdataset", "urls": [str(ROOT / "data/videos/bbb-000000.tar")]},
                 "video": {"num_frames": 5, "resolution": 32, "clip_mode": "uniform", "num_clips": 2},
                 "eval_source": {"format": "webdataset", "urls": [str(ROOT / "data/videos/bbb-000000.tar")]},
                 "batch_size": 2, "eval_batches": 1},
        "optim": {"lr": 1.0e-3, "warmup_steps": 0},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 3, "log_every": 1, "checkpoint_every": 3, "eval_every": 3},
    }
    path = tmp_path / "video_vae.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "jobs/train_autoencoder.py", "--config", str(path)], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r][-1] == 3
    evals = [r["eval/psnr"] for r in log if "eval/psnr" in r]
    assert evals and all(0 < p < 100 for p in evals)  # PSNR of every frame of held-out clips
    assert (tmp_path / "run" / "reconstructions.mp4").stat().st_size > 0

    from latentflow.auto import AutoModel

    model = AutoModel.from_pretrained(str(tmp_path / "run" / "final"))
    assert model.temporal_downsample_factor == 2 and model.latent_shape(32, 32, frames=5) == (4, 3, 16, 16)
