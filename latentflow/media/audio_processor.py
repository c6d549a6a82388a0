"""Audio processor: audio bytes (any file FFmpeg reads, or a video's audio track) -> fixed-length segments.

Every decision that changes the samples is in :class:`AudioProcessorConfig`, which the encode job
records in its codec as run: the model's rate, channel rule and hop length filled in, and
``segment_seconds`` forced to a whole number of hops. One file gives many rows: segment ``i`` of
file ``key`` is the row ``f"{key}/seg{i:04d}"`` (:func:`~latentflow.sources.records.segment_key`).

How a file is cut (decoding, positions by pts, remix and resampling: :mod:`latentflow.media.audio`):

1. the header is probed (nothing decoded): a file longer than ``max_seconds_per_file`` is an error row;
2. the segment length is ``segment_seconds`` (or, with ``duration_buckets``, the longest bucket that
   fits the file); a file shorter than the shortest is padded (``short_audio: pad``) or an error row;
3. :func:`~latentflow.media.audio.plan_segments` places ``head`` / ``uniform`` / ``slide`` segments on
   the hop grid, capped at ``max_segments_per_file``;
4. only the span from the first segment's start to the last one's end is decoded (a seek), once,
   and each segment is its slice, zero-padded where the audio ends; its sample mask shrinks to the
   latent length (:func:`~latentflow.media.audio.latent_padding_mask`): ``valid_length`` frames are real.

Example::

    proc = AudioProcessor(AudioProcessorConfig(segment_seconds=1.0), hop_length=32, sample_rate=22050, channels=1)
    segments = proc.process_segments(wav_bytes, key="dog_bark")
    segments[0].waveform.shape     # (1, 22016): 688 hops of 32 samples, float32
    segments[0].key                # 'dog_bark/seg0000'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latentflow.errors import ConfigError
from latentflow.media.audio import (
    REMIX_RULES,
    TRUNCATED_TOLERANCE,
    decode_audio,
    decoder_description,
    latent_padding_mask,
    plan_segments,
    probe_audio,
    segment_samples,
)
from latentflow.media.config import AudioProcessorConfig
from latentflow.sources.records import SampleError, segment_key

RULE_CHANNELS = {"mono": 1, "stereo": 2}  # channels a remix rule gives ("keep": the file's)
CHANNEL_RULES = {1: "mono", 2: "stereo"}  # the rule a model's channel count implies


@dataclass(frozen=True)
class ProcessedSegment:
    """One segment of one audio file.

    Attributes:
        key: the row key, :func:`~latentflow.sources.records.segment_key` of ``source_key`` and ``segment_index``.
        source_key: the file's sample key.
        segment_index: position among the file's segments.
        waveform: (C, T) float32, T a whole number of hops, zero after the real audio.
        start_time: seconds from the stream's first sample to the segment's first.
        duration: T / sample_rate seconds.
        sample_rate: of ``waveform``.
        valid_length: latent frames of real audio (the padding mask shrunk to latent length).
    """

    key: str
    source_key: str
    segment_index: int
    waveform: np.ndarray
    start_time: float
    duration: float
    sample_rate: int
    valid_length: int

    @property
    def channels(self) -> int:
        return int(self.waveform.shape[0])


class AudioProcessor:
    """Turns audio bytes into segments of model inputs.

    Args:
        config: the processor config.
        hop_length: the model's samples per latent frame (its ``downsample_factor``).
        sample_rate: the model's rate, used when ``config.sample_rate`` is None.
        channels: the model's input channels (1 or 2 fix the remix rule when ``config.channels`` is None).

    Attributes:
        config: the config as run: rate, channel rule and hop filled in, lengths forced to whole hops.
        lengths: segment lengths in samples, shortest first.
        decoder_info: what the codec records about the decoder (:func:`~latentflow.media.audio.decoder_description`).

    Raises:
        ConfigError: no rate or channel rule can be found, or they contradict the model's.
    """

    def __init__(self, config: AudioProcessorConfig, hop_length: int | None = None, sample_rate: int | None = None,
                 channels: int | None = None):
        hop = _agree("hop_length", config.hop_length, hop_length)
        rate = _agree("sample_rate", config.sample_rate, sample_rate)
        rule = config.channels or CHANNEL_RULES.get(channels or 0)
        if rule is None:
            raise ConfigError(f"AudioProcessorConfig.channels is None and the model's {channels} input channels imply no "
                              f"rule; set audio.channels to one of {list(REMIX_RULES)}")
        if channels and rule in RULE_CHANNELS and RULE_CHANNELS[rule] != channels:
            raise ConfigError(f"AudioProcessorConfig.channels={rule!r} gives {RULE_CHANNELS[rule]} channels but the model takes "
                              f"{channels}; set audio.channels={CHANNEL_RULES.get(channels, 'keep')!r} or leave it unset")
        length = segment_samples(config.segment_seconds, rate, hop)
        buckets = sorted({segment_samples(b, rate, hop) for b in config.duration_buckets}) if config.duration_buckets else None
        self.config = config.replace(sample_rate=rate, channels=rule, hop_length=hop, segment_seconds=length / rate,
                                     duration_buckets=[n / rate for n in buckets] if buckets else None)
        self.lengths = sorted(set(buckets or []) | {length})
        self.out_channels = RULE_CHANNELS.get(rule) or channels
        self.decoder_info = decoder_description(rate, self.out_channels or 0, REMIX_RULES[rule])

    @property
    def hop_length(self) -> int:
        return int(self.config.hop_length)

    @property
    def sample_rate(self) -> int:
        return int(self.config.sample_rate)

    # ---- planning -------------------------------------------------------------------
    def plan(self, total: int, key: str = ""):
        """The :class:`~latentflow.media.audio.Segment` s of a file of ``total`` samples at the target rate.

        Raises:
            SampleError: ``audio_too_short`` when shorter than the shortest segment and ``short_audio`` is ``skip``.
        """
        cfg, rate = self.config, self.sample_rate
        fitting = [n for n in self.lengths if n <= total]
        if not fitting and cfg.short_audio == "skip":
            raise SampleError("process", "audio_too_short", f"audio {key!r} is {total / rate:.3f} s; a segment needs "
                              f"{self.lengths[0] / rate:.3f} s (set audio.short_audio: pad to keep it, padded)")
        length = fitting[-1] if fitting else self.lengths[0]
        return plan_segments(total / rate, rate, segment_seconds=length / rate, hop_length=self.hop_length,
                             mode=cfg.segment_mode, num_segments=cfg.num_segments, stride_seconds=cfg.segment_stride_s,
                             max_segments=cfg.max_segments_per_file, pad=True)

    # ---- the pipeline -----------------------------------------------------------------
    def process_segments(self, media_bytes: bytes | None, key: str) -> list[ProcessedSegment]:
        """Probe, plan, decode the span, cut, pad, normalize.

        Args:
            media_bytes: an audio file or a video file with an audio track; None when the sample had none.
            key: the file's sample key (segment keys derive from it).

        Returns:
            the file's segments, in order of start time.

        Raises:
            SampleError: the decoder's (``missing_audio``, ``empty_audio``, ``corrupt_audio`` (also truncated),
                ``no_audio_stream``, ``unsupported_codec``, ``unmappable_channel_layout``), ``over_budget``,
                ``audio_too_short``.
        """
        cfg, rate = self.config, self.sample_rate
        info = probe_audio(media_bytes, key)
        if info.duration > cfg.max_seconds_per_file:
            raise SampleError("decode", "over_budget", f"audio {key!r} is {info.duration:.1f} s long (header), more than "
                              f"max_seconds_per_file={cfg.max_seconds_per_file}")
        whole = None
        if info.duration <= 0:  # no duration in the header: decode it all, then cut
            whole = decode_audio(media_bytes, key, sample_rate=rate, channels=cfg.channels)
            total = whole.samples.shape[1]
            if total / rate > cfg.max_seconds_per_file:
                raise SampleError("decode", "over_budget", f"audio {key!r} decodes to {total / rate:.1f} s, more than "
                                  f"max_seconds_per_file={cfg.max_seconds_per_file}")
        else:
            total = round(info.duration * rate)
        segments = self.plan(total, key)
        first, end = segments[0].start, max(s.start + s.length for s in segments)
        if whole is None:
            span = decode_audio(media_bytes, key, sample_rate=rate, channels=cfg.channels, start=first / rate,
                                duration=(end - first) / rate)
            samples = span.samples  # (C, n): samples [first, first + n) of the file at the target rate
            _check_truncated(min(end, total) - first - samples.shape[1], rate, info.duration, span.reached_end, key)
        else:
            samples, first = whole.samples, 0
        self._check_channels(samples.shape[0], key)
        return [self._segment(samples, seg.start - first, seg, i, key) for i, seg in enumerate(segments)]

    def process_spans(self, media_bytes: bytes | None, key: str, spans: list[tuple[float, float]],
                      clock_origin: float = 0.0) -> list[ProcessedSegment]:
        """The audio of given time spans of one file (a video's clips): decoded once, from the first span's
        start to the last one's end, and cut by presentation time.

        Args:
            media_bytes: the file (a video with an audio stream).
            key: the file's sample key.
            spans: ``(start, duration)`` seconds on the caller's clock (a clip's ``start_time``).
            clock_origin: the presentation time, in seconds, of the caller's clock's 0 (a video's first
                frame); the audio stream's own first sample may be earlier or later.

        Returns:
            one segment per span, in order: ``round(duration * rate / hop)`` hops long (at least one), starting
            at the sample nearest the span's start. Before the stream's first sample (a video whose audio starts
            late) the segment holds silence, as players render it; after its last, zero padding, which
            ``valid_length`` excludes. ``start_time`` is on the caller's clock.

        Raises:
            SampleError: the decoder's (``no_audio_stream`` for a video without audio, ``corrupt_audio``, ...),
                ``over_budget``, ``unmappable_channel_layout``.
        """
        cfg, rate, hop = self.config, self.sample_rate, self.hop_length
        info = probe_audio(media_bytes, key)
        if info.duration > cfg.max_seconds_per_file:
            raise SampleError("decode", "over_budget", f"audio {key!r} is {info.duration:.1f} s long (header), more than "
                              f"max_seconds_per_file={cfg.max_seconds_per_file}")
        shift = clock_origin - info.start_time  # the caller's clock 0, in seconds of the audio stream
        starts = [round((start + shift) * rate) for start, _ in spans]  # first sample of each span (may be < 0)
        lengths = [segment_samples(duration, rate, hop) for _, duration in spans]
        first, end = max(0, min(starts)), max(s + n for s, n in zip(starts, lengths))
        samples = np.zeros((self.out_channels or info.channels, 0), np.float32)
        if end > first:
            try:
                samples = decode_audio(media_bytes, key, sample_rate=rate, channels=cfg.channels, start=first / rate,
                                       duration=(end - first) / rate).samples
            except SampleError as err:
                if err.error_type != "empty_audio":  # a span that starts after the stream's end holds no sample
                    raise
        self._check_channels(samples.shape[0], key)
        out = []
        for i, (start, length) in enumerate(zip(starts, lengths)):
            wave = np.zeros((samples.shape[0], length), np.float32)
            a, b = max(start, first), min(start + length, first + samples.shape[1])  # real samples, in file positions
            if b > a:
                wave[:, a - start:b - start] = samples[:, a - first:b - first]
            real = max(0, b - start)  # silence before the stream's first sample counts as real (it is what plays)
            self._normalize(wave, real)
            valid = int(latent_padding_mask(np.arange(length) < real, hop).sum())
            out.append(ProcessedSegment(segment_key(key, i), key, i, wave, start / rate - shift, length / rate, rate, valid))
        return out

    def silence(self, key: str, index: int, start: float, duration: float) -> ProcessedSegment:
        """A span of a file with no audio stream: zeros of the span's length, ``valid_length`` 0 (all masked)."""
        length = segment_samples(duration, self.sample_rate, self.hop_length)
        wave = np.zeros((self.out_channels or 1, length), np.float32)
        return ProcessedSegment(segment_key(key, index), key, index, wave, start, length / self.sample_rate, self.sample_rate, 0)

    def _segment(self, samples: np.ndarray, offset: int, seg, index: int, key: str) -> ProcessedSegment:
        piece = samples[:, offset:offset + seg.length]
        got = piece.shape[1]
        wave = np.zeros((samples.shape[0], seg.length), np.float32)  # (C, T)
        wave[:, :got] = piece
        self._normalize(wave, got)
        valid = int(latent_padding_mask(np.arange(seg.length) < got, self.hop_length).sum())
        return ProcessedSegment(segment_key(key, index), key, index, wave, seg.start / self.sample_rate,
                                seg.length / self.sample_rate, self.sample_rate, valid)

    def _normalize(self, wave: np.ndarray, got: int) -> None:
        """Scale the real samples (in place) to ``target_db`` peak or RMS; silence stays silence."""
        mode = self.config.normalize
        if mode is None or got == 0:
            return
        real = wave[:, :got]
        level = float(np.abs(real).max()) if mode == "peak" else float(np.sqrt(np.mean(real.astype(np.float64) ** 2)))
        if level > 0:
            wave *= np.float32(10 ** (self.config.target_db / 20) / level)

    def _check_channels(self, got: int, key: str) -> None:
        if self.out_channels and got != self.out_channels:
            raise SampleError("decode", "unmappable_channel_layout", f"audio {key!r} has {got} channels and the model takes "
                              f"{self.out_channels}; channels={self.config.channels!r} keeps them: set audio.channels to "
                              "'mono' or 'stereo'")


def _agree(name: str, configured: int | None, model: int | None) -> int:
    """The config's value, else the model's; both set and different is an error."""
    if configured is not None and model is not None and configured != model:
        raise ConfigError(f"AudioProcessorConfig.{name}={configured} but the model's is {model}; leave it unset (null)")
    value = configured if configured is not None else model
    if value is None:
        raise ConfigError(f"AudioProcessorConfig.{name} is None and the model reports none; set audio.{name}")
    return int(value)


def _check_truncated(missing: int, rate: int, header_duration: float, reached_end: bool, key: str) -> None:
    """A span that ends (the stream ran out) well before the header's duration: the file is truncated."""
    seconds = missing / rate
    if reached_end and seconds > TRUNCATED_TOLERANCE[0] and seconds > TRUNCATED_TOLERANCE[1] * header_duration:
        raise SampleError("decode", "corrupt_audio", f"audio {key!r}: truncated: the header says {header_duration:.3f} s, "
                          f"the stream ends {seconds:.3f} s early")
