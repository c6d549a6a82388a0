"""The README way: `ray start --head` + `ray job submit -- python jobs/encode_dataset.py`, read back with `datasets`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_submit_without_the_readme_auth_step_fails_with_ray_s_message(ray_cluster):
    """What users saw before the README showed the auth step: the suite sees Ray's default, never hides it."""
    _, address, env = ray_cluster
    done = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", address, "--", "python", "-c", "print(1)"],
                          env={k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "authentication token" in (done.stdout + done.stderr).lower()


@pytest.mark.slow
def test_ray_job_submit_encodes_the_embedded_photos(ray_cluster, tiny_model_dir, tmp_path):
    _, address, env = ray_cluster
    out = tmp_path / "latents"  # absolute: the job's driver runs in a copy of the working dir
    submit = [
        str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
        "python", "jobs/encode_dataset.py", "--config", "configs/encode/default.yaml", "--no-progress",
        f"model={tiny_model_dir}", f"output={out}", "processor.resolution=32",
    ]
    # the README's client side: `export RAY_AUTH_MODE=token` (Ray 2.60's `ray start` turned token auth on)
    done = subprocess.run(submit, env={**env, "RAY_AUTH_MODE": "token"}, cwd=str(ROOT), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "encoded 8 images" in done.stdout and "datasets.load_dataset" in done.stdout

    import datasets

    ds = datasets.load_dataset(str(out), split="train")
    assert ds.num_rows == 8 and len(set(ds["key"])) == 8
    assert set(ds["key"]) == {"astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry", "cat"}
    latents = ds.with_format("torch")[:]["latent"]  # (8, C, h, w) tensor
    assert tuple(latents.shape) == (8, 4, 16, 16)
