"""python benchmarks/read_latents.py [--rows 1280] [--per-shard 128] [--batch-size 64] [--epochs 3]

Reader speed over one cached latent output: random batches of ``--batch-size`` rows of
(4, 32, 32) float32 latents (plus keys, captions, labels), one epoch over ``--rows`` rows,
the median of ``--epochs`` epochs (interleaved across readers, so all see the same machine
load), five ways measured in one run:

1. ``LatentDataset.iter_batches`` (whole row ranges per read, shuffled in a buffer);
2. ``LatentDataset`` through a ``DataLoader`` + ``BucketBatchSampler``, 0 workers;
3. the same with 2 workers (persistent, so worker start-up is paid once);
4. ``load_latents(out).with_format("torch")`` indexed by random batches of row ids;
5. an in-memory tensor indexed by random batches (the ceiling).

The output is written directly with ``ShardWriter`` (random latents, the codec of a tiny VAE),
so no encoder runs. Prints rows/s by wall clock and by this process's CPU time (what an idle
machine would give; the 2-worker loader's CPU is in its workers), and the ratios to the
in-memory tensor and to ``with_format("torch")``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1280)
    p.add_argument("--per-shard", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default=None, help="output folder (default: a temp dir)")
    return p.parse_args()


def write_cache(out: str, rows: int, per_shard: int, resolution: int = 64, logvar: bool = False, seed: int = 0) -> str:
    """A latent output of ``rows`` random (4, resolution/2, resolution/2) latents, written with ``ShardWriter``."""
    from latentflow.encode.codec_builder import build_codec
    from latentflow.format.codec import StoreConfig
    from latentflow.media.config import ImageProcessorConfig
    from latentflow.models.vae import VariationalAutoencoderConfig, VariationalAutoencoderModel
    from latentflow.store.writer import ShardWriter, finalize, prepare_output

    torch.manual_seed(0)
    vae = VariationalAutoencoderModel(VariationalAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4)).eval()
    codec = build_codec(vae, ImageProcessorConfig(resolution=resolution), StoreConfig(logvar=logvar), "bench.tar")
    prepare_output(out, codec, overwrite=True)
    writer = ShardWriter(out, codec)
    rng = np.random.default_rng(seed)
    side = resolution // 2
    for s, start in enumerate(range(0, rows, per_shard)):
        n = min(per_shard, rows - start)
        cols = {"key": [f"s{s:05d}-{i:05d}" for i in range(n)], "index_in_shard": list(range(n)),
                "latent": rng.normal(size=(n, 4, side, side)).astype(np.float32),
                "caption": [f"a photo {start + i}" for i in range(n)], "label": [int(v) for v in rng.integers(0, 10, n)]}
        if logvar:
            cols["logvar"] = np.full((n, 4, side, side), -2.0, np.float32)
        writer.write_shard(f"s{s:05d}", cols, [])
    finalize(out, codec)
    return out


def measure(methods: dict, rows: int, epochs: int) -> dict[str, dict[str, float]]:
    """Median rows/s per method, wall clock and CPU time of this process, epochs interleaved across
    methods (epoch e of every method, then e + 1...) so each sees the same machine load."""
    walls: dict[str, list[float]] = {name: [] for name in methods}
    cpus: dict[str, list[float]] = {name: [] for name in methods}
    for epoch in range(epochs):
        for name, run_epoch in methods.items():
            wall, cpu = time.perf_counter(), time.process_time()
            seen = run_epoch(epoch)
            assert seen == rows, (name, seen, rows)
            walls[name].append(rows / (time.perf_counter() - wall))
            cpus[name].append(rows / max(time.process_time() - cpu, 1e-9))
    return {name: {"wall": statistics.median(walls[name]), "cpu": statistics.median(cpus[name])} for name in methods}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # every reader here copies on one thread; idle intra-op threads only spin on a busy machine
    from latentflow.read.dataset import BucketBatchSampler, LatentDataset
    from latentflow.read.latents import load_latents

    out = args.out or str(Path(tempfile.mkdtemp(prefix="read-latents-")) / "latents")
    write_cache(out, args.rows, args.per_shard)
    b, n = args.batch_size, args.rows
    ds = LatentDataset(out)
    methods = {"LatentDataset.iter_batches": lambda epoch: sum(len(x["key"]) for x in ds.iter_batches(b, seed=0, epoch=epoch))}

    def loader(workers):
        fresh = LatentDataset(out)
        sampler = BucketBatchSampler(fresh, b, shuffle=True, seed=0)
        dl = torch.utils.data.DataLoader(fresh, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0)

        def run(epoch):
            sampler.set_epoch(epoch)
            return sum(len(x["key"]) for x in dl)
        return run

    methods["DataLoader(LatentDataset), 0 workers"] = loader(0)
    methods["DataLoader(LatentDataset), 2 workers"] = loader(2)
    hf = load_latents(out).with_format("torch")

    def hf_epoch(epoch):
        perm = np.random.default_rng([0, epoch]).permutation(n)
        return sum(len(hf[perm[i:i + b].tolist()]["latent"]) for i in range(0, n, b))

    methods['load_latents().with_format("torch")'] = hf_epoch
    memory = torch.from_numpy(np.stack(load_latents(out).with_format("numpy")["latent"]))

    def memory_epoch(epoch):
        perm = torch.from_numpy(np.random.default_rng([0, epoch]).permutation(n))
        return sum(len(memory[perm[i:i + b]]) for i in range(0, n, b))

    methods["in-memory tensor"] = memory_epoch
    results = measure(methods, n, args.epochs)
    hf_name = 'load_latents().with_format("torch")'
    print(f"{n} rows of (4, 32, 32) float32, random batches of {b}, median of {args.epochs} interleaved epochs, "
          f"torch threads {torch.get_num_threads()}")
    print("wall: rows / elapsed seconds; cpu: rows / CPU seconds of this process (workers' CPU not counted)")
    print(f"{'reader':40s} {'wall rows/s':>12s} {'vs memory':>10s} {'vs HF':>7s} {'cpu rows/s':>11s} {'vs HF':>7s}")
    for name, r in results.items():
        print(f"{name:40s} {r['wall']:12.0f} {r['wall'] / results['in-memory tensor']['wall']:10.3f} "
              f"{r['wall'] / results[hf_name]['wall']:7.2f} {r['cpu']:11.0f} {r['cpu'] / results[hf_name]['cpu']:7.2f}")
    print(json.dumps({k: {m: round(v) for m, v in r.items()} for k, r in results.items()}))


if __name__ == "__main__":
    main()
