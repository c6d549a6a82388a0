"""The README's training example runs as written: ``--num-workers 2`` on configs/train/vae_photos.yaml
(4 training shards, 2 per worker; evaluation on the held-out shard), here for 2 steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_readme_train_command_with_two_workers(tmp_path):
    out = tmp_path / "vae_photos"
    done = subprocess.run(
        [sys.executable, "jobs/train_autoencoder.py", "--config", "configs/train/vae_photos.yaml", "--num-workers", "2",
         "train.max_steps=2", f"train.output_dir={out}"],
        cwd=str(ROOT), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("result:"))[len("result:"):])
    assert result["workers"] == 2 and result["steps"] == [2, 2] and result["psnr"] > 0
    assert (out / "metrics.json").exists() and (out / "final").is_dir()
