"""Stage 2 entry point: train a prior over a cached latent dataset, sample, decode, report.

The prior's config is completed from the data: ``latent_shape`` from the rows,
``vocab_size`` from the codec's codebook size, ``codec_fingerprint`` from the
codec. A checkpoint or prior trained on another codec is refused
(:class:`~latentflow.errors.CodecMismatchError`).
"""

from __future__ import annotations

import json
from typing import Any, Callable

import fsspec
import torch

from latentflow.errors import ConfigError
from latentflow.priors.base import PriorModel, build_prior, load_prior
from latentflow.training import checkpoint as ckpt
from latentflow.training.config import TrainPriorConfig
from latentflow.training.data import LatentStream, LatentTable, load_latent_table, table_rows
from latentflow.training.stages import seed_everything, write_json
from latentflow.training.tasks import PriorTask
from latentflow.training.trainer import Trainer, pick_device


def prior_config_for(cfg: TrainPriorConfig, table: LatentTable) -> dict[str, Any]:
    """The prior's config dict, completed from the latent data and its codec."""
    conf = {**cfg.prior.config, "latent_shape": list(table.latents.shape[1:]),
            "codec_fingerprint": table.fingerprint, "num_classes": cfg.data.num_classes}
    if cfg.prior.kind in ("gpt", "maskgit"):
        if not table.discrete:
            raise ConfigError(f"prior.kind={cfg.prior.kind!r} models token indices; {cfg.data.path!r} holds continuous latents (use kind=flow)")
        conf.setdefault("vocab_size", table.codebook_size or int(table.latents.max()) + 1)
    elif table.discrete:
        raise ConfigError(f"prior.kind='flow' models continuous latents; {cfg.data.path!r} holds token indices (use gpt or maskgit)")
    return conf


def _check_resume_codec(cfg: TrainPriorConfig, prior: PriorModel) -> None:
    """Refuse to resume a checkpoint trained on another codec's latents."""
    path = ckpt.latest_checkpoint(cfg.train.output_dir) if cfg.train.resume else None
    if path is None:
        return
    with fsspec.open(f"{path}/model/config.json", "r") as f:
        old = json.load(f).get("codec_fingerprint", "")
    if old:
        probe = build_prior(prior.kind, {**prior.config.to_dict(), "codec_fingerprint": old})
        probe.check_codec(prior.config.codec_fingerprint)


def _val_tensors(val: LatentTable, normalize: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validation rows as the prior sees them: normalized, not resampled (the stored mean)."""
    batch = table_rows(val, torch.arange(len(val)), normalize)
    return batch["latents"], batch["labels"]


def train_prior(cfg: TrainPriorConfig, rank: int = 0, world: int = 1, on_log: Callable[[dict], None] | None = None,
                table: LatentTable | None = None, until: int | None = None) -> dict[str, Any]:
    """Stage 2: train ``cfg.prior`` on the latent dataset at ``cfg.data.path`` (or an in-memory ``table``).

    Returns:
        summary with ``history``, validation metrics (``nll_bits_per_token`` or ``flow_loss``) and paths.
    """
    seed_everything(cfg.train.seed * 1000 + rank)
    d = cfg.data
    table = table if table is not None else load_latent_table(d.path, d.storage_options)
    train, val = table.split(d.val_fraction)
    prior = build_prior(cfg.prior.kind, prior_config_for(cfg, table))
    _check_resume_codec(cfg, prior)
    stream = LatentStream(train, d.batch_size, cfg.train.seed, d.normalize, d.resample, rank, world)
    val_latents, val_labels = _val_tensors(val, d.normalize)
    task = PriorTask(prior, val_latents, val_labels)
    trainer = Trainer(task, stream, cfg.optim, cfg.train, on_log=on_log, device=pick_device(cfg.train.use_gpu))
    history = trainer.fit(until)
    summary: dict[str, Any] = {"steps": trainer.step, "rank": rank, "history": history, "data_position": stream.position()}
    if rank == 0 and trainer.step == cfg.train.max_steps:
        summary.update(_finish_prior(trainer, task, table, cfg))
    return summary


def _finish_prior(trainer: Trainer, task: PriorTask, table: LatentTable, cfg: TrainPriorConfig) -> dict[str, Any]:
    out = cfg.train.output_dir.rstrip("/")
    final = trainer.eval_model()
    final.save_pretrained(f"{out}/final")
    metrics = task.evaluate(final)
    result: dict[str, Any] = {"metrics": metrics, "final_prior": f"{out}/final"}
    if cfg.data.path:
        result["samples_png"] = sample_and_decode(final, table, cfg, f"{out}/samples.png")
    from latentflow.training.visualize import read_log, save_loss_curve

    save_loss_curve(read_log(f"{out}/log.jsonl"), f"{out}/loss_curve.png")
    write_json(f"{out}/metrics.json", {"step": trainer.step, **metrics})
    return result


def sample_and_decode(prior: PriorModel, table: LatentTable, cfg: TrainPriorConfig, png_url: str) -> str:
    """Sample latents, decode them with the decoder rebuilt from the codec, and write a PNG grid."""
    from latentflow.data.readers import decode_latents
    from latentflow.training.visualize import save_sample_grid

    prior.check_codec(table.fingerprint)
    s = cfg.sample
    gen = torch.Generator().manual_seed(s.seed)
    labels = None
    if cfg.data.num_classes:
        labels = torch.arange(s.num_samples) % cfg.data.num_classes
    z = prior.sample(s.num_samples, labels=labels, generator=gen, temperature=s.temperature, top_k=s.top_k, steps=s.steps)
    if not table.discrete and cfg.data.normalize:
        z = table.normalization.denormalize(z)
    images = decode_latents(z.cpu(), cfg.data.path, storage_options=cfg.data.storage_options)
    save_sample_grid(images, png_url, per_row=min(8, s.num_samples))
    return png_url


def evaluate_prior(prior_path: str, latents_path: str, storage_options: dict | None = None,
                   normalize: bool = True) -> dict[str, float]:
    """Validation metric of a saved prior on a latent dataset; refuses a dataset of another codec."""
    prior = load_prior(prior_path)
    table = load_latent_table(latents_path, storage_options, expected_fingerprint=prior.config.codec_fingerprint or None)
    batch = table_rows(table, torch.arange(len(table)), normalize)
    return PriorTask(prior, batch["latents"], batch["labels"]).evaluate(prior)


__all__ = ["train_prior", "evaluate_prior", "sample_and_decode", "prior_config_for"]
