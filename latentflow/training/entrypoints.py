"""Entry points of the two trainer jobs, shared by the one-process path and each Ray Train worker.

``train_autoencoder(cfg)``: stage 1, images streamed from the encode job's sources.
``train_prior(cfg)``: stage 2, a prior over a latent dataset written by the encode job.
Both return a JSON-able summary; rank 0 writes the final model, PNGs and ``metrics.json``.
"""

from __future__ import annotations

import json
import random
from typing import Any, Callable

import fsspec
import numpy as np
import torch

from latentflow.training.config import ModelSpec, TrainAutoencoderConfig
from latentflow.training.data import build_image_stream
from latentflow.training.tasks import AutoencoderTask
from latentflow.training.trainer import Trainer, pick_device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(spec: ModelSpec) -> torch.nn.Module:
    """A fresh model from ``spec.config`` (with ``model_type``) or a pretrained one."""
    from latentflow.auto import AutoModel

    if spec.pretrained is not None:
        return AutoModel.from_pretrained(spec.pretrained).train()
    return AutoModel.from_config(dict(spec.config)).train()


def write_json(url: str, data: dict[str, Any]) -> None:
    with fsspec.open(url, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)


def _image_streams(cfg: TrainAutoencoderConfig, factor: int, rank: int, world: int, temporal_stride: int | None = None):
    d, k = cfg.data, cfg.data.holdout_shards
    media = {"video": d.video, "temporal_stride": temporal_stride}  # video: clips instead of images
    train_slice = slice(0, -k) if k and d.eval_source is None else None
    train = build_image_stream(d.source, d.processor, factor, d.batch_size, cfg.train.seed, d.shuffle,
                               rank, world, shard_slice=train_slice, **media)
    if d.eval_source is None and not k:
        return train, None
    source = d.eval_source if d.eval_source is not None else d.source
    held = None if d.eval_source is not None else slice(-k, None)
    return train, build_image_stream(source, d.processor, factor, d.batch_size, 0, False, shard_slice=held, **media)


def train_autoencoder(cfg: TrainAutoencoderConfig, rank: int = 0, world: int = 1,
                      on_log: Callable[[dict], None] | None = None, until: int | None = None) -> dict[str, Any]:
    """Stage 1: train ``cfg.model`` on streamed images. Returns a summary (final losses, eval metrics, paths).

    Args:
        cfg: the job config.
        rank, world: this worker and the worker count (Ray Train); 0 / 1 in one process.
        on_log: called with every step's log dict.
        until: stop early at this step (checkpointed, resumable), as a preempted job would.
    """
    seed_everything(cfg.train.seed * 1000 + rank)
    model = build_model(cfg.model)
    train_stream, eval_stream = _image_streams(cfg, model.downsample_factor, rank, world,
                                               getattr(model, "temporal_downsample_factor", None))
    task = AutoencoderTask(model, cfg.loss, eval_stream, cfg.data.eval_batches)
    trainer = Trainer(task, train_stream, cfg.optim, cfg.train, on_log=on_log, device=pick_device(cfg.train.use_gpu))
    history = trainer.fit(until)
    from latentflow.hub import state_dict_sha256

    summary = {"steps": trainer.step, "rank": rank, "world": world, "history": history,
               "data_position": train_stream.position(), "skipped_samples": train_stream.skipped,
               "shards_seen": sorted(train_stream.shards_seen), "weights_sha256": state_dict_sha256(model.state_dict()),
               "device": str(trainer.device)}
    if rank == 0 and trainer.step == cfg.train.max_steps:
        summary.update(_finish_autoencoder(trainer, task, train_stream, eval_stream, cfg))
    return summary


def _finish_autoencoder(trainer: Trainer, task: AutoencoderTask, train_stream, eval_stream,
                        cfg: TrainAutoencoderConfig) -> dict[str, Any]:
    from latentflow.training.visualize import read_log, save_loss_curve, save_reconstruction_grid

    out = cfg.train.output_dir.rstrip("/")
    final = trainer.eval_model()
    final.save_pretrained(f"{out}/final")
    metrics = task.evaluate(final) if eval_stream is not None else {}
    if eval_stream is not None:
        eval_stream.reset()
    batch = (eval_stream or train_stream).next_batch()["pixel_values"][:8]
    with torch.no_grad():
        recon = final.reconstruct(batch.to(final.device)).clamp(-1, 1)
    if batch.ndim == 5:  # clips (B, 3, T, H, W): originals above reconstructions, as a video
        from latentflow.read.preview import save_video_preview

        save_video_preview(torch.cat([batch, recon.cpu()]), f"{out}/reconstructions.mp4", fps=8, per_row=len(batch))
    else:
        save_reconstruction_grid(batch, recon, f"{out}/reconstructions.png")
    save_loss_curve(read_log(f"{out}/log.jsonl"), f"{out}/loss_curve.png", keys=("loss", "rec"))
    write_json(f"{out}/metrics.json", {"step": trainer.step, **metrics})
    return {"metrics": metrics, "final_model": f"{out}/final"}
