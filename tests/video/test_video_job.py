"""Video clips through the real Ray encode job: one row per clip, bad videos as error rows while the
job goes on, and exactly once after a killed encoder actor and a SIGKILLed driver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from latentflow.encode.shard import build_processor, process_records, stack_pixels
from latentflow.format.state import committed_shards
from latentflow.jobs.config import EncodeJobConfig
from latentflow.jobs.runner import run_encode_job
from latentflow.sources.shards import SourceConfig, list_shards, read_shard
from tests.ray_head import encoder_actor_pids, wait_for
from tests.video_samples import write_audio_only, write_video

ROOT = Path(__file__).resolve().parents[2]
NUM_SHARDS, VIDEOS_PER_SHARD, CLIPS_PER_VIDEO = 4, 2, 2
VIDEO = {"num_frames": 5, "resolution": 32, "clip_mode": "uniform", "num_clips": CLIPS_PER_VIDEO}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def video_vae_dir(tmp_path_factory) -> str:
    from latentflow.models.causal_video_vae import CausalVideoAutoencoderKLConfig, CausalVideoAutoencoderKLModel

    torch.manual_seed(0)
    cfg = CausalVideoAutoencoderKLConfig(base_dim=8, z_dim=4, dim_mult=(1, 2), num_res_blocks=1, temperal_downsample=(True,))
    path = tmp_path_factory.mktemp("models") / "video-vae"
    CausalVideoAutoencoderKLModel(cfg).eval().save_pretrained(str(path))
    return str(path)


def write_video_shards(root: Path, bad: bool = False) -> str:
    from webdataset import TarWriter

    root.mkdir(parents=True, exist_ok=True)
    for s in range(NUM_SHARDS):
        with open(root / f"v-{s:06d}.tar", "wb") as f, TarWriter(f) as sink:
            for v in range(VIDEOS_PER_SHARD):
                data = write_video(fps=10, size=(40, 48), num_frames=24 + 4 * v + s)
                sink.write({"__key__": f"s{s}v{v}", "mp4": data, "txt": f"shard {s} video {v}"})
            if bad and s == 0:
                sink.write({"__key__": "audio_only", "mp4": write_audio_only()})
                sink.write({"__key__": "truncated", "mp4": write_video(num_frames=20)[:600]})
                sink.write({"__key__": "too_short", "mp4": write_video(num_frames=3)})
    return str(root)


def job(model_dir: str, src: str, out: str, **extra) -> EncodeJobConfig:
    return EncodeJobConfig.from_dict({
        "model": model_dir, "output": out, "source": {"urls": [src]}, "video": VIDEO,
        "batch_size": 2, "num_actors": 1, "max_error_rate": 1.0, "shard_retries": 0, **extra,
    })


def reference(model_dir: str, src: str) -> dict[str, np.ndarray]:
    """Posterior means of every clip, computed directly: the processor, then the model."""
    from latentflow.auto import AutoModel
    from latentflow.media.config import VideoProcessorConfig

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = build_processor(VideoProcessorConfig(**VIDEO), model.downsample_factor, model.temporal_downsample_factor)
    source = SourceConfig(urls=[src], media="video")
    latents = {}
    for shard in list_shards(source):
        clips, _ = process_records(read_shard(shard, source), processor, shard.shard_id)
        with torch.no_grad():
            z = model.encode(stack_pixels(clips).float() / 127.5 - 1).latent_dist.mean
        latents.update({c.key: z[i].numpy() for i, c in enumerate(clips)})
    return latents


def read_latents(out: str) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    rows = {}
    for marker in committed_shards(out).values():
        for path in (f for f in marker.files if f.endswith(".parquet")):
            table = pq.read_table(path).to_pylist()
            for row in table:
                assert row["key"] not in rows, f"duplicated row {row['key']}"
                rows[row["key"]] = np.asarray(row["latent"], np.float32)
    return rows


def assert_exactly(rows: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(rows) == sorted(expected)
    for key, z in expected.items():
        np.testing.assert_allclose(rows[key], z, atol=1e-4, rtol=1e-3)


def test_clips_are_rows_and_bad_videos_are_error_rows(ray_local, video_vae_dir, tmp_path):
    import pyarrow.parquet as pq

    src = write_video_shards(tmp_path / "src", bad=True)
    out = str(tmp_path / "out")
    summary = run_encode_job(job(video_vae_dir, src, out), progress=False)
    expected_rows = NUM_SHARDS * VIDEOS_PER_SHARD * CLIPS_PER_VIDEO
    assert summary.rows == expected_rows and summary.shards_committed == NUM_SHARDS and not summary.shards_failed
    assert_exactly(read_latents(out), reference(video_vae_dir, src))
    errors = {e["key"]: e["error_type"] for e in pq.read_table(f"{out}/errors.parquet").to_pylist()}
    assert errors == {"audio_only": "no_video_stream", "truncated": "corrupt_video", "too_short": "clip_too_short"}

    again = run_encode_job(job(video_vae_dir, src, out), progress=False)  # a rerun encodes nothing twice
    assert again.shards_skipped == NUM_SHARDS and again.rows == 0
    assert len(read_latents(out)) == expected_rows


def test_killed_encoder_actor_loses_and_duplicates_no_clip(ray_local, video_vae_dir, tmp_path):
    src = write_video_shards(tmp_path / "src")
    out = str(tmp_path / "out")
    result: dict = {}
    thread = threading.Thread(
        target=lambda: result.update(summary=run_encode_job(job(video_vae_dir, src, out, batch_size=1), progress=False)))
    thread.start()
    assert wait_for(lambda: len(committed_shards(out)) >= 1 and encoder_actor_pids())
    done_before = len(committed_shards(out))
    os.kill(encoder_actor_pids()[0], signal.SIGKILL)  # Ray restarts the actor and retries its block
    thread.join(timeout=300)
    assert done_before < NUM_SHARDS, "the job finished before the kill; the test proved nothing"
    assert result["summary"].shards_committed == NUM_SHARDS and not result["summary"].shards_failed
    assert_exactly(read_latents(out), reference(video_vae_dir, src))


def test_sigkilled_driver_resumes_clips_exactly_once(ray_local, video_vae_dir, tmp_path):
    src = write_video_shards(tmp_path / "src")
    out = str(tmp_path / "out")
    config = job(video_vae_dir, src, out, batch_size=1)
    job_yaml = tmp_path / "job.yaml"
    job_yaml.write_text(yaml.safe_dump({k: v for k, v in config.to_dict().items() if v is not None}))
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    driver = subprocess.Popen([sys.executable, str(ROOT / "jobs/encode_dataset.py"), "--config", str(job_yaml), "--no-progress"],
                              env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(committed_shards(out)) >= 1 or driver.poll() is not None, timeout=180)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(timeout=60)
    killed_after = len(committed_shards(out))
    assert 1 <= killed_after < NUM_SHARDS, f"{killed_after} shards committed before the kill"
    summary = run_encode_job(config, progress=False)
    assert summary.shards_skipped >= killed_after and summary.shards_skipped + summary.shards_committed == NUM_SHARDS
    assert_exactly(read_latents(out), reference(video_vae_dir, src))
