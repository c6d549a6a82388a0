"""Sources whose every sample must be accounted for: good ones, corrupt ones and a duplicate-stem pair,
per modality, with what an encode of them must report. Not part of the library.

A :class:`CountCase` is one modality: a tiny model, its processor config, and a writer of a folder
source that returns the :class:`Expected` outcome. Adding a modality (audio) is one more entry in
:data:`CASES`; the tests that take ``CASES`` check it with no other change.

Example::

    case = CASES["image"]
    expected = case.write(tmp_path / "src")
    encode_locally(case.model(), SourceConfig(format="folder", urls=[...]), out, processor_config=case.processor)
    assert_counts_add_up(out, expected)
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import fsspec
import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image


@dataclass(frozen=True)
class Expected:
    """What encoding a case's source must give.

    Attributes:
        files: media files in the source (records read).
        rows: rows written (images, or clips).
        errors: ``{key: error_type}`` of ``errors.parquet``.
        samples: rows + error rows (for images the files; a video gives one row per clip).
        named: ``{key: file names}`` each error message must name (a duplicate names both files).
    """

    files: int
    rows: int
    errors: dict[str, str]
    named: dict[str, tuple[str, ...]]

    @property
    def samples(self) -> int:
        return self.rows + len(self.errors)


@dataclass(frozen=True)
class CountCase:
    """One modality: ``model()`` a tiny model, ``processor`` its processor config, ``write(folder)``
    the source (returns :class:`Expected`), ``job`` the encode job's keys for it (``video:`` ...)."""

    model: Callable[[], Any]
    processor: Any
    write: Callable[[Path], Expected]
    job: dict[str, Any]


# ---- images ---------------------------------------------------------------------------


