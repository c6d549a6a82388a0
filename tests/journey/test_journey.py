"""The user's journey across the layers, with the README's own commands, on the data users have.

For each input: ``python jobs/encode_dataset.py`` on a real Ray head (``ray start --head``) ->
``datasets.load_dataset(<out>)`` typed arrays -> ``python jobs/train_prior.py`` for a few steps
(flow over continuous latents, GPT over tokens) -> samples decoded to a PNG through the decoder
rebuilt from the codec, plus ``decode_latents`` on stored rows. Each case asserts exact row
counts, shapes and finite values.

Inputs: a folder with ``.txt`` captions and no labels; a bucketed WebDataset of mixed aspect
ratios; an HF ``imagefolder`` dataset saved to disk; a tiny random ``diffusers.AutoencoderKL``
saved by diffusers (``model=<dir>``). The shipped FSQ tokenizer's journey (tokens -> a GPT prior -> PNG) is the
README's own, checked in ``tests/journey/test_readme_commands.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.samples import encode_jpeg, load_photos

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "immunohistochemistry", "hubble_deep_field", "cat")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    address, _, env = ray_cluster
    return {**env, "RAY_ADDRESS": address, "RAY_AUTH_MODE": "token", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "0"}


@pytest.fixture(scope="module")
def photos():
    return load_photos(PHOTOS)


def _run(args: list[str], env: dict, timeout: int = 400) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[0]} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-4000:]}"
    return done


def encode(env: dict, out: Path, *overrides: str) -> dict:
    _run(["jobs/encode_dataset.py", "--config", "configs/encode/default.yaml", "--no-progress", f"output={out}",
          "processor.resolution=32", "batch_size=4", *overrides], env)
    return json.loads((out / "latentflow.json").read_text())


def train_prior(env: dict, out: Path, tmp: Path, config: str, *overrides: str) -> Path:
    run_dir = tmp / "prior"
    _run(["jobs/train_prior.py", "--config", config, f"data.path={out}", f"train.output_dir={run_dir}",
          "train.max_steps=3", "train.log_every=1", "train.checkpoint_every=3", "train.eval_every=3",
          "data.batch_size=2", "sample.num_samples=2", *overrides], env)
    return run_dir / "samples.png"


def check_samples_png(png: Path, side: int) -> None:
    image = np.asarray(Image.open(png))
    assert image.ndim == 3 and image.shape[2] in (3, 4) and image.shape[0] >= side and image.std() > 0


def check_decodes(out: Path, rows, key: str = "latent") -> None:
    import latentflow

    z = torch.as_tensor(np.stack([np.asarray(r) for r in rows[key][:2]]))
    images = latentflow.decode_latents(z, str(out))
    assert images.shape[:2] == (2, 3) and torch.isfinite(images).all()


def load(out: Path, env_home: Path, name: str | None = None):
    import datasets

    args = (str(out), name) if name else (str(out),)
    return datasets.load_dataset(*args, split="train", cache_dir=str(env_home))


# ---- the inputs ---------------------------------------------------------------------------


def write_caption_folder(root: Path, photos: dict) -> int:
    root.mkdir(parents=True)
    for name, pixels in photos.items():
        (root / f"{name}.jpg").write_bytes(encode_jpeg(pixels[:96, :96]))
        (root / f"{name}.txt").write_text(f"a photo of {name}\n")
    return len(photos)


def write_mixed_aspect_tar(url: Path, photos: dict) -> dict[str, int]:
    from webdataset import TarWriter

    sizes = {"wide": (64, 128), "tall": (128, 64), "square": (96, 96)}
    counts = dict.fromkeys(sizes, 0)
    with open(url, "wb") as f, TarWriter(f) as sink:
        for i, (name, pixels) in enumerate(photos.items()):
            shape = list(sizes)[i % 3]
            h, w = sizes[shape]
            sink.write({"__key__": f"{name}-{shape}", "jpg": encode_jpeg(pixels[:h, :w]), "txt": f"{name}, {shape}"})
            counts[shape] += 1
    return counts


def write_hf_imagefolder(root: Path, photos: dict, home: Path) -> Path:
    import datasets

    images = root / "images"
    images.mkdir(parents=True)
    lines = []
    for i, (name, pixels) in enumerate(photos.items()):
        Image.fromarray(np.ascontiguousarray(pixels[:80, :80])).save(images / f"{name}.png")
        lines.append(json.dumps({"file_name": f"{name}.png", "text": f"photo {i}"}))
    (images / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    ds = datasets.load_dataset("imagefolder", data_dir=str(images), cache_dir=str(home))
    saved = root / "saved"
    ds.save_to_disk(str(saved))  # a DatasetDict: read with source.split
    return saved


def save_tiny_diffusers_vae(path: Path) -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                  layers_per_block=1, sample_size=32, scaling_factor=0.5).save_pretrained(str(path))


# ---- the journeys -------------------------------------------------------------------------------


def test_folder_with_caption_sidecars_and_no_labels(cluster, photos, tmp_path):
    n = write_caption_folder(tmp_path / "folder", photos)
    out = tmp_path / "latents"
    info = encode(cluster, out, "source.format=folder", f"source.urls={tmp_path / 'folder'}")
    assert info["counts"]["rows"] == n
    ds = load(out, tmp_path / "hf")
    assert ds.num_rows == n and type(ds.features["latent"]).__name__ == "Array3D"
    assert sorted(ds[:]["caption"]) == sorted(f"a photo of {p}" for p in photos) and set(ds[:]["label"]) == {None}
    latents = ds.with_format("numpy")[:]["latent"]
    assert latents.shape == (n, 4, 4, 4) and np.isfinite(latents).all()
    check_decodes(out, ds.with_format("numpy")[:2])
    check_samples_png(train_prior(cluster, out, tmp_path, "configs/train/flow_prior.yaml"), 32)


def test_bucketed_webdataset_of_mixed_aspect_ratios(cluster, photos, tmp_path):
    (tmp_path / "shards").mkdir()
    counts = write_mixed_aspect_tar(tmp_path / "shards" / "mixed-000000.tar", photos)
    out = tmp_path / "latents"
    info = encode(cluster, out, f"source.urls={tmp_path / 'shards' / 'mixed-000000.tar'}", "processor.buckets=true",
                  "processor.bucket_max_aspect=2.0", "processor.resolution=64", "processor.bucket_step=16")
    # bucket sides are multiples of 16 px: f8 latents of even size, which the DiT's 2x2 patches need
    assert info["counts"]["rows"] == len(photos)
    buckets = info["counts"]["buckets"]
    assert sorted(buckets.values()) == sorted(counts.values()) and len(buckets) == 3
    everything = load(out, tmp_path / "hf")
    assert everything.num_rows == len(photos)
    for bucket, rows in buckets.items():  # one typed config per bucket shape
        part = load(out, tmp_path / "hf", bucket)
        h, w = (int(s) for s in bucket.split("x"))
        assert part.num_rows == rows and type(part.features["latent"]).__name__ == "Array3D"
        assert tuple(part.features["latent"].shape) == (4, h // 8, w // 8)
        check_decodes(out, part.with_format("numpy")[:2]) if rows >= 2 else None
    check_samples_png(train_prior(cluster, out, tmp_path, "configs/train/flow_prior.yaml"), 32)


def test_hf_imagefolder_saved_to_disk(cluster, photos, tmp_path):
    saved = write_hf_imagefolder(tmp_path / "hfdata", photos, tmp_path / "hf")
    out = tmp_path / "latents"
    info = encode(cluster, out, "source.format=hf", f"source.urls={saved}", "source.split=train")
    assert info["counts"]["rows"] == len(photos)
    ds = load(out, tmp_path / "hf")
    assert ds.num_rows == len(photos) and sorted(ds[:]["caption"]) == sorted(f"photo {i}" for i in range(len(photos)))
    check_decodes(out, ds.with_format("numpy")[:2])
    check_samples_png(train_prior(cluster, out, tmp_path, "configs/train/flow_prior.yaml"), 32)


def test_diffusers_autoencoder_kl_folder(cluster, tmp_path):
    from diffusers import AutoencoderKL

    vae_dir = tmp_path / "pipeline" / "vae"
    save_tiny_diffusers_vae(vae_dir)
    out = tmp_path / "latents"
    encode(cluster, out, f"model={vae_dir}")
    ds = load(out, tmp_path / "hf").with_format("torch")
    z = ds[:2]["latent"]  # (2, 4, 16, 16): the diffusers VAE is f2 here
    assert tuple(z.shape) == (2, 4, 16, 16)
    import latentflow

    reference = AutoencoderKL.from_pretrained(str(vae_dir)).eval()
    with torch.no_grad():
        expected = reference.decode(z).sample
    torch.testing.assert_close(latentflow.decode_latents(z, str(out)), expected, atol=1e-4, rtol=1e-4)
    check_samples_png(train_prior(cluster, out, tmp_path, "configs/train/flow_prior.yaml"), 32)
