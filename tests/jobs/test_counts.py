"""Counts stay true across reruns: sample errors and failed shards are counted apart, rates are over
the whole output, each run prints what it did and what the output holds, and ``latentflow.json``
keeps the output's totals plus one entry per run."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from pipeline_helpers import bad_samples, good_samples, read_errors, read_info, read_rows, truncated_tar, write_tar

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "jobs"))
import encode_dataset  # noqa: E402  (the job script itself)


def test_rerun_over_an_output_with_an_unreadable_shard(ray_local, photos, tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "src"
    write_tar(str(src / "a-0.tar"), good_samples(photos, "a", 3) + bad_samples(photos, "a"))  # 3 rows, 4 sample errors
    write_tar(str(src / "a-1.tar"), good_samples(photos, "b", 2))
    write_tar(str(src / "a-2.tar"), good_samples(photos, "c", 2))
    truncated_tar(str(src / "z-0.tar"), good_samples(photos, "z", 3))  # never readable: fails every run
    out = tmp_path / "out"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "model": tiny_model_dir, "output": str(out), "source": {"urls": [str(src)]}, "num_actors": 1, "shard_retries": 0,
        "processor": {"resolution": 32, "max_pixels": 300 * 300, "min_size": 8}, "batch_size": 3, "max_error_rate": 0.4,
    }))

    # run 1: 7 rows, 4 sample errors (4/11 = 36%), 1 of 4 shards failed (25%): both under 40%
    assert encode_dataset.main(["--config", str(job), "--no-progress"]) == 0
    first = capsys.readouterr().out
    assert "this run: encoded 7 images" in first and "4 sample errors;" in first and "1 failed of 4" in first
    assert ("the output holds: 7 images in 3 committed shards; 4 sample errors (36.4% of samples); "
            "1 shard(s) failing (25.0% of shards)") in first

    info = read_info(str(out))
    assert info["counts"]["rows"] == 7 and info["counts"]["shards"] == 3
    assert info["counts"]["sample_errors"] == 4 and info["counts"]["failed_shards"] == 1 and info["counts"]["errors"] == 5
    assert info["failed_shards"] == [str(src / "z-0.tar")]
    [run] = info["runs"]
    assert (run["rows"], run["sample_errors"], run["shards_committed"], run["shards_failed"]) == (7, 4, 3, [str(src / "z-0.tar")])
    assert sorted(e["error_type"] for e in read_errors(str(out))).count("shard_unreadable") == 1

    # run 2: only the unreadable shard is tried again. This run encodes nothing, but the output's
    # rates are unchanged: it is not "0 images, 100% errors, FAILED"
    assert encode_dataset.main(["--config", str(job), "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert ("this run: encoded 0 images" in printed.out and "0 sample errors;" in printed.out
            and "3 already done, 1 failed of 4" in printed.out)
    assert "the output holds: 7 images in 3 committed shards; 4 sample errors (36.4% of samples)" in printed.out
    assert "FAILED" not in printed.err

    again = read_info(str(out))
    assert again["counts"] == info["counts"] and again["created_at"] == info["created_at"]
    assert [r["rows"] for r in again["runs"]] == [7, 0] and again["runs"][1]["shards_skipped"] == 3
    assert len(read_rows(str(out))) == 7
    assert len(read_errors(str(out))) == 5  # 4 sample errors + the shard, once each

    # a stricter limit fails on the output's rates (the shard failure rate, 25% > 20%), not this run's
    job.write_text(job.read_text().replace("max_error_rate: 0.4", "max_error_rate: 0.2"))
    assert encode_dataset.main(["--config", str(job), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "error rate 36.4% / shard failure rate 25.0% of the output exceeds max_error_rate=20.0%" in err


def test_ray_job_counts_add_up_for_videos_with_an_audio_only_mp4_and_a_duplicate_stem(ray_local, tmp_path):
    """The Ray path's summary: the audio-only mp4 shares an all-failed shard with a truncated video
    (shard_size 2: dup.mov dup.mp4 | good1 good2 | sound trunc), and its error is a sample error of
    this run, not "0 sample errors"; samples seen = rows + sample errors, in the summary and the output."""
    from latentflow.jobs.config import EncodeJobConfig
    from latentflow.jobs.runner import run_encode_job
    from tests.count_cases import CASES, assert_counts_add_up

    case = CASES["video"]
    expected = case.write(tmp_path / "src")
    model_dir = str(tmp_path / "video-vae")
    case.model().save_pretrained(model_dir)
    out = str(tmp_path / "out")
    config = EncodeJobConfig.from_dict({
        "model": model_dir, "output": out, "source": {"format": "folder", "urls": [str(tmp_path / "src")], "shard_size": 2},
        "batch_size": 2, "num_actors": 1, "max_error_rate": 1.0, "shard_retries": 0, **case.job,
    })
    summary = run_encode_job(config, progress=False)
    assert (summary.rows, summary.errors, summary.samples_seen) == (expected.rows, len(expected.errors), expected.samples)
    assert summary.samples_seen == summary.rows + summary.errors
    assert (summary.shards_committed, len(summary.shards_failed)) == (2, 1)
    counts = assert_counts_add_up(out, expected)
    assert (counts["shards"], counts["failed_shards"]) == (2, 1)
    run = read_info(out)["runs"][-1]
    assert (run["samples_seen"], run["rows"], run["sample_errors"]) == (9, 6, 3)
