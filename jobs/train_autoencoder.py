"""python jobs/train_autoencoder.py --config configs/train/vae_photos.yaml [key=value ...] [--num-workers N]

Stage 1: train a latentflow autoencoder on images streamed from the encode job's
sources (WebDataset / Parquet / HF / folder; local or s3://) through its processor.
Losses: L1/L2 + the model's own KL/beta/VQ terms, optional LPIPS-style perceptual
(local weights), PatchGAN hinge after ``loss.disc_start`` with the LDM adaptive
weight, EQ-VAE equivariance, VF alignment to a frozen feature model.

Outputs under ``train.output_dir``: ``checkpoints/step-*/`` (save_pretrained + trainer
state; rerunning the same command resumes exactly), ``final/`` (EMA weights),
``log.jsonl``, ``loss_curve.png``, ``reconstructions.png``, ``metrics.json`` (PSNR/SSIM,
codebook usage/perplexity for quantized models).

``--num-workers N`` (or ``train.num_workers=N``) runs N Ray Train workers with DDP
(gloo on CPU, ``train.use_gpu=true`` for nccl): locally it starts Ray, with
``$RAY_ADDRESS`` set it joins that cluster.
Exit status: 0 on success, 2 on a config/usage error.
"""

from __future__ import annotations

import sys

from latentflow.training.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job("autoencoder", __doc__))
