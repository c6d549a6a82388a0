"""Sources: every format, locally and on a real S3 server (moto), plus truncated and hostile shards."""

from __future__ import annotations

import io
import json
import tarfile

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from latentflow.data.records import Shard, shard_id_for
from latentflow.data.sources import SourceConfig, list_shards, read_shard, resolve_storage_options, sanitize_member
from latentflow.errors import ConfigError, ShardReadError


def png(seed: int, size=(20, 24)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(params=["local", "s3", "memory"])
def where(request, tmp_path):
    """``(base_url, storage_options)`` on local disk, on the moto S3 server, or in fsspec's memory filesystem."""
    if request.param == "local":
        return str(tmp_path), None
    if request.param == "memory":
        return f"memory://{tmp_path.name}", None
    return request.getfixturevalue("s3")


def put(url: str, data: bytes, options) -> None:
    fs, path = fsspec.url_to_fs(url, **(options or {}))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_webdataset_shards_records_and_metadata(where, sample_tars):
    base, options = where
    for url in sample_tars[1]:
        with open(url, "rb") as f:
            put(f"{base}/wds/{url.rsplit('/', 1)[-1]}", f.read(), options)
    cfg = SourceConfig(format="webdataset", urls=[f"{base}/wds/photos-{{000000..000001}}.tar"], storage_options=options)
    shards = list_shards(cfg)
    assert [s.url.rsplit("/", 1)[-1] for s in shards] == ["photos-000000.tar", "photos-000001.tar"]
    assert shards == list_shards(cfg) and len({s.shard_id for s in shards}) == 2
    records = read_shard(shards[0], cfg)
    assert [r.index_in_shard for r in records] == list(range(6))
    good = [r for r in records if r.image is not None and r.json]
    assert len(good) == 4
    assert all(r.caption.startswith("a photo") and isinstance(r.label, int) and "crop_box" in json.loads(r.json) for r in good)
    missing = [r for r in records if r.key.endswith("noimage")]
    assert len(missing) == 1 and missing[0].image is None  # the processor turns this into a SampleError


def test_truncated_tar_raises_shard_read_error(where):
    base, options = where
    data = tar_bytes([(f"{i:04d}.png", png(i)) for i in range(3)])
    put(f"{base}/bad/cut.tar", data[: len(data) // 2], options)
    cfg = SourceConfig(format="webdataset", urls=[f"{base}/bad"], storage_options=options)
    (shard,) = list_shards(cfg)
    with pytest.raises(ShardReadError, match="cut.tar"):
        read_shard(shard, cfg)


def test_missing_shard_raises_shard_read_error(tmp_path):
    cfg = SourceConfig(format="webdataset", urls=[str(tmp_path / "x.tar")])
    with pytest.raises(ShardReadError):
        read_shard(Shard("x", str(tmp_path / "x.tar"), "webdataset"), cfg)


def test_member_paths_are_sanitized(tmp_path):
    data = tar_bytes([("../../evil/0001.png", png(1)), ("/abs/dir/0002.png", png(2)), ("./a/./0003.txt", b"hi")])
    (tmp_path / "t.tar").write_bytes(data)
    cfg = SourceConfig(format="webdataset", urls=[str(tmp_path / "t.tar")])
    keys = [r.key for r in read_shard(list_shards(cfg)[0], cfg)]
    assert keys == ["evil/0001", "abs/dir/0002", "a/0003"]
    assert sanitize_member("..\\..\\x.jpg") == "x.jpg"


def write_parquet(url: str, options, n: int = 5, row_group_size: int = 2) -> None:
    table = pa.table({"key": [f"k{i}" for i in range(n)], "image": [png(i) for i in range(n)],
                      "caption": [f"cap {i}" for i in range(n)], "label": list(range(n))})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    put(url, buf.getvalue(), options)


def test_parquet_files_and_row_groups(where):
    base, options = where
    write_parquet(f"{base}/pq/a.parquet", options)
    write_parquet(f"{base}/pq/b.parquet", options, n=3)
    by_file = SourceConfig(format="parquet", urls=[f"{base}/pq/*.parquet"], storage_options=options)
    shards = list_shards(by_file)
    assert len(shards) == 2
    records = read_shard(shards[0], by_file)
    assert [r.key for r in records] == [f"k{i}" for i in range(5)]
    assert records[3].caption == "cap 3" and records[3].label == 3 and records[3].image == png(3)
    by_group = by_file.replace(row_groups=True)
    groups = list_shards(by_group)
    assert [(s.url.rsplit("/", 1)[-1], s.row_group) for s in groups] == [("a.parquet", 0), ("a.parquet", 1), ("a.parquet", 2), ("b.parquet", 0), ("b.parquet", 1)]
    keys = [r.key for s in groups for r in read_shard(s, by_group)]
    assert keys == [f"k{i}" for i in range(5)] + [f"k{i}" for i in range(3)]


def test_parquet_without_key_column_gets_stable_keys(tmp_path):
    pq.write_table(pa.table({"image": [png(0), png(1)]}), tmp_path / "p.parquet")
    cfg = SourceConfig(format="parquet", urls=[str(tmp_path)])
    assert [r.key for r in read_shard(list_shards(cfg)[0], cfg)] == ["p/000000000", "p/000000001"]
    with pytest.raises(ConfigError, match="caption column 'words' not found"):
        read_shard(list_shards(cfg)[0], cfg.replace(caption_column="words"))


def test_hf_saved_dataset(where):
    import datasets

    base, options = where
    ds = datasets.Dataset.from_dict({"image": [{"bytes": png(i), "path": None} for i in range(4)], "text": [f"t{i}" for i in range(4)]},
                                    features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")}))
    ds.save_to_disk(f"{base}/hf", num_shards=2, storage_options=options)
    cfg = SourceConfig(format="hf", urls=[f"{base}/hf"], storage_options=options)
    shards = list_shards(cfg)
    assert len(shards) == 2 and all(s.url.endswith(".arrow") for s in shards)
    records = [r for s in shards for r in read_shard(s, cfg)]
    assert [r.caption for r in records] == ["t0", "t1", "t2", "t3"]
    assert [r.image for r in records] == [png(i) for i in range(4)]
    assert len({r.key for r in records}) == 4


def test_hf_load_dataset_arguments_as_index_ranges(tmp_path):
    write_parquet(str(tmp_path / "p.parquet"), None, n=5)
    cfg = SourceConfig(format="hf", hf_load_args={"path": "parquet", "data_files": str(tmp_path / "p.parquet")}, shard_size=2)
    shards = list_shards(cfg)
    assert [(s.start, s.stop) for s in shards] == [(0, 2), (2, 4), (4, 5)]
    records = [r for s in shards for r in read_shard(s, cfg)]
    assert [r.key for r in records] == [f"k{i}" for i in range(5)]
    assert records[4].image == png(4)


def test_folder_chunks(where):
    base, options = where
    for i in range(5):
        put(f"{base}/imgs/{'sub/' if i % 2 else ''}{i:03d}.png", png(i), options)
    put(f"{base}/imgs/notes.txt", b"not an image", options)
    cfg = SourceConfig(format="folder", urls=[f"{base}/imgs"], shard_size=2, storage_options=options)
    shards = list_shards(cfg)
    assert [(s.start, s.stop) for s in shards] == [(0, 2), (2, 4), (4, 5)]
    records = [r for s in shards for r in read_shard(s, cfg)]
    assert sorted(r.key for r in records) == ["000", "002", "004", "sub/001", "sub/003"]
    assert len(records) == 5 and all(r.image.startswith(b"\x89PNG") for r in records)


def test_shard_ids_are_safe_and_distinct():
    a, b = shard_id_for("s3://x/one/train-0001.tar"), shard_id_for("s3://x/two/train-0001.tar")
    assert a != b and a.startswith("train-0001-") and "/" not in a
    assert shard_id_for("s3://x/one/train-0001.tar") == a
    assert shard_id_for("/d/we ird:name.parquet", "rg00001").startswith("we_ird_name-rg00001-")


def test_storage_options_from_env_never_echoed(monkeypatch):
    monkeypatch.setenv("LATENTFLOW_STORAGE_OPTIONS", json.dumps({"key": "AKIA", "secret": "s3cr3t"}))
    assert resolve_storage_options(None) == {"key": "AKIA", "secret": "s3cr3t"}
    cfg = SourceConfig(urls=["x.tar"], storage_options={"secret": "s3cr3t"})
    assert "s3cr3t" not in repr(cfg) and "storage_options" not in cfg.to_public_dict()
    monkeypatch.setenv("LATENTFLOW_STORAGE_OPTIONS", "{secret: s3cr3t")
    with pytest.raises(ConfigError) as info:
        resolve_storage_options(None)
    assert "s3cr3t" not in str(info.value)
