"""The encode job end to end on a real local Ray and a real S3 server (moto): exactly once, resume, append,
refusal to mix encoders, bad samples and unreadable shards."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from pipeline_helpers import (
    RESOLUTION,
    assert_latents_match,
    bad_samples,
    good_samples,
    job_config,
    read_errors,
    read_info,
    read_rows,
    reference_latents,
    truncated_tar,
    write_tar,
    zarr_keys,
)

from latentflow.errors import CodecMismatchError
from latentflow.jobs.runner import run_encode_job
from latentflow.media.config import ImageProcessorConfig

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "jobs"))
import encode_dataset  # noqa: E402  (the job script itself)

PROCESSOR = ImageProcessorConfig(resolution=RESOLUTION, max_pixels=300 * 300, min_size=8)
BAD_TYPES = {"corrupt_image", "missing_image", "too_small", "decompression_bomb"}


def _write_job_yaml(path: Path, **data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_s3_end_to_end_exactly_once_resume_and_append(ray_local, s3, photos, tiny_model_dir, tmp_path, monkeypatch, capsys):
    bucket, so = s3
    monkeypatch.setenv("LATENTFLOW_STORAGE_OPTIONS", json.dumps(so))  # the job takes S3 options from the env
    good = {i: good_samples(photos, f"s{i}", 3) for i in range(3)}
    for i in range(2):
        write_tar(f"{bucket}/src/part-{i}.tar", good[i] + bad_samples(photos, f"s{i}"), so)
    model_url = f"{bucket}/models/tiny"
    from latentflow.auto import AutoModel

    AutoModel.from_pretrained(tiny_model_dir).save_pretrained(model_url, so)  # actors load it from s3://
    out = f"{bucket}/latents"
    job = _write_job_yaml(
        tmp_path / "job.yaml", model=model_url, output=out, source={"urls": [f"{bucket}/src/*.tar"]},
        processor=PROCESSOR.to_dict(), batch_size=2, max_error_rate=0.5,
    )

    # 8 bad of 14 samples > max_error_rate: every shard is still committed, but the job exits non-zero
    assert encode_dataset.main(["--config", job, "--no-progress"]) == 1
    printed = capsys.readouterr()
    assert "encoded 6 images" in printed.out and "datasets.load_dataset" in printed.out
    assert "exceeds max_error_rate" in printed.err

    rows = read_rows(out, so)
    reference = reference_latents(tiny_model_dir, good[0] + good[1], PROCESSOR)
    assert_latents_match(rows, reference)
    assert sorted(zarr_keys(out, so)) == sorted(reference)
    assert {r["caption"] for r in rows.values()} >= {"a photo of astronaut"}
    errors = read_errors(out, so)
    assert sorted((e["key"], e["error_type"]) for e in errors) == sorted(
        (f"s{i}_{name}", etype) for i in range(2)
        for name, etype in [("corrupt", "corrupt_image"), ("noimage", "missing_image"), ("tiny", "too_small"),
                            ("bomb", "decompression_bomb")]
    )
    info = read_info(out, so)
    assert info["counts"]["rows"] == 6 and info["counts"]["errors"] == 8 and info["counts"]["shards"] == 2
    assert "testing" not in json.dumps(info)  # credentials never written

    # rerun: both shards are committed, so nothing is read or encoded (no Ray job at all)
    config = job_config(model_url, [f"{bucket}/src/*.tar"], out, so, batch_size=2)
    again = run_encode_job(config, progress=False)
    assert (again.shards_skipped, again.shards_committed, again.rows) == (2, 0, 0)

    # append one new shard: only it is encoded; the output holds every row exactly once
    write_tar(f"{bucket}/src/part-2.tar", good[2], so)
    appended = run_encode_job(config, progress=False)
    assert (appended.shards_skipped, appended.shards_committed, appended.rows) == (2, 1, 3)
    everything = reference_latents(tiny_model_dir, good[0] + good[1] + good[2], PROCESSOR)
    assert_latents_match(read_rows(out, so), everything)
    assert read_info(out, so)["counts"]["rows"] == 9

    # the readers see the same rows: datasets over the Parquet files, torch over the Zarr groups
    from latentflow.read.dataset import LatentDataset
    from latentflow.read.latents import load_latents

    ds = load_latents(out, storage_options=so)
    assert ds.num_rows == 9 and set(ds["key"]) == set(everything)
    zarr_rows = LatentDataset(out, storage_options=so)
    assert len(zarr_rows) == 9
    item = zarr_rows[0]
    np.testing.assert_allclose(np.asarray(item["latent"]), everything[item["key"]], atol=1e-5, rtol=1e-4)


def test_other_encoder_is_refused_unless_overwrite(ray_local, photos, tiny_model_dir, other_model_dir, tmp_path):
    samples = good_samples(photos, "m", 2)
    src = write_tar(str(tmp_path / "src" / "m-0.tar"), samples)
    out = str(tmp_path / "out")
    first = run_encode_job(job_config(tiny_model_dir, [src], out), progress=False)
    assert first.rows == 2

    with pytest.raises(CodecMismatchError, match="weights_sha256"):
        run_encode_job(job_config(other_model_dir, [src], out), progress=False)
    with pytest.raises(CodecMismatchError, match="processor.resolution"):
        run_encode_job(job_config(tiny_model_dir, [src], out, processor__resolution=16), progress=False)

    replaced = run_encode_job(job_config(other_model_dir, [src], out, overwrite=True), progress=False)
    assert replaced.rows == 2 and replaced.shards_skipped == 0
    assert_latents_match(read_rows(out), reference_latents(other_model_dir, samples, PROCESSOR))
    assert read_info(out)["codec"]["model"]["ref"]["location"] == os.path.abspath(other_model_dir)


def test_unreadable_shard_is_retried_then_recorded_failed(ray_local, photos, tiny_model_dir, tmp_path):
    samples = good_samples(photos, "ok", 2)
    write_tar(str(tmp_path / "src" / "a-0.tar"), samples)
    truncated_tar(str(tmp_path / "src" / "b-0.tar"), good_samples(photos, "cut", 3))
    out = str(tmp_path / "out")
    summary = run_encode_job(job_config(tiny_model_dir, [str(tmp_path / "src")], out, max_error_rate=0.1), progress=False)

    assert not summary.ok and summary.shards_failed == [str(tmp_path / "src" / "b-0.tar")]
    assert_latents_match(read_rows(out), reference_latents(tiny_model_dir, samples, PROCESSOR))
    [error] = read_errors(out)
    assert error["stage"] == "read" and error["error_type"] == "shard_unreadable"
    assert "ShardReadError" in error["message"] and "after 2 attempts" in error["message"]
    assert read_info(out)["counts"]["shards"] == 1  # the failed shard has no marker: a rerun tries it again
