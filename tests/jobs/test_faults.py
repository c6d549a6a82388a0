"""Faults: an encoder actor killed mid-run, and a driver killed with SIGKILL mid-run, lose and duplicate nothing;
Ctrl-C stops a job in one line. (The injection is tests/faults.py's, shared with the audio fault test.)"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from pipeline_helpers import (
    RESOLUTION,
    assert_latents_match,
    good_samples,
    job_config,
    read_rows,
    reference_latents,
    write_tar,
)

from latentflow.format.state import committed_shards
from latentflow.jobs.runner import run_encode_job
from latentflow.media.config import ImageProcessorConfig
from tests.faults import run_killing_the_encoder_actor, sigkill_the_driver_after_a_commit, start_driver
from tests.ray_head import wait_for

PROCESSOR = ImageProcessorConfig(resolution=RESOLUTION, max_pixels=300 * 300, min_size=8)
NUM_SHARDS = 16  # many small shards: the job is still running when the first commit is seen (a fast machine finished 6)


def _source(photos, tmp_path) -> tuple[str, list[dict]]:
    samples = []
    for i in range(NUM_SHARDS):
        shard = good_samples(photos, f"f{i}", 3)
        write_tar(str(tmp_path / "src" / f"f-{i}.tar"), shard)
        samples += shard
    return str(tmp_path / "src"), samples


def test_killed_encoder_actor_loses_and_duplicates_nothing(ray_local, photos, tiny_model_dir, tmp_path):
    src, samples = _source(photos, tmp_path)
    out = str(tmp_path / "out")
    summary = run_killing_the_encoder_actor(job_config(tiny_model_dir, [src], out, batch_size=1), NUM_SHARDS)
    assert summary.rows == 3 * NUM_SHARDS and summary.shards_committed == NUM_SHARDS and not summary.shards_failed
    assert_latents_match(read_rows(out), reference_latents(tiny_model_dir, samples, PROCESSOR))


def test_sigkilled_driver_resumes_exactly_once(ray_local, photos, tiny_model_dir, tmp_path):
    src, samples = _source(photos, tmp_path)
    out = str(tmp_path / "out")
    config = job_config(tiny_model_dir, [src], out, batch_size=1)
    killed_after = sigkill_the_driver_after_a_commit(config, ray_local, tmp_path, NUM_SHARDS)

    summary = run_encode_job(config, progress=False)
    assert summary.shards_skipped >= killed_after
    assert summary.shards_skipped + summary.shards_committed == NUM_SHARDS
    assert_latents_match(read_rows(out), reference_latents(tiny_model_dir, samples, PROCESSOR))
    assert not (Path(out) / "_tmp").exists()  # a killed writer's leftovers are cleaned at finalize


def test_ctrl_c_is_one_line_and_keeps_committed_shards(ray_local, photos, tiny_model_dir, tmp_path):
    src, samples = _source(photos, tmp_path)
    out = str(tmp_path / "out")
    config = job_config(tiny_model_dir, [src], out, batch_size=1)
    # started with SIGINT ignored, as `python jobs/encode_dataset.py ... &` in a script starts it (and as this
    # suite's process had it by this test, inherited): the job still stops on SIGINT
    driver = start_driver(config, ray_local, tmp_path, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert wait_for(lambda: len(committed_shards(out)) >= 1 or driver.poll() is not None, timeout=180)
        driver.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    interrupted_after = len(committed_shards(out))
    assert driver.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("interrupted: the shards committed"), stderr[-3000:]
    assert 1 <= interrupted_after < NUM_SHARDS

    summary = run_encode_job(config, progress=False)  # the same command again resumes after them
    assert summary.shards_skipped == interrupted_after and summary.shards_skipped + summary.shards_committed == NUM_SHARDS
    assert_latents_match(read_rows(out), reference_latents(tiny_model_dir, samples, PROCESSOR))
