"""``ModelEvaluator``: one model's metrics over batches of images; a callable class for Ray Data.

Each call takes a batch of processed images and returns ONE row of partial results
(per-image metrics as JSON, latent channel statistics state, a latent subsample for
histograms, pooled latents and labels for the linear probe, a code histogram for quantized
models, and timings). The driver merges the
rows with :func:`latentflow.evaluation.report.merge_rows`. Usable in a plain loop too::

    ev = ModelEvaluator("models/transvae-tiny-photos")
    row = ev({"key": keys, "pixel_values": pixels, "error": errors})
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch

from latentflow.encode.encoder import codebook_size_of
from latentflow.evaluation.diagnostics import probe_features
from latentflow.metrics import ChannelStats, psnr, ssim

LPIPS_SKIPPED = "LPIPS skipped: no lpips_weights configured (latentflow never downloads weights)"


def load_model(name_or_path: str, storage_options: dict | None = None, device: str = "cpu"):
    """Any registered model by path, URL or ``models/`` name (:func:`latentflow.auto.load_model`), in eval mode on ``device``."""
    from latentflow.auto import load_model as load

    return load(name_or_path, storage_options).to(device).eval()


def load_lpips(weights: str | None, device: str = "cpu") -> tuple[torch.nn.Module | None, str]:
    """The LPIPS-style network when its local weights exist, else None. Returns (net, note)."""
    if not weights:
        return None, LPIPS_SKIPPED
    import os

    if "://" not in weights and not os.path.exists(weights):
        return None, f"LPIPS skipped: weights not found at {weights!r}"
    from latentflow.training.perceptual import PerceptualLoss

    return PerceptualLoss(weights).to(device), f"LPIPS from local weights {os.path.basename(weights)}"


class ModelEvaluator:
    """Loads a model once, then scores batches. See module docstring.

    Args:
        model: checkpoint path / URL / ``models/`` name.
        storage_options: fsspec options for the checkpoint (used, never stored).
        histogram_samples: latent values kept per channel per batch.
        lpips_weights: local LPIPS-style weights, or None.
        seed: seeds the latent subsampling.
        torch_threads: intra-op threads; None keeps torch's default.
        device: "cpu" or "cuda".
    """

    def __init__(self, model: str, storage_options: dict | None = None, histogram_samples: int = 256,
                 lpips_weights: str | None = None, seed: int = 0, torch_threads: int | None = None, device: str = "cpu"):
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.device = device
        self.model = load_model(model, storage_options, device)
        self.lpips, _ = load_lpips(lpips_weights, device)
        self.discrete = getattr(self.model, "latent_kind", "continuous") == "discrete"
        self.codebook_size = codebook_size_of(self.model) if self.discrete else None
        self.histogram_samples = histogram_samples
        self.rng = np.random.default_rng(seed)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = [str(k) for k in batch["key"]]
        errors = [str(e) for e in batch["error"]]
        good = [i for i, e in enumerate(errors) if not e]
        skipped = [{"key": keys[i], "error": errors[i]} for i in range(len(keys)) if errors[i]]
        if not good:
            return {**self._row([], skipped, None, None, 0.0, 0.0), "probe": np.array([""])}
        x = torch.from_numpy(np.stack([np.asarray(batch["pixel_values"][i], dtype=np.float32) for i in good])).to(self.device)
        with torch.inference_mode():
            t0 = time.perf_counter()
            latents = self.model.encode(x).latents  # (B, C, h, w)
            t1 = time.perf_counter()
            x_hat = self.model.decode(latents).sample.clamp(-1, 1)  # (B, 3, H, W)
            t2 = time.perf_counter()
            per_image = self._scores([keys[i] for i in good], x, x_hat)
            codes = self._codes(x)
        row = self._row(per_image, skipped, latents, codes, t1 - t0, t2 - t1)
        labels = [int(batch["label"][i]) for i in good] if "label" in batch else [-1] * len(good)  # -1: no label
        row["probe"] = np.array([json.dumps({"features": probe_features(latents).tolist(), "labels": labels})])
        return row

    def _scores(self, keys: list[str], x: torch.Tensor, x_hat: torch.Tensor) -> list[dict[str, Any]]:
        p = psnr(x_hat, x).per_sample.tolist()
        s = ssim(x_hat, x).per_sample.tolist() if min(x.shape[2:]) >= 11 else [None] * len(keys)
        lp = self.lpips(x_hat.float(), x.float()).tolist() if self.lpips is not None else [None] * len(keys)
        return [{"key": k, "psnr": a, "ssim": b, "lpips": c} for k, a, b, c in zip(keys, p, s, lp)]

    def _codes(self, x: torch.Tensor) -> np.ndarray | None:
        if not self.discrete or self.codebook_size is None:
            return None
        idx = self.model.tokenize(x).flatten().long().cpu()
        idx = idx[idx >= 0]  # -1 marks dropped codes in some quantizers
        return torch.bincount(idx, minlength=self.codebook_size).numpy().astype(np.int64)

    def _subsample(self, latents: torch.Tensor) -> np.ndarray:
        z = latents.detach().float().cpu().transpose(0, 1).reshape(latents.shape[1], -1).numpy()  # (C, N)
        k = min(self.histogram_samples, z.shape[1])
        return z[:, self.rng.choice(z.shape[1], size=k, replace=False)]  # (C, k)

    def _row(self, per_image, skipped, latents, codes, enc_s: float, dec_s: float) -> dict[str, np.ndarray]:
        row: dict[str, np.ndarray] = {
            "per_image": np.array([json.dumps(per_image)]),
            "skipped": np.array([json.dumps(skipped)]),
            "num_images": np.array([len(per_image)], dtype=np.int64),
            "encode_s": np.array([enc_s]),
            "decode_s": np.array([dec_s]),
        }
        if latents is not None:
            stats = ChannelStats()
            stats.update(latents)
            row["stats"] = np.array([json.dumps({k: v.tolist() for k, v in stats.to_state().items()})])
            row["latent_sample"] = np.array([json.dumps(self._subsample(latents).tolist())])
        else:
            row["stats"] = np.array([""])
            row["latent_sample"] = np.array([""])
        row["codes"] = np.array([json.dumps(codes.tolist()) if codes is not None else ""])
        return row
