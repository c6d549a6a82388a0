"""The processor configs: how images, videos (and audio) become model inputs.

Pure dataclasses (no PIL, PyAV or torch), recorded in every codec (``latentflow.format``),
so readers can interpret rows without the decoders. The spatial geometry shared by images and
video clips (resolution, aspect buckets, crop) is declared once, in :class:`GeometryConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from latentflow.configuration import Config, check_choice, check_positive
from latentflow.errors import ConfigError

DECODERS = ("pyav", "torchcodec", "auto")
IMAGE_RESAMPLE = ("bilinear", "bicubic", "lanczos", "box")  # PIL filters (media.image maps them)
VIDEO_RESAMPLE = ("area", "bilinear", "bicubic", "lanczos")  # libswscale filters (media.video_decode maps them)
CROPS = ("center", "random")
CLIP_MODES = ("head", "uniform", "slide")
SHORT_CLIP = ("skip", "pad")
BUCKET_GRID_MULTIPLE = 2  # bucket_step="auto": latent grids even, so the shipped priors' patch size 2 divides them


@dataclass
class GeometryConfig(Config):
    """The spatial geometry shared by images and video clips, declared once.

    Attributes:
        resolution: side of the square crop; with ``buckets``, sqrt of the target pixel area.
        buckets: sort samples into aspect-ratio buckets of about ``resolution**2`` pixels
            (a clip's bucket is then (T, H, W)).
        bucket_max_aspect: the widest bucket's aspect ratio (and 1/that for the tallest).
        bucket_step: bucket sides are multiples of this (a multiple of the model's downsampling
            factor f). ``"auto"`` (default): ``2 * f``, so every bucket's latent grid is even and a
            prior with patch size 2 (the shipped flow configs) divides it. ``None``: ``f`` (how
            bucketed outputs were encoded before ``"auto"``; their codecs record ``null`` and keep
            that meaning). Unbucketed configs write ``None`` here: the step is unused there, and
            their codec fingerprints stay what they were.
        crop: ``"center"`` or ``"random"`` (random crops are seeded by ``seed`` and the sample key,
            so a rerun makes the same crop).
        seed: seed of the random crops.
    """

    resolution: int = 256
    buckets: bool = False
    bucket_max_aspect: float = 2.0
    bucket_step: int | Literal["auto"] | None = "auto"
    crop: str = "center"
    seed: int = 0

    def resolved_bucket_step(self, downsample_factor: int) -> int:
        """Bucket sides are multiples of this, for a model that downsamples by ``downsample_factor``."""
        if self.bucket_step == "auto":
            return BUCKET_GRID_MULTIPLE * downsample_factor
        return self.bucket_step or downsample_factor

    def validate(self) -> None:
        name = type(self).__name__
        check_positive(name, "resolution", self.resolution)
        check_choice(name, "crop", self.crop, CROPS)
        if self.bucket_max_aspect < 1:
            raise ConfigError(f"{name}.bucket_max_aspect must be >= 1, got: {self.bucket_max_aspect}")
        if isinstance(self.bucket_step, int):
            check_positive(name, "bucket_step", self.bucket_step)


@dataclass
class ImageProcessorConfig(GeometryConfig):
    """How images become model inputs (the geometry fields: :class:`GeometryConfig`).

    Attributes:
        resample: PIL filter for resizing: bilinear, bicubic, lanczos, box.
        min_size: reject images whose shorter side is below this (they would be upscaled a lot).
        max_pixels: reject images with more pixels than this (decompression bombs).
        flip: also return a horizontally flipped view.
        draft: let the JPEG decoder downscale by 1/2, 1/4 or 1/8 while decoding (fast, no quality
            lost at the output size since it never drops below the resize target).
    """

    resample: str = "bicubic"
    min_size: int = 0
    max_pixels: int = 64_000_000
    flip: bool = False
    draft: bool = True

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        check_choice(name, "resample", self.resample, IMAGE_RESAMPLE)
        check_positive(name, "min_size", self.min_size, allow_zero=True)
        check_positive(name, "max_pixels", self.max_pixels)


@dataclass
class VideoProcessorConfig(GeometryConfig):
    """How videos become clips of model inputs (the geometry fields: :class:`GeometryConfig`).

    Attributes:
        fps: frames per second of the clips (frames picked by timestamp); None keeps the native frames.
        num_frames: frames per clip; forced to ``k * temporal_stride + 1`` (rounded down, the
            forced value is what the job records). With ``frame_buckets``, the longest clip.
        temporal_stride: the model's temporal compression (4 for Wan, HunyuanVideo, CogVideoX; 8 for
            LTX); None takes the model's. It may be a multiple of the model's, not another value.
        frame_buckets: shorter clip lengths a video may also be cut to (each forced like ``num_frames``,
            none above it): a video gets the longest that fits it. None: every clip has ``num_frames``.
        clip_mode: ``head``, ``uniform`` or ``slide``.
        num_clips: clips per video in ``uniform`` mode (fewer when the video has fewer distinct starts).
        clip_stride_s: seconds between clip starts in ``slide`` mode.
        max_clips_per_video: cap on clips per video, any mode (``uniform`` spreads the capped number).
        resample: resize filter: ``area``, ``bilinear``, ``bicubic``, ``lanczos``.
        short_clip: a video shorter than the shortest clip: ``skip`` (an error row ``clip_too_short``) or
            ``pad`` (one clip, the last frame repeated; the row records how many frames were padded).
        max_pixels_per_video: decoded pixels one video may cost (frames decoded x H x W), checked from
            the header and the packet index before any frame is decoded (decompression bombs).
        max_frames: frames a video stream may hold (header or packets).
        decoder: ``pyav``, ``torchcodec`` (must be installed) or ``auto`` (torchcodec when installed).
    """

    fps: float | None = None
    num_frames: int = 17
    temporal_stride: int | None = None
    frame_buckets: list[int] | None = None
    clip_mode: str = "head"
    num_clips: int = 4
    clip_stride_s: float = 1.0
    max_clips_per_video: int = 16
    resample: str = "area"
    short_clip: str = "skip"
    max_pixels_per_video: int = 4_000_000_000
    max_frames: int = 100_000
    decoder: str = "pyav"

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        if self.fps is not None:
            check_positive(name, "fps", self.fps)
        for field_name in ("num_frames", "num_clips", "max_clips_per_video", "max_pixels_per_video", "max_frames"):
            check_positive(name, field_name, getattr(self, field_name))
        check_positive(name, "clip_stride_s", self.clip_stride_s)
        if self.temporal_stride is not None:
            check_positive(name, "temporal_stride", self.temporal_stride)
        if self.frame_buckets is not None:
            if not self.frame_buckets or min(self.frame_buckets) < 1 or max(self.frame_buckets) > self.num_frames:
                raise ConfigError(f"{name}.frame_buckets must be clip lengths in [1, num_frames={self.num_frames}], "
                                  f"got: {self.frame_buckets}")
        check_choice(name, "clip_mode", self.clip_mode, CLIP_MODES)
        check_choice(name, "resample", self.resample, VIDEO_RESAMPLE)
        check_choice(name, "short_clip", self.short_clip, SHORT_CLIP)
        check_choice(name, "decoder", self.decoder, DECODERS)


NORMALIZE_AUDIO = (None, "peak", "rms")
REMIX = ("mono", "stereo", "keep")  # latentflow.media.audio.REMIX_RULES (the rules themselves live there)
# The columns of an audio segment row, declared once (name -> Arrow/HF value type), read by the Ray
# blocks (pipeline/schema.py), the Parquet tables (format/tables.py), the Zarr writer and LatentDataset.
# ``start_time`` is the column video clip rows use for the same concept (seconds from the source's start).
SEGMENT_FIELDS: dict[str, str] = {
    "source_key": "string",      # the file's sample key (the row key is "<source_key>/seg0003")
    "segment_index": "int64",    # position of the segment among the file's segments
    "start_time": "float64",     # seconds from the stream's first sample to the segment's first
    "duration": "float64",       # seconds of the segment (padding included): a whole number of hops
    "sample_rate": "int64",      # of the encoded waveform (the model's)
    "channels": "int64",         # of the encoded waveform (the model's, after the remix rule)
    "valid_length": "int64",     # latent frames of real audio; the rest is padding (mask = arange(T) < valid_length)
}


@dataclass
class AudioProcessorConfig(Config):
    """How audio files (or the audio track of videos) become fixed-length waveform segments.

    Attributes:
        sample_rate: the rate segments are resampled to; None takes the model's (``sampling_rate``).
        channels: the remix rule, ``mono``, ``stereo`` or ``keep``; None takes the model's channel
            count (1: ``mono``, 2: ``stereo``).
        hop_length: the model's samples per latent frame; None takes the model's (recorded as run).
        segment_seconds: segment length, forced to the nearest whole number of hops (as run). With
            ``duration_buckets``, the longest segment.
        duration_buckets: shorter segment lengths in seconds (each forced like ``segment_seconds``, none
            above it): a file shorter than ``segment_seconds`` is cut to the longest that fits it
            (one bucket of latent length each). None: every segment has ``segment_seconds``.
        segment_mode: ``head`` (one segment from 0 s), ``uniform`` (``num_segments`` spread evenly) or
            ``slide`` (one every ``segment_stride_s``, the last one padded).
        num_segments: segments per file in ``uniform`` mode.
        segment_stride_s: seconds between segment starts in ``slide`` mode (whole hops).
        max_segments_per_file: cap on segments per file, any mode (the first ones in time).
        short_audio: a file shorter than the shortest segment: ``pad`` (one segment, zero-padded; its
            row's ``valid_length`` says how many latent frames are real) or ``skip`` (an error row
            ``audio_too_short``).
        normalize: None; ``peak`` (each segment's real samples scaled to a peak of ``target_db`` dBFS);
            ``rms`` (scaled to an RMS of ``target_db`` dBFS; peaks may then exceed full scale).
        target_db: the level ``normalize`` scales to.
        max_seconds_per_file: a file whose header says it is longer is an error row ``over_budget``
            before any sample is decoded (decompression bombs, hour-long files in a clip dataset).
    """

    sample_rate: int | None = None
    channels: str | None = None
    hop_length: int | None = None
    segment_seconds: float = 1.0
    duration_buckets: list[float] | None = None
    segment_mode: str = "head"
    num_segments: int = 4
    segment_stride_s: float = 1.0
    max_segments_per_file: int = 16
    short_audio: str = "pad"
    normalize: str | None = None
    target_db: float = -1.0
    max_seconds_per_file: float = 3600.0

    def validate(self) -> None:
        name = type(self).__name__
        for field_name in ("sample_rate", "hop_length"):
            if getattr(self, field_name) is not None:
                check_positive(name, field_name, getattr(self, field_name))
        if self.channels is not None:
            check_choice(name, "channels", self.channels, REMIX)
        for field_name in ("segment_seconds", "segment_stride_s", "max_seconds_per_file", "num_segments", "max_segments_per_file"):
            check_positive(name, field_name, getattr(self, field_name))
        if self.duration_buckets is not None:
            if not self.duration_buckets or min(self.duration_buckets) <= 0 or max(self.duration_buckets) > self.segment_seconds:
                raise ConfigError(f"{name}.duration_buckets must be seconds in (0, segment_seconds={self.segment_seconds}], "
                                  f"got: {self.duration_buckets}")
        check_choice(name, "segment_mode", self.segment_mode, CLIP_MODES)
        check_choice(name, "short_audio", self.short_audio, SHORT_CLIP)
        check_choice(name, "normalize", self.normalize, NORMALIZE_AUDIO)
        if self.target_db > 0:
            raise ConfigError(f"{name}.target_db must be <= 0 dBFS, got: {self.target_db}")


# The per-row columns of a video clip's audio track, after the track's name (``<name>`` is its latent, (C, t)):
# declared once, read by the Ray blocks, the Parquet tables, the Zarr writer and LatentDataset.
TRACK_FIELDS: dict[str, str] = {
    "valid_length": "int64",  # latent frames of real audio (mask = arange(t) < valid_length); 0: the video has no audio
    "start_time": "float64",  # seconds from the video's first frame (the clip's ``start_time`` clock) to the span's first sample
    "duration": "float64",    # seconds of the span: the clip's, forced to a whole number of hops
}


@dataclass
class AudioTrackConfig(Config):
    """The audio track of every video clip, cut to exactly the clip's time span (by pts) and encoded by
    an audio model beside the clip's video latents, in the same row and the same shard commit.

    Attributes:
        model: the audio autoencoder: a folder, a name under ``models/``, an fsspec URL or a hub id.
        model_subfolder: inside ``model`` (``"audio_vae"`` of a diffusers pipeline root).
        name: the row's column prefix: ``<name>`` (C, t) latents, ``<name>_valid_length``,
            ``<name>_start_time``, ``<name>_duration``.
        required: a video without an audio stream is an error row ``no_audio_stream``; with ``false`` its
            clips keep their rows, with the latents of silence and ``<name>_valid_length`` 0.
        sample_rate: None takes the audio model's.
        channels: the remix rule ``mono``, ``stereo`` or ``keep``; None takes the model's channel count.
        normalize: None, ``peak`` or ``rms`` per clip span (see :class:`AudioProcessorConfig`).
        target_db: the level ``normalize`` scales to (dBFS).
    """

    model: str = ""
    model_subfolder: str | None = None
    name: str = "audio"
    required: bool = True
    sample_rate: int | None = None
    channels: str | None = None
    normalize: str | None = None
    target_db: float = -1.0

    def validate(self) -> None:
        name = type(self).__name__
        if not self.model:
            raise ConfigError(f"{name}.model must name an audio autoencoder (folder, models/ name, URL or hub id), got: ''")
        if not self.name.isidentifier():
            raise ConfigError(f"{name}.name must be a column name (letters, digits, _), got: {self.name!r}")
        self.processor_config(1.0)  # the audio fields are checked where AudioProcessorConfig checks them

    def processor_config(self, seconds: float) -> AudioProcessorConfig:
        """The audio processor of the track, for clips of ``seconds`` (what the codec records, as run)."""
        return AudioProcessorConfig(sample_rate=self.sample_rate, channels=self.channels, segment_seconds=seconds,
                                    short_audio="pad", normalize=self.normalize, target_db=self.target_db)
