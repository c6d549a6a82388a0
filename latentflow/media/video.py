"""Video processor: video bytes -> clips -> resize + crop (or bucket) -> (3, T, H, W) float32 in [-1, 1].

Every decision that changes the pixels is in :class:`VideoProcessorConfig`, which the encode
job records in its output (with the decoder's name and version, :attr:`VideoProcessor.decoder_info`).
One video gives many rows: clip ``i`` of video ``key`` is the row ``f"{key}/clip{i:04d}"``
(:func:`~latentflow.sources.records.clip_key`), so keys stay unique and a rerun makes the same rows.

How clips are cut, all by presentation time (:mod:`latentflow.media.video_decode`):

* the frames are put on a grid at ``fps`` (``k / fps`` seconds shows the last frame with
  ``pts <= k / fps``), or on the native frames when ``fps`` is None;
* a clip is ``T`` consecutive grid steps. ``T`` is ``num_frames``, forced to ``k * stride + 1``
  (rounded down) for the model's temporal stride; with ``frame_buckets``, the longest bucket
  that fits the video;
* ``clip_mode``: ``head`` (one clip from 0 s), ``uniform`` (``num_clips`` spread evenly) or
  ``slide`` (one every ``clip_stride_s`` seconds), at most ``max_clips_per_video``.

Example::

    proc = VideoProcessor(VideoProcessorConfig(fps=8, num_frames=17, resolution=256), downsample_factor=8, temporal_stride=4)
    clips = proc.process_clips(mp4_bytes, key="000123")
    clips[0].pixel_values.shape   # (3, 17, 256, 256), float32 in [-1, 1]
    clips[0].key                  # '000123/clip0000'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from latentflow.errors import ConfigError
from latentflow.media.config import ImageProcessorConfig, VideoProcessorConfig
from latentflow.media.image import ImageProcessor
from latentflow.media.video_decode import VideoReader, decoder_info, resample, resolve_decoder
from latentflow.sources.records import SampleError, clip_key

logger = logging.getLogger(__name__)


def force_frames(num_frames: int, stride: int) -> int:
    """``num_frames`` rounded down to the nearest ``k * stride + 1`` (a causal video VAE's constraint).

    Down, not up: a longer clip would ask more of every video and turn some into short clips.
    """
    return (num_frames - 1) // stride * stride + 1


@dataclass(frozen=True)
class ProcessedClip:
    """One clip of one video.

    Attributes:
        key: the row key, :func:`~latentflow.sources.records.clip_key` of ``video_key`` and ``clip_index``.
        video_key: the sample key of the video.
        clip_index: position of the clip among the video's clips.
        pixel_values: (3, T, H, W) float32 in [-1, 1], ``uint8 / 127.5 - 1``.
        start_time: seconds from the video's first frame to the clip's first frame.
        fps: frames per second of the clip (the target fps, or the video's average rate).
        num_frames: T, padded frames included.
        original_size: (height, width) of the decoded video.
        crop_box: (top, left, height, width) of the crop inside the resized frames.
        padded_frames: how many of the T frames repeat the last real one (``short_clip: pad``).
        bucket: (T, H, W) of ``pixel_values``.
        pts_time: presentation time in seconds of the video's first frame (``start_time``'s 0 on the
            container's clock: where the clip's audio track is cut).
        audio: the audio of the clip's span (:meth:`~latentflow.media.audio_processor.AudioProcessor.process_spans`)
            when the processor has an audio track; None otherwise, or when the optional track is missing.
    """

    key: str
    video_key: str
    clip_index: int
    pixel_values: np.ndarray
    start_time: float
    fps: float
    num_frames: int
    original_size: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    padded_frames: int
    bucket: tuple[int, int, int]
    pts_time: float = 0.0
    audio: Any = None


@dataclass(frozen=True)
class ClipPlan:
    """Where one clip lies on the grid: its first step, its length and its padding."""

    start: int
    length: int
    padded: int = 0


class VideoProcessor:
    """Turns video bytes into clips of model inputs.

    Args:
        config: the processor config.
        downsample_factor: the model's spatial reduction; crop sides are multiples of it.
        temporal_stride: the model's temporal reduction; clip lengths become ``k * stride + 1``.
        audio: an :class:`~latentflow.media.audio_processor.AudioProcessor` that cuts each clip's audio track
            (the same span by pts); ``audio_required``: a video with no audio stream is an error row
            (else its clips keep their rows with ``audio`` of silence and ``valid_length`` 0).

    Attributes:
        config: the config as run: ``num_frames``, ``frame_buckets`` and ``temporal_stride`` forced.
        decoder_info: ``{"name", "version", "ffmpeg"}`` of the decoder that runs (for the codec).
    """

    def __init__(self, config: VideoProcessorConfig, downsample_factor: int = 1, temporal_stride: int | None = None,
                 audio=None, audio_required: bool = True):
        self.audio, self.audio_required = audio, audio_required
        stride = _stride(config.temporal_stride, temporal_stride)
        forced = force_frames(config.num_frames, stride)
        buckets = sorted({force_frames(n, stride) for n in config.frame_buckets}) if config.frame_buckets else None
        if forced != config.num_frames or (buckets and buckets != sorted(set(config.frame_buckets))):
            logger.warning("num_frames %s and frame_buckets %s forced to k*%d+1 (rounded down): %s and %s",
                           config.num_frames, config.frame_buckets, stride, forced, buckets)
        self.config = config.replace(num_frames=forced, frame_buckets=buckets, temporal_stride=stride)
        self.downsample_factor = downsample_factor
        self.lengths = sorted(set(buckets or []) | {forced})  # clip lengths, shortest first
        self.decoder_info = decoder_info(config.decoder)  # refuses a missing torchcodec now, not per sample
        self._decoder = resolve_decoder(config.decoder)
        self._geometry = ImageProcessor(ImageProcessorConfig(
            resolution=config.resolution, crop=config.crop, seed=config.seed, buckets=config.buckets,
            bucket_max_aspect=config.bucket_max_aspect, bucket_step=config.bucket_step), downsample_factor)

    # ---- clip planning ----------------------------------------------------------------
    def plan_clips(self, grid_times: np.ndarray, key: str = "") -> list[ClipPlan]:
        """The clips of a video whose grid (after fps resampling) has ``len(grid_times)`` steps.

        Raises:
            SampleError: ``clip_too_short`` when the video is shorter than the shortest clip and
                ``short_clip`` is ``skip``.
        """
        steps, cfg = len(grid_times), self.config
        fitting = [n for n in self.lengths if n <= steps]
        if not fitting:
            if cfg.short_clip == "pad":
                return [ClipPlan(0, self.lengths[0], self.lengths[0] - steps)]
            fps = f"{cfg.fps} fps" if cfg.fps else "native fps"
            raise SampleError("process", "clip_too_short",
                              f"video {key!r} gives {steps} frames at {fps}; a clip needs {self.lengths[0]} "
                              "(set short_clip: pad to keep it, padded)")
        length = fitting[-1]
        last = steps - length  # the last possible start
        if cfg.clip_mode == "head":
            starts = [0]
        elif cfg.clip_mode == "uniform":
            count = min(cfg.num_clips, cfg.max_clips_per_video)
            starts = sorted({int(round(s)) for s in np.linspace(0, last, count)})  # one clip: [0]
        else:  # slide: the first grid step at or after every multiple of clip_stride_s
            wanted = np.arange(0.0, float(grid_times[last]) + 1e-6, cfg.clip_stride_s)
            starts = sorted({int(i) for i in np.searchsorted(grid_times, wanted - 1e-6, side="left")})
        return [ClipPlan(s, length) for s in starts[: cfg.max_clips_per_video]]

    # ---- the pipeline -----------------------------------------------------------------
    def process_clips(self, media_bytes: bytes | None, key: str) -> list[ProcessedClip]:
        """Decode, cut, resize, crop and normalize the clips of one video.

        Args:
            media_bytes: the video file (mp4, webm, mkv, mov, ...); None when the sample had none.
            key: the video's sample key (clip keys and random crops derive from it).

        Returns:
            the video's clips, in order of start time.

        Raises:
            SampleError: ``missing_video``, ``empty_video``, ``corrupt_video``, ``no_video_stream``,
                ``decompression_bomb``, ``too_small``, ``clip_too_short``.
        """
        cfg = self.config
        with VideoReader(media_bytes, key, self._decoder) as video:
            info = video.require_video()
            self._check_size(info.height, info.width, key)
            index = video.frame_index(max_frames=cfg.max_frames)
            positions, times = resample(index, cfg.fps)  # (M,), (M,)
            plans = self.plan_clips(times, key)
            needed = np.concatenate([positions[p.start : p.start + p.length - p.padded] for p in plans])
            self._check_budget(video.frames_to_decode(needed), info.height, info.width, key)
            (rh, rw), _ = self._geometry.crop_geometry(info.height, info.width, clip_key(key, 0))
            frames = video.decode(np.unique(needed), resize=(rh, rw), resample=cfg.resample)  # (U, rh, rw, 3)
        row = {int(p): i for i, p in enumerate(np.unique(needed))}
        fps = cfg.fps or info.fps or len(index) / index.end_time
        origin = float(index.pts[0] * index.time_base)  # the first frame's presentation time: start_time's 0
        clips = [self._clip(frames, row, positions, times, plan, i, key, info, fps, origin) for i, plan in enumerate(plans)]
        return self._with_audio(clips, media_bytes, key) if self.audio is not None else clips

    def _with_audio(self, clips: list[ProcessedClip], media_bytes: bytes, key: str) -> list[ProcessedClip]:
        """Each clip with the audio of exactly its span: from its first frame's pts, ``num_frames / fps`` seconds."""
        spans = [(c.start_time, c.num_frames / c.fps) for c in clips]
        try:
            audio = self.audio.process_spans(media_bytes, key, spans, clock_origin=clips[0].pts_time)
        except SampleError as err:
            if self.audio_required or err.error_type != "no_audio_stream":
                raise
            audio = [self.audio.silence(key, i, start, seconds) for i, (start, seconds) in enumerate(spans)]
        return [replace(c, audio=a) for c, a in zip(clips, audio)]

    def _clip(self, frames: np.ndarray, row: dict[int, int], positions: np.ndarray, times: np.ndarray,
              plan: ClipPlan, index: int, key: str, info, fps: float, origin: float = 0.0) -> ProcessedClip:
        name = clip_key(key, index)
        _, (top, left, th, tw) = self._geometry.crop_geometry(info.height, info.width, name)
        real = positions[plan.start : plan.start + plan.length - plan.padded]
        picks = [row[int(p)] for p in real] + [row[int(real[-1])]] * plan.padded  # pad repeats the last frame
        pixels = frames[picks, top : top + th, left : left + tw]  # (T, H, W, 3) uint8
        values = pixels.transpose(3, 0, 1, 2).astype(np.float32) / 127.5 - 1.0  # (3, T, H, W)
        return ProcessedClip(name, key, index, values, float(times[plan.start]), float(fps), plan.length,
                             (info.height, info.width), (top, left, th, tw), plan.padded, (plan.length, th, tw), origin)

    def _check_size(self, height: int, width: int, key: str) -> None:
        if height * width > self.config.max_pixels_per_video:
            raise SampleError("decode", "decompression_bomb", f"video {key!r} is {height}x{width}: one frame is more than "
                              f"max_pixels_per_video={self.config.max_pixels_per_video} pixels")
        floor = self._geometry.downsample_factor
        if min(height, width) < floor:
            raise SampleError("process", "too_small", f"video {key!r} is {height}x{width}; the shorter side must be >= {floor}")

    def _check_budget(self, frames: int, height: int, width: int, key: str) -> None:
        if frames * height * width > self.config.max_pixels_per_video:
            raise SampleError("decode", "decompression_bomb",
                              f"video {key!r}: its clips need {frames} frames of {height}x{width} decoded = "
                              f"{frames * height * width} pixels, more than max_pixels_per_video={self.config.max_pixels_per_video}")


def _stride(configured: int | None, model: int | None) -> int:
    """The temporal stride clips follow: the config's (a multiple of the model's), else the model's, else 1."""
    if model is not None and model < 1:
        raise ConfigError(f"temporal_stride must be >= 1, got: {model}")
    if configured is None:
        return model or 1
    if model is not None and configured % model:
        raise ConfigError(f"VideoProcessorConfig.temporal_stride must be a multiple of the model's temporal stride {model}, "
                          f"got: {configured}")
    return configured
