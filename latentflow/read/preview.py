"""Video previews a human watches: decoded clips (or prior samples) written as an mp4 or GIF.

The inverse end of :mod:`latentflow.media.video_decode`: frames go out through PyAV (its wheels bundle
FFmpeg, libx264 included), into memory first and then through fsspec, so ``s3://`` works like a
local path. Several clips are tiled into one grid per frame, as the PNG sample grids are.

Example::

    frames = decode_latents(batch["latent"], "s3://bucket/latents")    # (B, 3, T, H, W) in [-1, 1]
    save_video_preview(frames, "s3://bucket/previews/batch.mp4", fps=preview_fps("s3://bucket/latents"))
"""

from __future__ import annotations

import io
import logging
import re
from fractions import Fraction
from typing import Any

import fsspec
import numpy as np
import pyarrow.parquet as pq
import torch

from latentflow.errors import InputError, NotSupportedError
from latentflow.format.state import OutputState, read_output_codec

FORMATS = {".mp4": ("mp4", "libx264", "yuv420p"), ".gif": ("gif", "gif", "rgb8")}
DEFAULT_FPS = 8.0  # clips whose codec and rows record no fps
logger = logging.getLogger(__name__)


def to_uint8(pixels: torch.Tensor | np.ndarray) -> np.ndarray:
    """(B, C, ...) in [-1, 1] -> (B, ..., 3) uint8: channels moved last, greyscale repeated to RGB.

    (B, C, H, W) images give (B, H, W, 3); (B, C, T, H, W) clips give (B, T, H, W, 3).
    """
    x = torch.as_tensor(pixels).detach().float().cpu()
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, *[1] * (x.ndim - 2))
    return x[:, :3].movedim(1, -1).numpy()


def tile_clips(clips: np.ndarray, per_row: int = 4, pad: int = 2) -> np.ndarray:
    """(B, T, H, W, 3) uint8 clips -> (T, rows*(H+pad)+pad, per_row*(W+pad)+pad, 3): one grid per frame, white gaps."""
    b, t, h, w, _ = clips.shape
    per_row = min(per_row, b) if b > 1 else 1
    rows = -(-b // per_row)
    if b == 1:
        return clips[0]
    canvas = np.full((t, rows * (h + pad) + pad, per_row * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i in range(b):
        top, left = pad + (i // per_row) * (h + pad), pad + (i % per_row) * (w + pad)
        canvas[:, top:top + h, left:left + w] = clips[i]
    return canvas


def _as_frames(frames: Any, per_row: int) -> np.ndarray:
    """Any accepted input -> (T, H, W, 3) uint8."""
    if isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3:
        return frames
    x = torch.as_tensor(frames)
    if x.is_floating_point() and x.ndim in (4, 5) and x.shape[-4] in (1, 3):
        clips = to_uint8(x[None] if x.ndim == 4 else x)  # (B, T, H, W, 3)
        return tile_clips(clips, per_row)
    raise InputError(f"video preview frames must be (T, H, W, 3) uint8, or float (3, T, H, W) / (B, 3, T, H, W) in [-1, 1] "
                     f"(decode_latents of video latents), got: {tuple(x.shape)} {x.dtype}")


def encode_video(frames: np.ndarray, fps: float, fmt: str = ".mp4") -> bytes:
    """(T, H, W, 3) uint8 -> the bytes of an mp4 (H.264, yuv420p; odd sides padded by one black line) or GIF."""
    import av

    container_format, codec, pix_fmt = FORMATS[fmt]
    if pix_fmt == "yuv420p":  # 4:2:0 chroma needs even sides
        frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)))
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())  # flush the encoder
    return buf.getvalue()


