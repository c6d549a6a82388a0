"""Shard ids are the resume key: they must not depend on where the working directory sits."""

from __future__ import annotations

import shutil
from pathlib import Path

from latentflow.sources.records import shard_id_for
from latentflow.sources.shards import SourceConfig, list_shards

PHOTOS = Path(__file__).resolve().parents[2] / "data" / "photos"


def test_same_ids_from_two_copies_of_the_working_dir(tmp_path, monkeypatch):
    ids = []
    for copy in ("run-a", "run-b"):  # what `ray job submit --working-dir .` does on each submission
        root = tmp_path / copy
        shutil.copytree(PHOTOS, root / "data" / "photos")
        monkeypatch.chdir(root)
        cfg = SourceConfig.from_dict({"format": "webdataset", "urls": ["data/photos/photos-{000000..000001}.tar"]})
        ids.append([s.shard_id for s in list_shards(cfg)])
    assert ids[0] == ids[1] and len(ids[0]) == 2


def test_distinct_folders_and_urls_stay_distinct():
    assert shard_id_for("a/train-0000.tar") != shard_id_for("b/train-0000.tar")
    assert shard_id_for("s3://x/train-0000.tar") != shard_id_for("s3://y/train-0000.tar")
    assert shard_id_for("s3://x/train-0000.tar").startswith("train-0000-")


def test_a_relative_folder_is_read_from_anywhere_and_keeps_its_shard_ids(tmp_path, monkeypatch):
    """Ray workers read shards from their own working directory: a folder given relative is listed as an absolute
    path, while its shard ids stay those of the URL as given (outputs written before resume, nothing doubles)."""
    from latentflow.sources.shards import read_shard

    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"not decoded here")
    monkeypatch.chdir(tmp_path)
    config = SourceConfig(format="folder", urls=["imgs"])
    [shard] = list_shards(config)
    assert shard.url == str(tmp_path / "imgs") and shard.shard_id == shard_id_for("imgs", "000000000")
    monkeypatch.chdir("/")
    assert [r.key for r in read_shard(shard, config)] == ["a"]
