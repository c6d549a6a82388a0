"""Audio decoding with PyAV: header probe, spans by presentation time, remix, resample, segment plans.

Positions are by presentation timestamp (pts), never by a packet or frame counter, so a span
decodes the same samples whether it is read alone or cut from the whole file:

1. :func:`probe_audio` reads the container header only: duration, rate, channels, codec.
2. :func:`decode_audio` decodes a byte string (any container FFmpeg reads: wav u8/s16/s32/float,
   planar or packed, ADPCM, flac, mp3, ogg/vorbis, opus, m4a/AAC, the audio track of mp4/webm/mkv
   video) to float32 (C, N). With ``start``/``duration`` it seeks to the span, decodes a short
   pre-roll before it (lossy decoders need the previous frame to rebuild the first one) and
   places the first decoded frame by its pts; samples then follow contiguously. Where the pts are
   coarser than a sample (Matroska/WebM count milliseconds) a span decodes from the file's start
   instead: exact, and slower for spans far into long files.
3. Channels are remixed by a named rule (:data:`REMIX_RULES`), in numpy by an explicit matrix,
   then each channel is resampled with ``av.AudioResampler`` (libswresample). A span is resampled
   with context on both sides, starting on the rate ratio's grid, so it equals the same slice of
   the whole file's resampled output (to float rounding).
4. :func:`plan_segments` cuts a duration into segments of a whole number of hop lengths
   (``head``, ``uniform``, ``slide``), padded with a mask, shrunk to latent frames by
   :func:`latent_padding_mask` (stable-audio-tools' pre-encoding rule).

Sample ``i`` of a stream is at ``origin + i / rate`` seconds, ``origin`` the stream's start time
(the first frame's pts after the decoder's own priming skip). A resampled length is
``round(N * target / source)``.

Bad input raises ``SampleError`` (stage ``decode``) with ``error_type`` one of ``missing_audio``,
``empty_audio`` (zero bytes, no stream, or no sample decoded), ``corrupt_audio`` (cannot open,
cannot decode, truncated), ``no_audio_stream``, ``unsupported_codec``, ``unmappable_channel_layout``.

Example::

    info = probe_audio(data)                                     # AudioInfo(duration=5.312, sample_rate=48000, channels=6, ...)
    audio = decode_audio(data, sample_rate=44100, channels="stereo", start=1.0, duration=2.0)
    audio.samples.shape                                          # (2, 88200) float32
    plan = plan_segments(info.duration, 44100, segment_seconds=1.0, hop_length=2048, mode="slide", stride_seconds=0.5)
    wave, mask = decode_segment(data, plan[0], channels="stereo")   # (2, 43008), (43008,) bool
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from latentflow.errors import ConfigError
from latentflow.sources.records import SampleError

av.logging.set_level(av.logging.PANIC)  # FFmpeg's stderr chatter on corrupt input; errors still raise

SQRT1_2 = math.sqrt(0.5)  # -3 dB, ITU-R BS.775's centre and surround level
# Stereo downmix coefficients (to L, to R) per FFmpeg channel name: ITU-R BS.775, which is also what
# libswresample builds by default for float output (centre and surround at -3 dB, LFE dropped, no
# normalization); tests/media/test_audio.py checks these against av.AudioResampler.
STEREO_COEFFICIENTS: dict[str, tuple[float, float]] = {
    "FL": (1.0, 0.0), "FR": (0.0, 1.0), "FC": (SQRT1_2, SQRT1_2), "LFE": (0.0, 0.0),
    "BL": (SQRT1_2, 0.0), "BR": (0.0, SQRT1_2), "SL": (SQRT1_2, 0.0), "SR": (0.0, SQRT1_2), "BC": (0.5, 0.5),
}
REMIX_RULES: dict[str, str] = {
    "keep": "keep: the stream's channels, in its order",
    "stereo": "stereo: mono copied to L and R; otherwise ITU-R BS.775 (libswresample's default float matrix): "
              "L = FL + 0.7071 FC + 0.7071 (BL + SL) + 0.5 BC, R likewise, LFE dropped, not normalized",
    "mono": "mono: (L + R) / 2 of the stereo rule (stable-audio-tools' Mono: the channel mean for stereo)",
}
SEGMENT_MODES = ("head", "uniform", "slide")
PREROLL_SECONDS = 0.2  # decoded before a lossy span and dropped: AAC/MP3/Vorbis/Opus rebuild a frame from the one before
TRUNCATED_TOLERANCE = (0.1, 0.02)  # seconds, fraction: a full decode shorter than the header by more than both is truncated


def sample_error(error_type: str, message: str, stage: str = "decode") -> Exception:
    """A ``SampleError`` of ``stage`` (the one error row convention of the data path)."""
    return SampleError(stage, error_type, message)


# ---------------------------------------------------------------------------
# header
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AudioInfo:
    """What the container header says about its first audio stream, read without decoding.

    Attributes:
        duration: seconds (the stream's, else the container's; 0.0 when unknown).
        sample_rate, channels: the stream's.
        layout: FFmpeg's layout name (``stereo``, ``5.1``; ``2 channels`` when the file names none).
        codec: the decoder's name (``pcm_s16le``, ``aac``, ``mp3float``, ``opus``, ...).
        start_time: the first sample's presentation time in seconds (mp3: the encoder delay FFmpeg skips).
        num_streams: streams of any kind (an mp4's video stream counts).
    """

    duration: float
    sample_rate: int
    channels: int
    layout: str
    codec: str
    start_time: float = 0.0
    num_streams: int = 1


@dataclass(frozen=True)
class DecodedAudio:
    """Decoded samples and how they were made.

    Attributes:
        samples: (C, N) float32, full scale [-1, 1] (float sources may exceed it; nothing is clipped).
        sample_rate: of ``samples``.
        start: seconds from the stream's first sample to ``samples[:, 0]``.
        remix: the rule's description (:data:`REMIX_RULES`): what a codec records.
        source: the stream's :class:`AudioInfo`.
        reached_end: the span ran to the end of the stream.
    """

    samples: np.ndarray
    sample_rate: int
    start: float
    remix: str
    source: AudioInfo
    reached_end: bool


class _Stream:
    """One open container and its first audio stream (errors become ``SampleError``s)."""

    def __init__(self, data: bytes | None, key: str):
        self.key = key
        if data is None:
            raise sample_error("missing_audio", f"sample {key!r} has no audio member", stage="read")
        if len(data) == 0:
            raise sample_error("empty_audio", f"audio {key!r} is empty (0 bytes)")
        try:
            self.container = av.open(io.BytesIO(data), mode="r")
        except Exception as err:  # noqa: BLE001 - FFmpeg raises many kinds on bad input
            raise self.corrupt("cannot open", err) from None
        if not self.container.streams.audio:
            kinds = sorted({s.type for s in self.container.streams})
            self.container.close()
            if not kinds:
                raise sample_error("empty_audio", f"audio {key!r} holds no stream")
            raise sample_error("no_audio_stream", f"file {key!r} has no audio stream, only {kinds}")
        self.stream = self.container.streams.audio[0]
        ctx = self.stream.codec_context
        if ctx is None or not self.stream.rate or not ctx.channels:
            name = getattr(getattr(self.stream, "codec", None), "name", None) or "unknown"
            self.container.close()
            raise sample_error("unsupported_codec", f"audio {key!r}: FFmpeg has no decoder for its codec ({name})")
        self.stream.thread_count = 1

    def corrupt(self, what: str, err: Exception | str) -> Exception:
        detail = f"{type(err).__name__}: {err}" if isinstance(err, Exception) else err
        return sample_error("corrupt_audio", f"audio {self.key!r}: {what}: {detail}")

    def info(self) -> AudioInfo:
        s, ctx = self.stream, self.stream.codec_context
        tb = float(s.time_base) if s.time_base else 0.0
        duration = s.duration * tb if s.duration and tb else (self.container.duration or 0) / av.time_base
        start = s.start_time * tb if s.start_time is not None and tb else 0.0
        return AudioInfo(float(duration), int(s.rate), int(ctx.channels), s.layout.name, ctx.name, float(start),
                         len(self.container.streams))

    def channel_names(self) -> list[str]:
        return [c.name for c in self.stream.layout.channels]

    def close(self) -> None:
        self.container.close()


def probe_audio(data: bytes | None, key: str = "") -> AudioInfo:
    """The header metadata of the first audio stream (no sample decoded).

    Raises:
        SampleError: ``missing_audio``, ``empty_audio``, ``corrupt_audio``, ``no_audio_stream``, ``unsupported_codec``.

    Example::

        probe_audio(open("data/videos/bigbuckbunny.mp4", "rb").read())
        # AudioInfo(duration=5.312, sample_rate=48000, channels=6, layout='5.1', codec='aac', start_time=0.0, num_streams=2)
    """
    stream = _Stream(data, key)
    try:
        return stream.info()
    finally:
        stream.close()


# ---------------------------------------------------------------------------
# samples: frames -> float32, remix, resample
# ---------------------------------------------------------------------------
_SCALE = {"u8": (128.0, 1 / 128), "s16": (0.0, 1 / 32768), "s32": (0.0, 1 / 2**31), "s64": (0.0, 1 / 2**63),
          "flt": (0.0, 1.0), "dbl": (0.0, 1.0)}


def frame_to_float(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame (any sample format, planar or packed) -> (C, n) float32 at full scale 1.0."""
    fmt = frame.format.name.rstrip("p")
    if fmt not in _SCALE:
        raise ValueError(f"sample format {frame.format.name!r} is not one of {sorted(_SCALE)}")
    raw = frame.to_ndarray()  # planar: (C, n); packed: (1, C * n) interleaved
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        raw = raw.reshape(-1, channels).T
    offset, scale = _SCALE[fmt]
    out = raw.astype(np.float64 if fmt in ("s32", "s64", "dbl") else np.float32)
    return ((out - offset) * scale).astype(np.float32) if offset or scale != 1.0 else out.astype(np.float32)


def remix_matrix(channel_names: list[str], rule: str, key: str = "") -> np.ndarray | None:
    """The (C_out, C_in) matrix of ``rule`` for a stream with these FFmpeg channel names; None for ``keep``.

    A layout the file leaves unnamed (``NONE``) is read as mono or stereo by its count (1 or 2 channels).

    Raises:
        ConfigError: an unknown rule.
        SampleError: ``unmappable_channel_layout``: more than two channels with a name the rule does not place.
    """
    if rule not in REMIX_RULES:
        raise ConfigError(f"channels must be one of {list(REMIX_RULES)}, got: {rule!r}")
    if rule == "keep":
        return None
    names = list(channel_names)
    if names and all(n == "NONE" for n in names) and len(names) <= 2:
        names = ["FC"] if len(names) == 1 else ["FL", "FR"]
    if names == ["FC"]:  # mono: copied to both sides
        stereo = np.ones((2, 1))
    else:
        unknown = [n for n in names if n not in STEREO_COEFFICIENTS]
        if unknown:
            raise sample_error("unmappable_channel_layout", f"audio {key!r}: channels {names} include {unknown}, which "
                               f"the {rule!r} rule does not place (known: {sorted(STEREO_COEFFICIENTS)}); use channels='keep'")
        stereo = np.array([STEREO_COEFFICIENTS[n] for n in names]).T  # (2, C_in)
    return stereo if rule == "stereo" else stereo.mean(axis=0, keepdims=True)


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample (C, N) float32 with libswresample (``av.AudioResampler``, its default filter), each channel alone.

    Returns:
        (C, ceil(N * target / source)) float32: every output sample swresample gives after a flush;
        output sample ``k`` is at time ``k / target_rate`` (swresample compensates its filter delay).
        Callers trim to ``round(N * target / source)``.
    """
    if source_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    out = []
    for channel in samples:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(channel[None], dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = source_rate, 0
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=target_rate)
        pieces = [f.to_ndarray() for f in resampler.resample(frame)] + [f.to_ndarray() for f in resampler.resample(None)]
        out.append(np.concatenate(pieces, axis=1)[0] if pieces else np.zeros(0, np.float32))
    return np.stack(out).astype(np.float32, copy=False)


def resampled_length(num_samples: int, source_rate: int, target_rate: int) -> int:
    """``round(N * target / source)``, ties up: the length every resampled decode has."""
    return (num_samples * target_rate * 2 + source_rate) // (2 * source_rate)


# ---------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------
def _read_span(stream: _Stream, first: int, last: int | None, preroll: int) -> tuple[np.ndarray, bool]:
    """Decode source samples [first, last) (None: to the end): ``(samples (C, n), reached_end)``.

    Seeks to ``first - preroll`` when ``first > preroll``. The first frame out of the decoder is placed
    by its pts; later frames follow contiguously (pts rounding never opens a gap or an overlap).
    """
    s, rate = stream.stream, stream.stream.rate
    origin = float(s.start_time * s.time_base) if s.start_time is not None else 0.0
    sought = first > preroll
    if sought:
        stream.container.seek(int((origin + (first - preroll) / rate) / s.time_base), stream=s, backward=True, any_frame=False)
    position: int | None = None
    pieces: list[np.ndarray] = []
    for frame in stream.container.decode(s):
        if frame.samples == 0:
            continue
        if position is None:
            position = round((frame.time - origin) * rate) if frame.pts is not None else 0
            if sought and position > first:
                raise _SeekOvershoot
        chunk = frame_to_float(frame)  # (C, n)
        skip = max(0, first - position)  # samples of this frame before the span
        if skip < chunk.shape[1]:
            pieces.append(chunk[:, skip:])
        position += chunk.shape[1]
        if last is not None and position >= last:
            return np.concatenate(pieces, axis=1)[:, :last - first], False
    if not pieces:
        return np.zeros((s.codec_context.channels, 0), np.float32), True
    return np.concatenate(pieces, axis=1), True


class _SeekOvershoot(Exception):
    """The demuxer landed after the span's first sample (then the span is decoded from the file's start)."""


def _decode_source(stream: _Stream, first: int, last: int | None, lossy: bool) -> tuple[np.ndarray, bool]:
    """Source-rate samples [first, last), contiguous from ``first``; retried from the file's start if a seek overshoots."""
    s = stream.stream
    preroll = round(PREROLL_SECONDS * s.rate) if lossy else 0
    if s.time_base is None or s.time_base > Fraction(1, s.rate):
        preroll = first  # pts coarser than a sample (mkv/webm count milliseconds): no seek, decode from the start
    try:
        return _read_span(stream, first, last, preroll)
    except _SeekOvershoot:
        stream.container.seek(0, stream=stream.stream, backward=True)
        return _read_span(stream, first, last, preroll=first)


