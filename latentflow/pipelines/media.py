"""Media in and out of the pipelines: any accepted input -> model-ready units, model outputs -> PIL, arrays, files.

Inputs, for a model of images, video or audio (its modality decides how an input is read):

* a PIL image; a path, ``pathlib.Path`` or fsspec URL (``s3://``, ``https://``, ``memory://``), or the file's bytes:
  an image file, a video file (video models) or an audio file (audio models, any container FFmpeg reads);
* a numpy array, channels last: an image (H, W, 3) or (H, W), a video (T, H, W, 3); uint8 in [0, 255] or float
  in [0, 1]; a waveform (N,) or (C, N) float in [-1, 1] at the model's rate;
* a torch tensor in the model's convention: float in [-1, 1], channels first: (3, H, W), (3, T, H, W) for video
  models, (C, N) waveforms; one more leading axis is a batch (split into one input each);
* a dict ``{"array" | "waveform": samples, "sampling_rate": rate}`` (``datasets``' audio feature): resampled.

Without a processor config, images and arrays keep their size: pixels become ``uint8 / 127.5 - 1`` (the
processors' values, :func:`~latentflow.encode.shard.unpack_pixels`), sides are padded (edge pixels repeated) to a
multiple of the model's downsampling factor, clips to ``1 + k * temporal stride`` frames (the last frame repeated),
waveforms to whole hops (zeros), and outputs are cropped back. Audio files are decoded whole at the model's rate
and channel count (:func:`~latentflow.media.audio.decode_audio`); video files go through a
:class:`~latentflow.media.video.VideoProcessor` (default :class:`~latentflow.media.config.VideoProcessorConfig`:
the encode job's clip). A processor config (``ImageProcessorConfig``, ``VideoProcessorConfig``,
``AudioProcessorConfig``) runs the encode job's processor instead, exactly as an encode job would.
"""

from __future__ import annotations

import io
import os
import tempfile
import uuid
from typing import Any

import numpy as np
import torch

from latentflow.errors import ConfigError, InputError
from latentflow.pipelines.base import Unit

MEDIA_INPUTS = "a PIL image, a path or URL, bytes, a numpy array, a torch tensor, or a list of these"
OUTPUT_TYPES = {"image": ("pil", "np", "pt"), "video": ("np", "pt", "pil", "mp4", "gif"), "audio": ("np", "pt", "wav")}


# ---- what the model takes ---------------------------------------------------------------------


def modality_of(model: Any) -> str:
    """``audio`` (waveform models), ``video`` (models with a temporal stride: clips, and images as one-frame clips)
    or ``image``."""
    if getattr(model, "input_rank", 4) == 3:
        return "audio"
    return "video" if getattr(model, "temporal_downsample_factor", None) else "image"


def temporal_stride(model: Any) -> int:
    return int(getattr(model, "temporal_downsample_factor", None) or 1)


def default_processor(model: Any):
    """The processor config a model needs whatever the input size (TiTok: its fixed ``image_size``), else None."""
    from latentflow.media.config import ImageProcessorConfig

    size = getattr(model.config, "image_size", None)
    return ImageProcessorConfig(resolution=int(size)) if size else None


# ---- inputs -----------------------------------------------------------------------------------


def read_bytes(source: Any, storage_options: dict | None = None) -> bytes:
    """The bytes of a path, ``Path`` or fsspec URL."""
    import fsspec

    try:
        with fsspec.open(os.fspath(source), "rb", **(storage_options or {})) as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(f"input {os.fspath(source)!r} not found (a local path or an fsspec URL)") from None


def media_units(source: Any, item: int, model: Any, processor: Any = None, storage_options: dict | None = None,
                task: str = "reconstruct") -> list[Unit]:
    """One pipeline input -> the model inputs it gives (one image, a video's clips, an audio file or its segments).

    Raises:
        InputError: an input of a type no pipeline reads, or one that does not fit the model.
    """
    from PIL import Image

    modality = modality_of(model)
    processor = processor if processor is not None else default_processor(model)
    if isinstance(source, dict) and modality == "audio":
        return [_waveform_unit(_dict_waveform(source, model), item, model)]
    if isinstance(source, Image.Image):
        return _image_units(source, item, model, processor)
    if isinstance(source, (str, os.PathLike)):
        source = read_bytes(source, storage_options)
    if isinstance(source, (bytes, bytearray)):
        return _file_units(bytes(source), item, model, processor)
    if isinstance(source, np.ndarray):
        return _array_units(source, item, model, processor)
    if isinstance(source, torch.Tensor):
        return [_tensor_unit(source, item, model)]
    raise InputError(f"task {task!r} takes {MEDIA_INPUTS}, got: {type(source).__name__}")


