"""Audio with real components on object storage and under faults: the shipped audio shard on a real S3
server (moto) through the real Ray job with the shipped config, read back from s3:// equal to a direct
encode of the same segments; and small shards of the shipped sounds encoded exactly once through a driver
SIGKILLed mid-run and then an encoder actor SIGKILLed mid-run of the resuming job (tests/faults.py's
injection, the image fault tests'). Three Ray job runs in all."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pytest

from latentflow.jobs.config import EncodeJobConfig
from latentflow.read.latents import read_codec
from latentflow.sources.shards import SourceConfig
from tests.audio.helpers import (
    MODEL,
    ROOT,
    SHARD,
    assert_rows_equal_the_direct_encode,
    direct_encode,
    encode,
    parquet_rows,
    write_sound_shards,
)
from tests.faults import run_killing_the_encoder_actor, sigkill_the_driver_after_a_commit

pytestmark = pytest.mark.slow

SOUNDS = sorted(p.stem for p in (ROOT / "data" / "audio").glob("*.wav"))  # 16 CC0 sounds: one shard each
# 0.2496 s segments (172 hops of 32 at 22050 Hz), one every 0.2496 s, at most 2 per file: the two sounds
# shorter than a segment (hit1 0.198 s, rockHit2 0.209 s) give one padded segment, the 14 others two; the
# 5 of those shorter than two segments (coin2, error2, jump3, laser4, phaseJump1) have their second padded
AUDIO = {"segment_seconds": 0.25, "segment_mode": "slide", "segment_stride_s": 0.25, "max_segments_per_file": 2,
         "short_audio": "pad"}
ROWS, PADDED = 2 * 14 + 2, 2 + 5


@pytest.fixture(scope="module")
def model():
    from latentflow.auto import AutoModel

    return AutoModel.from_pretrained(MODEL).eval()


def test_the_shipped_audio_shard_on_s3_equals_a_direct_encode(ray_local, s3, model, monkeypatch):
    from latentflow.read.dataset import LatentDataset

    bucket, so = s3
    monkeypatch.setenv("LATENTFLOW_STORAGE_OPTIONS", json.dumps(so))  # the README's way to give the job S3 options
    fs = fsspec.filesystem("s3", **so)
    fs.put_file(SHARD, f"{bucket}/audio/src/audio-000000.tar".removeprefix("s3://"))
    out = f"{bucket}/audio/latents"
    assert encode(out, f"source.urls=[{bucket}/audio/src/*.tar]") == 0

    codec = read_codec(out, so)
    assert (codec.modality, codec.shapes) == ("audio", {"20480": {"latent": [8, 640]}})
    segments, z = direct_encode(model, codec.processor, SourceConfig(urls=[SHARD], media="audio"))  # the local copy
    rows = parquet_rows(out, so)
    assert len(rows) == 19
    assert_rows_equal_the_direct_encode(rows, segments, z, sample_rate=22050)
    assert rows["coin2/seg0000"]["caption"].startswith("a short retro video game coin")
    with fs.open(f"{out}/latentflow.json") as f:
        info = json.load(f)
    assert (info["counts"]["rows"], info["counts"]["errors"], info["counts"]["shards"]) == (19, 0, 1)
    assert "testing" not in json.dumps(info)  # the credentials are never written
    assert not fs.exists(f"{out}/_tmp")

    zarr_rows = LatentDataset(out, storage_options=so)  # the Zarr copy on S3: the same latents and masks
    assert len(zarr_rows) == 19
    latents = dict(zip((s.key for s in segments), z))
    for i in (0, len(zarr_rows) - 1):
        item = zarr_rows[i]
        np.testing.assert_allclose(np.asarray(item["latent"]), latents[item["key"]], atol=1e-5, rtol=1e-5)
        assert int(item["mask"].sum()) == rows[item["key"]]["valid_length"]


def test_audio_is_encoded_exactly_once_through_a_killed_driver_and_a_killed_actor(ray_local, model, tmp_path):
    write_sound_shards(tmp_path / "src", SOUNDS)
    out = str(tmp_path / "out")
    config = EncodeJobConfig.from_dict({
        "model": MODEL, "output": out, "source": {"format": "webdataset", "urls": [str(tmp_path / "src")]},
        "audio": AUDIO, "store": {"latent": "mean"}, "batch_size": 1, "num_actors": 1, "max_error_rate": 0.0,
    })
    n = len(SOUNDS)

    killed_after = sigkill_the_driver_after_a_commit(config, ray_local, tmp_path, n)  # 1 run, killed
    summary = run_killing_the_encoder_actor(config, n)  # the same job again: it resumes; its actor dies mid-run
    assert (summary.shards_skipped, summary.shards_committed, summary.shards_failed) == (killed_after, n - killed_after, [])
    assert summary.errors == 0 and summary.totals.rows == ROWS and summary.ok

    codec = read_codec(out)
    segments, z = direct_encode(model, codec.processor, SourceConfig(urls=[str(tmp_path / "src")], media="audio"))
    rows = parquet_rows(out)  # the committed shards' files only, each key once
    assert len(rows) == len(segments) == ROWS
    assert_rows_equal_the_direct_encode(rows, segments, z, sample_rate=22050)
    assert sum(r["valid_length"] < 172 for r in rows.values()) == PADDED
    assert sorted({r["source_key"] for r in rows.values()}) == SOUNDS
    assert not (Path(out) / "_tmp").exists()  # the killed writers' leftovers are cleaned at finalize
