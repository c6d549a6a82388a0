"""Train the shipped ``models/audio-vae-tiny`` on CC0 sound effects and measure held-out SI-SDR and PSNR.

    OMP_NUM_THREADS=1 python benchmarks/train_audio_vae.py --out models/audio-vae-tiny --steps 4000 --minutes 8 --segment 2048 --batch 8
    # re-measure a saved model:
    python benchmarks/train_audio_vae.py --eval-from models/audio-vae-tiny --out models/audio-vae-tiny

The clips are the sixteen WAVs in ``data/audio/`` (Kenney's sound effects from the arcade 3.3.3
wheel, CC0; see ``data/audio/LICENSE.md``), decoded with :func:`latentflow.media.audio.decode_audio`
to mono 22.05 kHz (the ``mono`` rule; the two stereo clips are averaged, the 96 kHz one resampled).
The model trains on random ``--segment``-sample crops (random sign flips and gains in [0.5, 1])
of the twelve clips in ``data/build_audio_shards.py``'s TRAIN; the four in HELDOUT are never trained
on. Loss: the model's own, L1 + multi-resolution STFT + 1e-4 KL. The learning rate warms up, then
follows a cosine to 5% over ``--steps`` or ``--minutes``, whichever runs out first (``eval.json``
records the steps taken). One thread (``torch.set_num_threads(1)``), seeded: the same machine gives
the same weights.

The report: SI-SDR and PSNR (peak-to-peak 2.0) of ``decode(encode(x).latents)`` on each whole clip
(padded to a whole number of hops; measured on the real samples only), held-out and trained.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "data"))
from build_audio_shards import HELDOUT, TRAIN  # noqa: E402

from latentflow.media.audio import decode_audio  # noqa: E402
from latentflow.metrics import si_sdr, waveform_psnr  # noqa: E402
from latentflow.models.audio_vae import AudioAutoencoderOobleckConfig, AudioAutoencoderOobleckModel  # noqa: E402

SAMPLE_RATE = 22050
MODEL = dict(encoder_hidden_size=16, downsampling_ratios=[2, 4, 4], channel_multiples=[1, 2, 4], decoder_channels=16,
             decoder_input_channels=8, audio_channels=1, sampling_rate=SAMPLE_RATE, kl_weight=1e-4, stft_weight=1.0,
             stft_fft_sizes=[1024, 512, 256, 128, 64, 32], sample_size=SAMPLE_RATE // 32 * 32)


def load_clips(keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """key -> (1, N) float32 mono at 22.05 kHz."""
    out = {}
    for key in keys:
        audio = decode_audio((ROOT / "data" / "audio" / f"{key}.wav").read_bytes(), key, sample_rate=SAMPLE_RATE, channels="mono")
        out[key] = torch.from_numpy(audio.samples)
    return out


def random_batch(clips: list[torch.Tensor], batch: int, length: int, g: torch.Generator) -> torch.Tensor:
    """(batch, 1, length) random crops (zero-padded when a clip is shorter), random sign and gain in [0.5, 1]."""
    out = torch.zeros(batch, 1, length)
    for i in range(batch):
        clip = clips[int(torch.randint(len(clips), (1,), generator=g))]
        n = clip.shape[1]
        s = int(torch.randint(0, max(1, n - length + 1), (1,), generator=g))
        piece = clip[:, s:s + length]
        gain = (0.5 + 0.5 * torch.rand(1, generator=g)) * (1 if torch.rand(1, generator=g) < 0.5 else -1)
        out[i, :, :piece.shape[1]] = gain * piece
    return out


def lr_at(step: int, base: float, warmup: int, progress: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


@torch.no_grad()
def measure(model: AudioAutoencoderOobleckModel, clips: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per clip: SI-SDR and PSNR (dB) of the reconstruction of the whole clip, on its real samples."""
    hop, out = model.hop_length, {}
    for key, clip in clips.items():
        n = clip.shape[1]
        x = torch.nn.functional.pad(clip, (0, -n % hop))[None]  # (1, 1, T)
        rec = model.decode(model.encode(x).latents).sample[..., :n]
        out[key] = {"si_sdr_db": round(si_sdr(rec, clip[None]).mean, 2), "psnr_db": round(waveform_psnr(rec, clip[None]).mean, 2),
                    "seconds": round(n / SAMPLE_RATE, 3)}
    return out


def summary(per_clip: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"mean_{k}": round(sum(v[k] for v in per_clip.values()) / len(per_clip), 2) for k in ("si_sdr_db", "psnr_db")}


def train(args: argparse.Namespace) -> AudioAutoencoderOobleckModel:
    torch.manual_seed(args.seed)
    clips = list(load_clips(TRAIN).values())
    model = AudioAutoencoderOobleckModel(AudioAutoencoderOobleckConfig.from_dict(MODEL)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.8, 0.99))
    g = torch.Generator().manual_seed(args.seed)
    budget, start, step = args.minutes * 60, time.time(), 0
    while step < args.steps and time.time() - start < budget:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.lr, args.warmup, max(step / args.steps, (time.time() - start) / budget))
        out = model(random_batch(clips, args.batch, args.segment, g), generator=g)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 25 == 0:
            print(f"step {step:5d}  {time.time() - start:5.0f}s  loss {out.loss.item():.4f}  rec {out.losses['rec'].item():.4f}  "
                  f"stft {out.losses['stft'].item():.3f}  kl {out.losses['kl'].item():.0f}", flush=True)
    args.steps_taken, args.train_seconds = step, round(time.time() - start)
    return model.eval()


def report(model: AudioAutoencoderOobleckModel, args: argparse.Namespace, trained_with: dict | None = None) -> None:
    held, seen = measure(model, load_clips(HELDOUT)), measure(model, load_clips(TRAIN))
    data_sha = hashlib.sha256(b"".join((ROOT / "data" / "audio" / f"{k}.wav").read_bytes() for k in (*TRAIN, *HELDOUT)))
    result = {
        "heldout": {**summary(held), "clips": held},
        "train": {**summary(seen), "clips": seen},
        "sample_rate": SAMPLE_RATE, "channels": "mono", "hop_length": model.hop_length,
        "latent_channels": model.latent_channels, "parameters": sum(p.numel() for p in model.parameters()),
        "clips_sha256": data_sha.hexdigest(),
        **(trained_with or {"steps": args.steps_taken, "train_seconds": args.train_seconds,
                            "train_args": {k: v for k, v in vars(args).items() if k not in ("steps_taken", "train_seconds")}}),
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("heldout", "train")} |
                     {"heldout": summary(held), "train": summary(seen)}, indent=2))
    if args.out:
        model.save_pretrained(args.out)
        Path(args.out, "eval.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="models/audio-vae-tiny")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--segment", type=int, default=2048, help="training crop in samples (a multiple of the hop, 32)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-from", default=None, help="measure (and re-save) a saved model instead of training")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.eval_from:
        previous = json.loads(Path(args.eval_from, "eval.json").read_text()) if Path(args.eval_from, "eval.json").exists() else {}
        kept = {k: previous[k] for k in ("steps", "train_seconds", "train_args") if k in previous}
        report(AudioAutoencoderOobleckModel.from_pretrained(args.eval_from), args, kept or None)
        return
    report(train(args), args)


if __name__ == "__main__":
    main()
