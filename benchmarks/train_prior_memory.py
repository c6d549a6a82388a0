"""python benchmarks/train_prior_memory.py [--rows 1280] [--scale 10] [--steps 20] [--batch-size 32]

``train_prior`` on a latent cache of ``--rows`` and of ``--scale`` x ``--rows`` rows of
(4, 32, 32) float32 latents, two ways, each run in its own subprocess:

1. streamed: ``train_prior(cfg)``, the cache read through ``LatentDataset.iter_batches``
   (``LatentCacheStream``, a shuffle buffer of ``data.shuffle_buffer`` rows);
2. in memory: ``train_prior(cfg, table=load_latent_table(path))``, the whole cache held as one
   tensor and batched by ``LatentStream`` (what the trainer did before streaming).

Same flow prior (DiT), same batch, same optimizer. Prints each run's peak RSS (``ru_maxrss``
of the subprocess) and the ratio at 10x over 1x (target <= 1.25 for the streamed reader).

Speed is measured apart, in one subprocess per size that alternates a training step on a
batch from each reader (same prior architecture and initial weights, each with its own AdamW),
so both see the same machine load, on one torch thread: steps/s from the median wall time per
step, and from the mean CPU time per step (every window read included), batch read included,
streamed over in-memory (target >= 0.9). Caches are written with ``ShardWriter`` (random latents, a
tiny VAE's codec), so no encoder runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1280)
    p.add_argument("--scale", type=int, default=10)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--per-shard", type=int, default=128)
    p.add_argument("--rss-steps", type=int, default=8, help="training steps of each peak-RSS run")
    p.add_argument("--child", choices=["stream", "memory", "paired"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def config(path: str, out: str, batch_size: int, steps: int):
    from latentflow.training.config import TrainPriorConfig

    return TrainPriorConfig.from_dict({
        "prior": {"kind": "flow", "config": {"network": "dit", "patch_size": 4, "hidden_size": 64, "num_layers": 2, "num_heads": 4}},
        "data": {"path": path, "batch_size": batch_size, "val_fraction": 0.1, "resample": False},
        "optim": {"lr": 3e-4, "warmup_steps": 2, "ema_decay": 0.0},
        "train": {"output_dir": out, "max_steps": steps + 1, "log_every": 1000, "checkpoint_every": 1000, "resume": False}})


def child(args: argparse.Namespace) -> None:
    """One run; prints its figures as JSON on its last line."""
    import torch

    from latentflow.training.data import load_latent_table
    from latentflow.training.prior_stage import train_prior

    torch.manual_seed(0)
    if args.child == "paired":
        print(json.dumps(paired_speed(args)))
        return
    cfg = config(args.path, args.out, args.batch_size, args.steps)
    table = load_latent_table(args.path) if args.child == "memory" else None
    summary = train_prior(cfg, table=table, until=args.steps)  # stops before max_steps: no sampling at the end
    times = [r["step_time"] for r in summary["history"][2:]]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    print(json.dumps({"peak_rss_mb": round(peak, 1), "steps_per_s": round(len(times) / sum(times), 3)}))


def paired_speed(args: argparse.Namespace) -> dict:
    """Alternate one training step per reader (2 warm-up steps each); median seconds per step each."""
    import statistics
    import time

    import torch

    from latentflow.priors import build_prior
    from latentflow.training.data import LatentStream, load_latent_table
    from latentflow.training.prior_stage import open_latents, prior_config_for

    torch.set_num_threads(1)  # CPU time per step stays meaningful on a busy machine (no spinning pool threads)
    cfg = config(args.path, args.out, args.batch_size, args.steps)
    data, streamed, _ = open_latents(cfg)
    table = load_latent_table(args.path)
    train, _ = table.split(cfg.data.val_fraction)
    streams = {"stream": streamed, "memory": LatentStream(train, args.batch_size, 0, True, False)}
    runs = {}
    for name in streams:
        torch.manual_seed(0)
        prior = build_prior("flow", prior_config_for(cfg, data))
        runs[name] = (prior, torch.optim.AdamW(prior.parameters(), lr=3e-4), [], [])
    for i in range(args.steps + 2):
        for name, stream in streams.items():
            prior, opt, walls, cpus = runs[name]
            wall, cpu = time.perf_counter(), time.process_time()
            loss, _ = prior.loss(stream.next_batch()["latents"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= 2:
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
    out = {name: round(1.0 / statistics.median(walls), 3) for name, (_, _, walls, _) in runs.items()}
    out.update({f"{name}_cpu": round(len(cpus) / sum(cpus), 3) for name, (_, _, _, cpus) in runs.items()})
    return out


def run_child(mode: str, path: str, out: str, args: argparse.Namespace) -> dict:
    steps = args.steps if mode == "paired" else args.rss_steps
    cmd = [sys.executable, __file__, "--child", mode, "--path", path, "--out", out,
           "--steps", str(steps), "--batch-size", str(args.batch_size)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: benchmarks.read_latents
    from benchmarks.read_latents import write_cache

    root = Path(tempfile.mkdtemp(prefix="train-prior-memory-"))
    sizes = {"1x": args.rows, f"{args.scale}x": args.rows * args.scale}
    paths = {name: write_cache(str(root / f"cache-{name}"), rows, args.per_shard) for name, rows in sizes.items()}
    rss = {(mode, name): run_child(mode, path, str(root / f"run-{mode}-{name}"), args)["peak_rss_mb"]
           for mode in ("stream", "memory") for name, path in paths.items()}
    speed = {name: run_child("paired", path, str(root / f"run-paired-{name}"), args) for name, path in paths.items()}
    big = f"{args.scale}x"
    print(f"flow DiT prior, batch {args.batch_size}, (4, 32, 32) float32 latents, one subprocess per run")
    print(f"{'reader':8s} {'rows':>7s} {'peak RSS MiB':>13s} {'steps/s':>8s}")
    for (mode, name), peak in rss.items():
        print(f"{mode:8s} {sizes[name]:7d} {peak:13.1f} {speed[name][mode]:8.3f}")
    ratios = {
        "stream_peak_rss_10x_over_1x": rss[("stream", big)] / rss[("stream", "1x")],
        "memory_peak_rss_10x_over_1x": rss[("memory", big)] / rss[("memory", "1x")],
        **{f"stream_over_memory_steps_per_s_{name}": speed[name]["stream"] / speed[name]["memory"] for name in sizes},
        **{f"stream_over_memory_cpu_steps_per_s_{name}": speed[name]["stream_cpu"] / speed[name]["memory_cpu"] for name in sizes},
    }
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    print(json.dumps({"peak_rss_mb": {f"{m}-{n}": v for (m, n), v in rss.items()}, "steps_per_s": speed,
                      "ratios": {k: round(v, 3) for k, v in ratios.items()}}))


if __name__ == "__main__":
    main()
