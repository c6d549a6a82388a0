"""python benchmarks/video_decode.py [--reps 5] [--size 256] [--frames 17] [--core 0]

Decode seconds per clip on one core, for the shipped clip (``data/videos/bigbuckbunny.mp4``,
1280x720 h264, 25 fps, 132 frames): the processor's PyAV path (seek to the keyframe before each
needed group of pictures, decode forward, stop after the last needed frame) against decoding the
whole file and keeping the needed frames, side by side in one run. Both resize the same needed
frames to ``--size`` px (shorter side, swscale area filter) and crop; the process is pinned to
one core and FFmpeg runs one decoder thread, as in a pipeline that runs one task per core.

Setups (``--frames`` per clip, native 25 fps):

1. ``head``: one clip from 0 s;
2. ``uniform x4``: four clips spread over the video;
3. ``last``: one clip at the end;
4. and 2., 3. again on the same clip re-encoded with a keyframe every 25 frames (1 s, as web
   and camera videos have): the shipped file has a single keyframe, so there a seek cannot
   skip anything before the last needed frame.

Also printed: frames decoded per frame needed, and the whole ``VideoProcessor.process_clips``
(index, decode, resize, crop, float32) per clip.

Times are CPU seconds of this process (``time.process_time``; one decoder thread on one pinned
core, so CPU seconds are core-seconds), which hold on a machine that other jobs share; wall
time there is larger by however long the core was given to others.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latentflow.media.config import VideoProcessorConfig  # noqa: E402
from latentflow.media.video import VideoProcessor  # noqa: E402
from latentflow.media.video_decode import VideoReader, _convert, resample  # noqa: E402


def reencode(data: bytes, gop: int) -> bytes:
    """The same frames at the same size, h264 with a keyframe every ``gop`` frames."""
    buf = io.BytesIO()
    with av.open(io.BytesIO(data)) as src, av.open(buf, "w", format="mp4") as out:
        vin = src.streams.video[0]
        stream = out.add_stream("libx264", rate=vin.average_rate)
        stream.height, stream.width, stream.pix_fmt = vin.codec_context.height, vin.codec_context.width, "yuv420p"
        stream.codec_context.options = {"crf": "20", "preset": "veryfast", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for i, frame in enumerate(src.decode(vin)):
            frame.pts, frame.time_base = i, Fraction(1) / vin.average_rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def clip_starts(total: int, frames: int, mode: str) -> list[int]:
    last = total - frames
    return {"head": [0], "uniform x4": sorted({int(round(s)) for s in np.linspace(0, last, 4)}), "last": [last]}[mode]


def geometry(height: int, width: int, size: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    scale = size / min(height, width)
    rh, rw = max(size, round(height * scale)), max(size, round(width * scale))
    return (rh, rw), ((rh - size) // 2, (rw - size) // 2, size, size)


def seek_decode(data: bytes, starts: list[int], frames: int, size: int) -> tuple[float, int, int]:
    """(seconds, frames decoded, frames needed) through ``VideoReader.decode``."""
    t0 = time.process_time()
    with VideoReader(data, threads=1) as video:
        info = video.probe()
        positions, _ = resample(video.frame_index(), None)
        resize, crop = geometry(info.height, info.width, size)
        video.decode(np.concatenate([positions[s : s + frames] for s in starts]), resize=resize, crop=crop)  # one pass, as the processor
        return time.process_time() - t0, video.stats.decoded, video.stats.needed


def decode_all(data: bytes, starts: list[int], frames: int, size: int) -> tuple[float, int, int]:
    """(seconds, frames decoded, frames needed) decoding every frame and keeping the needed ones."""
    t0 = time.process_time()
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        resize, crop = geometry(stream.codec_context.height, stream.codec_context.width, size)
        decoded = []
        for frame in container.decode(stream):
            decoded.append(frame)  # presentation order: h264 leaves the decoder in pts order
        needed = sorted({s + i for s in starts for i in range(frames)})
        by_pts = sorted(decoded, key=lambda f: f.pts)
        out = [_convert(by_pts[p], resize, crop, "area") for p in needed]
    assert len(out) == len(needed)
    return time.process_time() - t0, len(decoded), len(needed)


def process(data: bytes, mode: str, frames: int, size: int) -> float:
    cfg = VideoProcessorConfig(num_frames=frames, resolution=size, clip_mode="head" if mode == "head" else "uniform",
                               num_clips=4 if mode == "uniform x4" else 1)
    t0 = time.process_time()
    clips = VideoProcessor(cfg, 8, 4).process_clips(data, "bbb")
    return (time.process_time() - t0) / len(clips)


def median(fn, reps: int) -> tuple[float, int, int]:
    runs = [fn() for _ in range(reps)]
    return statistics.median(r[0] for r in runs), runs[0][1], runs[0][2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    shipped = (ROOT / "data" / "videos" / "bigbuckbunny.mp4").read_bytes()
    gop25 = reencode(shipped, 25)
    print(f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), one core, one decoder thread; "
          f"{args.frames} frames per clip at {args.size} px; CPU seconds, median of {args.reps}; load average {os.getloadavg()[0]:.1f}")
    header = (f"{'video':<22}{'clips':<12}{'seek s/clip':>12}{'all s/clip':>12}{'all/seek':>10}"
              f"{'seek dec/need':>15}{'all dec/need':>14}{'process s/clip':>16}")
    print(header)
    for name, data in (("shipped (1 keyframe)", shipped), ("re-encoded, GOP 25", gop25)):
        for mode in ("head", "uniform x4", "last"):
            starts = clip_starts(132, args.frames, mode)
            seek, s_dec, s_need = median(lambda: seek_decode(data, starts, args.frames, args.size), args.reps)
            full, a_dec, a_need = median(lambda: decode_all(data, starts, args.frames, args.size), args.reps)
            proc = (statistics.median(process(data, mode, args.frames, args.size) for _ in range(args.reps))
                    if mode != "last" else float("nan"))
            n = len(starts)
            print(f"{name:<22}{mode:<12}{seek / n:>12.3f}{full / n:>12.3f}{full / seek:>10.2f}"
                  f"{f'{s_dec}/{s_need}':>15}{f'{a_dec}/{a_need}':>14}{proc:>16.3f}")


if __name__ == "__main__":
    main()
