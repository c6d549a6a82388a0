"""Sources: every format, locally and on a real S3 server (moto), truncated and hostile shards, and the data users have
(caption sidecars, metadata.jsonl, HF imagefolder datasets)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from latentflow.errors import ConfigError, ShardReadError
from latentflow.sources.records import Shard, shard_id_for
from latentflow.sources.shards import (
    SourceConfig,
    check_source,
    list_shards,
    read_shard,
    resolve_storage_options,
    sanitize_member,
)
from tests.data.storage_helpers import put, tar_bytes


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
    assert [(s.url.rsplit("/", 1)[-1], s.row_group) for s in groups] == [
        ("a.parquet", 0), ("a.parquet", 1), ("a.parquet", 2), ("b.parquet", 0), ("b.parquet", 1)]
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


# ---- ordinary data: caption sidecars, metadata.jsonl, HF images by path, DatasetDicts ----------


def folder_records(cfg: SourceConfig) -> dict:
    return {r.key: r for s in list_shards(cfg) for r in read_shard(s, cfg)}


def test_folder_caption_sidecars(where):
    base, options = where
    files = {"a.png": png(0), "a.txt": b"a red cat \n\n", "b.jpg": png(1), "b.caption": b"caption file\t\n",
             "c.png": png(2), "sub/d.png": png(3), "sub/d.txt": "\u00e9t\u00e9 \u2014 summer\n".encode(),
             "e.png": png(4), "e.txt": b"txt wins", "e.caption": b"caption loses", "notes.txt": b"no image"}
    for name, data in files.items():
        put(f"{base}/side/{name}", data, options)
    cfg = SourceConfig(format="folder", urls=f"{base}/side", shard_size=2, storage_options=options)
    records = folder_records(cfg)
    assert sorted(records) == ["a", "b", "c", "e", "sub/d"]  # sidecars and notes.txt are not images
    assert {k: r.caption for k, r in records.items()} == {
        "a": "a red cat", "b": "caption file", "c": None, "e": "txt wins", "sub/d": "\u00e9t\u00e9 \u2014 summer"}
    assert records["sub/d"].image == png(3) and all(r.label is None and r.json is None for r in records.values())


def write_metadata(root, lines) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.jsonl").write_bytes(jsonl(lines))


def jsonl(rows) -> bytes:
    return "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in rows).encode()


def test_folder_metadata_jsonl(where):
    base, options = where
    for i, name in enumerate(["a.png", "sub/b.png", "sub/deep/c.png", "d.png", "e.png"]):
        put(f"{base}/meta/{name}", png(i), options)
    put(f"{base}/meta/metadata.jsonl", jsonl([{"file_name": "a.png", "text": "alpha", "label": 3, "score": 0.5},
                                              {"file_name": "sub/deep/c.png", "text": "gamma", "label": "7"},
                                              {"file_name": "d.png", "text": "from metadata", "label": 1}, ""]), options)
    put(f"{base}/meta/sub/metadata.jsonl", jsonl([{"file_name": "b.png", "text": "beta", "label": 2}]), options)
    put(f"{base}/meta/d.txt", b"sidecar beats metadata\n", options)
    cfg = SourceConfig(format="folder", urls=f"{base}/meta", shard_size=2, storage_options=options)
    records = folder_records(cfg)
    assert {k: (r.caption, r.label) for k, r in records.items()} == {
        "a": ("alpha", 3), "sub/b": ("beta", 2), "sub/deep/c": ("gamma", 7), "d": ("sidecar beats metadata", 1), "e": (None, None)}
    assert json.loads(records["a"].json) == {"file_name": "a.png", "text": "alpha", "label": 3, "score": 0.5}
    assert records["e"].json is None  # not in metadata: still read (HF imagefolder would drop it)
    by_column = folder_records(cfg.replace(caption_column="file_name"))
    assert by_column["sub/deep/c"].caption == "sub/deep/c.png" and by_column["d"].caption == "sidecar beats metadata"


def test_folder_metadata_matches_hf_imagefolder(tmp_path):
    import datasets

    root = tmp_path / "imgs"
    for i, name in enumerate(["x.png", "sub/y.png", "sub/z.png"]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(png(i))
    write_metadata(root, [{"file_name": n, "text": f"caption {n}", "label": i} for i, n in enumerate(["x.png", "sub/y.png", "sub/z.png"])])
    hf = datasets.load_dataset("imagefolder", data_dir=str(root), split="train").with_format("arrow")[:]
    expected = {str(Path(im["path"]).relative_to(root).with_suffix("")): (t, lab)
                for im, t, lab in zip(hf["image"].to_pylist(), hf["text"].to_pylist(), hf["label"].to_pylist())}
    ours = folder_records(SourceConfig(format="folder", urls=str(root)))
    assert {k: (r.caption, r.label) for k, r in ours.items()} == expected and len(expected) == 3


@pytest.mark.parametrize("line, match", [
    ({"file_name": "../escape.png", "text": "x"}, "relative path inside the folder"),
    ({"file_name": "/abs/a.png"}, "relative path inside the folder"),
    ({"file_name": "file:///etc/a.png"}, "relative path inside the folder"),
    ({"text": "no file name"}, "string 'file_name'"),
    ("not json", "string 'file_name'"),
])
def test_folder_bad_metadata_is_refused_before_reading(tmp_path, line, match):
    (tmp_path / "a.png").write_bytes(png(0))
    write_metadata(tmp_path, [line])
    with pytest.raises(ConfigError, match=match) as info:
        list_shards(SourceConfig(format="folder", urls=str(tmp_path)))
    assert "metadata.jsonl:1" in str(info.value)


def test_folder_metadata_missing_configured_column(tmp_path):
    (tmp_path / "a.png").write_bytes(png(0))
    write_metadata(tmp_path, [{"file_name": "a.png", "text": "x"}])
    with pytest.raises(ConfigError, match=r"caption column 'prompt' not found in .*metadata.jsonl; columns: \['file_name', 'text'\]"):
        list_shards(SourceConfig(format="folder", urls=str(tmp_path), caption_column="prompt"))


def test_hf_image_by_path_and_by_bytes(where, tmp_path):
    import datasets

    base, options = where
    urls = [f"{base}/files/{i}.png" for i in range(3)]
    for i, url in enumerate(urls):
        put(url, png(i), options)
    struct = datasets.Features({"image": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}})
    # an Image column whose bytes were never embedded (older save_to_disk, load_dataset caches)
    by_path = datasets.Dataset.from_dict({"image": [{"bytes": None, "path": u} for u in urls + [f"{base}/files/gone.png"]]},
                                         features=struct)
    by_path.save_to_disk(f"{base}/by_path", storage_options=options)
    by_bytes = datasets.Dataset.from_dict({"image": [png(i) for i in range(3)]}).cast_column("image", datasets.Image())
    by_bytes.save_to_disk(f"{base}/by_bytes", storage_options=options)
    for name, expected in (("by_path", [png(0), png(1), png(2), None]), ("by_bytes", [png(0), png(1), png(2)])):
        cfg = SourceConfig(format="hf", urls=f"{base}/{name}", storage_options=options)
        assert [r.image for s in list_shards(cfg) for r in read_shard(s, cfg)] == expected  # a missing file: one bad sample


def test_hf_imagefolder_load_and_save_to_disk(tmp_path):
    import datasets

    root = tmp_path / "imgs"
    for i in range(3):
        (root / f"{i}.png").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{i}.png").write_bytes(png(i))
    write_metadata(root, [{"file_name": f"{i}.png", "text": f"t{i}"} for i in range(3)])
    loaded = SourceConfig(format="hf", hf_load_args={"path": "imagefolder", "data_dir": str(root)})
    first = datasets.load_dataset("imagefolder", data_dir=str(root), split="train").with_format("arrow")[:1]["image"][0].as_py()
    assert first["bytes"] is None and first["path"].endswith("0.png")  # the loaded dataset holds paths only
    datasets.load_dataset("imagefolder", data_dir=str(root), split="train").save_to_disk(str(tmp_path / "saved"))
    saved = SourceConfig(format="hf", urls=str(tmp_path / "saved"))
    for cfg in (loaded, saved):
        records = [r for s in list_shards(cfg) for r in read_shard(s, cfg)]
        assert [(r.image, r.caption) for r in records] == [(png(i), f"t{i}") for i in range(3)]


def test_hf_saved_dataset_dict_splits(where):
    import datasets

    base, options = where
    splits = {name: datasets.Dataset.from_dict({"image": [png(i) for i in range(n)], "text": [f"{name}{i}" for i in range(n)]})
              for name, n in (("train", 3), ("test", 2))}
    datasets.DatasetDict(splits).save_to_disk(f"{base}/dd", storage_options=options)
    for split, expected in ((None, ["train0", "train1", "train2"]), ("test", ["test0", "test1"])):
        cfg = SourceConfig(format="hf", urls=f"{base}/dd", storage_options=options, **({"split": split} if split else {}))
        assert [r.caption for s in list_shards(cfg) for r in read_shard(s, cfg)] == expected
    with pytest.raises(ConfigError, match=r"source.split 'validation' is not a split of the DatasetDict .*; "
                                          r"available splits: \['train', 'test'\]"):
        list_shards(SourceConfig(format="hf", urls=f"{base}/dd", split="validation", storage_options=options))


def test_urls_string_brace_pattern_or_list(sample_tars):
    root, urls = sample_tars
    assert SourceConfig(urls="data/x-{000..009}.tar").urls == ["data/x-{000..009}.tar"]
    assert SourceConfig.from_dict({"urls": "a.tar"}).urls == ["a.tar"] and SourceConfig(urls="a.tar").to_dict()["urls"] == ["a.tar"]
    one = SourceConfig(urls=f"{root}/photos-{{000000..000001}}.tar")
    assert [s.url for s in list_shards(one)] == urls == [s.url for s in list_shards(one.replace(urls=urls))]
    for bad in ("", [""], ["a.tar", 3]):
        with pytest.raises(ConfigError, match="urls must be a non-empty string or a list of them"):
            SourceConfig(urls=bad)


@pytest.mark.parametrize("fmt, pattern", [("webdataset", "nope-*.tar"), ("webdataset", "nope-{000..001}.tar"),
                                          ("parquet", "nope.parquet"), ("parquet", "emptydir"), ("folder", "emptydir")])
def test_no_match_is_a_config_error_naming_the_pattern(tmp_path, fmt, pattern):
    (tmp_path / "emptydir").mkdir()
    url = str(tmp_path / pattern)
    with pytest.raises(ConfigError) as info:
        list_shards(SourceConfig(format=fmt, urls=url))
    message = str(info.value)
    assert message.startswith("source.urls matched no ") and f"(format {fmt}); check the path/pattern" in message
    assert str(tmp_path / "nope-000.tar" if "{" in pattern else url) in message and "\n" not in message


def test_some_missing_files_of_a_list_are_named(tmp_path):
    write_parquet(str(tmp_path / "a.parquet"), None, n=2)
    with pytest.raises(ConfigError, match=r"matched no files: \['.*b.parquet'\] \(format parquet\)"):
        list_shards(SourceConfig(format="parquet", urls=[str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]))


def test_column_mistakes_are_refused_before_reading(tmp_path):
    import datasets

    write_parquet(str(tmp_path / "p.parquet"), None, n=2)
    cfg = SourceConfig(format="parquet", urls=str(tmp_path / "p.parquet"))
    with pytest.raises(ConfigError, match=r"image column 'jpg' not found in .*p.parquet; "
                                          r"columns: \['key', 'image', 'caption', 'label'\]; set source.image_column"):
        list_shards(cfg.replace(image_column="jpg"))
    with pytest.raises(ConfigError, match="label column 'cls' not found"):
        check_source(cfg.replace(label_column="cls"))
    with pytest.raises(ConfigError, match=r"image column 'caption' of .* holds string; expected image bytes"):
        check_source(cfg.replace(image_column="caption"))
    datasets.Dataset.from_dict({"picture": [png(0)], "text": ["x"]}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match=r"image column 'image' not found in .*\.arrow; columns: \['picture', 'text'\]"):
        list_shards(SourceConfig(format="hf", urls=str(tmp_path / "hf")))
    loaded = SourceConfig(format="hf", hf_load_args={"path": "parquet", "data_files": str(tmp_path / "p.parquet")}, image_column="img")
    with pytest.raises(ConfigError, match="image column 'img' not found"):
        list_shards(loaded)


def test_a_bad_sample_stays_a_per_sample_problem(tmp_path):
    pq.write_table(pa.table({"image": [png(0), b"not an image", None], "label": ["3", "cat", None]}), tmp_path / "p.parquet")
    cfg = SourceConfig(format="parquet", urls=str(tmp_path))
    check_source(cfg)
    records = read_shard(list_shards(cfg)[0], cfg)
    assert [(r.image, r.label) for r in records] == [(png(0), 3), (b"not an image", None), (None, None)]


def test_folder_captions_reach_the_encoded_rows(tmp_path, vae, encode_job):
    from latentflow.read.latents import load_latents

    for i in range(3):
        (tmp_path / "in" / f"{i}.png").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / f"{i}.png").write_bytes(png(i, size=(40, 36)))
    (tmp_path / "in" / "0.txt").write_text("zero\n")
    write_metadata(tmp_path / "in", [{"file_name": "1.png", "text": "one", "label": 1}])
    encode_job(vae, SourceConfig(format="folder", urls=str(tmp_path / "in")), str(tmp_path / "out"))
    ds = load_latents(str(tmp_path / "out"))
    assert sorted(zip(ds["key"], ds["caption"], ds["label"])) == [("0", "zero", None), ("1", "one", 1), ("2", None, None)]
