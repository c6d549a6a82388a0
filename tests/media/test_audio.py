"""latentflow.media.audio on real audio: the shipped CC0 WAVs, Big Buck Bunny's 5.1 AAC track, and a
synthetic sine encoded by PyAV into each codec the module claims.

Span tolerance: PCM, FLAC and MP3 spans equal the slice of the whole decode exactly (FFmpeg's MP3
decoder recovers its bit reservoir from the pre-roll). Lossy transform codecs (AAC, Opus) rebuild a
frame from the previous one, so after a seek the decoder's float state differs by rounding only:
within 1e-4 inside the stream. At the very end of a PyAV-written mp4 the last AAC frames, flushed after
a seek, differ by up to 2e-3 (-50 dB under a 0.5 sine); Big Buck Bunny's AAC track is exact.
"""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from latentflow.errors import ConfigError
from latentflow.media.audio import (
    REMIX_RULES,
    STEREO_COEFFICIENTS,
    decode_audio,
    decode_segment,
    latent_padding_mask,
    plan_segments,
    probe_audio,
    remix_matrix,
    resampled_length,
    segment_samples,
)

ROOT = Path(__file__).resolve().parents[2]
AUDIO = ROOT / "data" / "audio"
BBB = ROOT / "data" / "videos" / "bigbuckbunny.mp4"
WAVS = sorted(AUDIO.glob("*.wav"))


@pytest.fixture(scope="module")
def bbb() -> bytes:
    return BBB.read_bytes()


def encode(x: np.ndarray, rate: int, container: str, codec: str, layout: str | None = None) -> bytes:
    """(C, N) float32 -> a file in ``container`` with ``codec``, written by PyAV."""
    layout = layout or {1: "mono", 2: "stereo", 6: "5.1"}[x.shape[0]]
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        fmt = stream.codec_context.format.name
        size = stream.codec_context.frame_size or 1024
        for i in range(0, x.shape[1], size):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, i:i + size], dtype=np.float32), format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, i
            for converted in av.AudioResampler(format=fmt, layout=layout, rate=rate).resample(frame):
                converted.pts = i
                for packet in stream.encode(converted):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def sines(rate: int, seconds: float, freqs=(440.0, 1000.0), amp=(0.5, 0.3)) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return np.stack([a * np.sin(2 * np.pi * f * t) for f, a in zip(freqs, amp)]).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def wav_bytes(x: np.ndarray, rate: int, width: int = 2) -> bytes:
    """A plain WAV (no channel mask) of (C, N) samples in [-1, 1] by the standard library."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes((np.clip(x.T, -1, 1 - 2**-15) * 32768).astype("<i2").tobytes())
    return buf.getvalue()


# ---------------------------------------------------------------------------
# probe and decode
# ---------------------------------------------------------------------------
def test_probe_reads_the_header(bbb):
    info = probe_audio(bbb, "bbb")
    assert (info.sample_rate, info.channels, info.layout, info.codec, info.num_streams) == (48000, 6, "5.1", "aac", 2)
    assert info.duration == pytest.approx(5.312, abs=1e-3)
    wav = probe_audio((AUDIO / "rockHit2.wav").read_bytes())
    assert (wav.sample_rate, wav.channels, wav.codec) == (96000, 2, "pcm_s16le")


def test_bbb_decodes_to_float32_six_channels(bbb):
    audio = decode_audio(bbb, "bbb")
    assert audio.samples.dtype == np.float32 and audio.samples.shape == (6, 254976)  # 249 AAC frames of 1024
    assert audio.sample_rate == 48000 and audio.reached_end and audio.remix == REMIX_RULES["keep"]
    assert 0.05 < np.abs(audio.samples).max() <= 1.0


@pytest.mark.parametrize("path", WAVS, ids=lambda p: p.stem)
def test_shipped_wavs_decode_sample_exact(path):
    """Every shipped WAV: the decode is the file's s16 samples / 32768, read independently by ``wave``."""
    data = path.read_bytes()
    with wave.open(io.BytesIO(data)) as w:
        raw = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels()).T
        rate = w.getframerate()
    audio = decode_audio(data, path.stem)
    assert audio.sample_rate == rate
    np.testing.assert_array_equal(audio.samples, raw.astype(np.float32) / 32768)


