"""python data/build_shards.py

Writes the training and held-out WebDataset shards the shipped checkpoints in ``models/``
were trained and measured on (deterministic: rerunning rewrites the same pixels).

* ``data/train/train-00000{0..3}.tar``: random square crops (64-112 px, random horizontal
  flip, JPEG quality 90) of eight colour photographs that ship with scikit-image, each first
  downscaled so its shorter side is 256 px (and, for the large ones, also 384 px). Near-flat
  crops (pixel std < 8, e.g. the black corners of ``retina``) are skipped. The trainer's
  processor resizes every crop to the training resolution, so the 64-112 px range doubles as
  scale augmentation; the crops and flips are baked in because the processor's random crop
  is seeded by the sample key (the same crop every epoch).
* ``data/heldout/heldout-000000.tar``: 128x128 PNG crops (lossless) on a fixed grid of the two
  scikit-learn sample photographs ``china.jpg`` and ``flower.jpg``, downscaled so the shorter
  side is 256 px. They are never used for training.

Licenses: ``data/train/LICENSE.md`` and ``data/heldout/LICENSE.md``.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

TRAIN_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "cat")
HELDOUT_PHOTOS = ("china", "flower")
ROOT = Path(__file__).resolve().parent


def downscale(photo: np.ndarray, short_side: int) -> np.ndarray:
    """Resize (H, W, 3) uint8 so its shorter side is ``short_side`` (Lanczos; never upscales)."""
    h, w = photo.shape[:2]
    scale = short_side / min(h, w)
    if scale >= 1:
        return photo
    img = Image.fromarray(photo).resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
    return np.asarray(img)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"optimize": True}))
    return buf.getvalue()


def training_views() -> list[tuple[str, np.ndarray]]:
    """(name, downscaled photo) pairs: every photo at 256 px, the large ones also at 384 px."""
    sys.path.insert(0, str(ROOT.parent))  # the repo root, for tests.samples
    from tests.samples import load_photos

    views = []
    for name, photo in sorted(load_photos(TRAIN_PHOTOS).items()):
        views.append((f"{name}@256", downscale(photo, 256)))
        if min(photo.shape[:2]) >= 500:
            views.append((f"{name}@384", downscale(photo, 384)))
    return views


def write_train(num_shards: int = 4, per_shard: int = 112, seed: int = 0) -> list[Path]:
    from webdataset import TarWriter

    rng = np.random.default_rng(seed)
    views = training_views()
    out = ROOT / "train"
    out.mkdir(exist_ok=True)
    paths = []
    for s in range(num_shards):
        path = out / f"train-{s:06d}.tar"
        with TarWriter(str(path)) as sink:
            i = 0
            while i < per_shard:
                name, view = views[int(rng.integers(len(views)))]
                side = int(rng.integers(64, 113))
                top = int(rng.integers(0, view.shape[0] - side + 1))
                left = int(rng.integers(0, view.shape[1] - side + 1))
                crop = view[top : top + side, left : left + side]
                flip = bool(rng.integers(2))
                if crop.std() < 8:
                    continue
                crop = np.ascontiguousarray(crop[:, ::-1] if flip else crop)
                meta = {"photo": name, "crop_box": [top, left, side, side], "hflip": flip}
                sink.write({"__key__": f"train{s:06d}_{i:06d}", "jpg": encode(crop, "JPEG"), "json": json.dumps(meta)})
                i += 1
        paths.append(path)
    return paths


def write_heldout(side: int = 128) -> Path:
    """Non-overlapping ``side`` crops on a grid over both held-out photos (shorter side 256)."""
    from sklearn.datasets import load_sample_images
    from webdataset import TarWriter

    bunch = load_sample_images()
    out = ROOT / "heldout"
    out.mkdir(exist_ok=True)
    path = out / "heldout-000000.tar"
    with TarWriter(str(path)) as sink:
        for filename, photo in zip(bunch.filenames, bunch.images):
            name = Path(filename).stem
            view = downscale(photo, 256)  # (256, 384, 3)
            for top in range(0, view.shape[0] - side + 1, side):
                for left in range(0, view.shape[1] - side + 1, side):
                    crop = np.ascontiguousarray(view[top : top + side, left : left + side])
                    meta = {"photo": name, "crop_box": [top, left, side, side]}
                    sink.write({"__key__": f"{name}_{top:03d}_{left:03d}", "png": encode(crop, "PNG"), "json": json.dumps(meta)})
    return path


if __name__ == "__main__":
    for p in [*write_train(), write_heldout()]:
        print(p.relative_to(ROOT.parent), f"{p.stat().st_size / 1e6:.2f} MB")
