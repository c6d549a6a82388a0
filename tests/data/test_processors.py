"""ImageProcessor: colour modes, exact crop geometry, buckets, normalization, and every bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from latentflow.errors import ConfigError
from latentflow.media.config import ImageProcessorConfig
from latentflow.media.image import ImageProcessor, make_buckets
from latentflow.sources.records import SampleError


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def proc(**kwargs) -> ImageProcessor:
    factor = kwargs.pop("factor", 8)
    return ImageProcessor(ImageProcessorConfig(**{"resolution": 16, **kwargs}), factor)


def test_rgb_passes_through_exactly():
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = proc().process(encode(Image.fromarray(pixels)), "k")
    np.testing.assert_allclose(out.pixel_values, pixels.transpose(2, 0, 1) / 127.5 - 1, atol=1e-6)
    assert out.pixel_values.dtype == np.float32 and out.pixel_values.shape == (3, 16, 16)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1"])
def test_modes_convert_to_rgb_like_pil(mode):
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    img = rgb.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    data = encode(img, fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1
    out = proc(draft=False).process(data, "k")
    np.testing.assert_allclose(out.pixel_values, expected, atol=1e-6)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_alpha_is_composited_on_white(mode):
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:, :8, 3] = 255  # left half opaque, right half fully transparent
    img = Image.fromarray(rgba)
    if mode == "LA":
        img = img.convert("LA")
    if mode == "P":
        img = img.convert("P")  # keeps transparency as a palette entry
        img.info["transparency"] = img.getpixel((15, 0))
    out = proc().process(encode(img), "k").pixel_values
    np.testing.assert_allclose(out[:, :, 12:], 1.0)  # transparent -> white
    assert out[:, :, :4].min() < 0.9  # opaque part keeps its colour


def test_16_bit_is_scaled_not_clipped():
    values = np.full((16, 16), 65535, dtype=np.uint16)
    values[:, 8:] = 32896  # ~ middle grey in 16 bit
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    out = proc().process(encode(img), "k").pixel_values
    np.testing.assert_allclose(out[:, :, :8], 1.0)
    np.testing.assert_allclose(out[:, :, 8:], 128 / 127.5 - 1, atol=1e-6)


def test_resize_shortest_side_and_center_crop_box():
    img = Image.new("RGB", (100, 50), (10, 20, 30))  # W=100, H=50
    out = ImageProcessor(ImageProcessorConfig(resolution=32), 8).process(encode(img), "k")
    assert out.original_size == (50, 100)
    assert out.crop_box == (0, 16, 32, 32)  # resized to 32x64, centered
    assert out.bucket == (32, 32)


def test_crop_content_matches_resize_then_crop():
    pixels = np.random.default_rng(2).integers(0, 256, (40, 80, 3), dtype=np.uint8)
    out = ImageProcessor(ImageProcessorConfig(resolution=16, resample="bilinear", draft=False), 8).process(
        encode(Image.fromarray(pixels)), "k")
    top, left, h, w = out.crop_box
    resized = np.asarray(Image.fromarray(pixels).resize((32, 16), Image.Resampling.BILINEAR), dtype=np.float32)
    expected = resized[top : top + h, left : left + w].transpose(2, 0, 1) / 127.5 - 1
    assert np.abs(out.pixel_values - expected).mean() < 0.03  # box-resampling differs only at edges


def test_random_crop_is_seeded_per_key():
    img = encode(Image.new("RGB", (200, 64)))
    p = proc(resolution=32, crop="random")
    boxes = {k: p.process(img, k).crop_box for k in ("a", "b", "c", "d", "e")}
    assert boxes == {k: p.process(img, k).crop_box for k in boxes}  # rerun: same crops
    assert len(set(boxes.values())) > 1
    assert all(b[0] == 0 and 0 <= b[1] <= 100 - 32 and b[2:] == (32, 32) for b in boxes.values())
    other_seed = proc(resolution=32, crop="random", seed=1)
    assert {k: other_seed.process(img, k).crop_box for k in boxes} != boxes


def test_buckets_are_multiples_of_the_factor_and_near_the_area():
    buckets = make_buckets(64 * 64, 8, 2.0)
    assert (64, 64) in buckets
    for h, w in buckets:
        assert h % 8 == 0 and w % 8 == 0
        assert h * w <= 64 * 64 and h * w >= 0.8 * 64 * 64
        assert max(h / w, w / h) <= 2.0
    assert buckets == sorted(buckets, key=lambda hw: hw[1] / hw[0])


def test_wide_image_goes_to_a_wide_bucket():
    p = proc(resolution=64, buckets=True)
    out = p.process(encode(Image.new("RGB", (160, 80))), "k")  # aspect 2
    h, w = out.bucket
    assert out.pixel_values.shape == (3, h, w)
    assert w > h and h % 8 == 0 and w % 8 == 0
    assert out.crop_box[2:] == (h, w)


def test_normalize_range_and_flip_view():
    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    pixels[:, :8] = 255
    out = proc(flip=True).process(encode(Image.fromarray(pixels)), "k")
    assert out.pixel_values.min() == -1.0 and out.pixel_values.max() == 1.0
    np.testing.assert_array_equal(out.flip_pixel_values, out.pixel_values[:, :, ::-1])


def test_jpeg_draft_matches_full_decode():
    pixels = np.asarray(Image.fromarray(np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((256, 256)))
    data = encode(Image.fromarray(pixels), "JPEG", quality=95)
    fast = proc(resolution=32).process(data, "k").pixel_values
    full = proc(resolution=32, draft=False).process(data, "k").pixel_values
    assert np.abs(fast - full).mean() < 0.02


@pytest.mark.parametrize(
    "data, config, stage, error_type",
    [
        (None, {}, "read", "missing_image"),
        (b"", {}, "decode", "corrupt_image"),
        (b"definitely not an image", {}, "decode", "corrupt_image"),
        ("truncated", {}, "decode", "corrupt_image"),
        ("small", {"min_size": 20}, "process", "too_small"),
        ("tiny", {}, "process", "too_small"),
        ("bomb", {"max_pixels": 1000}, "decode", "decompression_bomb"),
    ],
)
def test_bad_inputs_raise_sample_errors(data, config, stage, error_type):
    photo = encode(Image.fromarray(np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG")
    data = {"truncated": photo[: len(photo) // 2], "small": encode(Image.new("RGB", (16, 16))),
            "tiny": encode(Image.new("RGB", (4, 40))), "bomb": photo}.get(data, data)
    with pytest.raises(SampleError) as info:
        proc(**config).process(data, "bad-key")
    assert (info.value.stage, info.value.error_type) == (stage, error_type)
    assert "bad-key" in info.value.message


def test_config_round_trip_and_errors():
    cfg = ImageProcessorConfig(resolution=64, crop="random", buckets=True)
    assert ImageProcessorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown key 'resolutoin'"):
        ImageProcessorConfig.from_dict({"resolutoin": 64})
    with pytest.raises(ConfigError, match="crop must be one of"):
        ImageProcessorConfig(crop="middle")
    with pytest.raises(ConfigError, match="resolution must be a multiple of the model's downsample factor 8, got: 20"):
        ImageProcessor(ImageProcessorConfig(resolution=20), 8)