def split_batches(inputs: list[Any], model: Any) -> list[Any]:
    """Each torch tensor with a batch axis (one more than a sample's rank) split into its samples."""
    rank = {"audio": 2, "video": 4, "image": 3}[modality_of(model)]
    out = []
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.ndim == rank + 1:
            out += list(x)
        else:
            out.append(x)
    return out


def _file_units(data: bytes, item: int, model: Any, processor: Any) -> list[Unit]:
    from PIL import Image, UnidentifiedImageError

    from latentflow.media.config import AudioProcessorConfig, VideoProcessorConfig

    modality = modality_of(model)
    if modality == "audio" or isinstance(processor, AudioProcessorConfig):
        return _audio_file_units(data, item, model, processor)
    if not isinstance(processor, VideoProcessorConfig):
        try:
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                img.size  # noqa: B018 - an image file
            return _image_units(data, item, model, processor)
        except UnidentifiedImageError:
            pass
    if modality != "video":
        raise InputError(f"{type(model).__name__} takes images, and input {item} is no image file PIL reads "
                         "(a video needs a video model such as video-vae-tiny)")
    return _video_file_units(data, item, model, processor)


def _image_units(source: Any, item: int, model: Any, processor: Any) -> list[Unit]:
    """An image (PIL or file bytes): the encode job's ImageProcessor with a config, else native size."""
    from PIL import Image

    from latentflow.encode.shard import build_processor
    from latentflow.media.config import ImageProcessorConfig
    from latentflow.media.image import to_rgb

    if processor is not None:
        if not isinstance(processor, ImageProcessorConfig):
            raise ConfigError(f"an image input needs an ImageProcessorConfig, got: {type(processor).__name__}")
        if isinstance(source, Image.Image):
            buf = io.BytesIO()
            source.save(buf, format="PNG")  # lossless: the processor decodes exactly these pixels
            source = buf.getvalue()
        out = build_processor(processor, model.downsample_factor).process(source, f"input{item}")
        return [_pixels_unit(torch.from_numpy(out.pixel_values), item, model, crop=False)]
    if isinstance(source, (bytes, bytearray)):
        source = Image.open(io.BytesIO(source))
    rgb = np.asarray(to_rgb(source), dtype=np.uint8)  # (H, W, 3)
    return [_pixels_unit(_uint8_pixels(rgb.transpose(2, 0, 1)), item, model)]


def _video_file_units(data: bytes, item: int, model: Any, processor: Any) -> list[Unit]:
    from latentflow.encode.shard import build_processor
    from latentflow.media.config import VideoProcessorConfig

    config = processor or VideoProcessorConfig()
    clips = build_processor(config, model.downsample_factor, temporal_stride(model)).process_clips(data, f"input{item}")
    return [_pixels_unit(torch.from_numpy(c.pixel_values), item, model, crop=False, fps=c.fps) for c in clips]


def _audio_file_units(data: bytes, item: int, model: Any, processor: Any) -> list[Unit]:
    from latentflow.encode.codec_builder import audio_format
    from latentflow.encode.shard import build_processor
    from latentflow.media.audio import decode_audio
    from latentflow.media.audio_processor import CHANNEL_RULES
    from latentflow.media.config import AudioProcessorConfig

    if modality_of(model) != "audio":
        raise InputError(f"{type(model).__name__} takes images or video; an AudioProcessorConfig needs an audio model")
    rate, channels = audio_format(model)
    if processor is not None:
        if not isinstance(processor, AudioProcessorConfig):
            raise ConfigError(f"an audio input needs an AudioProcessorConfig, got: {type(processor).__name__}")
        segments = build_processor(processor, model.downsample_factor, None, rate, channels).process_segments(data, f"input{item}")
        return [_waveform_unit(torch.from_numpy(s.waveform), item, model, crop=False) for s in segments]
    rule = CHANNEL_RULES.get(channels or 0, "keep")
    decoded = decode_audio(data, f"input{item}", sample_rate=rate, channels=rule)
    return [_waveform_unit(torch.from_numpy(np.ascontiguousarray(decoded.samples, dtype=np.float32)), item, model)]


