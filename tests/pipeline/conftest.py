"""Fixtures of the pipeline tests: a tiny saved VAE, real-photo tar shards with bad samples, job configs."""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pytest
import torch

RESOLUTION = 32


def tiny_vae(seed: int = 0):
    from latentflow.models.vae import VariationalAutoencoderConfig, VariationalAutoencoderModel

    torch.manual_seed(seed)
    cfg = VariationalAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4, sample_size=RESOLUTION)
    return VariationalAutoencoderModel(cfg).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny VAE saved with save_pretrained (f2, 4 latent channels)."""
    path = tmp_path_factory.mktemp("models") / "tiny-vae"
    tiny_vae(0).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory) -> str:
    """Same architecture, different weights."""
    path = tmp_path_factory.mktemp("models") / "tiny-vae-other"
    tiny_vae(1).save_pretrained(str(path))
    return str(path)


def jpeg(pixels: np.ndarray) -> bytes:
    from latentflow.data.samples import encode_jpeg

    return encode_jpeg(np.ascontiguousarray(pixels))


def write_tar(url: str, samples: list[dict], storage_options: dict | None = None) -> str:
    """Write one WebDataset tar of ``samples`` (dicts of members, with ``__key__``)."""
    from webdataset import TarWriter

    fs, path = fsspec.url_to_fs(url, **(storage_options or {}))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as f, TarWriter(f) as sink:
        for sample in samples:
            sink.write(sample)
    return url


def good_samples(photos: dict, prefix: str, n: int, size: int = 48) -> list[dict]:
    """``n`` real-photo crops of ``size`` px with caption, label and json members."""
    names = sorted(photos)
    out = []
    for i in range(n):
        name = names[i % len(names)]
        img = photos[name][i * 7 : i * 7 + size + 8 * (i % 3), i * 5 : i * 5 + size]
        out.append({"__key__": f"{prefix}_{i:03d}", "jpg": jpeg(img), "txt": f"a photo of {name}", "cls": str(i),
                    "json": json.dumps({"photo": name, "i": i})})
    return out


def bad_samples(photos: dict, prefix: str) -> list[dict]:
    """One of each per-sample failure: corrupt bytes, no image member, too small, too many pixels (bomb)."""
    astronaut = photos["astronaut"]
    return [
        {"__key__": f"{prefix}_corrupt", "jpg": b"\xff\xd8\xff\xe0 this is not a jpeg", "txt": "corrupt"},
        {"__key__": f"{prefix}_noimage", "txt": "no image member", "json": "{}"},
        {"__key__": f"{prefix}_tiny", "jpg": jpeg(astronaut[:1, :1]), "txt": "1x1 pixel"},
        {"__key__": f"{prefix}_bomb", "jpg": jpeg(astronaut[:400, :400]), "txt": "more pixels than max_pixels"},
    ]


def truncated_tar(url: str, samples: list[dict], storage_options: dict | None = None) -> str:
    """A tar cut in the middle of a member: unreadable as a whole."""
    import io

    from webdataset import TarWriter

    buf = io.BytesIO()
    with TarWriter(buf) as sink:
        for sample in samples:
            sink.write(sample)
    data = buf.getvalue()
    fs, path = fsspec.url_to_fs(url, **(storage_options or {}))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data[: len(data) // 2 + 100])
    return url


def job_config(model: str, src_urls: list[str], out: str, storage_options: dict | None = None, **overrides):
    """An EncodeJobConfig for the tiny model at 32 px (bomb limit 300x300 px, min side 8)."""
    from latentflow.pipeline.config import EncodeJobConfig

    data = {
        "model": model,
        "output": out,
        "source": {"format": "webdataset", "urls": src_urls},
        "processor": {"resolution": RESOLUTION, "max_pixels": 300 * 300, "min_size": 8},
        "store": {"latent": "mean"},
        "batch_size": 3,
        "num_actors": 1,
        "storage_options": storage_options,
        "max_error_rate": 1.0,
        "shard_retries": 1,
    }
    for key, value in overrides.items():
        section, _, sub = key.partition("__")
        if sub:
            data[section] = {**data[section], sub: value}
        else:
            data[key] = value
    return EncodeJobConfig.from_dict(data)
