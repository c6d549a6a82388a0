"""Two samples under one key are never merged silently: the first read keeps the key, every later one
is a ``read/duplicate_key`` error record naming both, in every source format (folders, WebDataset
tars, Parquet, HF datasets) and for video clip keys."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from latentflow.encode.shard import build_processor, process_record, process_records
from latentflow.media.config import ImageProcessorConfig
from latentflow.sources.records import SampleError, clip_key
from latentflow.sources.shards import SourceConfig, list_shards, read_shard
from tests.data.storage_helpers import tar_bytes


def png(seed: int, size=(20, 24), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def read_all(cfg: SourceConfig) -> list:
    return [r for shard in list_shards(cfg) for r in read_shard(shard, cfg)]


def outcome(records) -> list[tuple]:
    """``(key, origin, error_type or None)`` per record, in order."""
    return [(r.key, r.origin, r.error.error_type if r.error else None) for r in records]


@pytest.mark.parametrize("shard_size", [1000, 3, 2, 1])
def test_folder_same_stem_different_extension_is_an_error_row_for_the_second(tmp_path, shard_size):
    (tmp_path / "a.png").write_bytes(png(0))
    (tmp_path / "dup.a.jpg").write_bytes(png(3, fmt="JPEG"))  # key dup.a: sorts between, is no duplicate
    (tmp_path / "dup.jpg").write_bytes(png(1, fmt="JPEG"))
    (tmp_path / "dup.png").write_bytes(png(2))
    (tmp_path / "dup.txt").write_text("caption of both")
    records = read_all(SourceConfig(format="folder", urls=[str(tmp_path)], shard_size=shard_size))
    # the sorted listing decides which is first, whether or not the two land in one shard
    assert outcome(records) == [("a", "a.png", None), ("dup.a", "dup.a.jpg", None), ("dup", "dup.jpg", None),
                                ("dup", "dup.png", "duplicate_key")]
    first, second = records[2], records[3]
    assert first.image == png(1, fmt="JPEG") and first.caption == "caption of both"
    assert second.image is None and second.error.stage == "read"
    assert "'dup.png'" in second.error.message and "'dup.jpg'" in second.error.message


def test_tar_sample_with_two_image_members_gives_one_row_and_one_error(tmp_path):
    data = tar_bytes([("a.jpg", png(0, fmt="JPEG")), ("a.png", png(1)), ("a.txt", b"caption"), ("b.png", png(2))])
    (tmp_path / "s.tar").write_bytes(data)
    records = read_all(SourceConfig(urls=[str(tmp_path / "s.tar")]))
    assert outcome(records) == [("a", "a.jpg", None), ("a", "a.png", "duplicate_key"), ("b", "b.png", None)]
    assert records[0].image == png(0, fmt="JPEG") and records[0].caption == "caption"
    assert "'a.png'" in records[1].error.message and "'a.jpg'" in records[1].error.message
    assert [r.index_in_shard for r in records] == [0, 1, 2]


def test_tar_video_with_its_thumbnail_is_one_sample_but_two_videos_are_not(tmp_path):
    data = tar_bytes([("v.mp4", b"video bytes"), ("v.jpg", png(0, fmt="JPEG")),  # a video and its thumbnail
                      ("w.mp4", b"one video"), ("w.mkv", b"another video")])
    (tmp_path / "v.tar").write_bytes(data)
    records = read_all(SourceConfig(urls=[str(tmp_path / "v.tar")]))
    assert outcome(records) == [("v", "v.mp4", None), ("w", "w.mp4", None), ("w", "w.mkv", "duplicate_key")]
    assert records[0].media == "video" and records[0].image == b"video bytes"


def test_tar_key_seen_again_later_or_a_member_repeated_is_a_duplicate_not_an_unreadable_shard(tmp_path):
    data = tar_bytes([("a.jpg", png(0, fmt="JPEG")), ("b.jpg", png(1, fmt="JPEG")), ("a.png", png(2)),  # a again, later
                      ("c.jpg", png(3, fmt="JPEG")), ("c.jpg", png(4, fmt="JPEG"))])  # the same member twice in a row
    (tmp_path / "s.tar").write_bytes(data)
    records = read_all(SourceConfig(urls=[str(tmp_path / "s.tar")]))
    assert outcome(records) == [("a", "a.jpg", None), ("b", "b.jpg", None), ("a", "a.png", "duplicate_key"),
                                ("c", "c.jpg", None), ("c", "c.jpg", "duplicate_key")]
    assert records[3].image == png(3, fmt="JPEG")  # the first c.jpg is the one kept


@pytest.mark.parametrize("row_groups", [False, True])
def test_parquet_key_column_with_a_repeated_value(tmp_path, row_groups):
    table = pa.table({"image": [png(i) for i in range(4)], "key": ["x", "y", "x", "z"]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2)
    records = read_all(SourceConfig(format="parquet", urls=[str(tmp_path / "t.parquet")], row_groups=row_groups))
    if row_groups:  # one shard per row group: the repeat is in another shard, where keys are not compared
        assert outcome(records) == [("x", "row 0 of t", None), ("y", "row 1 of t", None), ("x", "row 2 of t", None),
                                    ("z", "row 3 of t", None)]
        return
    assert outcome(records) == [("x", "row 0 of t", None), ("y", "row 1 of t", None), ("x", "row 2 of t", "duplicate_key"),
                                ("z", "row 3 of t", None)]
    assert "'row 2 of t'" in records[2].error.message and "'row 0 of t'" in records[2].error.message


def test_hf_dataset_key_column_with_a_repeated_value(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"image": [{"bytes": png(i), "path": None} for i in range(3)], "key": ["k", "k", "m"]},
                                    features=datasets.Features({"image": datasets.Image(), "key": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "ds"))
    records = read_all(SourceConfig(format="hf", urls=[str(tmp_path / "ds")], key_column="key"))
    assert [(r.key, r.error.error_type if r.error else None) for r in records] == [("k", None), ("k", "duplicate_key"), ("m", None)]


def test_a_duplicate_record_is_an_error_row_of_the_encode_path_and_raises_alone(tmp_path):
    (tmp_path / "dup.jpg").write_bytes(png(1, fmt="JPEG"))
    (tmp_path / "dup.png").write_bytes(png(2))
    cfg = SourceConfig(format="folder", urls=[str(tmp_path)])
    processor = build_processor(ImageProcessorConfig(resolution=16), 2)
    [shard] = list_shards(cfg)
    good, errors = process_records(read_shard(shard, cfg), processor, shard.shard_id)
    assert [s.key for s in good] == ["dup"]
    assert [(e["key"], e["shard"], e["stage"], e["error_type"]) for e in errors] == [("dup", shard.shard_id, "read", "duplicate_key")]
    with pytest.raises(SampleError, match="duplicate_key"):  # what the trainer's stream skips and counts
        process_record(read_shard(shard, cfg)[1], processor)


def test_clip_keys_of_distinct_videos_never_collide():
    videos = ["v", "v/clip0001", "v/clip0001/clip0000", "v/clip", "v/clip1", "clip0000", "v/clip00010"]
    keys = [clip_key(v, i) for v in videos for i in (0, 1, 10, 9999, 10000, 123456)]
    assert len(set(keys)) == len(keys)
