"""Video decoding: header probe, a presentation-time index, and frames decoded by position.

Frame selection is by presentation timestamp (pts), never by decode order or by a frame
counter, so it is deterministic and variable-fps input works:

1. :meth:`VideoReader.probe` reads the container header only (no packet, no frame).
2. :meth:`VideoReader.frame_index` demuxes the packets (no decoding) into the sorted pts of
   every frame and which of them are keyframes.
3. :func:`resample` maps a target fps onto that timeline: for each wanted time ``t = k / fps``
   the frame shown at ``t``, i.e. the last frame with ``pts <= t``.
4. :meth:`VideoReader.decode` decodes only the frames asked for: one seek to the keyframe
   before each needed group of pictures (GOP), decode forward, stop after its last needed frame.

Decoders: ``pyav`` (the default; its wheels bundle FFmpeg) and ``torchcodec`` (optional: it
needs FFmpeg's shared libraries from the system). ``auto`` is torchcodec when it is importable,
else PyAV. The index always comes from PyAV, so both decoders pick the same frames.

Times are seconds from the first frame's pts (the first frame is at 0.0).

Example::

    with VideoReader(mp4_bytes, key="clip-7") as video:
        index = video.frame_index(max_frames=100_000)
        positions, times = resample(index, fps=8.0)          # (M,) frame positions, (M,) seconds
        frames = video.decode(positions[:17], resize=(256, 455), crop=(0, 99, 256, 256))  # (17, 256, 256, 3) uint8
"""

from __future__ import annotations

import functools
import importlib.util
import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

import av
import numpy as np

from latentflow.errors import ConfigError
from latentflow.media.config import DECODERS
from latentflow.sources.records import SampleError

_EPS = 1e-6  # seconds: float slack when comparing a wanted time with a frame's pts

av.logging.set_level(av.logging.PANIC)  # FFmpeg's stderr chatter on corrupt input; errors still raise


def resolve_decoder(name: str) -> str:
    """The decoder that ``name`` runs: ``pyav`` or ``torchcodec``.

    Raises:
        ConfigError: ``torchcodec`` asked for but not importable, or an unknown name.
    """
    if name not in DECODERS:
        raise ConfigError(f"decoder must be one of {list(DECODERS)}, got: {name!r}")
    has_torchcodec = importlib.util.find_spec("torchcodec") is not None
    if name == "torchcodec" and not has_torchcodec:
        raise ConfigError("decoder 'torchcodec' is not installed (it also needs FFmpeg's shared libraries); "
                          "pip install torchcodec, or set decoder: pyav")
    return "torchcodec" if name == "torchcodec" or (name == "auto" and has_torchcodec) else "pyav"


def decoder_info(name: str) -> dict[str, str]:
    """``{"name", "version", "ffmpeg"}`` of the decoder ``name`` resolves to: what the codec records."""
    resolved = resolve_decoder(name)
    if resolved == "torchcodec":
        import torchcodec

        return {"name": "torchcodec", "version": torchcodec.__version__, "ffmpeg": "system"}
    return {"name": "pyav", "version": av.__version__, "ffmpeg": str(av.ffmpeg_version_info)}


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says, read without decoding.

    Attributes:
        has_video: the file holds a video stream (False: audio-only or no stream at all).
        num_streams: streams of any kind.
        height, width: frame size of the video stream (0 without one).
        fps: the stream's average frame rate (0.0 when unknown).
        duration: seconds (0.0 when unknown).
        num_frames: frame count from the header (0 when the container does not store it: mkv, webm).
        codec: the video codec's name (``h264``, ``vp9``, ...).
    """

    has_video: bool
    num_streams: int
    height: int = 0
    width: int = 0
    fps: float = 0.0
    duration: float = 0.0
    num_frames: int = 0
    codec: str = ""


@dataclass(frozen=True)
class FrameIndex:
    """The presentation timeline of a video stream, from its packets (nothing decoded).

    Attributes:
        pts: (N,) int64 pts of every frame, ascending, in the stream's ``time_base``.
        times: (N,) float64 seconds from the first frame (``times[0] == 0``).
        keyframe: (N,) bool, the frames a decoder can start from.
        end_time: when the last frame stops being shown (its pts + its duration), in seconds.
        time_base: seconds per pts tick.
    """

    pts: np.ndarray
    times: np.ndarray
    keyframe: np.ndarray
    end_time: float
    time_base: Fraction

    def __len__(self) -> int:
        return len(self.pts)


def resample(index: FrameIndex, fps: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The frames a clip grid at ``fps`` shows, and the grid's times.

    Args:
        index: the video's timeline.
        fps: target frames per second; None keeps every frame (native rate, variable or not).

    Returns:
        ``(positions, times)``: (M,) int64 frame positions into ``index`` and (M,) float64
        seconds. With a target fps, ``times[k] = k / fps`` for every ``k / fps`` before
        ``index.end_time``, and ``positions[k]`` is the last frame with ``pts <= times[k]``.
    """
    if fps is None:
        return np.arange(len(index), dtype=np.int64), index.times.copy()
    count = max(1, int(np.ceil((index.end_time - _EPS) * fps)))  # k / fps < end_time
    times = np.arange(count, dtype=np.float64) / fps
    positions = np.searchsorted(index.times, times + _EPS, side="right") - 1
    return positions.astype(np.int64), times


