"""Video media in every source (WebDataset, Parquet, folder, HF ``Video``), locally and on a real S3
server (moto), through to clips; and the shipped WebDataset shard."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from latentflow.errors import ConfigError
from latentflow.media.config import VideoProcessorConfig
from latentflow.media.video import VideoProcessor
from latentflow.sources.records import media_kind
from latentflow.sources.shards import SourceConfig, list_shards, read_shard
from tests.data.storage_helpers import put, tar_bytes
from tests.video_samples import read_index, write_video

SHIPPED_SHARD = Path(__file__).resolve().parents[2] / "data" / "videos" / "bbb-000000.tar"
CONTAINERS = {"mp4": ("libx264", "mp4"), "webm": ("libvpx-vp9", "webm"), "mkv": ("mpeg4", "matroska"), "mov": ("libx264", "mov")}


@pytest.fixture(scope="module")
def videos() -> dict[str, bytes]:
    """One 9-frame video per container extension, 10 fps, 48x64."""
    return {ext: write_video(fps=10, num_frames=9, codec=codec, container=fmt) for ext, (codec, fmt) in CONTAINERS.items()}


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    """``(base_url, storage_options)`` on local disk or on the moto S3 server."""
    return (str(tmp_path), None) if request.param == "local" else request.getfixturevalue("s3")


def records_of(cfg: SourceConfig) -> list:
    return [r for s in list_shards(cfg) for r in read_shard(s, cfg)]


def first_clip_indices(data: bytes) -> list[int]:
    clip = VideoProcessor(VideoProcessorConfig(num_frames=9, resolution=32), 8, 4).process_clips(data, "v")[0]
    return [read_index(f) for f in clip.pixel_values.transpose(1, 0, 2, 3)]


def test_media_kind_from_names_and_bytes(videos):
    assert [media_kind(f"a/b.{ext}") for ext in ("mp4", "WEBM", "mkv", "mov", "jpg", "png")] == ["video"] * 4 + ["image"] * 2
    assert {ext: media_kind(data=data) for ext, data in videos.items()} == dict.fromkeys(videos, "video")
    assert media_kind(data=b"\x89PNG\r\n\x1a\n" + bytes(8)) == "image" and media_kind() == "image"


def test_webdataset_video_members(where, videos):
    base, options = where
    members = []
    for i, ext in enumerate(CONTAINERS):
        members += [(f"s{i}.{ext}", videos[ext]), (f"s{i}.txt", f"clip {ext}".encode()), (f"s{i}.cls", str(i).encode()),
                    (f"s{i}.json", json.dumps({"ext": ext}).encode())]
    members += [("p.png", b"\x89PNG\r\n\x1a\n"), ("p.txt", b"a picture")]  # images and videos may share a shard
    put(f"{base}/wds/clips-000000.tar", tar_bytes(members), options)
    cfg = SourceConfig(format="webdataset", urls=f"{base}/wds/clips-{{000000..000000}}.tar", storage_options=options)
    records = records_of(cfg)
    assert [(r.key, r.media, r.caption, r.label) for r in records] == [
        (f"s{i}", "video", f"clip {ext}", i) for i, ext in enumerate(CONTAINERS)] + [("p", "image", "a picture", None)]
    assert [r.image for r in records[:4]] == list(videos.values())
    assert [json.loads(r.json) for r in records[:4]] == [{"ext": ext} for ext in CONTAINERS]
    assert [first_clip_indices(r.image) for r in records[:4]] == [list(range(9))] * 4


def test_parquet_video_column(where, videos):
    base, options = where
    buf = io.BytesIO()
    pq.write_table(pa.table({"key": list(videos), "video": list(videos.values()), "caption": [f"c {k}" for k in videos]}), buf)
    put(f"{base}/pq/v.parquet", buf.getvalue(), options)
    cfg = SourceConfig(format="parquet", urls=f"{base}/pq/v.parquet", image_column="video", storage_options=options)
    records = records_of(cfg)
    assert [(r.key, r.media, r.caption, r.image) for r in records] == [(k, "video", f"c {k}", v) for k, v in videos.items()]


def test_folder_of_videos_with_caption_sidecars_and_metadata(where, videos):
    base, options = where
    put(f"{base}/vids/a.mp4", videos["mp4"], options)
    put(f"{base}/vids/a.txt", b"a rabbit\n", options)
    put(f"{base}/vids/sub/b.webm", videos["webm"], options)
    put(f"{base}/vids/sub/b.caption", b"a second rabbit", options)
    put(f"{base}/vids/c.mov", videos["mov"], options)
    put(f"{base}/vids/d.jpg", b"\xff\xd8\xff", options)
    put(f"{base}/vids/metadata.jsonl", b'{"file_name": "c.mov", "text": "from metadata", "label": 7}\n', options)
    cfg = SourceConfig(format="folder", urls=f"{base}/vids", shard_size=2, storage_options=options)
    assert len(list_shards(cfg)) == 2  # 4 files, 2 per shard
    records = records_of(cfg)
    assert [(r.key, r.media, r.caption, r.label) for r in records] == [
        ("a", "video", "a rabbit", None), ("c", "video", "from metadata", 7), ("d", "image", None, None),
        ("sub/b", "video", "a second rabbit", None)]
    assert records[0].image == videos["mp4"] and records[3].image == videos["webm"]


def test_hf_video_feature_by_path_and_by_bytes(tmp_path, videos):
    import datasets

    paths = []
    for ext in ("mp4", "webm"):
        (tmp_path / f"v.{ext}").write_bytes(videos[ext])
        paths.append(str(tmp_path / f"v.{ext}"))
    by_path = datasets.Dataset.from_dict({"video": paths, "text": ["one", "two"]}).cast_column("video", datasets.Video())
    assert by_path.with_format("arrow")[:1]["video"][0].as_py() == {"bytes": None, "path": paths[0]}  # a local file: path only
    by_path.save_to_disk(str(tmp_path / "by_path"))
    saved = datasets.load_from_disk(str(tmp_path / "by_path")).with_format("arrow")[:1]["video"][0].as_py()
    assert saved == {"bytes": videos["mp4"], "path": "v.mp4"}  # datasets 5.2's save_to_disk embeds the bytes
    by_bytes = datasets.Dataset.from_dict({"video": [{"bytes": videos["mkv"], "path": None}], "text": ["three"]},
                                          features=datasets.Features({"video": datasets.Video(), "text": datasets.Value("string")}))
    by_bytes.save_to_disk(str(tmp_path / "by_bytes"))
    for name, expected in (("by_path", [(videos["mp4"], "one"), (videos["webm"], "two")]), ("by_bytes", [(videos["mkv"], "three")])):
        records = records_of(SourceConfig(format="hf", urls=str(tmp_path / name), image_column="video"))
        assert [(r.image, r.caption, r.media) for r in records] == [(v, c, "video") for v, c in expected]


def test_hf_videofolder_load_dataset(tmp_path, videos):
    root = tmp_path / "vf"
    root.mkdir()
    for i, ext in enumerate(("mp4", "mov")):
        (root / f"{i}.{ext}").write_bytes(videos[ext])
    (root / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": f"{i}.{e}", "text": f"t{i}"}) + "\n" for i, e in enumerate(("mp4", "mov"))))
    import datasets

    first = datasets.load_dataset("videofolder", data_dir=str(root), split="train").with_format("arrow")[:1]["video"][0].as_py()
    assert first["bytes"] is None and first["path"].endswith("0.mp4")  # the loaded dataset holds paths: read by path
    cfg = SourceConfig(format="hf", hf_load_args={"path": "videofolder", "data_dir": str(root)}, image_column="video")
    records = records_of(cfg)
    assert [(r.image, r.caption, r.media) for r in records] == [(videos["mp4"], "t0", "video"), (videos["mov"], "t1", "video")]


def test_the_shipped_shard_reads_into_clips():
    cfg = SourceConfig(format="webdataset", urls=str(SHIPPED_SHARD))
    records = records_of(cfg)
    assert [r.key for r in records] == [f"bbb-clip{i:03d}" for i in range(4)]
    assert all(r.media == "video" and r.caption.startswith("A big grey rabbit") for r in records)
    assert [json.loads(r.json)["start_frame"] for r in records] == [0, 33, 66, 99]
    proc = VideoProcessor(VideoProcessorConfig(num_frames=33, resolution=128, buckets=True), 8, 4)
    clips = [c for r in records for c in proc.process_clips(r.image, r.key)]
    # the default bucket_step ("auto", 2 x 8) gives an even latent grid: 96x160 -> 12x20 (step 8 gave 96x168 -> 12x21)
    assert [(c.key, c.bucket, c.original_size) for c in clips] == [
        (f"bbb-clip{i:03d}/clip0000", (33, 96, 160), (144, 256)) for i in range(4)]


def test_source_media_chooses_the_kind(tmp_path, videos):
    jpg = b"\xff\xd8\xff\xe0thumbnail"
    tar = tmp_path / "both-000000.tar"
    tar.write_bytes(tar_bytes([("a.jpg", jpg), ("a.mp4", videos["mp4"]), ("b.jpg", jpg)]))
    cfg = SourceConfig(format="webdataset", urls=str(tar))
    picked = {media: [(r.key, r.media, r.image) for r in records_of(cfg.replace(media=media))] for media in (None, "image", "video")}
    assert picked[None] == [("a", "video", videos["mp4"]), ("b", "image", jpg)]  # a video and its thumbnail: the video
    assert picked["image"] == [("a", "image", jpg), ("b", "image", jpg)]
    assert picked["video"] == [("a", "video", videos["mp4"]), ("b", "image", None)]  # no video: a missing_video row later
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name, data in (("a.mp4", videos["mp4"]), ("b.jpg", jpg), ("c.webm", videos["webm"])):
        (folder / name).write_bytes(data)
    listed = {media: [r.key for r in records_of(SourceConfig(format="folder", urls=str(folder), media=media))]
              for media in (None, "image", "video")}
    assert listed == {None: ["a", "b", "c"], "image": ["b"], "video": ["a", "c"]}
    with pytest.raises(ConfigError, match=r"matched no media files \(mp4/webm/mkv/mov\)"):
        list_shards(SourceConfig(format="folder", urls=str(folder / "none"), media="video"))
    with pytest.raises(ConfigError, match=r"media must be one of \[None, 'image', 'video', 'audio'\], got: 'text'"):
        SourceConfig(media="text", urls=["a.tar"])