@pytest.mark.parametrize("target", [16000, 22050, 44100, 48000])
@pytest.mark.parametrize("name", ["coin2", "explosion1", "rockHit2", "phaseJump1"])
def test_resampled_length_is_round_n_target_over_source(name, target):
    data = (AUDIO / f"{name}.wav").read_bytes()
    native = decode_audio(data)
    audio = decode_audio(data, sample_rate=target)
    n, src = native.samples.shape[1], native.sample_rate
    assert audio.samples.shape == (native.samples.shape[0], round(n * target / src)) == (native.samples.shape[0],
                                                                                          resampled_length(n, src, target))


def test_resampled_bbb_keeps_its_length_and_its_energy(bbb):
    native = decode_audio(bbb, channels="stereo")
    audio = decode_audio(bbb, sample_rate=44100, channels="stereo")
    assert audio.samples.shape == (2, round(254976 * 44100 / 48000))
    rms = lambda x: np.sqrt((x.astype(np.float64) ** 2).mean())  # noqa: E731
    assert rms(audio.samples) == pytest.approx(rms(native.samples), rel=0.01)  # the track has little energy above 22 kHz


# (container, codec, rate, exact): every family the module claims
CODECS = [
    ("wav", "pcm_s16le", 44100, True), ("wav", "pcm_u8", 22050, True), ("wav", "pcm_s32le", 44100, True),
    ("wav", "pcm_f32le", 44100, True), ("wav", "adpcm_ms", 44100, False), ("wav", "adpcm_ima_wav", 22050, False),
    ("flac", "flac", 44100, True), ("mp3", "libmp3lame", 44100, False), ("ogg", "vorbis", 44100, False),
    ("ogg", "libopus", 48000, False), ("ipod", "aac", 44100, False), ("matroska", "flac", 48000, True),
    ("webm", "libopus", 48000, False), ("mp4", "aac", 48000, False),
]