def _image(seed: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def write_images(folder: Path) -> Expected:
    """3 good images, 1 corrupt, and ``dup.jpg`` + ``dup.png`` (the png is the duplicate: it sorts second)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(["a.jpg", "b.png", "c.jpg", "dup.jpg", "dup.png"]):
        (folder / name).write_bytes(_image(i, "JPEG" if name.endswith("jpg") else "PNG"))
    (folder / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return Expected(files=6, rows=4, errors={"bad": "corrupt_image", "dup": "duplicate_key"},
                    named={"dup": ("dup.png", "dup.jpg")})


def tiny_image_vae():
    from latentflow.models.vae import VariationalAutoencoderConfig, VariationalAutoencoderModel

    torch.manual_seed(0)
    return VariationalAutoencoderModel(VariationalAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4)).eval()


# ---- video ------------------------------------------------------------------------------

CLIPS_PER_VIDEO = 2
VIDEO = {"num_frames": 5, "resolution": 32, "clip_mode": "uniform", "num_clips": CLIPS_PER_VIDEO}


def write_videos(folder: Path) -> Expected:
    """2 good videos, a truncated one, an audio-only mp4, and ``dup.mov`` + ``dup.mp4`` (the mp4 is the duplicate)."""
    from tests.video_samples import write_audio_only, write_video

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "good1.mp4").write_bytes(write_video(fps=10, size=(40, 48), num_frames=24))
    (folder / "good2.mp4").write_bytes(write_video(fps=10, size=(40, 48), num_frames=28))
    (folder / "dup.mov").write_bytes(write_video(fps=10, size=(40, 48), num_frames=26, container="mov"))
    (folder / "dup.mp4").write_bytes(write_video(fps=10, size=(40, 48), num_frames=30))
    (folder / "trunc.mp4").write_bytes(write_video(num_frames=20)[:600])
    (folder / "sound.mp4").write_bytes(write_audio_only())
    return Expected(files=6, rows=3 * CLIPS_PER_VIDEO,
                    errors={"trunc": "corrupt_video", "sound": "no_video_stream", "dup": "duplicate_key"},
                    named={"dup": ("dup.mp4", "dup.mov"), "sound": ("sound",)})


def tiny_video_vae():
    from latentflow.models.causal_video_vae import CausalVideoAutoencoderKLConfig, CausalVideoAutoencoderKLModel

    torch.manual_seed(0)
    cfg = CausalVideoAutoencoderKLConfig(base_dim=8, z_dim=4, dim_mult=(1, 2), num_res_blocks=1, temperal_downsample=(True,))
    return CausalVideoAutoencoderKLModel(cfg).eval()


# ---- audio ------------------------------------------------------------------------------

SEGMENTS_PER_FILE = 2
AUDIO = {"segment_seconds": 0.1, "segment_mode": "uniform", "num_segments": SEGMENTS_PER_FILE, "short_audio": "skip",
         "max_seconds_per_file": 2.0}
AUDIO_DATA = Path(__file__).resolve().parents[1] / "data" / "audio"


def _wav(seconds: float, rate: int = 8000, channels: int = 1, seed: int = 0) -> bytes:
    import wave

    samples = np.random.default_rng(seed).integers(-8000, 8000, (round(seconds * rate), channels)).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def write_audio(folder: Path) -> Expected:
    """4 good files (2 shipped CC0 WAVs, the AAC track of an mp4, an m4a) and one of each bad kind: corrupt,
    truncated, zero bytes, a video with no audio track, shorter than a segment, over the duration budget,
    9 unnamed channels, and ``dup.m4a`` + ``dup.wav`` (the wav is the duplicate: it sorts second)."""
    from tests.media.test_audio import encode, sines
    from tests.video_samples import write_audio_only, write_video

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "coin.wav").write_bytes((AUDIO_DATA / "coin2.wav").read_bytes())
    (folder / "jump.wav").write_bytes((AUDIO_DATA / "jump3.wav").read_bytes())
    (folder / "movie.mp4").write_bytes(write_video(num_frames=20, audio=True))
    (folder / "dup.m4a").write_bytes(write_audio_only(0.5))
    (folder / "dup.wav").write_bytes(_wav(0.5))
    (folder / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVE not a wave file at all")
    mp3 = encode(sines(44100, 1.5), 44100, "mp3", "libmp3lame")  # its header says 1.5 s (a truncated WAV's does not)
    (folder / "trunc.mp3").write_bytes(mp3[: len(mp3) // 2])
    (folder / "empty.wav").write_bytes(b"")
    (folder / "silent_movie.mp4").write_bytes(write_video(num_frames=20))
    (folder / "short.wav").write_bytes(_wav(0.05))
    (folder / "long.wav").write_bytes(_wav(2.5))
    (folder / "many.wav").write_bytes(_wav(0.5, channels=9))
    return Expected(files=12, rows=4 * SEGMENTS_PER_FILE,
                    errors={"bad": "corrupt_audio", "trunc": "corrupt_audio", "empty": "empty_audio",
                            "silent_movie": "no_audio_stream", "short": "audio_too_short", "long": "over_budget",
                            "many": "unmappable_channel_layout", "dup": "duplicate_key"},
                    named={"dup": ("dup.wav", "dup.m4a"), "trunc": ("truncated",), "long": ("max_seconds_per_file",)})


def tiny_audio_vae():
    from latentflow.models.audio_vae import AudioAutoencoderOobleckConfig, AudioAutoencoderOobleckModel

    torch.manual_seed(0)
    cfg = AudioAutoencoderOobleckConfig(encoder_hidden_size=8, decoder_channels=8, decoder_input_channels=4,
                                        downsampling_ratios=[2, 4], channel_multiples=[1, 2], audio_channels=1,
                                        sampling_rate=16000, sample_size=1024)
    return AudioAutoencoderOobleckModel(cfg).eval()


def _audio_processor():
    from latentflow.media.config import AudioProcessorConfig

    return AudioProcessorConfig(**AUDIO)


def _image_processor():
    from latentflow.media.config import ImageProcessorConfig

    return ImageProcessorConfig(resolution=32)


def _video_processor():
    from latentflow.media.config import VideoProcessorConfig

    return VideoProcessorConfig(**VIDEO)


CASES: dict[str, CountCase] = {
    "image": CountCase(tiny_image_vae, _image_processor(), write_images, {"processor": {"resolution": 32}}),
    "video": CountCase(tiny_video_vae, _video_processor(), write_videos, {"video": VIDEO}),
    "audio": CountCase(tiny_audio_vae, _audio_processor(), write_audio, {"audio": AUDIO}),
}


# ---- checks -------------------------------------------------------------------------------


def read_output(out: str) -> tuple[list[str], list[dict], dict]:
    """``(row keys of every Parquet file, errors.parquet rows, latentflow.json)`` of an output."""
    import json

    fs, root = fsspec.url_to_fs(out)
    keys = [k for path in sorted(fs.glob(f"{root}/parquet/**/*.parquet")) for k in pq.read_table(path).column("key").to_pylist()]
    errors = pq.read_table(f"{root}/errors.parquet").to_pylist()
    with fs.open(f"{root}/latentflow.json") as f:
        return keys, errors, json.load(f)


def assert_counts_add_up(out: str, expected: Expected) -> dict:
    """The output holds exactly ``expected``: every sample read is a row or a named error row, once,
    and ``latentflow.json`` counts say so (samples = rows + sample errors). Returns its counts."""
    keys, errors, info = read_output(out)
    counts = info["counts"]
    assert len(keys) == len(set(keys)) == expected.rows == counts["rows"]
    assert {e["key"]: e["error_type"] for e in errors} == expected.errors and len(errors) == len(expected.errors)
    assert counts["sample_errors"] == counts["errors"] == len(expected.errors)
    assert counts["samples"] == counts["rows"] + counts["sample_errors"] == expected.samples
    messages = {e["key"]: e["message"] for e in errors}
    for key, names in expected.named.items():
        assert all(name in messages[key] for name in names), (key, messages[key])
    return counts