def decode_audio(data: bytes | None, key: str = "", *, sample_rate: int | None = None, channels: str = "keep",
                 start: float = 0.0, duration: float | None = None) -> DecodedAudio:
    """Decode the first audio stream, or the span [start, start + duration), to float32 (C, N).

    Args:
        data: the file's bytes.
        key: the sample key, named in errors.
        sample_rate: resample to this rate (libswresample); None keeps the stream's.
        channels: a :data:`REMIX_RULES` name: ``keep``, ``mono`` or ``stereo``.
        start: seconds from the stream's first sample.
        duration: seconds to decode; None: to the end.

    Returns:
        :class:`DecodedAudio`. A span that runs past the end is shorter than ``duration``;
        the whole stream resampled has ``round(N * sample_rate / source_rate)`` samples.

    Raises:
        SampleError: see the module docstring; ``empty_audio`` when nothing decodes, ``corrupt_audio``
            also when a whole-file decode is shorter than its header's duration (truncated).
    """
    if start < 0 or (duration is not None and duration <= 0):
        raise ConfigError(f"start must be >= 0 and duration > 0 or None, got: start={start}, duration={duration}")
    if sample_rate is not None and sample_rate <= 0:
        raise ConfigError(f"sample_rate must be > 0 or None, got: {sample_rate}")
    stream = _Stream(data, key)
    try:
        info = stream.info()
        matrix = remix_matrix(stream.channel_names(), channels, key)
        target = sample_rate or info.sample_rate
        lossy = not info.codec.startswith(("pcm_", "flac"))
        try:
            samples, span_start, end = _decode_resampled(stream, info, target, start, duration, lossy, matrix)
        except Exception as err:  # noqa: BLE001 - bad packets raise many kinds
            if type(err).__name__ == "SampleError":
                raise
            raise stream.corrupt("cannot decode", err) from None
    finally:
        stream.close()
    if samples.shape[1] == 0:
        raise sample_error("empty_audio", f"audio {key!r}: no sample decoded (header duration {info.duration:.3f} s, "
                                          f"span start {start} s)")
    if start == 0 and duration is None:
        _check_truncated(samples.shape[1] / target, info, key)
    return DecodedAudio(samples, target, span_start / target, REMIX_RULES[channels], info, end)


