"""python jobs/train_prior.py --config configs/train/flow_prior.yaml [key=value ...] [--num-workers N]

Stage 2: train a generative prior over a latent dataset written by
``jobs/encode_dataset.py``: ``prior.kind=gpt`` (autoregressive, raster order) or
``maskgit`` over token indices, ``flow`` (rectified flow, DiT or UNet) over
continuous latents. The codec fingerprint is recorded in the prior and checked;
the normalization rule comes from the codec; latents are resampled from the stored
mean and logvar when ``data.resample`` and logvar was stored.

The cache is streamed (memory: ``data.shuffle_buffer`` rows, whatever its size): each
worker reads disjoint rows, every batch holds one aspect-ratio bucket (flow priors train
on every bucket; token priors on one, ``data.bucket=HxW``). Unlabeled data trains
unconditionally; ``data.num_classes=N`` needs a label on every row. Captions are carried
in the batches, unused by the priors so far.

Outputs under ``train.output_dir``: checkpoints (resumable), ``final/`` (the prior),
``samples.png`` (samples decoded with the decoder rebuilt from the codec; for video latents,
``samples.mp4``: the decoded clips tiled, at the clips' fps; configs/train/flow_prior_video.yaml;
for audio latents, ``samples.wav``: the decoded waveforms one after another; configs/train/flow_prior_audio.yaml),
``metrics.json`` (validation NLL in bits/token, or validation flow loss),
``log.jsonl``, ``loss_curve.png``.

``--num-workers N`` runs N Ray Train workers with DDP (disjoint rows per worker).
Exit status: 0 on success, 2 on a config/usage error.
"""

from __future__ import annotations

import sys

from latentflow.training.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job("prior", __doc__))
