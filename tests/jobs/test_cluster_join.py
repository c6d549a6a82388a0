"""Joining Ray never hangs: a cluster that is gone is refused in one line, a stale address file is ignored."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_helpers import good_samples, write_tar

from latentflow.jobs.cluster import ADDRESS_FILE, stale_address_file
from tests.ray_head import free_port

ROOT = Path(__file__).resolve().parents[2]
JOB = str(ROOT / "jobs" / "encode_dataset.py")


def _job(args: list[str], env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, JOB, "--no-progress", *args], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def stale_file():
    """Ray's address file naming a port where nothing listens (a cluster that is gone); the real one restored after."""
    backup = ADDRESS_FILE.with_name(ADDRESS_FILE.name + ".lf-test-backup")
    had = ADDRESS_FILE.exists()
    if had:
        shutil.copy2(ADDRESS_FILE, backup)
    ADDRESS_FILE.parent.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    ADDRESS_FILE.write_text(address)
    try:
        yield address
    finally:
        if had:
            shutil.move(backup, ADDRESS_FILE)
        else:
            ADDRESS_FILE.unlink(missing_ok=True)


def test_a_cluster_that_is_gone_is_refused_in_one_line(tiny_model_dir, photos, tmp_path):
    url = write_tar(str(tmp_path / "p-0.tar"), good_samples(photos, "p", 2))
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}
    start = time.monotonic()
    done = _job([f"model={tiny_model_dir}", f"output={tmp_path / 'out'}", f"source.urls=[{url}]", "connect_timeout_s=2"], env, tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and time.monotonic() - start < 60, done.stderr[-2000:]
    assert lines[-1].startswith("error: ConfigError: no Ray cluster answers at RAY_ADDRESS=") and "unset RAY_ADDRESS" in lines[-1]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_stale_address_file_is_ignored_with_one_line(stale_file, tiny_model_dir, photos, tmp_path):
    assert stale_address_file() == stale_file
    url = write_tar(str(tmp_path / "p-0.tar"), good_samples(photos, "p", 2))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = _job([f"model={tiny_model_dir}", f"output={tmp_path / 'out'}", f"source.urls=[{url}]", "processor.resolution=32"],
                env, tmp_path, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"ignoring Ray's address file {ADDRESS_FILE}: no cluster answers at {stale_file}" in done.stderr
    assert "encoded 2 images" in done.stdout
