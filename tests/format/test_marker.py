"""The commit marker is a typed, versioned on-disk contract: it round-trips, reads markers written
before it had a version, and refuses what it does not know."""

from __future__ import annotations

import json

import pytest

from latentflow.errors import ConfigError
from latentflow.format.marker import MARKER_VERSION, CommitMarker
from latentflow.format.state import OutputState, committed_shards, sum_buckets

# a marker as the writer wrote it before the format had a version (2026-11-27, commit c6a3a65)
V1 = {"shard_id": "train-0001-5d41", "rows": 3, "keys_sha256": "ab", "checksum": "cd",
      "buckets": {"32x32": 2, "32x48": 1}, "stats": {"latent": {"count": [3], "sum": [0.5], "sumsq": [1.0]}},
      "errors": [{"key": "x", "shard": "train-0001-5d41", "stage": "decode", "error_type": "corrupt_image", "message": "m"}],
      "codec_fingerprint": "ef", "formats": ["parquet", "zarr"], "files": ["/o/parquet/32x32/train-0001-5d41.parquet"],
      "written_at": 1.0}


def test_round_trip_and_version():
    marker = CommitMarker.from_dict(V1)
    assert marker.marker_version == MARKER_VERSION and marker.rows == 3 and marker.errors[0]["stage"] == "decode"
    assert CommitMarker.from_dict(json.loads(marker.to_json())) == marker
    assert marker.parquet_files == ["/o/parquet/32x32/train-0001-5d41.parquet"]


def test_v1_without_formats_reads_as_both_sinks():
    old = {k: v for k, v in V1.items() if k != "formats"}
    assert CommitMarker.from_dict(old).formats == ("zarr", "parquet")


@pytest.mark.parametrize("bad, match", [({**V1, "rowz": 1}, "unknown keys \\['rowz'\\]"),
                                        ({**V1, "marker_version": 99}, "newer than this latentflow"),
                                        ({**V1, "rows": -1}, "rows must be >= 0")])
def test_refuses_what_it_does_not_know(bad, match):
    with pytest.raises(ConfigError, match=match):
        CommitMarker.from_dict(bad)


def test_output_state_adds_up_markers(tmp_path):
    done = tmp_path / "_done"
    done.mkdir()
    second = {**V1, "shard_id": "s2", "rows": 5, "buckets": {"32x32": 5}, "errors": []}
    for m in (V1, second):
        (done / f"{m['shard_id']}.json").write_text(json.dumps(m))
    state = OutputState.read(str(tmp_path))
    assert set(state.markers) == {"train-0001-5d41", "s2"} == set(committed_shards(str(tmp_path)))
    assert (state.rows, state.shards, state.sample_errors) == (8, 2, 1)
    assert state.buckets == sum_buckets(state.markers) == {"32x32": 7, "32x48": 1}
