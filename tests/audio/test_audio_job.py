"""Audio through the real Ray encode job and back: the shipped shard encoded by the shipped audio VAE equals a
direct encode of the same segments; bad files are error rows while the job goes on; the rows read back through
``load_dataset`` (typed Array2D), ``LatentDataset`` (latent + mask), ``decode_latents``, ``latentflow preview``
(wav) and ``inspect``; and the journey: a folder of sounds with caption sidecars -> the encode job ->
``load_dataset`` -> ``train_prior`` -> ``samples.wav`` decoded by PyAV. Other sources: Parquet bytes, an HF
``Audio(decode=False)`` dataset."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from latentflow.format.codec import Codec
from latentflow.read.latents import decode_latents, read_codec
from latentflow.sources.shards import SourceConfig
from tests.audio.helpers import ROOT, SHARD, assert_rows_equal_the_direct_encode, direct_encode, encode, parquet_rows

sys.path.insert(0, str(ROOT / "jobs"))
import train_prior  # noqa: E402  (the job script itself)

SOUNDS = ("coin2", "error2", "explosion1", "hit1", "jump3", "laser4")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shipped(ray_local, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("audio") / "out"
    assert encode(out, f"source.urls=[{SHARD}]") == 0
    return out


def test_the_ray_job_equals_a_direct_encode_of_the_same_segments(shipped):
    from latentflow.auto import AutoModel

    codec = read_codec(str(shipped))
    assert (codec.modality, codec.layout, codec.downsample_factor) == ("audio", "CT", 32)
    assert codec.processor.sample_rate == 22050 and codec.processor.channels == "mono" and codec.processor.hop_length == 32
    assert codec.decoder["decoder"] == "pyav" and codec.decoder["sample_rate"] == 22050 and "mono" in codec.decoder["remix"]
    assert codec.shapes == {"20480": {"latent": [8, 640]}}
    assert Codec.from_dict(json.loads(codec.to_json())) == codec

    model = AutoModel.from_pretrained("models/audio-vae-tiny").eval()
    segments, z = direct_encode(model, codec.processor, SourceConfig(urls=[SHARD], media="audio"))
    assert z.shape == (19, 8, 640)
    rows = parquet_rows(shipped)
    assert len(rows) == 19
    assert_rows_equal_the_direct_encode(rows, segments, z, sample_rate=22050)
    assert rows["explosion1/seg0001"]["start_time"] == pytest.approx(20480 / 22050)
    assert rows["coin2/seg0000"]["caption"].startswith("a short retro video game coin")

    assert encode(shipped, f"source.urls=[{SHARD}]") == 0  # a rerun: every shard already committed
    assert len(parquet_rows(shipped)) == 19


def test_rows_read_back_typed_masked_decoded_and_previewed(shipped, tmp_path, capsys):
    import datasets

    from latentflow.cli import main as cli
    from latentflow.read.dataset import LatentDataset

    ds = datasets.load_dataset(str(shipped), split="train")
    assert ds.features["latent"] == datasets.Array2D(shape=(8, 640), dtype="float32") and len(ds) == 19
    assert ds.features["valid_length"] == datasets.Value("int64")

    lat = LatentDataset(str(shipped))
    batch = next(lat.iter_batches(8, shuffle=False))
    assert batch["latent"].shape == (8, 8, 640) and batch["mask"].shape == (8, 640)
    assert torch.equal(batch["mask"].sum(1), batch["valid_length"]) and not batch["mask"].all()
    item = lat[0]
    assert item["mask"].dtype == torch.bool and item["source_key"] == item["key"].split("/seg")[0]

    waves = decode_latents(batch["latent"][:2], str(shipped))
    assert waves.shape == (2, 1, 640 * 32) and torch.isfinite(waves).all()

    assert cli(["preview", str(shipped), "--rows", "2", "--out", str(tmp_path / "pv")]) == 0
    wavs = sorted((tmp_path / "pv").glob("*.wav"))
    assert len(wavs) == 2
    with av.open(str(wavs[0])) as f:
        stream = f.streams.audio[0]
        assert (stream.rate, stream.channels) == (22050, 1)
        n = sum(frame.samples for frame in f.decode(stream))
    assert n == int(batch["valid_length"][0]) * 32  # the real audio only

    assert cli(["inspect", str(shipped)]) == 0
    text = capsys.readouterr().out
    assert "modality:     audio" in text and "(CT: (C, t))" in text and "0.9288 s at 22050 Hz, mono, hop 32" in text


def test_bad_audio_files_are_error_rows_and_the_counts_add_up_on_ray(ray_local, tmp_path):
    from latentflow.jobs.config import EncodeJobConfig
    from latentflow.jobs.runner import run_encode_job
    from tests.count_cases import CASES, assert_counts_add_up

    case = CASES["audio"]
    expected = case.write(tmp_path / "src")
    model_dir = str(tmp_path / "audio-vae")
    case.model().save_pretrained(model_dir)
    out = str(tmp_path / "out")
    config = EncodeJobConfig.from_dict({
        "model": model_dir, "output": out, "source": {"format": "folder", "urls": [str(tmp_path / "src")]},
        "batch_size": 4, "num_actors": 1, "max_error_rate": 1.0, "shard_retries": 0, **case.job,
    })
    summary = run_encode_job(config, progress=False)
    assert (summary.rows, summary.errors, summary.samples_seen) == (expected.rows, len(expected.errors), expected.samples)
    assert_counts_add_up(out, expected)
    movie = parquet_rows(Path(out))["movie/seg0001"]  # the AAC track of an mp4, 16 kHz like the model
    assert movie["sample_rate"] == 16000 and movie["valid_length"] == 1600 // 8  # 0.1 s in hops of 8, all real


def test_journey_folder_with_captions_to_samples_wav(ray_local, tmp_path):
    import datasets

    from latentflow.training.cli import run_job

    folder = tmp_path / "sounds"
    folder.mkdir()
    for name in SOUNDS:
        shutil.copy(ROOT / "data" / "audio" / f"{name}.wav", folder / f"{name}.wav")
        (folder / f"{name}.txt").write_text(f"the {name} sound\n")
    out = tmp_path / "latents"
    assert encode(out, "source.format=folder", f"source.urls=[{folder}]") == 0

    ds = datasets.load_dataset(str(out), split="train")
    assert isinstance(ds.features["latent"], datasets.Array2D) and ds.features["latent"].shape == (8, 640)
    assert sorted(set(ds["caption"])) == sorted(f"the {n} sound" for n in SOUNDS)
    assert len(ds) == 7  # explosion1 (1.55 s) gives 2 segments of 0.93 s; the 5 others are shorter: 1 padded each
    assert np.isfinite(np.asarray(ds.with_format("numpy")["latent"])).all()

    run_dir = tmp_path / "prior"
    assert run_job("prior", train_prior.__doc__, ["--config", str(ROOT / "configs/train/flow_prior_audio.yaml"), f"data.path={out}",
                                 f"train.output_dir={run_dir}", "train.max_steps=3", "train.log_every=1",
                                 "train.checkpoint_every=3", "train.eval_every=3", "sample.num_samples=2",
                                 "sample.steps=2", "data.batch_size=4"]) == 0
    with av.open(str(run_dir / "samples.wav")) as f:
        stream = f.streams.audio[0]
        samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in f.decode(stream)])
        assert (stream.rate, stream.channels) == (22050, 1)
    assert len(samples) == 2 * 640 * 32 + round(0.25 * 22050)  # two decoded samples, 0.25 s of silence between


def test_parquet_bytes_and_hf_audio_sources_encode_alike(tmp_path):
    import datasets
    import pyarrow as pa

    from latentflow.auto import AutoModel
    from latentflow.encode.local import encode_locally
    from latentflow.media.config import AudioProcessorConfig

    files = {n: (ROOT / "data" / "audio" / f"{n}.wav").read_bytes() for n in SOUNDS[:3]}
    pq.write_table(pa.table({"key": list(files), "audio": list(files.values()), "caption": [f"c {n}" for n in files]}),
                   tmp_path / "a.parquet")
    hf = datasets.Dataset.from_dict({"key": list(files), "audio": [{"bytes": b, "path": f"{n}.wav"} for n, b in files.items()]})
    hf.cast_column("audio", datasets.Audio(decode=False)).save_to_disk(str(tmp_path / "hf"))

    model = AutoModel.from_pretrained("models/audio-vae-tiny").eval()
    cfg = AudioProcessorConfig(segment_seconds=0.25)
    outs = {}
    for fmt, url in (("parquet", tmp_path / "a.parquet"), ("hf", tmp_path / "hf")):
        source = SourceConfig(format=fmt, urls=[str(url)], image_column="audio", key_column="key")
        encode_locally(model, source, str(tmp_path / fmt), processor_config=cfg, model_ref="models/audio-vae-tiny")
        outs[fmt] = parquet_rows(tmp_path / fmt)
    assert sorted(outs["parquet"]) == sorted(outs["hf"]) == sorted(f"{n}/seg0000" for n in files)
    for key, row in outs["parquet"].items():
        np.testing.assert_array_equal(np.asarray(row["latent"]), np.asarray(outs["hf"][key]["latent"]))
    assert outs["parquet"]["coin2/seg0000"]["caption"] == "c coin2"


def test_duration_buckets_are_one_typed_config_each(tmp_path):
    import datasets

    from latentflow.auto import AutoModel
    from latentflow.encode.local import encode_locally
    from latentflow.media.config import AudioProcessorConfig
    from latentflow.read.dataset import LatentDataset

    model = AutoModel.from_pretrained("models/audio-vae-tiny").eval()
    cfg = AudioProcessorConfig(segment_seconds=1.0, duration_buckets=[0.25, 0.5], short_audio="skip")
    codec = encode_locally(model, SourceConfig(urls=[SHARD]), str(tmp_path / "out"), processor_config=cfg,
                           model_ref="models/audio-vae-tiny")
    assert codec.bucketed and codec.shapes == {"5504": {"latent": [8, 172]}, "11040": {"latent": [8, 345]},
                                               "22048": {"latent": [8, 689]}}
    sizes = {}
    for bucket, shape in codec.shapes.items():
        ds = datasets.load_dataset(str(tmp_path / "out"), bucket, split="train")
        assert ds.features["latent"] == datasets.Array2D(shape=tuple(shape["latent"]), dtype="float32")
        sizes[bucket] = len(ds)
    assert sizes == {"5504": 5, "11040": 6, "22048": 3} and LatentDataset(str(tmp_path / "out")).bucket_rows == sizes
