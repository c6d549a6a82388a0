"""python data/videos/build_shard.py

Writes ``data/videos/bbb-000000.tar`` from ``data/videos/bigbuckbunny.mp4``: a WebDataset shard of
four 33-frame clips (1.32 s at 25 fps; frames 0-32, 33-65, 66-98, 99-131) re-encoded with PyAV
(libx264, one thread, CRF 23, a keyframe every 25 frames through x264-params) at 256x144, each with a ``txt`` caption
and a ``json`` member naming its source frames. Members are written in sorted order with fixed
metadata, so rerunning with the same PyAV/FFmpeg rewrites the same bytes.

License of the source clip and of the clips cut from it: ``data/videos/LICENSE.md`` (CC BY 3.0).
"""

from __future__ import annotations

import io
import json
import tarfile
from fractions import Fraction
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "bigbuckbunny.mp4"
SHARD = ROOT / "bbb-000000.tar"
CLIP_FRAMES, SIZE, FPS = 33, (144, 256), 25
CAPTIONS = (
    "A big grey rabbit crawls out of a burrow in a grassy hillside.",
    "A big grey rabbit stands up beside its burrow and stretches its arms.",
    "A big grey rabbit stretches and yawns in front of its burrow on a grassy hill.",
    "A big grey rabbit yawns and rubs its eyes beside its burrow under a tree.",
)


def source_frames() -> list[av.VideoFrame]:
    """Every frame of the source clip, scaled to ``SIZE`` (area filter), in presentation order."""
    with av.open(str(SOURCE)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        frames = [f.reformat(width=SIZE[1], height=SIZE[0], format="yuv420p", interpolation="AREA") for f in container.decode(stream)]
    return sorted(frames, key=lambda f: f.pts)


def encode_clip(frames: list[av.VideoFrame]) -> bytes:
    """An h264 mp4 of ``frames`` at ``FPS``."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.height, stream.width = SIZE
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, FPS)
        stream.codec_context.options = {"crf": "23", "preset": "medium", "threads": "1",
                                        "x264-params": "keyint=25:min-keyint=25:scenecut=0"}
        for i, frame in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")  # fresh timestamps
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o644, "", ""
    tar.addfile(info, io.BytesIO(data))


def main() -> None:
    frames = source_frames()
    with tarfile.open(SHARD, "w", format=tarfile.USTAR_FORMAT) as tar:
        for index, caption in enumerate(CAPTIONS):
            start = index * CLIP_FRAMES
            key = f"bbb-clip{index:03d}"
            meta = {"source": SOURCE.name, "start_frame": start, "num_frames": CLIP_FRAMES, "fps": FPS,
                    "size": list(SIZE), "license": "CC BY 3.0, (c) Blender Foundation"}
            add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
            add(tar, f"{key}.mp4", encode_clip(frames[start : start + CLIP_FRAMES]))
            add(tar, f"{key}.txt", caption.encode())
    print(f"wrote {SHARD} ({SHARD.stat().st_size} bytes, {len(CAPTIONS)} clips)")


if __name__ == "__main__":
    main()
