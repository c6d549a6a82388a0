"""Small real-photo WebDataset shards for tests and benchmarks (no downloads); not part of the library.

Scripts run from the repo root import it as ``tests.samples`` after putting the root on ``sys.path``.

The photographs ship inside scikit-image and scikit-learn (see their data licenses:
scikit-image ``skimage/data/README.txt``, scikit-learn ``datasets/images/README.txt``).
Random crops of varying size (default 160-320 px per side) make the aspect ratios
and sizes vary like a real dataset.

Example::

    urls = write_sample_webdataset("/tmp/photos", num_shards=2, samples_per_shard=8)
    # ['/tmp/photos/photos-000000.tar', '/tmp/photos/photos-000001.tar']
"""

from __future__ import annotations

import functools
import io
import json

import fsspec
import numpy as np
from PIL import Image

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "cat", "motorcycle")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


@functools.lru_cache(maxsize=4)
def load_photos(names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The colour photographs shipped in scikit-image and scikit-learn, as (H, W, 3) uint8 arrays.

    Args:
        names: a subset of ``SKIMAGE_PHOTOS`` to load (faster); None loads them all plus scikit-learn's.
    """
    from skimage import data

    photos = {}
    for name in names or SKIMAGE_PHOTOS:
        img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
        photos[name] = np.ascontiguousarray(img[..., :3])
    if names:
        return photos
    try:
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        for filename, img in zip(bunch.filenames, bunch.images):
            photos[filename.rsplit("/", 1)[-1].split(".")[0]] = img
    except ImportError:  # scikit-learn is optional
        pass
    return photos


def random_crop(photo: np.ndarray, rng: np.random.Generator, min_side: int, max_side: int) -> tuple[np.ndarray, list[int]]:
    """A crop of random height and width in [min_side, max_side] (clipped to the photo). Returns (crop, [top, left, h, w])."""
    height, width = photo.shape[:2]
    h = int(rng.integers(min(min_side, height), min(max_side, height) + 1))
    w = int(rng.integers(min(min_side, width), min(max_side, width) + 1))
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    return photo[top : top + h, left : left + w], [top, left, h, w]


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_sample_webdataset(
    out_url: str,
    num_shards: int = 2,
    samples_per_shard: int = 8,
    min_side: int = 160,
    max_side: int = 320,
    seed: int = 0,
    include_bad: bool = False,
    prefix: str = "photos",
    storage_options: dict | None = None,
    photo_names: tuple[str, ...] | None = None,
) -> list[str]:
    """Write WebDataset tar shards of random real-photo crops (jpg + json + txt + cls members).

    Args:
        out_url: directory (local path or fsspec URL).
        num_shards: number of tar files.
        samples_per_shard: good samples per tar.
        min_side, max_side: range of crop heights and widths.
        seed: makes the whole dataset reproducible.
        include_bad: add to each shard one corrupt jpg and one sample without an image.
        prefix: file name prefix of the shards.
        photo_names: photos to crop from (a subset of ``SKIMAGE_PHOTOS`` loads faster); None: all.
        storage_options: fsspec options.

    Returns:
        the URLs of the written shards, sorted. Keys are ``<shard>_<index>`` and unique.
    """
    from webdataset import TarWriter

    photos = load_photos(tuple(photo_names) if photo_names else None)
    names = sorted(photos)
    rng = np.random.default_rng(seed)
    fs, root = fsspec.url_to_fs(out_url, **(storage_options or {}))
    fs.makedirs(root, exist_ok=True)
    urls = []
    for s in range(num_shards):
        path = f"{root.rstrip('/')}/{prefix}-{s:06d}.tar"
        with fs.open(path, "wb") as f, TarWriter(f) as sink:
            for i in range(samples_per_shard):
                label = int(rng.integers(len(names)))
                crop, box = random_crop(photos[names[label]], rng, min_side, max_side)
                meta = {"photo": names[label], "crop_box": box}
                sink.write({"__key__": f"{prefix}{s:06d}_{i:06d}", "jpg": encode_jpeg(crop), "json": json.dumps(meta),
                            "txt": f"a photo: {names[label].replace('_', ' ')}", "cls": str(label)})
            if include_bad:
                sink.write({"__key__": f"{prefix}{s:06d}_corrupt", "jpg": b"\xff\xd8\xff\xe0 not really a jpeg", "txt": "corrupt"})
                sink.write({"__key__": f"{prefix}{s:06d}_noimage", "json": json.dumps({"note": "no image member"}), "txt": "missing"})
        urls.append(fs.unstrip_protocol(path) if "://" in str(out_url) else path)
    return sorted(urls)