@pytest.mark.parametrize("container,codec,rate,exact", CODECS, ids=[f"{c[0]}-{c[1]}" for c in CODECS])
def test_a_sine_survives_every_codec(container, codec, rate, exact):
    x = sines(rate, 1.0)
    data = encode(x, rate, container, codec)
    audio = decode_audio(data, f"{container}-{codec}")
    assert audio.sample_rate == rate and audio.samples.shape[0] == 2
    body = audio.samples[:, rate // 10: rate // 10 + rate // 2]  # 0.5 s away from priming and tails
    tol = 12 if codec == "vorbis" else 2  # FFmpeg's own (experimental) Vorbis encoder is coarse: 1000 Hz comes back at 990
    assert abs(peak_hz(body[0], rate) - 440) <= tol and abs(peak_hz(body[1], rate) - 1000) <= tol
    if exact:  # lossless: the samples themselves, to the format's quantization
        n = x.shape[1]
        np.testing.assert_allclose(audio.samples[:, :n], x, atol=1 / 100 if codec == "pcm_u8" else 1 / 32768 + 1e-7)
    mono = decode_audio(data, sample_rate=16000, channels="mono")
    assert mono.samples.shape[0] == 1 and abs(peak_hz(mono.samples[0, 1600:9600], 16000) - 440) <= 2


def test_planar_and_packed_sources_decode_alike():
    x = sines(44100, 0.3)
    planar = decode_audio(encode(x, 44100, "flac", "flac")).samples  # FLAC decodes to packed s16
    packed = decode_audio(wav_bytes(x, 44100)).samples  # s16 packed
    floats = decode_audio(encode(x, 44100, "wav", "pcm_f32le")).samples  # flt packed
    np.testing.assert_allclose(planar[:, :x.shape[1]], x, atol=1 / 32768)  # each to its own s16 rounding
    np.testing.assert_allclose(packed, x, atol=1 / 32768)
    np.testing.assert_allclose(floats, x, atol=1e-7)


# ---------------------------------------------------------------------------
# remix rules
# ---------------------------------------------------------------------------
def swresample_matrix(layout: str, target: str) -> np.ndarray:
    """libswresample's own remix matrix, measured: one unit impulse per input channel."""
    names = [c.name for c in av.AudioLayout(layout).channels]
    cols = []
    for i in range(len(names)):
        x = np.zeros((len(names), 64), np.float32)
        x[i] = 0.5
        frame = av.AudioFrame.from_ndarray(x, format="fltp", layout=layout)
        frame.sample_rate, frame.pts = 48000, 0
        out = av.AudioResampler(format="fltp", layout=target, rate=48000).resample(frame)
        cols.append(np.concatenate([f.to_ndarray() for f in out], axis=1)[:, 32] / 0.5)
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("layout", ["5.1", "5.1(side)", "stereo", "quad", "2.1", "4.0", "6.0"])  # PyAV 18 cannot build 7.1 frames
def test_stereo_rule_is_libswresamples_matrix(layout):
    names = [c.name for c in av.AudioLayout(layout).channels]
    np.testing.assert_allclose(remix_matrix(names, "stereo"), swresample_matrix(layout, "stereo"), atol=1e-6)


def test_bbb_downmix_equals_the_recorded_coefficients(bbb):
    six = decode_audio(bbb).samples.astype(np.float64)  # FL FR FC LFE BL BR
    s = np.sqrt(0.5)
    left = six[0] + s * six[2] + s * six[4]
    right = six[1] + s * six[2] + s * six[5]
    stereo = decode_audio(bbb, channels="stereo")
    np.testing.assert_allclose(stereo.samples, np.stack([left, right]), atol=1e-6)
    np.testing.assert_allclose(decode_audio(bbb, channels="mono").samples[0], (left + right) / 2, atol=1e-6)
    assert "ITU-R BS.775" in stereo.remix and STEREO_COEFFICIENTS["LFE"] == (0.0, 0.0)


def test_a_known_five_one_signal_downmixes_by_the_coefficients():
    """Each of six channels carries its own tone; after the stereo rule each tone's amplitude is its coefficient."""
    rate, freqs = 48000, (300.0, 500.0, 700.0, 900.0, 1100.0, 1300.0)
    x = sines(rate, 1.0, freqs, (0.25,) * 6)
    data = encode(x, rate, "flac", "flac", layout="5.1")
    out = decode_audio(data, channels="stereo").samples.astype(np.float64)
    for side in (0, 1):
        spectrum = np.abs(np.fft.rfft(out[side])) * 2 / out.shape[1]  # 1.0 s: bin k is k Hz
        got = [spectrum[int(f)] / 0.25 for f in freqs]
        want = [STEREO_COEFFICIENTS[n][side] for n in ("FL", "FR", "FC", "LFE", "BL", "BR")]
        np.testing.assert_allclose(got, want, atol=2e-3)


def test_mono_is_copied_to_both_sides_and_unnamed_stereo_is_left_right():
    x = sines(22050, 0.2)
    stereo = decode_audio(wav_bytes(x[:1], 22050), channels="stereo").samples
    np.testing.assert_array_equal(stereo[0], stereo[1])
    data = wav_bytes(x, 22050)  # a plain WAV: layout "2 channels", unnamed
    assert probe_audio(data).layout == "2 channels"
    np.testing.assert_allclose(decode_audio(data, channels="mono").samples[0], decode_audio(data).samples.mean(0), atol=1e-7)


# ---------------------------------------------------------------------------
# spans by presentation time
# ---------------------------------------------------------------------------
SPANS = [(0.5, 1.0), (1.37, 0.41), (0.05, 0.2), (2.5, 0.3)]


@pytest.mark.parametrize("target", [None, 22050])
@pytest.mark.parametrize("container,codec,rate,tol", [
    ("wav", "pcm_s16le", 44100, 0.0), ("flac", "flac", 44100, 0.0), ("mp3", "libmp3lame", 44100, 0.0),
    ("matroska", "flac", 48000, 0.0), ("ogg", "libopus", 48000, 1e-4), ("mp4", "aac", 44100, 1e-4),
])
def test_a_span_is_the_slice_of_the_whole_decode(container, codec, rate, tol, target):
    data = encode(sines(rate, 3.0), rate, container, codec)
    full = decode_audio(data, sample_rate=target).samples
    r = target or rate
    for start, duration in SPANS:
        span = decode_audio(data, sample_rate=target, start=start, duration=duration)
        a = round(start * r)
        assert span.start == a / r and span.samples.shape == (2, round(duration * r)), (start, duration)
        np.testing.assert_allclose(span.samples, full[:, a:a + round(duration * r)], atol=tol, rtol=0)


def test_bbb_spans_are_exact_slices_resampled_and_downmixed(bbb):
    full = decode_audio(bbb, sample_rate=44100, channels="stereo").samples
    for start, duration in [(1.0, 1.5), (0.3, 0.2), (4.9, 1.0)]:
        span = decode_audio(bbb, sample_rate=44100, channels="stereo", start=start, duration=duration)
        a = round(start * 44100)
        np.testing.assert_array_equal(span.samples, full[:, a:a + round(duration * 44100)])
    tail = decode_audio(bbb, sample_rate=44100, start=4.9, duration=1.0)
    assert tail.reached_end and tail.samples.shape[1] == full.shape[1] - round(4.9 * 44100)


def test_the_end_of_a_lossy_stream_is_close(bbb):
    """AAC's last frames after a seek: the documented 2e-3 bound (module docstring)."""
    data = encode(sines(44100, 3.0), 44100, "mp4", "aac")
    full = decode_audio(data).samples
    tail = decode_audio(data, start=2.5, duration=1.0)
    a = round(2.5 * 44100)
    np.testing.assert_allclose(tail.samples, full[:, a:], atol=2e-3, rtol=0)


# ---------------------------------------------------------------------------
# segment plans
# ---------------------------------------------------------------------------
def test_segment_length_is_a_whole_number_of_hops():
    assert segment_samples(1.0, 44100, 2048) == 22 * 2048  # 21.53 hops -> 22
    assert segment_samples(0.01, 44100, 2048) == 2048  # at least one hop
    with pytest.raises(ConfigError, match="must be > 0"):
        segment_samples(0, 44100, 2048)


def test_head_pads_short_audio_with_a_mask():
    (seg,) = plan_segments(0.5, 1000, segment_seconds=1.0, hop_length=100, mode="head")
    assert (seg.start, seg.length, seg.valid) == (0, 1000, 500)
    assert seg.padding_mask().sum() == 500 and not seg.padding_mask()[500:].any()
    assert plan_segments(0.5, 1000, segment_seconds=1.0, hop_length=100, mode="head", pad=False) == []
    (full,) = plan_segments(3.0, 1000, segment_seconds=1.0, hop_length=100, mode="head")
    assert full.valid == full.length == 1000


def test_uniform_spreads_n_segments_from_start_to_end_on_the_hop_grid():
    segs = plan_segments(10.0, 1000, segment_seconds=2.0, hop_length=100, mode="uniform", num_segments=5)
    assert [s.start for s in segs] == [0, 2000, 4000, 6000, 8000]
    assert all(s.valid == s.length == 2000 and s.start % 100 == 0 for s in segs)
    odd = plan_segments(7.77, 1000, segment_seconds=2.0, hop_length=100, mode="uniform", num_segments=3)
    assert [s.start for s in odd] == [0, 2900, 5700] and odd[-1].start + 2000 <= 7770  # last start 5770 -> 57 hops
    assert len(plan_segments(1.0, 1000, segment_seconds=2.0, hop_length=100, mode="uniform", num_segments=4)) == 1
    with pytest.raises(ConfigError, match="needs num_segments > 0"):
        plan_segments(10.0, 1000, segment_seconds=2.0, hop_length=100, mode="uniform")


def test_slide_covers_every_sample_and_pads_the_tail():
    segs = plan_segments(5.0, 1000, segment_seconds=2.0, hop_length=100, mode="slide", stride_seconds=1.5)
    assert [s.start for s in segs] == [0, 1500, 3000]  # 3000 + 2000 >= 5000: covered
    assert [s.valid for s in segs] == [2000, 2000, 2000]
    tail = plan_segments(5.5, 1000, segment_seconds=2.0, hop_length=100, mode="slide", stride_seconds=1.5)
    assert [s.start for s in tail] == [0, 1500, 3000, 4500] and tail[-1].valid == 1000
    no_pad = plan_segments(5.5, 1000, segment_seconds=2.0, hop_length=100, mode="slide", stride_seconds=1.5, pad=False)
    assert [s.start for s in no_pad] == [0, 1500, 3000]
    capped = plan_segments(60.0, 1000, segment_seconds=2.0, hop_length=100, mode="slide", stride_seconds=1.0, max_segments=4)
    assert [s.start for s in capped] == [0, 1000, 2000, 3000]
    strided = plan_segments(5.0, 1000, segment_seconds=2.0, hop_length=300, mode="slide", stride_seconds=1.0)
    assert all(s.start % 300 == 0 and s.length == 2100 for s in strided)  # stride 1000 -> 900, length 2000 -> 2100
    with pytest.raises(ConfigError, match="mode must be one of"):
        plan_segments(5.0, 1000, segment_seconds=2.0, hop_length=100, mode="random")


def test_latent_mask_is_nearest_neighbour_as_stable_audio_tools():
    import torch

    mask = np.arange(1000) < 450
    got = latent_padding_mask(mask, 100)
    want = torch.nn.functional.interpolate(torch.tensor(mask, dtype=torch.float32)[None, None], size=10, mode="nearest")
    np.testing.assert_array_equal(got, want[0, 0].numpy().astype(bool))
    assert got.tolist() == [True] * 5 + [False] * 5  # frame 4 starts on real audio (sample 400)
    with pytest.raises(ConfigError, match="multiple of hop_length=64"):
        latent_padding_mask(mask, 64)


def test_decode_segment_pads_real_audio_and_masks_it():
    data = (AUDIO / "coin2.wav").read_bytes()  # 0.409 s at 44.1 kHz
    info = probe_audio(data)
    (seg,) = plan_segments(info.duration, 22050, segment_seconds=1.0, hop_length=512, mode="head")
    wave_, mask = decode_segment(data, seg, "coin2", channels="stereo")
    full = decode_audio(data, sample_rate=22050, channels="stereo").samples
    assert wave_.shape == (2, seg.length) and mask.sum() == full.shape[1] == seg.valid
    np.testing.assert_array_equal(wave_[:, mask], full)
    assert not wave_[:, ~mask].any()
    segs = plan_segments(info.duration, 22050, segment_seconds=0.1, hop_length=512, mode="slide", stride_seconds=0.1)
    parts = [decode_segment(data, s)[0][:, :s.valid] for s in segs]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), decode_audio(data, sample_rate=22050).samples)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
