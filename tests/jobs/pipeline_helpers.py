"""Helpers of the pipeline tests: tiny models, tar shards with bad samples, job configs, reading outputs back."""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pyarrow.parquet as pq
import torch

from latentflow.auto import AutoModel
from latentflow.media.image import ImageProcessor

RESOLUTION = 32


def tiny_vae(seed: int = 0):
    from latentflow.models.vae import VariationalAutoencoderConfig, VariationalAutoencoderModel

    torch.manual_seed(seed)
    cfg = VariationalAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4, sample_size=RESOLUTION)
    return VariationalAutoencoderModel(cfg).eval()


def jpeg(pixels: np.ndarray) -> bytes:
    from tests.samples import encode_jpeg

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
    from latentflow.jobs.config import EncodeJobConfig

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


def read_rows(out: str, storage_options: dict | None = None) -> dict[str, dict]:
    """``{key: row}`` of every Parquet file of an output; fails on a duplicated key."""
    fs, root = fsspec.url_to_fs(out, **(storage_options or {}))
    fs.invalidate_cache()
    rows: dict[str, dict] = {}
    for path in sorted(fs.glob(f"{root.rstrip('/')}/parquet/*.parquet")):
        with fs.open(path, "rb") as f:
            for row in pq.read_table(f).to_pylist():
                assert row["key"] not in rows, f"duplicated key {row['key']!r}"
                rows[row["key"]] = row
    return rows


def read_errors(out: str, storage_options: dict | None = None) -> list[dict]:
    fs, root = fsspec.url_to_fs(out, **(storage_options or {}))
    with fs.open(f"{root.rstrip('/')}/errors.parquet", "rb") as f:
        return pq.read_table(f).to_pylist()


def read_info(out: str, storage_options: dict | None = None) -> dict:
    fs, root = fsspec.url_to_fs(out, **(storage_options or {}))
    with fs.open(f"{root.rstrip('/')}/latentflow.json") as f:
        return json.load(f)


def zarr_keys(out: str, storage_options: dict | None = None) -> list[str]:
    """Every key stored in the Zarr output (all buckets, all shard groups)."""
    import zarr

    root = zarr.open_group(f"{out.rstrip('/')}/zarr", mode="r", storage_options=storage_options or None)
    keys = []
    for _, bucket in root.groups():
        for _, shard in bucket.groups():
            keys += [str(k) for k in shard["keys"][:]]
    return keys


def reference_latents(model_dir: str, samples: list[dict], processor_config, storage_options: dict | None = None) -> dict[str, np.ndarray]:
    """``model.encode`` (posterior mean) of each sample's image, preprocessed by the same processor, one by one."""
    model = AutoModel.from_pretrained(model_dir, storage_options=storage_options)
    processor = ImageProcessor(processor_config, model.downsample_factor)
    out = {}
    with torch.inference_mode():
        for sample in samples:
            x = torch.from_numpy(processor.process(sample["jpg"], sample["__key__"]).pixel_values)[None]  # (1, 3, H, W)
            out[sample["__key__"]] = model.encode(x).latent_dist.mean[0].numpy()
    return out


def assert_latents_match(rows: dict[str, dict], reference: dict[str, np.ndarray], atol: float = 1e-5) -> None:
    assert set(rows) == set(reference)
    for key, ref in reference.items():
        got = np.asarray(rows[key]["latent"], dtype=np.float32)
        assert got.shape == ref.shape, key
        np.testing.assert_allclose(got, ref, atol=atol, rtol=1e-4, err_msg=key)
