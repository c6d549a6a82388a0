"""Shared command line of ``jobs/train_autoencoder.py`` and ``jobs/train_prior.py``."""

from __future__ import annotations

import argparse
import json
import sys

from latentflow.config_cli import config_help
from latentflow.errors import LatentflowError, one_line
from latentflow.training.config import TrainAutoencoderConfig, TrainPriorConfig, load_config


def parse_args(doc: str, argv: list[str] | None = None, config_class: type | None = None) -> argparse.Namespace:
    """The job's arguments; ``--help`` lists every key of ``config_class`` (generated from the dataclass)."""
    epilog = config_help(config_class) if config_class is not None else None
    parser = argparse.ArgumentParser(description=doc.splitlines()[0], epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML job config under configs/train/")
    parser.add_argument("--num-workers", type=int, default=None, help="Ray Train workers (DDP); 1 = this process")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, dotted (optim.lr=1e-4 train.max_steps=100)")
    return parser.parse_args(argv)


def run_job(stage: str, doc: str, argv: list[str] | None = None) -> int:
    """Parse, build the typed config, train in-process or with Ray Train; print the final metrics."""
    cls = TrainAutoencoderConfig if stage == "autoencoder" else TrainPriorConfig
    args = parse_args(doc, argv, cls)
    overrides = list(args.overrides) + ([f"train.num_workers={args.num_workers}"] if args.num_workers else [])
    try:
        cfg = load_config(cls, args.config, overrides)
        print("config:", json.dumps(_public(cfg.to_dict()), sort_keys=True), flush=True)
        result = _run(stage, cfg)
    except LatentflowError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    print("result:", json.dumps(result, sort_keys=True, default=str))
    return 0


def _run(stage: str, cfg) -> dict:
    if cfg.train.num_workers > 1:
        from latentflow.training.distributed import absolute_output, run_distributed

        absolute_output(cfg)
        summaries = run_distributed(stage, cfg)
        return {"workers": len(summaries), "steps": [s["steps"] for s in summaries], **summaries[0].get("metrics", {})}
    if stage == "autoencoder":
        from latentflow.training.entrypoints import train_autoencoder

        summary = train_autoencoder(cfg)
    else:
        from latentflow.training.prior_stage import train_prior

        summary = train_prior(cfg)
    return {k: v for k, v in summary.items() if k not in ("history", "shards_seen")}


def _public(data: dict) -> dict:
    """The config without storage options (credentials are never printed)."""
    return {k: ("<hidden>" if k == "storage_options" and v else _public(v) if isinstance(v, dict) else v)
            for k, v in data.items()}