def save_video_preview(frames: torch.Tensor | np.ndarray, url: str, fps: float = DEFAULT_FPS, per_row: int = 4,
                       storage_options: dict | None = None) -> str:
    """Write frames, or a batch of decoded clips tiled into one grid, as an mp4 or GIF (by ``url``'s suffix).

    Args:
        frames: (T, H, W, 3) uint8; or float (3, T, H, W) or (B, 3, T, H, W) in [-1, 1], as
            :func:`~latentflow.read.latents.decode_latents` returns for video latents.
        url: where to write, local or fsspec URL, ending in ``.mp4`` (H.264) or ``.gif``.
        fps: frames per second of the preview (:func:`preview_fps` gives a latent output's).
        per_row: clips per row of the grid.
        storage_options: fsspec options.

    Returns:
        ``url``.

    Example::

        save_video_preview(decode_latents(z, out), "preview.mp4", fps=preview_fps(out))
    """
    fmt = "." + str(url).rsplit(".", 1)[-1].lower() if "." in str(url) else ""
    if fmt not in FORMATS:
        raise InputError(f"video preview url must end in one of {sorted(FORMATS)}, got: {url!r}")
    if not fps > 0:
        raise InputError(f"fps must be > 0, got: {fps}")
    data = encode_video(_as_frames(frames, per_row), fps, fmt)
    with fsspec.open(str(url), "wb", **(storage_options or {})) as f:
        f.write(data)
    return str(url)


def preview_fps(path: str, storage_options: dict | None = None) -> float:
    """The frame rate of a video latent output's clips: the processor's ``fps`` when it resampled,
    else the ``fps`` stored with the first committed row (native frames), else ``DEFAULT_FPS``.

    Rates are never averaged (a 25 and a 29.97 fps clip have no common rate): when the rows of the
    first committed file disagree, the first row's rate is used and one warning says so.
    """
    codec = read_output_codec(path, storage_options)
    if codec is not None and getattr(codec.processor, "fps", None):
        return float(codec.processor.fps)
    files = OutputState.read(path, storage_options).parquet_files()
    if files:
        fs, p = fsspec.url_to_fs(files[0], **(storage_options or {}))
        with fs.open(p, "rb") as f:
            schema = pq.read_schema(f)
            f.seek(0)
            column = pq.read_table(f, columns=["fps"]).column("fps").to_pylist() if "fps" in schema.names else []
        rates = [float(r) for r in column if r]
        if rates:
            if len(set(rates)) > 1:
                logger.warning("clips of %s have different frame rates %s; the preview plays them at the first row's, %g fps",
                               path, sorted(set(rates)), rates[0])
            return rates[0]
    return DEFAULT_FPS


# ---- `latentflow preview`: the first committed rows, decoded ------------------------------------


def write_preview(path: str, out_dir: str, rows: int = 8, storage_options: dict | None = None) -> list[str]:
    """Decode the first ``rows`` committed rows of a latent output, with the decoder rebuilt from its codec alone.

    Images become ``<out_dir>/<i>-<key>.png``; video clips ``<out_dir>/<i>-<key>.mp4`` at the clip's own fps
    (else :func:`preview_fps`); audio segments ``<out_dir>/<i>-<key>.wav`` at the codec's rate, cut to
    the segment's real audio (its ``valid_length`` latent frames).

    Args:
        path: the encode job's output (local or fsspec URL); its Zarr latents are read.
        out_dir: where the previews go (local or fsspec URL).
        rows: how many rows, in committed order.
        storage_options: fsspec options for both.

    Returns:
        The URLs written, in row order.

    Raises:
        NotSupportedError: the output holds a modality with no preview.
    """
    from latentflow.read.dataset import LatentDataset
    from latentflow.read.latents import decode_latents, read_codec

    if rows <= 0:
        raise InputError(f"rows must be > 0, got: {rows}")
    codec = read_codec(path, storage_options)
    if codec.modality not in ("image", "video", "audio"):
        raise NotSupportedError(f"latentflow preview writes images (PNG), video (mp4) and audio (wav); {path!r} holds "
                                f"{codec.modality} latents")
    name = next(a for a in codec.arrays if not a.startswith("flip_"))  # "latent", or "indices" for discrete codecs
    extra = ("valid_length",) if codec.modality == "audio" else ("fps",)
    ds = LatentDataset(path, storage_options=storage_options, fields=(name, "key", *extra))
    items = [ds[i] for i in range(min(rows, len(ds)))]
    by_shape: dict[tuple, list[int]] = {}  # rows of one bucket decode together
    for i, item in enumerate(items):
        by_shape.setdefault(tuple(item[name].shape), []).append(i)
    default_fps: list[float] = []  # the output's rate, read once if a row records none
    written: dict[int, str] = {}
    for indices in by_shape.values():
        decoded = decode_latents(torch.stack([items[i][name] for i in indices]), codec, storage_options=storage_options)
        for i, pixels in zip(indices, decoded):  # (3, H, W) or (3, T, H, W) in [-1, 1]
            stem = f"{out_dir.rstrip('/')}/{i:04d}-{_safe(items[i]['key'])}"
            if codec.modality == "audio":  # (C, N): the real audio only
                real = pixels[:, :int(items[i].get("valid_length", pixels.shape[-1])) * codec.downsample_factor]
                written[i] = save_audio_preview(real, f"{stem}.wav", codec.processor.sample_rate,
                                                storage_options=storage_options)
            elif codec.modality == "video":
                if not items[i].get("fps") and not default_fps:
                    default_fps.append(preview_fps(path, storage_options))
                fps = float(items[i].get("fps") or default_fps[0])
                written[i] = save_video_preview(pixels, f"{stem}.mp4", fps=fps, storage_options=storage_options)
            else:
                written[i] = _save_png(pixels, f"{stem}.png", storage_options)
    return [written[i] for i in sorted(written)]


