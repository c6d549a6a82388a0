"""`latentflow preview`, `inspect`'s dtypes and shapes, clip fields in LatentDataset, preview_fps, load_hint,
the codec-mismatch message and the unknown-model message: on small outputs encoded in-process (no Ray)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentflow.cli import main
from latentflow.encode.codec_builder import build_codec
from latentflow.encode.local import encode_locally
from latentflow.errors import CodecMismatchError
from latentflow.format.codec import ModelRef, StoreConfig, check_compatible
from latentflow.hub import model_not_found_message, models_dir, shipped_models
from latentflow.media.config import ImageProcessorConfig, VideoProcessorConfig
from latentflow.read.dataset import LatentDataset
from latentflow.read.inspect import inspect
from latentflow.read.latents import decode_latents, load_hint, read_codec
from latentflow.read.preview import preview_fps
from latentflow.sources.shards import SourceConfig
from latentflow.store.writer import ShardWriter, finalize, prepare_output
from tests.data.test_readers import write_output

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "data" / "photos" / "photos-000000.tar"
CLIPS = ROOT / "data" / "videos" / "bbb-000000.tar"


def tiny_vae(tmp_path: Path, seed: int = 0):
    from latentflow.models.vae import VariationalAutoencoderConfig, VariationalAutoencoderModel

    torch.manual_seed(seed)
    model = VariationalAutoencoderModel(VariationalAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4)).eval()
    model.save_pretrained(str(tmp_path / f"vae-{seed}"))
    return model, str(tmp_path / f"vae-{seed}")


@pytest.fixture(scope="module")
def image_output(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("images")
    model, weights = tiny_vae(tmp)
    out = str(tmp / "out")
    encode_locally(model, SourceConfig(urls=[str(PHOTOS)]), out, ImageProcessorConfig(resolution=32),
                   model_ref=ModelRef(weights), batch_size=4)
    return out, model


@pytest.fixture(scope="module")
def video_output(tmp_path_factory):
    from latentflow.models.causal_video_vae import CausalVideoAutoencoderKLConfig, CausalVideoAutoencoderKLModel

    tmp = tmp_path_factory.mktemp("video")
    torch.manual_seed(0)
    model = CausalVideoAutoencoderKLModel(CausalVideoAutoencoderKLConfig(
        base_dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(False, True))).eval()
    model.save_pretrained(str(tmp / "video-vae"))
    out = str(tmp / "out")
    video = VideoProcessorConfig(num_frames=9, resolution=32, clip_mode="uniform", num_clips=2)
    encode_locally(model, SourceConfig(urls=[str(CLIPS)], media="video"), out, video, model_ref=ModelRef(str(tmp / "video-vae")))
    return out


def test_preview_writes_the_decoded_images_of_the_first_rows(image_output, tmp_path, capsys):
    out, _ = image_output
    dest = tmp_path / "preview"
    assert main(["preview", out, "--rows", "3", "--out", str(dest)]) == 0
    files = sorted(dest.glob("*.png"))
    assert len(files) == 3 and "wrote 3 previews" in capsys.readouterr().out
    # each PNG is the decoder (rebuilt from the codec alone) applied to that row's stored latent
    ds = LatentDataset(out)
    for i, path in enumerate(files):
        item = ds[i]
        assert path.name.startswith(f"{i:04d}-")
        expected = decode_latents(item["latent"][None], out)  # (1, 3, 32, 32) in [-1, 1]
        want = ((expected[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(np.asarray(Image.open(path)), want)


def test_preview_writes_one_mp4_per_clip_at_its_fps(video_output, tmp_path):
    import av

    dest = tmp_path / "clips"
    assert main(["preview", video_output, "--rows", "2", "--out", str(dest)]) == 0
    files = sorted(dest.glob("*.mp4"))
    assert len(files) == 2
    row_fps = LatentDataset(video_output)[0]["fps"]
    with av.open(str(files[0])) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert len(frames) == 9 and frames[0].shape == (32, 32, 3)
        assert float(stream.average_rate) == pytest.approx(row_fps, rel=1e-3)


def test_preview_of_a_folder_that_is_no_output_fails_with_one_line(tmp_path, capsys):
    assert main(["preview", str(tmp_path), "--out", str(tmp_path / "p")]) == 1
    assert "is not a latentflow output" in capsys.readouterr().err


def test_dataset_items_and_batches_carry_the_clip_fields(video_output):
    ds = LatentDataset(video_output)
    item = ds[0]
    assert isinstance(item["video_key"], str) and item["video_key"]
    assert item["num_frames"] == 9 and item["clip_index"] in (0, 1)
    assert isinstance(item["start_time"], float) and item["fps"] > 0
    batch = next(iter(ds.iter_batches(4, shuffle=False)))
    assert len(batch["video_key"]) == 4 and batch["clip_index"].dtype == torch.int64
    assert batch["start_time"].dtype == torch.float64 and batch["fps"].shape == (4,)
    # the same values as the Parquet copy of those rows
    import datasets

    rows = datasets.load_dataset(video_output, split="train").with_format("numpy")[:]
    by_key = {k: i for i, k in enumerate(rows["key"])}
    for key, start, clip in zip(batch["key"], batch["start_time"].tolist(), batch["clip_index"].tolist()):
        assert rows["start_time"][by_key[key]] == pytest.approx(start) and rows["clip_index"][by_key[key]] == clip


def test_image_items_have_no_clip_fields(image_output):
    item = LatentDataset(image_output[0])[0]
    assert not {"video_key", "clip_index", "start_time", "fps", "num_frames"} & set(item)


def _clip_output(tmp_path, rates):
    """A video output with native frame rates (processor fps None) and one row per rate."""
    from latentflow.models.causal_video_vae import CausalVideoAutoencoderKLConfig, CausalVideoAutoencoderKLModel

    model = CausalVideoAutoencoderKLModel(CausalVideoAutoencoderKLConfig(
        base_dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, temperal_downsample=(False, True))).eval()
    codec = build_codec(model, VideoProcessorConfig(num_frames=9, resolution=32), StoreConfig(), "x.tar")
    out = str(tmp_path / "clips")
    prepare_output(out, codec)
    n = len(rates)
    ShardWriter(out, codec).write_shard("s", {
        "key": [f"v{i}/0" for i in range(n)], "index_in_shard": list(range(n)),
        "latent": np.zeros((n, 4, 5, 8, 8), np.float32), "video_key": [f"v{i}" for i in range(n)],
        "clip_index": [0] * n, "start_time": [0.0] * n, "fps": list(rates), "num_frames": [9] * n, "padded_frames": [0] * n})
    finalize(out, codec)
    return out


def test_preview_fps_takes_the_first_rows_rate_and_warns_when_rows_disagree(tmp_path, caplog):
    same = _clip_output(tmp_path / "a", [25.0, 25.0])
    with caplog.at_level(logging.WARNING, logger="latentflow.read.preview"):
        assert preview_fps(same) == 25.0
    assert not caplog.records
    mixed = _clip_output(tmp_path / "b", [25.0, 30000 / 1001])
    with caplog.at_level(logging.WARNING, logger="latentflow.read.preview"):
        assert preview_fps(mixed) == 25.0  # never the average (27.485)
    [record] = caplog.records
    assert "different frame rates" in record.getMessage() and "25" in record.getMessage()


def test_inspect_shows_each_arrays_dtype(tmp_path):
    from latentflow.models.vq_autoencoder import VectorQuantizedAutoencoderModel, VQAutoencoderConfig

    model = VectorQuantizedAutoencoderModel(VQAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4,
                                                                quantizer={"name": "vq", "configuration": {"codebook_size": 64}})).eval()
    codec = build_codec(model, ImageProcessorConfig(resolution=32), StoreConfig(quantized=True), "x.tar")
    out = str(tmp_path / "vq")
    prepare_output(out, codec)
    ShardWriter(out, codec).write_shard("s", {"key": ["a", "b"], "indices": np.zeros((2, 16, 16), codec.index_dtype),
                                              "latent": np.random.default_rng(0).normal(size=(2, 4, 16, 16)).astype(np.float32)})
    finalize(out, codec)
    info = inspect(out)
    assert info["dtypes"] == {"indices": str(codec.index_dtype), "latent": "float32"}
    assert str(codec.index_dtype) != "float32"
    assert main(["inspect", out]) == 0


def test_inspect_fills_shapes_from_committed_rows_when_the_codec_has_none(tmp_path, capsys):
    from latentflow.models.vae import VariationalAutoencoderConfig, VariationalAutoencoderModel

    vae = VariationalAutoencoderModel(VariationalAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4)).eval()
    out = str(tmp_path / "bucketed")
    write_output(vae, out, [4], buckets=True)
    codec = read_codec(out)
    committed = sorted(LatentDataset(out).bucket_rows)
    recorded = {b: codec.shapes[b] for b in committed}  # this writer records every bucket's shapes: the reference
    assert len(committed) == 2 and len(codec.shapes) > 2
    # a codec that records no shapes, as the diffusers bridge writes: rewrite latentflow.json without them
    meta = json.loads((Path(out) / "latentflow.json").read_text())
    meta.get("codec", meta)["shapes"] = {}
    (Path(out) / "latentflow.json").write_text(json.dumps(meta))
    assert read_codec(out).shapes == {} and read_codec(out).fingerprint == codec.fingerprint
    assert inspect(out)["shapes"] == recorded  # from the Zarr groups
    import shutil

    shutil.rmtree(Path(out) / "zarr")
    assert inspect(out)["shapes"] == recorded  # from the Parquet schemas


def test_load_hint_names_each_buckets_typed_config(tmp_path):
    from latentflow.models.vae import VariationalAutoencoderConfig, VariationalAutoencoderModel

    vae = VariationalAutoencoderModel(VariationalAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4)).eval()
    bucketed, flat = str(tmp_path / "b"), str(tmp_path / "f")
    write_output(vae, bucketed, [6], buckets=True)
    write_output(vae, flat, [3])
    hint = load_hint(bucketed)
    buckets = sorted(LatentDataset(bucketed).bucket_rows)
    assert len(buckets) == 2
    import datasets

    for bucket in buckets:
        assert f'datasets.load_dataset("{bucketed}", "{bucket}", split="train")' in hint
        ds = datasets.load_dataset(bucketed, bucket, split="train")  # the hint's line works, typed
        assert type(ds.features["latent"]).__name__ == "Array3D"
    assert f'datasets.load_dataset("{flat}", split="train")' in load_hint(flat)


def test_codec_mismatch_leads_with_the_model(tmp_path):
    proc = ImageProcessorConfig(resolution=32)
    a, _ = tiny_vae(tmp_path, seed=0)
    b, _ = tiny_vae(tmp_path, seed=1)
    old = build_codec(a, proc, StoreConfig(), "x.tar", model_ref="models/a")
    new = build_codec(b, dataclasses.replace(proc, crop="random"), StoreConfig(), "x.tar", model_ref="models/b")
    with pytest.raises(CodecMismatchError) as err:
        check_compatible(old, new)
    text = str(err.value)
    inner = text.split("(", 1)[1]
    assert inner.startswith("model changed: VariationalAutoencoderModel (models/a) -> VariationalAutoencoderModel (models/b)")
    assert text.index("weights_sha256") < text.index("processor.crop")


def test_an_unknown_model_name_lists_the_shipped_ones():
    names = shipped_models()
    assert {"kl-f8", "transvae-tiny", "video-vae-tiny"} <= set(names)
    assert names == sorted(p.name for p in models_dir().iterdir() if (p / "config.json").is_file())
    message = model_not_found_message("kl-f16")
    assert "'kl-f16' not found" in message and all(n in message for n in names)
