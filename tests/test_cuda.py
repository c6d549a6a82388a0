"""The model layer, the encode job and the trainer on a CUDA GPU, against the CPU in fp32.

Skipped where torch sees no GPU (CI has none). On a GPU machine: ``python -m pytest tests/test_cuda.py``.
Tolerances are relative L2 errors: cuDNN runs fp32 convolutions in TF32 by default (10-bit mantissa),
bf16 autocast keeps 8 bits, so a deep convnet drifts by ~1e-3 and ~1e-2 from the CPU in fp32.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import latentflow as lf
from latentflow.encode.encoder import LatentEncoder
from latentflow.format.codec import StoreConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "pipeline"), str(ROOT / "tests" / "training")]  # their named helper modules
REL_TOL = {"fp32": 1e-2, "bf16": 5e-2, "fp16": 5e-2}
TOKEN_AGREEMENT = {"fp32": 0.99, "bf16": 0.9, "fp16": 0.9}
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _rel(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a, b = torch.as_tensor(a).float().cpu(), torch.as_tensor(b).float().cpu()
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def pixels(photos) -> torch.Tensor:
    """Four 64 px crops of real photos in [-1, 1], (4, 3, 64, 64)."""
    crops = [photos[n][100:164, 100:164] for n in ("astronaut", "chelsea", "coffee", "rocket")]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("name", ["kl-f8", "fsq-f8", "transvae-tiny"])
def test_shipped_models_on_cuda_match_the_cpu(name, dtype, pixels):
    path = ROOT / "models" / name
    if not (path / "model.safetensors").exists():
        pytest.skip(f"models/{name} is not shipped in this checkout")
    cpu = lf.AutoModel.from_pretrained(str(path)).eval()
    ref = LatentEncoder(cpu, StoreConfig(), dtype="fp32", device="cpu").encode_batch(pixels, list("abcd"))
    gpu = LatentEncoder(lf.AutoModel.from_pretrained(str(path)).eval(), StoreConfig(), dtype=dtype, device="cuda",
                        channels_last=True)
    got = gpu.encode_batch(pixels, list("abcd"))
    assert list(got["key"]) == list("abcd")
    if cpu.latent_kind == "discrete":
        assert got["indices"].dtype == ref["indices"].dtype and got["indices"].shape == ref["indices"].shape
        agreement = float((got["indices"] == ref["indices"]).mean())
        assert agreement >= TOKEN_AGREEMENT[dtype], agreement
        latents = cpu.encode(pixels).latents
    else:
        assert got["latent"].shape == ref["latent"].shape
        assert _rel(got["latent"], ref["latent"]) < REL_TOL[dtype]
        latents = torch.from_numpy(ref["latent"])
    with torch.inference_mode():
        want = cpu.decode(latents).sample
        with torch.autocast("cuda", dtype=AUTOCAST.get(dtype, torch.bfloat16), enabled=dtype in AUTOCAST):
            image = gpu.model.decode(latents.cuda()).sample
    assert image.device.type == "cuda" and image.shape == want.shape
    assert _rel(image, want) < REL_TOL[dtype]


@pytest.mark.slow
def test_encode_job_places_the_encoder_on_the_gpu_and_matches_the_cpu(ray_local, photos, tmp_path):
    """device=cuda fails unless the pool gives each actor a GPU (Ray hides GPUs from actors without one)."""
    from pipeline_helpers import RESOLUTION, good_samples, job_config, read_rows, reference_latents, tiny_vae, write_tar

    from latentflow.jobs.runner import run_encode_job
    from latentflow.media.config import ImageProcessorConfig

    model_dir = str(tmp_path / "model")
    tiny_vae(0).save_pretrained(model_dir)
    samples = [good_samples(photos, f"g{s}", 5) for s in range(2)]
    srcs = [write_tar(str(tmp_path / "src" / f"g-{s}.tar"), part) for s, part in enumerate(samples)]
    out = str(tmp_path / "out")
    summary = run_encode_job(job_config(model_dir, srcs, out, device="cuda", dtype="bf16", batch_size=4), progress=False)
    assert summary.ok and summary.rows == 10 and summary.errors == 0
    rows = read_rows(out)
    reference = reference_latents(model_dir, [s for part in samples for s in part],
                                  ImageProcessorConfig(resolution=RESOLUTION, max_pixels=300 * 300, min_size=8))
    assert set(rows) == set(reference)
    for key, ref in reference.items():
        assert _rel(np.asarray(rows[key]["latent"], dtype=np.float32).reshape(ref.shape), ref) < REL_TOL["bf16"], key


@pytest.mark.slow
def test_trainer_learns_on_the_gpu_in_bf16(tmp_path):
    from training_helpers import tiny_vae_config

    from latentflow.training.config import TrainAutoencoderConfig
    from latentflow.training.entrypoints import train_autoencoder
    from tests.samples import write_sample_webdataset

    shards = write_sample_webdataset(str(tmp_path / "shards"), num_shards=4, samples_per_shard=6, min_side=40, max_side=64, seed=1)
    cfg = tiny_vae_config(shards, str(tmp_path / "run"), max_steps=24, checkpoint_every=24, eval_every=24,
                          use_gpu=True, mixed_precision="bf16")
    summary = train_autoencoder(TrainAutoencoderConfig.from_dict(cfg))
    assert summary["device"] == "cuda"
    rec = [r["rec"] for r in summary["history"]]
    assert np.mean(rec[-3:]) < 0.6 * np.mean(rec[:3]), rec
    model = lf.AutoModel.from_pretrained(str(tmp_path / "run" / "final"))
    assert next(model.parameters()).device.type == "cpu"  # saved from the GPU, loads anywhere


@pytest.mark.slow
def test_ray_train_worker_trains_on_its_gpu(ray_local, tmp_path):
    """One Ray Train worker with use_gpu (NCCL process group) trains on the GPU Ray assigned it."""
    from training_helpers import tiny_vae_config

    from latentflow.training.config import TrainAutoencoderConfig
    from latentflow.training.distributed import run_distributed
    from tests.samples import write_sample_webdataset

    shards = write_sample_webdataset(str(tmp_path / "shards"), num_shards=3, samples_per_shard=6, min_side=40, max_side=64, seed=2)
    raw = tiny_vae_config(shards, str(tmp_path / "run"), max_steps=4, checkpoint_every=4, num_workers=1,
                          use_gpu=True, cpus_per_worker=1, mixed_precision="bf16")
    [summary] = run_distributed("autoencoder", TrainAutoencoderConfig.from_dict(raw), storage_path=str(tmp_path / "ray"))
    assert summary["device"].startswith("cuda") and summary["steps"] == 4
    assert all(np.isfinite(summary["losses"]))
    assert (tmp_path / "run" / "checkpoints" / "step-0000004" / "trainer_state.json").exists()