# ---- audio ---------------------------------------------------------------------------------------


def wav_bytes(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> bytes:
    """(C, N) float samples in [-1, 1] as a 16-bit PCM WAV file (clipped to full scale, rounded)."""
    import wave

    x = np.asarray(waveform.detach().float().cpu() if isinstance(waveform, torch.Tensor) else waveform, dtype=np.float32)
    if x.ndim != 2:
        raise InputError(f"a waveform is (C, N), got shape {x.shape}")
    pcm = np.rint(np.clip(x, -1.0, 1.0) * 32767).astype("<i2").T  # (N, C) interleaved
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def save_audio_preview(waveforms: torch.Tensor | np.ndarray, url: str, sample_rate: int, gap_s: float = 0.25,
                       storage_options: dict | None = None) -> str:
    """Write waveforms as one 16-bit WAV through fsspec (local or any URL).

    Args:
        waveforms: (C, N) or (B, C, N) in [-1, 1] (what :func:`~latentflow.read.latents.decode_latents`
            returns for an audio codec); B waveforms play one after another, ``gap_s`` of silence between.
        url: where the ``.wav`` goes.
        sample_rate: the codec's (``codec.processor.sample_rate``).

    Returns:
        ``url``.
    """
    x = waveforms.detach().float().cpu().numpy() if isinstance(waveforms, torch.Tensor) else np.asarray(waveforms, np.float32)
    if x.ndim == 3:
        gap = np.zeros((x.shape[1], round(gap_s * sample_rate)), np.float32)
        x = np.concatenate([p for w in x for p in (w, gap)][:-1], axis=1) if len(x) else np.zeros((x.shape[1], 0), np.float32)
    data = wav_bytes(x, sample_rate)
    with fsspec.open(url, "wb", **(storage_options or {})) as f:
        f.write(data)
    return url


def _safe(key: str) -> str:
    """A row key as a file name: ``folder/img 01.jpg`` -> ``folder_img_01.jpg``."""
    return re.sub(r"[^\w.-]+", "_", str(key)).strip("_") or "row"


def _save_png(pixels: torch.Tensor, url: str, storage_options: dict | None) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(pixels[None])[0]).save(buf, format="PNG")
    with fsspec.open(url, "wb", **(storage_options or {})) as f:
        f.write(buf.getvalue())
    return url


__all__ = ["save_audio_preview", "wav_bytes", "save_video_preview", "preview_fps", "write_preview", "encode_video",
           "tile_clips", "to_uint8"]
