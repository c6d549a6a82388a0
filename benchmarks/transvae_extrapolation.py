"""Does TransVAE extrapolate in resolution? RoPE vs absolute positions, trained identically.

    python benchmarks/transvae_extrapolation.py [--steps 400] [--seeds 0 1] [--workers 2]

Trains tiny TransVAEs (same seed, data order, budget) on 32x32 random crops/flips of
the real colour photos shipped in scikit-image/scikit-learn, holding some photos out,
then measures PSNR on fixed held-out crops at 32x32 (the training size) and 64x64 (2x).
The only difference between the models is ``pos_embedding``: "rope" (2D rotary,
relative) vs two learned absolute tables bicubically resized to the larger grids:
"absolute" (initialised sin-cos, as MAE) and "learned" (initialised at random, as ViT).
Evaluates at 32 (training size), 64 (2x) and 128 px (4x); prints per-variant PSNR (mean
over seeds) and the RoPE - absolute differences. The 64x64
crops hold different content from the 32x32 ones, so each model also reconstructs the same
64x64 crops as four independent 32x32 tiles: whole-image minus tiled PSNR isolates what
running at 2x the training size costs (or gains: wider context) from the content change.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from latentflow.metrics import psnr
from latentflow.models.transvae import TransVAEModel, transvae_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.samples
from tests.samples import load_photos  # noqa: E402

HELD_OUT = ("coffee", "rocket", "china")


def to_tensor(crops: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, H, W)


def random_crops(photos: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    crops = []
    for _ in range(n):
        p = photos[rng.integers(len(photos))]
        top, left = rng.integers(0, p.shape[0] - size + 1), rng.integers(0, p.shape[1] - size + 1)
        crop = p[top : top + size, left : left + size]
        crops.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
    return to_tensor(crops)


def downscale(photo: np.ndarray, factor: int) -> np.ndarray:
    """Box-downscale so a 32 px crop holds objects, not just texture."""
    h, w = (photo.shape[0] // factor) * factor, (photo.shape[1] // factor) * factor
    return photo[:h, :w].reshape(h // factor, factor, w // factor, factor, 3).mean(axis=(1, 3)).astype(np.uint8)


def train(pos: str, train_photos: list[np.ndarray], steps: int, batch: int, seed: int) -> TransVAEModel:
    torch.manual_seed(seed)
    model = TransVAEModel(transvae_config("tiny", pos_embedding=pos, sample_size=32))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.05)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        x = random_crops(train_photos, batch, 32, rng)
        loss = model(x, generator=gen).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def held_out_psnr(model: TransVAEModel, images: torch.Tensor) -> float:
    return psnr(model.reconstruct(images).clamp(-1, 1), images).mean


@torch.no_grad()
def tiled_psnr(model: TransVAEModel, images: torch.Tensor, tile: int = 32) -> float:
    """Content-matched reference: the same 64x64 crops reconstructed as independent 32x32 tiles."""
    b, c, h, w = images.shape
    tiles = images.unfold(2, tile, tile).unfold(3, tile, tile)  # (B, C, h/t, w/t, t, t)
    tiles = tiles.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, tile, tile)
    rec = model.reconstruct(tiles).clamp(-1, 1).view(b, h // tile, w // tile, c, tile, tile)
    rec = rec.permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
    return psnr(rec, images).mean


def run(pos: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one variant with one seed; PSNR at every evaluation size plus the tiled reference."""
    torch.set_num_threads(args.threads)
    photos = {k: downscale(v, 2) for k, v in load_photos().items()}
    train_photos = [v for k, v in sorted(photos.items()) if k not in HELD_OUT]
    test_photos = [photos[k] for k in HELD_OUT]
    rng = np.random.default_rng(1234)  # fixed evaluation crops, disjoint photos
    evals = {s: random_crops(test_photos, 48 if s <= 64 else 24, s, rng) for s in args.sizes}
    t0 = time.perf_counter()
    model = train(pos, train_photos, args.steps, args.batch_size, seed)
    out = {s: held_out_psnr(model, x) for s, x in evals.items()}
    out["tiled"] = tiled_psnr(model, evals[64]) if 64 in evals else float("nan")
    out["seconds"] = time.perf_counter() - t0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training run")
    parser.add_argument("--workers", type=int, default=1, help="training runs in parallel (processes)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=["rope", "absolute", "learned"], choices=["rope", "absolute", "learned"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128], help="evaluation sides (32 is the training size)")
    args = parser.parse_args()
    print(f"held out: {list(HELD_OUT)}, steps={args.steps}, batch={args.batch_size}, seeds={args.seeds}, "
          f"threads={args.threads} x {args.workers} workers")

    jobs = [(pos, seed) for pos in args.variants for seed in args.seeds]
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = dict(zip(jobs, pool.map(run, *zip(*jobs), [args] * len(jobs))))
    mean = {}
    for pos in args.variants:
        runs = [done[(pos, seed)] for seed in args.seeds]
        mean[pos] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        per_seed = "; ".join(" ".join(f"{s}px {r[s]:.2f}" for s in args.sizes) for r in runs)
        print(f"{pos:>8}: " + "  ".join(f"PSNR@{s} {mean[pos][s]:6.2f} dB" for s in args.sizes)
              + f"  (64 px as 32-px tiles {mean[pos]['tiled']:6.2f} dB; per seed: {per_seed}; {mean[pos]['seconds']:.0f} s/run)")
    if "rope" not in mean:
        return
    base = args.sizes[0]
    for other in [v for v in args.variants if v != "rope"]:
        diffs = ", ".join(f"{mean['rope'][s] - mean[other][s]:+.2f} dB at {s} px" for s in args.sizes)
        print(f"rope - {other} PSNR: {diffs}")
        for s in args.sizes[1:]:
            # extrapolation loss: PSNR at the training size minus at s; the same crops for every
            # variant, so the difference between variants does not depend on the content change
            loss_rope, loss_other = mean["rope"][base] - mean["rope"][s], mean[other][base] - mean[other][s]
            verdict = "better" if loss_rope < loss_other else "NOT better"
            print(f"  {s // base}x ({s} px): extrapolation loss {loss_rope:+.2f} dB (rope) vs {loss_other:+.2f} dB ({other}): "
                  f"RoPE extrapolates {verdict}")
        if 64 in args.sizes:
            gain_rope, gain_other = mean["rope"][64] - mean["rope"]["tiled"], mean[other][64] - mean[other]["tiled"]
            print(f"  64 px whole image minus the same crops as 32-px tiles: {gain_rope:+.2f} dB (rope) vs {gain_other:+.2f} dB ({other})")

if __name__ == "__main__":
    main()
