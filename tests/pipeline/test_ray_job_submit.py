"""The README way: `ray start --head` + `ray job submit -- python jobs/encode_dataset.py`, read back with `datasets`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import ray  # noqa: F401  (puts Ray's vendored psutil on sys.path)

import psutil  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_processes(temp_dir: str) -> list[psutil.Process]:
    """Processes of the cluster started under ``temp_dir`` (and only those)."""
    procs = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if temp_dir in " ".join(proc.info["cmdline"] or []):
                procs.append(proc)
        except psutil.Error:
            continue
    return procs


def _stop_cluster(temp_dir: str) -> None:
    procs = _cluster_processes(temp_dir)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass


@pytest.fixture
def ray_cluster():
    """A `ray start --head` cluster on loopback with its own ports and temp dir; yields the dashboard URL."""
    temp_dir = tempfile.mkdtemp(prefix="lfray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}:{os.environ['PATH']}"}
    dashboard = _free_port()
    cmd = [
        str(BIN / "ray"), "start", "--head", "--num-cpus=2", "--object-store-memory=500000000", "--include-dashboard=true",
        f"--port={_free_port()}", f"--dashboard-port={dashboard}", f"--ray-client-server-port={_free_port()}",
        f"--metrics-export-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
        f"--temp-dir={temp_dir}", "--disable-usage-stats", "--dashboard-host=127.0.0.1",
    ]
    try:
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_encodes_the_embedded_photos(ray_cluster, tiny_model_dir, tmp_path):
    address, env = ray_cluster
    out = tmp_path / "latents"  # absolute: the job's driver runs in a copy of the working dir
    submit = [
        str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
        "python", "jobs/encode_dataset.py", "--config", "configs/encode/default.yaml", "--no-progress",
        f"model={tiny_model_dir}", f"output={out}", "processor.resolution=32",
    ]
    done = subprocess.run(submit, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "encoded 8 images" in done.stdout and "datasets.load_dataset" in done.stdout

    import datasets

    ds = datasets.load_dataset(str(out), split="train")
    assert ds.num_rows == 8 and len(set(ds["key"])) == 8
    assert set(ds["key"]) == {"astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry", "cat"}
    latents = ds.with_format("torch")[:]["latent"]  # (8, C, h, w) tensor
    assert tuple(latents.shape) == (8, 4, 16, 16)