def _array_units(x: np.ndarray, item: int, model: Any, processor: Any) -> list[Unit]:
    from PIL import Image

    modality = modality_of(model)
    if modality == "audio":
        return [_waveform_unit(torch.from_numpy(np.asarray(x, dtype=np.float32)), item, model)]
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        if modality != "video":
            raise InputError(f"{type(model).__name__} takes images; a (T, H, W, 3) video array needs a video model")
        frames = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
        return [_pixels_unit(_array_pixels(frames.transpose(3, 0, 1, 2)), item, model)]
    if x.ndim == 2 or (x.ndim == 3 and x.shape[-1] in (1, 3, 4)):
        if processor is not None:
            return _image_units(Image.fromarray(_to_uint8(x).squeeze(-1) if x.ndim == 3 and x.shape[-1] == 1 else _to_uint8(x)),
                                item, model, processor)
        rgb = np.stack([x] * 3, axis=-1) if x.ndim == 2 else np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x[..., :3]
        return [_pixels_unit(_array_pixels(rgb.transpose(2, 0, 1)), item, model)]
    raise InputError(f"numpy inputs are channels last: an image (H, W, 3) or (H, W), a video (T, H, W, 3); got shape {x.shape}")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    return np.clip(np.rint(np.asarray(x, np.float64) * 255.0), 0, 255).astype(np.uint8)


def _array_pixels(x: np.ndarray) -> torch.Tensor:
    """Channels-first numpy pixels, uint8 in [0, 255] or float in [0, 1] -> float32 in [-1, 1]."""
    if x.dtype == np.uint8:
        return _uint8_pixels(x)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) * 2.0 - 1.0


def _uint8_pixels(x: np.ndarray) -> torch.Tensor:
    from latentflow.encode.shard import unpack_pixels

    return torch.from_numpy(unpack_pixels(np.ascontiguousarray(x)))  # the processors' uint8 / 127.5 - 1


def _tensor_unit(x: torch.Tensor, item: int, model: Any) -> Unit:
    modality = modality_of(model)
    if not x.is_floating_point():
        raise InputError(f"tensor inputs are float in [-1, 1] (the model's convention), got dtype {x.dtype}; "
                         "pass uint8 pixels as a channels-last numpy array")
    x = x.detach().float().cpu()
    if modality == "audio":
        return _waveform_unit(x, item, model)
    if x.ndim == 3 or (x.ndim == 4 and modality == "video"):
        return _pixels_unit(x, item, model)
    raise InputError("tensor inputs are channels first: (3, H, W)" + (", (3, T, H, W)" if modality == "video" else "")
                     + f", or a batch of them; got shape {tuple(x.shape)}")


