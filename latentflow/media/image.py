"""Image processor: bytes -> RGB -> resize shortest side -> crop (or bucket) -> [-1, 1] float32.

Every decision that changes the pixels is in :class:`ImageProcessorConfig`, which the
encode job records in its output, so a reader knows exactly how latents were made.
Crop boxes and original sizes are returned per image (SDXL micro-conditioning needs both).

Example::

    proc = ImageProcessor(ImageProcessorConfig(resolution=256, crop="center"), downsample_factor=8)
    out = proc.process(jpeg_bytes, key="000123")
    out.pixel_values.shape    # (3, 256, 256), float32 in [-1, 1]
    out.crop_box              # (top, left, height, width) in the resized image
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from latentflow.errors import ConfigError
from latentflow.media.config import ImageProcessorConfig
from latentflow.sources.records import SampleError, key_seed

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
WHITE = (255, 255, 255)


@dataclass
class ProcessedImage:
    """One processed image.

    Attributes:
        key: the sample key.
        pixel_values: (3, H, W) float32 in [-1, 1].
        original_size: (height, width) of the decoded image before any resize.
        crop_box: (top, left, height, width) of the crop inside the resized image.
        bucket: (H, W) of ``pixel_values``.
        flip_pixel_values: the horizontally flipped view, or None.
    """

    key: str
    pixel_values: np.ndarray
    original_size: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    bucket: tuple[int, int]
    flip_pixel_values: np.ndarray | None = None


def make_buckets(area: int, step: int, max_aspect: float) -> list[tuple[int, int]]:
    """(H, W) buckets with sides a multiple of ``step``, area <= ``area``, aspect within ``max_aspect``.

    For each width, the tallest height that keeps the area under the target; the list
    is symmetric (every (H, W) has its (W, H)) and sorted by aspect ratio W/H.
    """
    buckets = set()
    side = int(math.isqrt(area)) // step * step
    width = step
    while width <= area // step:
        height = (area // width) // step * step
        if height >= step and max(width / height, height / width) <= max_aspect:
            buckets.update({(height, width), (width, height)})
        width += step
    buckets.add((side, side))
    return sorted(buckets, key=lambda hw: hw[1] / hw[0])


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Alpha is composited on white; 16-bit is scaled, not clipped."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, WHITE)
        background.paste(img.convert("RGB"), mask=img.getchannel("A"))
        return background
    if img.mode.startswith("I") or img.mode == "F":
        return _high_bit_depth_to_rgb(img)
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _high_bit_depth_to_rgb(img: Image.Image) -> Image.Image:
    arr = np.asarray(img).astype(np.float64)  # (H, W)
    if img.mode == "F":
        top = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0
    else:  # I;16*, or I holding 16-bit values
        top = 65535.0 if arr.max(initial=0.0) > 255 or img.mode.startswith("I;16") else 255.0
    grey = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")  # (H, W) uint8 -> L -> RGB


class ImageProcessor:
    """Turns encoded image bytes into model inputs.

    Args:
        config: the processor config.
        downsample_factor: the model's spatial reduction; crop sides must be multiples of it.
    """

    def __init__(self, config: ImageProcessorConfig, downsample_factor: int = 1):
        if downsample_factor < 1:
            raise ConfigError(f"downsample_factor must be >= 1, got: {downsample_factor}")
        self.config = config
        self.downsample_factor = downsample_factor
        step = config.resolved_bucket_step(downsample_factor)
        if step % downsample_factor:
            raise ConfigError(f"bucket_step must be a multiple of the model's downsample factor {downsample_factor}, got: {step}")
        if not config.buckets and config.resolution % downsample_factor:
            raise ConfigError(
                f"resolution must be a multiple of the model's downsample factor {downsample_factor}, got: {config.resolution}"
            )
        self.buckets = make_buckets(config.resolution**2, step, config.bucket_max_aspect) if config.buckets else None

    # ---- geometry -------------------------------------------------------------
    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The (H, W) crop an image of ``height`` x ``width`` ends up as."""
        if self.buckets is None:
            return self.config.resolution, self.config.resolution
        log_aspect = math.log(width / height)
        return min(self.buckets, key=lambda hw: abs(math.log(hw[1] / hw[0]) - log_aspect))

    def crop_geometry(self, height: int, width: int, key: str) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """Resized (H, W) covering the target, and the crop box (top, left, h, w) inside it."""
        th, tw = self.target_size(height, width)
        scale = max(th / height, tw / width)
        rh, rw = max(th, round(height * scale)), max(tw, round(width * scale))
        if self.config.crop == "center":
            top, left = (rh - th) // 2, (rw - tw) // 2
        else:
            rng = np.random.default_rng(key_seed(self.config.seed, key))
            top, left = int(rng.integers(0, rh - th + 1)), int(rng.integers(0, rw - tw + 1))
        return (rh, rw), (top, left, th, tw)

    # ---- the pipeline -----------------------------------------------------------
    def process(self, image_bytes: bytes | None, key: str) -> ProcessedImage:
        """Decode, convert, resize, crop and normalize one image.

        Args:
            image_bytes: the encoded image (jpg/png/webp/...); None when the sample had no image.
            key: the sample key (seeds random crops).

        Returns:
            a :class:`ProcessedImage`.

        Raises:
            SampleError: ``missing_image``, ``corrupt_image``, ``decompression_bomb``, ``too_small``.
        """
        img = self._open(image_bytes, key)
        width, height = img.size
        floor = max(self.config.min_size, self.downsample_factor)
        if min(height, width) < floor:
            raise SampleError("process", "too_small", f"image {key!r} is {height}x{width}; the shorter side must be >= {floor}")
        (rh, rw), box = self.crop_geometry(height, width, key)
        pixels = self._load_cropped(img, key, (rh, rw), box)
        values = pixels.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0  # (3, H, W)
        flip = np.ascontiguousarray(values[:, :, ::-1]) if self.config.flip else None
        return ProcessedImage(key, values, (height, width), box, (box[2], box[3]), flip)

    def _open(self, image_bytes: bytes | None, key: str) -> Image.Image:
        if image_bytes is None:
            raise SampleError("read", "missing_image", f"sample {key!r} has no image member")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(image_bytes))  # reads the header only
        except Image.DecompressionBombError as err:
            raise SampleError("decode", "decompression_bomb", f"image {key!r}: {err}") from None
        except Exception as err:
            raise SampleError("decode", "corrupt_image", f"cannot decode image {key!r}: {type(err).__name__}: {err}") from None
        width, height = img.size
        if width * height > self.config.max_pixels:
            raise SampleError(
                "decode", "decompression_bomb",
                f"image {key!r} has {width}x{height}={width * height} pixels, more than max_pixels={self.config.max_pixels}",
            )
        return img

    def _load_cropped(self, img: Image.Image, key: str, resized: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
        """Resize + crop in one PIL call (only the crop region is resampled). Returns (H, W, 3) uint8."""
        width, height = img.size
        rh, rw = resized
        top, left, th, tw = box
        try:
            if self.config.draft and img.format == "JPEG":
                img.draft(None, (rw, rh))  # decoder downscales by 1/2..1/8, never below (rw, rh)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = to_rgb(img)  # loads the pixels
            sx, sy = img.size[0] / rw, img.size[1] / rh  # resized -> (drafted) source coordinates
            src_box = (left * sx, top * sy, (left + tw) * sx, (top + th) * sy)
            out = img.resize((tw, th), resample=_RESAMPLE[self.config.resample], box=src_box)
        except SampleError:
            raise
        except Exception as err:  # truncated data, bad chunks, ...
            raise SampleError("decode", "corrupt_image", f"cannot decode image {key!r}: {type(err).__name__}: {err}") from None
        return np.asarray(out, dtype=np.uint8)
