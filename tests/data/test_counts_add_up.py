"""Nothing is lost silently: every sample read from a source is a row or a named row of
``errors.parquet``, exactly once, and ``latentflow.json`` counts add up (samples = rows + sample
errors), for every modality in :data:`tests.count_cases.CASES`, whether a duplicate pair shares a
shard or not and whether a shard's samples all fail."""

from __future__ import annotations

import pytest

from latentflow.encode.local import encode_locally
from latentflow.sources.shards import SourceConfig
from tests.count_cases import CASES, assert_counts_add_up

# (case, shard_size, shards committed, shards whose samples all failed). images, shard_size 5:
# a b bad c dup.jpg | dup.png (the duplicate alone in its shard). video, shard_size 2:
# dup.mov dup.mp4 | good1 good2 | sound trunc (the audio-only mp4 in a shard of bad videos)
LAYOUTS = [("image", 1000, 1, 0), ("image", 5, 1, 1), ("video", 1000, 1, 0), ("video", 2, 2, 1), ("audio", 1000, 1, 0)]


@pytest.mark.parametrize("name,shard_size,committed,all_failed", LAYOUTS, ids=[f"{c}-shard{s}" for c, s, *_ in LAYOUTS])
def test_every_sample_read_is_a_row_or_a_named_error(tmp_path, name, shard_size, committed, all_failed):
    case = CASES[name]
    expected = case.write(tmp_path / "src")
    source = SourceConfig(format="folder", urls=[str(tmp_path / "src")], shard_size=shard_size)
    out = str(tmp_path / "out")
    encode_locally(case.model(), source, out, processor_config=case.processor, batch_size=4)
    counts = assert_counts_add_up(out, expected)
    assert (counts["shards"], counts["failed_shards"]) == (committed, all_failed)
