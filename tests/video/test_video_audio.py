"""Joint audio + video clips (issue #21 item 6): each clip row carries the audio latents of exactly its time span.

The processor checks use a video whose lossless PCM track is a ramp (every sample tells the time it plays at), so
alignment is read from the samples themselves, not from the code under test: the span's first sample plays at the
clip's first frame's pts within one sample, its duration is the clip's within one hop, whatever the audio stream's
start offset. The Ray job (the shipped ``configs/encode/video_audio.yaml``, Big Buck Bunny's 5.1 AAC track) stores
latents equal to a direct encode of the same spans, commits both columns together, reads back typed through
``load_dataset`` and ``LatentDataset`` and decodes through ``decode_latents(..., column="audio")``; a video with no
audio track is an error row when the track is required and a row with ``audio_valid_length`` 0 when it is not.
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from latentflow.auto import AutoModel
from latentflow.encode.shard import build_processor, process_record
from latentflow.errors import ConfigError
from latentflow.format.codec import Codec
from latentflow.jobs.config import EncodeJobConfig
from latentflow.media.audio_processor import AudioProcessor
from latentflow.media.config import AudioProcessorConfig, VideoProcessorConfig
from latentflow.media.video import VideoProcessor
from latentflow.sources.records import Record, SampleError
from tests.video_samples import RAMP_RATE, ramp_value_time, read_index, write_video, write_video_with_ramp

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "encode" / "video_audio.yaml"
HOP = 32
FPS = 25


def processor(required: bool = True, **video) -> VideoProcessor:
    audio = AudioProcessor(AudioProcessorConfig(), hop_length=HOP, sample_rate=RAMP_RATE, channels=1)
    config = VideoProcessorConfig(**{"fps": FPS, "num_frames": 9, "clip_mode": "uniform", "num_clips": 3, "resolution": 32, **video})
    return VideoProcessor(config, downsample_factor=8, temporal_stride=4, audio=audio, audio_required=required)


@pytest.mark.parametrize("offset", [0.0, 0.2])
def test_each_clip_s_audio_plays_exactly_over_the_clip_s_frames(offset):
    data = write_video_with_ramp(fps=FPS, num_frames=40, audio_offset_s=offset)
    clips = processor().process_clips(data, "v")
    assert [c.start_time for c in clips] == pytest.approx([0.0, 0.64, 1.24])
    for clip in clips:
        first_frame = read_index(clip.pixel_values[:, 0])
        assert clip.start_time == pytest.approx(first_frame / FPS)
        audio, wave = clip.audio, clip.audio.waveform[0]
        assert audio.start_time == pytest.approx(clip.start_time, abs=1 / RAMP_RATE)
        assert abs(audio.duration - clip.num_frames / FPS) <= HOP / RAMP_RATE / 2  # whole hops, the nearest
        real = np.flatnonzero(np.arange(wave.size) / RAMP_RATE + audio.start_time >= offset)  # the track is playing
        silent = wave[: real[0]]
        assert not silent.any()  # before the track's first sample: the silence a player renders
        # the sample at each position plays at the clip's start + position / rate: read from the ramp itself
        played = np.array([ramp_value_time(v, offset) for v in wave[real]])
        np.testing.assert_allclose(played, clip.start_time + real / RAMP_RATE, atol=0.5 / RAMP_RATE)
        assert audio.valid_length == wave.size // HOP


def test_audio_that_ends_before_the_clip_is_padding_the_mask_excludes():
    data = write_video_with_ramp(fps=FPS, num_frames=40, audio_seconds=1.4)
    last = processor().process_clips(data, "v")[-1]  # 1.24 s + 0.36 s: the last 0.2 s have no audio
    real = int(round((1.4 - last.start_time) * RAMP_RATE))
    assert not last.audio.waveform[0, real + 1:].any() and last.audio.waveform[0, real - 1] != 0
    assert last.audio.valid_length == -(-real // HOP) < last.audio.waveform.shape[1] // HOP


def test_a_video_without_audio_is_an_error_row_when_required_and_silence_when_not():
    data = write_video(fps=FPS, num_frames=30)
    with pytest.raises(SampleError) as err:
        processor(required=True).process_clips(data, "mute")
    assert err.value.error_type == "no_audio_stream"
    record = Record("mute", data, "a caption", None, None, 0)
    rows = process_record(record, processor(required=False))
    assert len(rows) == 3 and all(r.track.valid_length == 0 and not r.track.waveform.any() for r in rows)
    assert [r.track.start_time for r in rows] == [r.clip.start_time for r in rows]


def test_the_job_config_refuses_an_audio_track_it_cannot_align():
    base = {"model": "video-vae-tiny", "source": {"urls": ["data/videos"]}, "audio_track": {"model": "audio-vae-tiny"}}
    with pytest.raises(ConfigError, match="set a video section"):
        EncodeJobConfig.from_dict(base)
    with pytest.raises(ConfigError, match="needs video.fps"):
        EncodeJobConfig.from_dict({**base, "video": {"num_frames": 9}})
    with pytest.raises(ConfigError, match="unique"):
        EncodeJobConfig.from_dict({**base, "video": {"fps": 25}, "audio_track": {"model": "audio-vae-tiny", "name": "latent"}})


# ---- the Ray job -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def joint(ray_local, tmp_path_factory):
    """The shipped joint config on Big Buck Bunny (5.1 AAC) plus one video with no audio track, optional."""
    sys.path.insert(0, str(ROOT / "jobs"))
    import encode_dataset  # the job script itself

    src = tmp_path_factory.mktemp("videos")
    shutil.copy(ROOT / "data" / "videos" / "bigbuckbunny.mp4", src / "bigbuckbunny.mp4")
    with tarfile.open(ROOT / "data" / "videos" / "bbb-000000.tar") as tar:  # its clips have no audio stream
        (src / "mute.mp4").write_bytes(tar.extractfile("bbb-clip000.mp4").read())
    out = tmp_path_factory.mktemp("joint") / "out"
    code = encode_dataset.main(["--config", str(CONFIG), "--no-progress", f"output={out}", f"source.urls=[{src}]",
                                "audio_track.required=false", "num_actors=1"])
    assert code == 0
    return src, out


def test_the_job_stores_each_clip_s_audio_latents_equal_to_a_direct_encode(joint):
    import datasets

    src, out = joint
    ds = datasets.load_dataset(str(out), split="train")
    assert type(ds.features["audio"]).__name__ == "Array2D" and type(ds.features["latent"]).__name__ == "Array4D"
    rows = {r["key"]: r for r in ds}
    assert sorted(rows) == [f"{v}/clip{i:04d}" for v in ("bigbuckbunny", "mute") for i in range(4)]
    codec = Codec.from_dict(json.loads((out / "latentflow.json").read_text())["codec"])
    track = codec.track("audio")
    assert track.codec.model.ref.location.endswith("audio-vae-tiny") and track.codec.layout == "CT" and not track.required
    assert track.codec.processor.channels == "mono" and track.codec.processor.sample_rate == 22050

    # the reference: the same spans cut by the processor the codec records, encoded by the audio model directly
    video = build_processor(codec.processor, codec.downsample_factor, audio_track=track)
    clips = video.process_clips((src / "bigbuckbunny.mp4").read_bytes(), "bigbuckbunny")
    audio_model = AutoModel.from_codec(track.codec).eval()
    with torch.inference_mode():
        expected = audio_model.encode(torch.from_numpy(np.stack([c.audio.waveform for c in clips]))).latent_dist.mean
    for clip, want in zip(clips, expected):
        row = rows[clip.key]
        torch.testing.assert_close(torch.tensor(row["audio"]), want, rtol=1e-4, atol=1e-5)
        assert row["audio_start_time"] == pytest.approx(row["start_time"], abs=HOP / 22050)
        assert abs(row["audio_duration"] - row["num_frames"] / row["fps"]) <= HOP / 22050
        assert row["audio_valid_length"] == np.asarray(row["audio"]).shape[-1]  # the 5.3 s track covers every clip
    for i in range(4):
        assert rows[f"mute/clip{i:04d}"]["audio_valid_length"] == 0  # optional: kept, all masked

    # one commit covers both columns: the marker's checksum and the Zarr group hold the audio too
    [marker] = [json.loads(p.read_text()) for p in (out / "_done").glob("*.json")]
    assert marker["rows"] == 8
    [parquet] = list((out / "parquet").glob("*.parquet"))
    assert {"audio", "audio_valid_length", "audio_start_time", "audio_duration"} <= set(pq.read_schema(parquet).names)


def test_the_clip_s_audio_reads_back_and_decodes_through_its_own_codec(joint):
    from latentflow import LatentDataset
    from latentflow.read.inspect import format_inspect, inspect
    from latentflow.read.latents import decode_latents

    _, out = joint
    batch = next(LatentDataset(str(out)).iter_batches(8, shuffle=False))
    assert batch["latent"].shape[:3] == (8, 16, 5) and batch["audio"].shape == (8, 8, 469)
    mute = torch.tensor([k.startswith("mute/") for k in batch["key"]])
    assert batch["audio_mask"].shape == (8, 469) and not batch["audio_mask"][mute].any() and batch["audio_mask"][~mute].all()
    waves = decode_latents(batch["audio"][~mute], str(out), column="audio")
    assert waves.shape == (4, 1, 469 * HOP) and torch.isfinite(waves).all()
    with pytest.raises(ConfigError, match="no track column 'music'"):
        decode_latents(batch["audio"], str(out), column="music")
    report = format_inspect(inspect(str(out)))
    assert "track audio:  AudioAutoencoderOobleckModel" in report and "22050 Hz, mono, hop 32; optional" in report