def _dict_waveform(source: dict, model: Any) -> torch.Tensor:
    from latentflow.encode.codec_builder import audio_format
    from latentflow.media.audio import resample

    samples = source.get("array", source.get("waveform"))
    if samples is None or "sampling_rate" not in source:
        raise InputError(f"an audio dict holds 'array' (or 'waveform') and 'sampling_rate', got keys {sorted(source)}")
    x = np.asarray(samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples, dtype=np.float32)
    x = x[None] if x.ndim == 1 else x
    rate = audio_format(model)[0]
    if rate and int(source["sampling_rate"]) != rate:
        x = resample(x, int(source["sampling_rate"]), rate)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _pixels_unit(x: torch.Tensor, item: int, model: Any, crop: bool = True, fps: float | None = None) -> Unit:
    """Pixels (3, H, W) or (3, T, H, W) padded to what the model takes; ``meta`` says what to crop back to."""
    from torch.nn import functional as F

    channels = getattr(model, "in_channels", 3)
    if x.shape[0] != channels:
        raise InputError(f"{type(model).__name__} takes {channels} channels first, got pixels of shape {tuple(x.shape)}")
    f, s = int(model.downsample_factor), temporal_stride(model)
    video = x.ndim == 4
    if video and modality_of(model) != "video":
        raise InputError(f"{type(model).__name__} takes images, got a clip of shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    t = x.shape[1] if video else None
    if not video and getattr(model, "input_rank", 4) == 5:  # video models read images as one-frame clips
        x, t = x[:, None], 0
    pad_h, pad_w = -h % f, -w % f
    pad_t = -(x.shape[1] - 1) % s if x.ndim == 4 else 0
    if pad_h or pad_w or pad_t:
        x = F.pad(x[None], (0, pad_w, 0, pad_h) + ((0, pad_t) if x.ndim == 4 else ()), mode="replicate")[0]
    modality = "video" if video else "image"
    meta = {"modality": modality, "size": (int(h), int(w)) if crop else None, "frames": t if crop else None,
            "one_frame": t == 0, "fps": fps}
    return Unit(x.contiguous(), item, meta)


def _waveform_unit(x: torch.Tensor, item: int, model: Any, crop: bool = True) -> Unit:
    from latentflow.encode.codec_builder import audio_format

    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise InputError(f"a waveform is (N,) or (C, N), got shape {tuple(x.shape)}")
    rate, channels = audio_format(model)
    if channels and x.shape[0] != channels:
        if channels == 1:
            x = x.mean(0, keepdim=True)  # as the 'mono' remix rule of an equal-weight stereo pair
        elif x.shape[0] == 1:
            x = x.repeat(channels, 1)
        else:
            raise InputError(f"{type(model).__name__} takes {channels} channel(s), got a waveform of shape {tuple(x.shape)}")
    n, hop = x.shape[1], int(model.downsample_factor)
    if -n % hop or n == 0:
        x = torch.nn.functional.pad(x, (0, -n % hop or hop))
    return Unit(x.float().contiguous(), item, {"modality": "audio", "length": int(n) if crop else None, "sampling_rate": rate})


# ---- outputs ----------------------------------------------------------------------------------


def crop_output(x: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
    """A decoded sample cropped back to its input's size (frames, height, width, samples)."""
    if meta.get("modality") == "audio":
        return x[:, : meta["length"]] if meta.get("length") else x
    if meta.get("one_frame") and x.ndim == 4:
        x = x[:, 0]
    if meta.get("frames") and x.ndim == 4:
        x = x[:, : meta["frames"]]
    if meta.get("size"):
        h, w = meta["size"]
        x = x[..., :h, :w]
    return x


def output_modality(x: torch.Tensor, model: Any) -> str:
    """``audio``, ``video`` or ``image`` of one decoded sample."""
    if modality_of(model) == "audio":
        return "audio"
    return "video" if x.ndim == 4 else "image"


def to_media(x: torch.Tensor, modality: str, output_type: str | None = None, return_dict: bool = False,
             fps: float | None = None, sampling_rate: int | None = None, output_dir: str | None = None) -> Any:
    """One decoded sample (float, channels first, in [-1, 1]) as the user asked for it.

    Args:
        x: (3, H, W), (3, T, H, W) or (C, N).
        modality: ``image``, ``video`` or ``audio``.
        output_type: images: ``pil`` (default), ``np`` (H, W, 3) uint8, ``pt`` (the tensor); video: ``np``
            (default) (T, H, W, 3) uint8, ``pil`` (a list of frames), ``mp4`` / ``gif`` (a file's path), ``pt``;
            audio: ``np`` (default) (C, N) float32, ``pt``, ``wav`` (a file's path).
        return_dict: ``{"image": ...}``, ``{"video": ..., "fps": ...}`` or ``{"audio": ..., "sampling_rate": ...}``.
        fps, sampling_rate: of video and audio outputs (recorded in the dict, written in files).
        output_dir: where ``mp4``, ``gif`` and ``wav`` files go (default: a new temporary folder).
    """
    from latentflow.read.preview import DEFAULT_FPS, save_audio_preview, save_video_preview, to_uint8

    kind = output_type or OUTPUT_TYPES[modality][0]
    if kind not in OUTPUT_TYPES[modality]:
        raise ConfigError(f"output_type for {modality} outputs must be one of {list(OUTPUT_TYPES[modality])}, got: {kind!r}")
    x = x.detach().float().cpu()
    fps = float(fps or DEFAULT_FPS)
    if kind == "pt":
        value: Any = x
    elif modality == "audio":
        value = x.numpy() if kind == "np" else save_audio_preview(x, _new_file(output_dir, "wav"), int(sampling_rate or 0))
    else:
        pixels = to_uint8(x[None])[0]  # (H, W, 3) or (T, H, W, 3) uint8
        if kind == "np":
            value = pixels
        elif kind in ("mp4", "gif"):
            value = save_video_preview(pixels, _new_file(output_dir, kind), fps=fps)
        else:
            from PIL import Image

            value = Image.fromarray(pixels) if modality == "image" else [Image.fromarray(p) for p in pixels]
    if not return_dict:
        return value
    if modality == "audio":
        return {"audio": value, "sampling_rate": sampling_rate}
    return {"video": value, "fps": fps} if modality == "video" else {"image": value}


def _new_file(output_dir: str | None, suffix: str) -> str:
    folder = output_dir or tempfile.mkdtemp(prefix="latentflow-pipeline-")
    if "://" not in folder:
        os.makedirs(folder, exist_ok=True)
    return f"{folder.rstrip('/')}/{uuid.uuid4().hex[:12]}.{suffix}"