def _decode_resampled(stream: _Stream, info: AudioInfo, target: int, start: float, duration: float | None,
                      lossy: bool, matrix: np.ndarray | None) -> tuple[np.ndarray, int, bool]:
    """Target-rate samples of the span (remixed first), its first target sample, and whether it reached the end."""
    src = info.sample_rate
    a = round(start * target)  # the span in target samples: [a, b)
    b = None if duration is None else a + round(duration * target)
    # source context on the rate ratio's grid, so the output samples fall on the whole file's output grid
    g = src // math.gcd(src, target)
    context = 0 if src == target else 64 * max(1, math.ceil(src / target)) + g
    s0 = max(0, (a * src // target - context) // g * g)
    s1 = None if b is None else -(-b * src // target) + context
    raw, end = _decode_source(stream, s0, s1, lossy)
    mixed = raw if matrix is None else (matrix @ raw.astype(np.float64)).astype(np.float32)
    out = resample(mixed, src, target)
    t0 = s0 * target // src  # target sample of out[:, 0]
    if end:  # the whole-file length rule: round(N * target / src) samples in all
        out = out[:, :max(0, resampled_length(s0 + raw.shape[1], src, target) - t0)]
    stop = None if b is None else b - t0
    return out[:, a - t0:stop], a, end and (b is None or t0 + out.shape[1] <= b)


def _check_truncated(decoded: float, info: AudioInfo, key: str) -> None:
    missing = info.duration - decoded
    if info.duration > 0 and missing > TRUNCATED_TOLERANCE[0] and missing > TRUNCATED_TOLERANCE[1] * info.duration:
        raise sample_error("corrupt_audio", f"audio {key!r}: truncated: the header says {info.duration:.3f} s, "
                                            f"{decoded:.3f} s decoded")


# ---------------------------------------------------------------------------
# segments
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """One fixed-length window of a file, at the target rate.

    Attributes:
        start: first sample (target rate), a multiple of the hop length.
        length: samples, a whole number of hop lengths.
        valid: samples of real audio from ``start`` (the rest is padding): ``min(length, N - start)``.
        sample_rate: the target rate.
    """

    start: int
    length: int
    valid: int
    sample_rate: int

    @property
    def start_seconds(self) -> float:
        return self.start / self.sample_rate

    @property
    def seconds(self) -> float:
        return self.length / self.sample_rate

    def padding_mask(self) -> np.ndarray:
        """(length,) bool: True on real audio, False on padding."""
        return np.arange(self.length) < self.valid

    def to_dict(self) -> dict[str, int]:
        return {"start": self.start, "length": self.length, "valid": self.valid, "sample_rate": self.sample_rate}


def segment_samples(segment_seconds: float, sample_rate: int, hop_length: int) -> int:
    """``segment_seconds`` at ``sample_rate`` rounded to the nearest whole number of hops (at least one)."""
    if segment_seconds <= 0 or sample_rate <= 0 or hop_length <= 0:
        raise ConfigError(f"segment_seconds, sample_rate and hop_length must be > 0, got: {segment_seconds}, "
                          f"{sample_rate}, {hop_length}")
    return max(1, round(segment_seconds * sample_rate / hop_length)) * hop_length


def plan_segments(duration: float, sample_rate: int, *, segment_seconds: float, hop_length: int, mode: str = "head",
                  num_segments: int | None = None, stride_seconds: float | None = None, max_segments: int | None = None,
                  pad: bool = True) -> list[Segment]:
    """Where to cut a file of ``duration`` seconds into segments of a whole number of hops.

    Args:
        duration: seconds (a probe's duration, or N / rate of a decode).
        sample_rate: the rate the segments are counted in (the model's).
        segment_seconds: wanted length, rounded to the nearest whole number of ``hop_length`` samples.
        hop_length: the model's samples per latent frame.
        mode: ``head`` (one segment from 0), ``uniform`` (``num_segments`` spread evenly from the start to
            the end, starts on the hop grid), ``slide`` (every ``stride_seconds``, rounded to whole hops,
            until the end is covered; the last one padded).
        num_segments: for ``uniform``.
        stride_seconds: for ``slide``.
        max_segments: per-file cap (the first ones in time).
        pad: audio shorter than a segment (and a slide's tail) becomes a padded segment; False drops it.

    Returns:
        The segments, in time order; ``[]`` when ``pad`` is False and the audio is shorter than one segment.
    """
    if mode not in SEGMENT_MODES:
        raise ConfigError(f"mode must be one of {list(SEGMENT_MODES)}, got: {mode!r}")
    if max_segments is not None and max_segments <= 0:
        raise ConfigError(f"max_segments must be > 0 or None, got: {max_segments}")
    length = segment_samples(segment_seconds, sample_rate, hop_length)
    total = round(duration * sample_rate)
    if total <= 0:
        return []
    if mode == "head":
        starts = [0]
    elif mode == "uniform":
        starts = _uniform_starts(total, length, hop_length, num_segments)
    else:
        starts = _slide_starts(total, length, hop_length, stride_seconds, sample_rate)
    segments = [Segment(s, length, min(length, total - s), sample_rate) for s in starts]
    if not pad:
        segments = [s for s in segments if s.valid == length]
    return segments[:max_segments]


def _uniform_starts(total: int, length: int, hop: int, num_segments: int | None) -> list[int]:
    if num_segments is None or num_segments <= 0:
        raise ConfigError(f"mode 'uniform' needs num_segments > 0, got: {num_segments}")
    last = max(0, total - length) // hop  # the last start, in hops, that keeps a segment inside the audio
    n = max(1, num_segments - 1)
    return sorted({(2 * i * last + n) // (2 * n) * hop for i in range(num_segments)})  # i * last / n, halves up


def _slide_starts(total: int, length: int, hop: int, stride_seconds: float | None, sample_rate: int) -> list[int]:
    if stride_seconds is None or stride_seconds <= 0:
        raise ConfigError(f"mode 'slide' needs stride_seconds > 0, got: {stride_seconds}")
    stride = segment_samples(stride_seconds, sample_rate, hop)
    starts = [0]
    while starts[-1] + length < total:  # the end is not covered yet
        starts.append(starts[-1] + stride)
    return starts


def decode_segment(data: bytes, segment: Segment, key: str = "", channels: str = "keep") -> tuple[np.ndarray, np.ndarray]:
    """The segment's samples, padded with zeros to its length, and its padding mask.

    Returns:
        ``(samples (C, length) float32, mask (length,) bool)``; the mask is True on the samples the
        decode really gave (which may differ from ``segment.valid`` when the header's duration is off).
    """
    audio = decode_audio(data, key, sample_rate=segment.sample_rate, channels=channels, start=segment.start_seconds,
                         duration=segment.seconds)
    got = min(audio.samples.shape[1], segment.length)
    out = np.zeros((audio.samples.shape[0], segment.length), np.float32)
    out[:, :got] = audio.samples[:, :got]
    return out, np.arange(segment.length) < got


def latent_padding_mask(mask: np.ndarray, hop_length: int) -> np.ndarray:
    """A (T,) sample mask shrunk to (T / hop,) latent frames: frame ``j`` is real when sample ``j * hop`` is.

    This is nearest-neighbour interpolation to the latent length, stable-audio-tools' ``pre_encode.py``
    rule (``F.interpolate(mask, size=latent_length, mode="nearest")``): a frame that starts on real
    audio counts as real even if padding follows within it.
    """
    if mask.ndim != 1 or len(mask) % hop_length:
        raise ConfigError(f"mask must be 1-D with a length that is a multiple of hop_length={hop_length}, got shape {mask.shape}")
    return np.asarray(mask[::hop_length], dtype=bool)


def decoder_description(sample_rate: int, channels: int, remix: str) -> dict[str, Any]:
    """What a codec records about the decoder of every file of a job: versions, resampler, target rate and
    channels, the remix rule's description (:data:`REMIX_RULES`)."""
    return {"decoder": "pyav", "pyav": av.__version__, "ffmpeg": str(av.ffmpeg_version_info),
            "resampler": "libswresample (av.AudioResampler defaults)", "sample_rate": int(sample_rate),
            "channels": int(channels), "remix": remix}


def describe(audio: DecodedAudio) -> dict[str, Any]:
    """What a codec records about how ``audio`` was made (decoder, versions, rate, remix rule, its source)."""
    return {**decoder_description(audio.sample_rate, audio.samples.shape[0], audio.remix),
            "source_rate": audio.source.sample_rate, "source_channels": audio.source.channels,
            "source_layout": audio.source.layout, "codec": audio.source.codec}