@dataclass
class DecodeStats:
    """Work done by :meth:`VideoReader.decode`: frames out of the decoder vs frames asked for, and seeks."""

    decoded: int = 0
    needed: int = 0
    seeks: int = 0


class VideoReader:
    """One video held in memory: probe, index and decode it with one open container.

    Args:
        data: the file's bytes (mp4, webm, mkv, mov, ...).
        key: the sample key, named in errors.
        decoder: ``pyav``, ``torchcodec`` or ``auto`` (see :func:`resolve_decoder`).
        threads: decoder threads; 1 suits a pipeline that runs one task per core.

    Raises:
        SampleError: ``missing_video`` (None), ``empty_video`` (no bytes, no stream),
            ``corrupt_video`` (not a container FFmpeg can open).
    """

    def __init__(self, data: bytes | None, key: str = "", decoder: str = "pyav", threads: int = 1):
        if data is None:
            raise SampleError("read", "missing_video", f"sample {key!r} has no video member")
        if len(data) == 0:
            raise SampleError("decode", "empty_video", f"video {key!r} is empty (0 bytes)")
        self.data, self.key, self.threads = data, key, threads
        self.decoder = resolve_decoder(decoder)
        self.stats = DecodeStats()
        self._index: FrameIndex | None = None
        try:
            self._container = av.open(io.BytesIO(data), mode="r")
        except Exception as err:  # noqa: BLE001 - FFmpeg raises many kinds on bad input
            raise self._corrupt("cannot open", err) from None
        self._stream = self._container.streams.video[0] if self._container.streams.video else None
        if self._stream is not None:
            self._stream.codec_context.thread_count = threads  # before the codec opens

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def _corrupt(self, what: str, err: Exception | str) -> SampleError:
        detail = f"{type(err).__name__}: {err}" if isinstance(err, Exception) else err
        return SampleError("decode", "corrupt_video", f"video {self.key!r}: {what}: {detail}")

    # ---- header ---------------------------------------------------------------------
    def probe(self) -> VideoInfo:
        """The header's metadata (no packet read, no frame decoded)."""
        streams, s = len(self._container.streams), self._stream
        if s is None:
            return VideoInfo(False, streams)
        rate = s.average_rate or s.guessed_rate
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        else:
            duration = (self._container.duration or 0) / av.time_base
        ctx = s.codec_context
        return VideoInfo(True, streams, ctx.height, ctx.width, float(rate or 0.0), duration, int(s.frames or 0), ctx.name)

    def require_video(self) -> VideoInfo:
        """:meth:`probe`, refusing a file without a video stream.

        Raises:
            SampleError: ``empty_video`` (no stream at all), ``no_video_stream`` (audio or data only).
        """
        info = self.probe()
        if info.num_streams == 0:
            raise SampleError("decode", "empty_video", f"video {self.key!r} holds no stream (no frame was ever written)")
        if not info.has_video:
            kinds = sorted({s.type for s in self._container.streams})
            raise SampleError("decode", "no_video_stream", f"file {self.key!r} has no video stream, only {kinds}")
        return info

    # ---- timeline ---------------------------------------------------------------------
    def frame_index(self, max_frames: int | None = None) -> FrameIndex:
        """The sorted pts of every frame, from the packets (demuxed, not decoded); cached.

        Args:
            max_frames: refuse a stream with more frames than this (header or packets) before reading it all.

        Raises:
            SampleError: ``no_video_stream``/``empty_video`` (no stream or no frame), ``decompression_bomb``
                (over ``max_frames``), ``corrupt_video`` (unreadable packets, or fewer than the header declares).
        """
        if self._index is None:
            info = self.require_video()
            self._check_frames(info.num_frames, max_frames, "its header declares")
            pts, keys, ends = self._demux(max_frames)
            if not pts:
                raise SampleError("decode", "empty_video", f"video {self.key!r} has a video stream without any frame")
            if info.num_frames and len(pts) < info.num_frames:
                raise self._corrupt("truncated", f"the header declares {info.num_frames} frames, the file holds {len(pts)}")
            self._index = self._make_index(pts, keys, ends, info.fps)
        self._check_frames(len(self._index), max_frames, "the file holds")  # also when cached under no limit
        return self._index

    def _check_frames(self, count: int, max_frames: int | None, where: str) -> None:
        if max_frames is not None and count > max_frames:
            raise SampleError("decode", "decompression_bomb",
                              f"video {self.key!r}: {where} more than max_frames={max_frames} frames ({count})")

    def _demux(self, max_frames: int | None) -> tuple[list[int], list[bool], list[int]]:
        pts, keys, ends = [], [], []
        try:  # the first read of a fresh container: it starts at the beginning
            for packet in self._container.demux(self._stream):
                stamp = packet.pts if packet.pts is not None else packet.dts
                if packet.size == 0 or stamp is None or packet.is_discard:
                    continue
                pts.append(stamp)
                keys.append(packet.is_keyframe)
                ends.append(stamp + (packet.duration or 0))
                self._check_frames(len(pts), max_frames, "the file holds")
        except SampleError:
            raise
        except Exception as err:  # noqa: BLE001
            raise self._corrupt("cannot read packets", err) from None
        return pts, keys, ends

    def _make_index(self, pts: list[int], keys: list[bool], ends: list[int], fps: float) -> FrameIndex:
        order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
        stamps = np.asarray(pts, dtype=np.int64)[order]
        time_base = Fraction(self._stream.time_base)
        times = (stamps - stamps[0]).astype(np.float64) * float(time_base)
        last_end = max(ends) - stamps[0]
        end_time = float(last_end * time_base)
        if end_time <= times[-1]:  # no packet duration: the last frame lasts one average frame
            gap = float(np.median(np.diff(times))) if len(times) > 1 else (1.0 / fps if fps else 1.0)
            end_time = float(times[-1]) + gap
        return FrameIndex(stamps, times, np.asarray(keys, dtype=bool)[order], end_time, time_base)

    # ---- frames ------------------------------------------------------------------------
    def plan_runs(self, positions: np.ndarray) -> list[tuple[int, list[int]]]:
        """Which keyframe to seek to for which needed frames: ``[(keyframe position, sorted needed positions)]``.

        One run per group of pictures: frames between two needed GOPs are never decoded.
        """
        index = self.frame_index()
        key_positions = np.flatnonzero(index.keyframe)
        if len(key_positions) == 0 or key_positions[0] != 0:
            key_positions = np.concatenate([[0], key_positions])  # decode from the start when in doubt
        runs: dict[int, list[int]] = {}
        for pos in sorted({int(p) for p in positions}):
            gop = int(key_positions[np.searchsorted(key_positions, pos, side="right") - 1])
            runs.setdefault(gop, []).append(pos)
        return sorted(runs.items())

    def frames_to_decode(self, positions: np.ndarray) -> int:
        """How many frames :meth:`decode` will decode for ``positions`` (from each run's keyframe to its last frame)."""
        return sum(needed[-1] - gop + 1 for gop, needed in self.plan_runs(positions))

    def decode(self, positions: np.ndarray | list[int], resize: tuple[int, int] | None = None,
               crop: tuple[int, int, int, int] | None = None, resample: str = "area") -> np.ndarray:
        """Frames at ``positions`` of :meth:`frame_index`, in the order asked (repeats allowed), as RGB.

        Each needed frame is resized and cropped as soon as it leaves the decoder, so full-size
        frames are never held together.

        Args:
            positions: frame positions (e.g. from :func:`resample`).
            resize: (H, W) to scale every frame to first; None keeps the decoded size.
            crop: (top, left, height, width) to cut from the (resized) frame; None keeps it whole.
            resample: ``area``, ``bilinear``, ``bicubic`` or ``lanczos`` (FFmpeg's swscale for PyAV, PIL for torchcodec).

        Returns:
            (T, H, W, 3) uint8, one frame per position.

        Raises:
            SampleError: ``corrupt_video`` when a needed frame cannot be decoded.
        """
        convert = functools.partial(_convert, resize=resize, crop=crop, resample=resample)
        wanted = sorted({int(p) for p in positions})
        self.stats.needed += len(wanted)
        if self.decoder == "torchcodec":
            got = self._decode_torchcodec(wanted, convert)
        else:
            got = {}
            for gop, needed in self.plan_runs(np.asarray(wanted)):
                got.update(self._decode_run(gop, needed, convert))
            late = [p for p in wanted if p not in got]
            if late:  # a demuxer that seeks past the keyframe asked for: decode those from the start once
                got.update(self._decode_run(0, late, convert))
        missing = [p for p in wanted if p not in got]
        if missing:
            raise self._corrupt("truncated", f"frames at positions {missing[:5]} could not be decoded")
        return np.stack([got[int(p)] for p in positions])  # (T, H, W, 3)

    def _decode_run(self, gop: int, needed: list[int], convert: Callable) -> dict[int, np.ndarray]:
        index = self.frame_index()
        by_pts = {int(index.pts[p]): p for p in needed}
        last = max(by_pts)
        out: dict[int, np.ndarray] = {}
        try:
            self._container.seek(int(index.pts[gop]), stream=self._stream, backward=True, any_frame=False)
            self.stats.seeks += 1
            for packet in self._container.demux(self._stream):
                for frame in packet.decode():
                    self.stats.decoded += 1
                    stamp = frame.pts if frame.pts is not None else frame.dts  # the index falls back the same way
                    if stamp in by_pts:
                        out[by_pts[stamp]] = convert(frame)
                    if len(out) == len(needed) or (stamp is not None and stamp > last):  # frames leave in pts order
                        return out
        except Exception as err:  # noqa: BLE001 - bad packets raise many kinds
            raise self._corrupt("cannot decode", err) from None
        return out

    def _decode_torchcodec(self, wanted: list[int], convert: Callable) -> dict[int, np.ndarray]:
        from torchcodec.decoders import VideoDecoder

        index = self.frame_index()
        seconds = [float(index.pts[p] * index.time_base) for p in wanted]  # absolute pts: the frame played then
        try:
            decoder = VideoDecoder(self.data, dimension_order="NHWC", num_ffmpeg_threads=self.threads, seek_mode="exact")
            batch = decoder.get_frames_played_at(seconds=seconds).data.numpy()  # (N, H, W, 3) uint8
        except Exception as err:  # noqa: BLE001
            raise self._corrupt("cannot decode (torchcodec)", err) from None
        self.stats.decoded += len(wanted)  # torchcodec does not report its own count
        return {p: convert(frame) for p, frame in zip(wanted, batch)}


