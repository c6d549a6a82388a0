"""Fault injection into a running encode job, for any modality: its encoder actor killed mid-run (in this
process's job), its driver started as ``python jobs/encode_dataset.py`` on the test session's local Ray and
then killed by a signal. Each waits for a commit first and checks the job had shards left, so a fast
machine that finished early fails the test instead of proving nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import yaml

# isort: off
import ray  # noqa: F401  (puts Ray's vendored psutil on sys.path: first)
import psutil  # noqa: E402
# isort: on

from latentflow.format.state import committed_shards
from latentflow.jobs.runner import run_encode_job
from tests.ray_head import encoder_actor_pids, wait_for

ROOT = Path(__file__).resolve().parents[1]


def _committed(config) -> int:
    return len(committed_shards(config.output, config.resolved_storage_options()))


def run_killing_the_encoder_actor(config, num_shards: int):
    """Run the job here (a thread) and SIGKILL its one encoder actor once a shard more than before is committed;
    Ray restarts the actor and retries its task. Returns the job's summary."""
    before = _committed(config)
    result: dict = {}
    job = threading.Thread(target=lambda: result.update(summary=run_encode_job(config, progress=False)))
    job.start()
    try:
        assert wait_for(lambda: _committed(config) > before and encoder_actor_pids() or not job.is_alive(), timeout=180)
        victims = encoder_actor_pids()
        done_before = _committed(config)
        assert len(victims) == 1 and done_before < num_shards, f"actors {victims}, {done_before} shards committed: too late"
        victim = victims[0]
        os.kill(victim, signal.SIGKILL)  # the actor process dies mid-run
    finally:
        job.join(timeout=300)
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
    return result["summary"]


def start_driver(config, ray_local, tmp_path: Path, **popen) -> subprocess.Popen:
    """``python jobs/encode_dataset.py --config job.yaml --no-progress`` for ``config``, joining the test session's
    local Ray (``RAY_ADDRESS``)."""
    job_yaml = tmp_path / "job.yaml"
    job_yaml.write_text(yaml.safe_dump({k: v for k, v in config.to_dict().items() if v is not None}))
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "jobs/encode_dataset.py"), "--config", str(job_yaml), "--no-progress"],
        env=env, cwd=str(ROOT), **{"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen},
    )


def sigkill_the_driver_after_a_commit(config, ray_local, tmp_path: Path, num_shards: int) -> int:
    """Start the driver, SIGKILL it once a shard is committed; returns the shards committed then (1 to
    ``num_shards - 1``). Returns once its encoder actor is gone too (Ray ends a dead driver's actors)."""
    driver = start_driver(config, ray_local, tmp_path)
    try:
        assert wait_for(lambda: _committed(config) >= 1 or driver.poll() is not None, timeout=180)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(timeout=60)
    killed_after = _committed(config)
    assert 1 <= killed_after < num_shards, f"{killed_after} shards committed before the kill"
    assert wait_for(lambda: not encoder_actor_pids(), timeout=60)
    return killed_after
