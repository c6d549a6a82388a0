"""Run a trainer job across Ray Train workers: ``TorchTrainer`` + DDP (gloo on CPU, nccl on GPU).

Each worker runs the same stage function as the one-process path with its
``(rank, world)``: it reads only its own shards (``shards[rank::world]``) or rows,
takes exactly one batch per step (equal batch counts), and DDP averages the
gradients. Quantizers with EMA codebooks all-reduce their statistics themselves
whenever ``torch.distributed`` is initialized. Rank 0 writes checkpoints and
outputs; every worker writes ``<output_dir>/workers/rank-<r>.json`` (its step
count, the shards it read, a hash of its final weights).

Example::

    summaries = run_distributed("autoencoder", cfg, num_workers=2, use_gpu=False, cpus_per_worker=0.5)
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import fsspec

from latentflow.training.config import SectionConfig, TrainAutoencoderConfig, TrainPriorConfig

_STAGES = {"autoencoder": TrainAutoencoderConfig, "prior": TrainPriorConfig}


def _stage_fn(stage: str):
    if stage == "autoencoder":
        from latentflow.training.entrypoints import train_autoencoder

        return train_autoencoder
    from latentflow.training.prior_stage import train_prior

    return train_prior


def worker_loop(loop_config: dict[str, Any]) -> None:
    """Body of each Ray Train worker: rebuild the typed config, train, write this worker's summary."""
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    stage = loop_config["stage"]
    cfg = _STAGES[stage].from_dict(loop_config["config"])
    summary = _stage_fn(stage)(cfg, rank=rank, world=world, until=loop_config.get("until"))
    light = {k: v for k, v in summary.items() if k != "history"}
    light["losses"] = [r["loss"] for r in summary["history"]]
    url = f"{cfg.train.output_dir.rstrip('/')}/workers/rank-{rank}.json"
    fs, path = fsspec.url_to_fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "w") as f:
        json.dump(light, f, indent=1, sort_keys=True, default=str)
    ray.train.report({"steps": summary["steps"], "final_loss": light["losses"][-1] if light["losses"] else None})


def run_distributed(stage: str, cfg: SectionConfig, storage_path: str | None = None,
                    until: int | None = None) -> list[dict[str, Any]]:
    """Train ``cfg`` with ``cfg.train.num_workers`` Ray Train workers. Returns every worker's summary.

    Args:
        stage: ``autoencoder`` or ``prior``.
        cfg: the job config; ``train.num_workers``, ``train.use_gpu``, ``train.cpus_per_worker`` size the group.
        storage_path: where Ray Train keeps its run folder (default: a temp dir).
        until: stop every worker after this step (checkpointed; a rerun resumes), as a preempted job would.
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    run = cfg.train
    if stage not in _STAGES:
        raise ValueError(f"stage must be one of {sorted(_STAGES)}, got: {stage!r}")
    resources = {"CPU": run.cpus_per_worker}
    if run.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"stage": stage, "config": cfg.to_dict(), "until": until},
        scaling_config=ScalingConfig(num_workers=run.num_workers, use_gpu=run.use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if run.use_gpu else "gloo"),
        run_config=RunConfig(storage_path=storage_path or tempfile.mkdtemp(prefix="latentflow-train-"),
                             name=f"latentflow-{stage}"),
    )
    trainer.fit()
    return read_worker_summaries(run.output_dir, run.num_workers)


def read_worker_summaries(output_dir: str, num_workers: int) -> list[dict[str, Any]]:
    out = []
    for rank in range(num_workers):
        with fsspec.open(f"{output_dir.rstrip('/')}/workers/rank-{rank}.json", "r") as f:
            out.append(json.load(f))
    return out


def absolute_output(cfg: SectionConfig) -> None:
    """Workers may run in another directory: make a local ``output_dir`` and local source URLs absolute, in place."""
    if "://" not in cfg.train.output_dir:
        cfg.train.output_dir = os.path.abspath(cfg.train.output_dir)
    for name in ("source", "eval_source"):
        section = getattr(getattr(cfg, "data", None), name, None)
        if isinstance(section, dict) and section.get("urls"):
            urls = [section["urls"]] if isinstance(section["urls"], str) else section["urls"]
            section["urls"] = [u if "://" in u else os.path.abspath(u) for u in urls]
