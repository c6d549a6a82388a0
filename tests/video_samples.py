"""Tiny videos written with PyAV for tests (no downloads); not part of the library.

Every frame carries its own index as a binary code in 8 horizontal bands over the top half
(band ``b`` white when bit ``b`` of the index is set), so a test reads back which source frame
a decoded (resized, cropped) frame came from with :func:`read_index`. The bottom half holds a
moving pattern, so the codec has real motion to encode.

Example::

    data = write_video(fps=10, size=(48, 64), num_frames=20)            # constant fps, h264 mp4
    data = write_video(pts_s=[0, 0.1, 0.15, 0.4], size=(48, 64))         # variable fps
    read_index(frame_hwc)                                                # -> 7
"""

from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction

import av
import numpy as np

BANDS = 8  # frame indices up to 255


def index_frame(index: int, size: tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) uint8 frame that encodes ``index`` in its top half and moves in its bottom half."""
    height, width = size
    frame = np.zeros((height, width, 3), np.uint8)
    band = height // 2 // BANDS
    for bit in range(BANDS):
        if index >> bit & 1:
            frame[bit * band : (bit + 1) * band] = 255
    cols = (np.arange(width) + 4 * index) % width  # a gradient sliding right by 4 px per frame
    frame[height // 2 :, :, 1] = (cols * 255 // max(width - 1, 1)).astype(np.uint8)
    frame[height // 2 :, :, 2] = 96
    return frame


def read_index(frame: np.ndarray) -> int:
    """The index :func:`index_frame` wrote, read from an (H, W, 3) uint8 or (3, H, W) [-1, 1] frame of any size.

    The bands scale with the frame, and a crop that trims only the width keeps them, so
    resized and center-cropped frames read back too.
    """
    if frame.dtype != np.uint8:  # (3, H, W) in [-1, 1]
        frame = np.rint((frame.transpose(1, 2, 0) + 1.0) * 127.5).astype(np.uint8)
    height = frame.shape[0]
    rows = [int((b + 0.5) * height / 2 / BANDS) for b in range(BANDS)]
    bits = [frame[r].mean() > 127 for r in rows]
    return sum(1 << b for b, on in enumerate(bits) if on)


def write_video(fps: float = 10, size: tuple[int, int] = (48, 64), num_frames: int = 20, *, pts_s: list[float] | None = None,
                codec: str = "libx264", container: str = "mp4", gop: int | None = None, faststart: bool = False,
                audio: bool = False) -> bytes:
    """A video whose frame ``i`` shows :func:`index_frame(i)`.

    Args:
        fps: frames per second (constant frame rate), ignored when ``pts_s`` is given.
        size: (height, width); even sides for yuv420p.
        num_frames: how many frames.
        pts_s: presentation times in seconds, one per frame: a variable frame rate (ms precision).
        codec: ``libx264``, ``mpeg4``, ``libvpx-vp9`` (webm), ...
        container: ``mp4``, ``webm``, ``matroska``, ``mov``.
        gop: keyframe interval in frames (None: the codec's default).
        faststart: put the mp4 index (moov) before the data, so a truncated file still opens.
        audio: add a short silent AAC track.

    Returns:
        the file's bytes.
    """
    if faststart:  # the muxer rewrites the file to move the index: needs a real file
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "video.mp4")
            _write(path, fps, size, num_frames, pts_s, codec, container, gop, audio, {"movflags": "faststart"})
            with open(path, "rb") as f:
                return f.read()
    buf = io.BytesIO()
    _write(buf, fps, size, num_frames, pts_s, codec, container, gop, audio, {})
    return buf.getvalue()


def _write(target, fps, size, num_frames, pts_s, codec, container, gop, audio, options) -> None:
    with av.open(target, "w", format=container, options=options) as out:
        rate = Fraction(fps).limit_denominator(1000) if pts_s is None else 1000
        stream = out.add_stream(codec, rate=rate)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000) if pts_s is not None else 1 / rate
        if gop is not None:
            stream.codec_context.gop_size = gop
        if codec == "libx264":
            keyint = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"} if gop else {}
            stream.codec_context.options = {"crf": "10", "preset": "ultrafast", **keyint}
        sound = _audio_stream(out) if audio else None  # every stream exists before the first packet
        for i in range(len(pts_s) if pts_s is not None else num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, size), format="rgb24")
            frame.pts = int(round(pts_s[i] * 1000)) if pts_s is not None else i
            frame.time_base = stream.codec_context.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None:
            _write_silence(out, sound, 0.5)


def write_audio_only(seconds: float = 0.5) -> bytes:
    """An mp4 (m4a) holding one AAC track and no video stream."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        _write_silence(out, _audio_stream(out), seconds)
    return buf.getvalue()


def write_empty_video(size: tuple[int, int] = (48, 64)) -> bytes:
    """A well-formed mp4 that holds no frame (FFmpeg drops the empty track: the file opens with no stream)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        out.start_encoding()
    return buf.getvalue()


def _audio_stream(out, rate: int = 16000):
    stream = out.add_stream("aac", rate=rate)
    stream.layout = "mono"
    return stream


def _write_silence(out, stream, seconds: float) -> None:
    rate = stream.rate
    samples = int(seconds * rate)
    for start in range(0, samples, 1024):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, min(1024, samples - start)), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


RAMP_RATE = 22050  # the shipped audio VAE's rate: a ramp track at it is neither resampled nor remixed


def ramp_value_time(value: float, offset_s: float = 0.0) -> float:
    """The presentation time (s) of the ramp sample holding ``value`` (float32 full scale) in a track starting at ``offset_s``."""
    return offset_s + (round(value * 32768) + 32768) / RAMP_RATE


def write_video_with_ramp(fps: float = 25, num_frames: int = 40, size: tuple[int, int] = (48, 64), *,
                          audio_offset_s: float = 0.0, audio_seconds: float | None = None) -> bytes:
    """A mov holding index frames (:func:`index_frame`) and a lossless mono PCM track at :data:`RAMP_RATE` whose
    sample ``k`` is ``k - 32768`` (s16): any decoded sample tells the time it plays at (:func:`ramp_value_time`).

    Args:
        audio_offset_s: the audio track's first sample plays this long after the first frame.
        audio_seconds: the track's length (default: as long as the video; at most 2.97 s).
    """
    seconds = num_frames / fps if audio_seconds is None else audio_seconds
    total = int(round(seconds * RAMP_RATE))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mov") as out:
        video = out.add_stream("mpeg4", rate=Fraction(fps).limit_denominator(1000))
        video.height, video.width = size
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = Fraction(1, 1) / Fraction(fps).limit_denominator(1000)
        sound = out.add_stream("pcm_s16le", rate=RAMP_RATE, layout="mono")
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, size), format="rgb24")
            frame.pts = i
            frame.time_base = video.codec_context.time_base
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        start = int(round(audio_offset_s * RAMP_RATE))
        for k in range(0, total, 1024):
            n = min(1024, total - k)
            chunk = (np.arange(k, k + n) - 32768).astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
            frame.sample_rate, frame.pts = RAMP_RATE, start + k
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    return buf.getvalue()