def error_type(fn, *args, **kwargs) -> str:
    with pytest.raises(Exception) as err:
        fn(*args, **kwargs)
    assert type(err.value).__name__ == "SampleError", err.value
    return err.value.error_type


def test_bad_input_raises_sample_errors_with_reasons(bbb):
    mp3 = encode(sines(44100, 2.0), 44100, "mp3", "libmp3lame")
    assert error_type(decode_audio, None) == "missing_audio"
    assert error_type(decode_audio, b"") == "empty_audio"
    assert error_type(probe_audio, b"") == "empty_audio"
    assert error_type(decode_audio, np.random.default_rng(0).bytes(5000)) == "corrupt_audio"
    assert error_type(decode_audio, mp3[:len(mp3) // 2], "half") == "corrupt_audio"  # truncated: header says 2 s
    garbled = bytearray(encode(sines(44100, 1.0), 44100, "flac", "flac"))
    garbled[len(garbled) // 3:len(garbled) // 3 + 2000] = np.random.default_rng(1).bytes(2000)
    assert error_type(decode_audio, bytes(garbled)) == "corrupt_audio"
    assert error_type(decode_audio, wav_bytes(np.zeros((1, 0), np.float32), 8000)) == "empty_audio"  # zero-length
    assert error_type(decode_audio, _video_only()) == "no_audio_stream"
    assert error_type(decode_audio, _unknown_wav_codec()) in ("unsupported_codec", "corrupt_audio")
    four = wav_bytes(sines(8000, 0.1, (100, 200, 300, 400), (0.1,) * 4), 8000)  # 4 unnamed channels
    assert error_type(decode_audio, four, channels="stereo") == "unmappable_channel_layout"
    assert decode_audio(four).samples.shape == (4, 800)  # "keep" needs no names
    with pytest.raises(ConfigError, match="channels must be one of"):
        decode_audio(bbb, channels="surround")


def test_unknown_codec_is_unsupported():
    assert error_type(probe_audio, _unknown_wav_codec()) == "unsupported_codec"


def _video_only() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _unknown_wav_codec() -> bytes:
    """A WAV whose format tag (0x1234) names no codec FFmpeg knows."""
    data = bytearray(wav_bytes(sines(8000, 0.1)[:1], 8000))
    data[20:22] = struct.pack("<H", 0x1234)
    return bytes(data)