_SWSCALE = {"area": "AREA", "bilinear": "BILINEAR", "bicubic": "BICUBIC", "lanczos": "LANCZOS"}


def _convert(frame: Any, resize: tuple[int, int] | None, crop: tuple[int, int, int, int] | None, resample: str) -> np.ndarray:
    """A decoded frame (PyAV ``VideoFrame`` or (H, W, 3) uint8) -> resized, cropped (h, w, 3) uint8.

    PyAV frames are scaled and converted to RGB in one swscale pass (about 4x faster than
    converting at full size and resizing with PIL on a 720p frame).
    """
    if isinstance(frame, np.ndarray):
        from PIL import Image

        image = Image.fromarray(frame)
        if resize is not None:
            pil = {"area": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
                   "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}[resample]
            image = image.resize((resize[1], resize[0]), resample=pil)
        rgb = np.asarray(image)
    elif resize is not None:
        rgb = frame.reformat(width=resize[1], height=resize[0], format="rgb24", interpolation=_SWSCALE[resample]).to_ndarray()
    else:
        rgb = frame.to_ndarray(format="rgb24")
    if crop is not None:
        top, left, height, width = crop
        rgb = rgb[top : top + height, left : left + width]
    return np.ascontiguousarray(rgb)


def probe_video(data: bytes, key: str = "") -> VideoInfo:
    """The header metadata of a video file (no frame decoded); ``has_video`` is False for audio-only files.

    Raises:
        SampleError: ``missing_video``, ``empty_video`` or ``corrupt_video``.

    Example::

        probe_video(open("data/videos/bigbuckbunny.mp4", "rb").read())
        # VideoInfo(has_video=True, num_streams=2, height=720, width=1280, fps=25.0, duration=5.28, num_frames=132, codec='h264')
    """
    with VideoReader(data, key) as video:
        return video.probe()
