"""python benchmarks/encode_throughput.py [--model kl-mid] [--storage s3|local] [--dtype bf16] [--shards 2] [--per-shard 16] [--scale 10]

Images/s of the same real photos through the same model and dtype, three ways:

1. bare: the model forward (``LatentEncoder.encode_batch``) on preprocessed tensors in one process;
2. pipeline: the encode job (Ray Data, actor pool) from WebDataset tars on a real S3 server
   (moto, its own process) to Parquet + Zarr on it (``--storage local``: local disk);
3. naive: one process, one loop: webdataset -> PIL (the same ImageProcessor) -> model -> pyarrow Parquet.

Bare and naive run over the images of the scale run. The encode job uses its default pool
(on CPU: one single-threaded actor per core); ``--num-actors``/``--torch-threads`` override.

Prints pipeline/bare and pipeline/naive, and the peak RSS of the driver plus every Ray process
(sampled over the process tree) for 1x and 10x the shards, after one unreported warm-up job.
Pipeline rates are given end to end (including the job's fixed cost: Ray Data planning, actor
start, finalize) and as the marginal rate between the 1x and 10x runs,
(rows_10x - rows_1x) / (t_10x - t_1x): the rate a long job runs at. Each rate is also given from
CPU time (images per CPU-second of the whole process tree, times the cores), which holds when
other work shares the CPU; wall-clock figures follow the neighbours' load.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import fsspec  # noqa: E402
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

# isort: off
import psutil  # noqa: E402  (Ray vendors psutil; `import ray` puts it on sys.path)
# isort: on

from latentflow.encode.encoder import LatentEncoder
from latentflow.encode.shard import pack_pixels
from latentflow.format.codec import StoreConfig
from latentflow.jobs.config import EncodeJobConfig
from latentflow.jobs.runner import run_encode_job
from latentflow.media.config import ImageProcessorConfig
from latentflow.media.image import ImageProcessor
from latentflow.sources.shards import SourceConfig, list_shards, read_shard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.samples
from tests.samples import write_sample_webdataset  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=2, help="shards at 1x")
    p.add_argument("--per-shard", type=int, default=16, help="images per shard")
    p.add_argument("--scale", type=int, default=10, help="the RSS run uses scale x shards")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when torch sees a GPU")
    p.add_argument("--model", default="kl-small", choices=["kl-small", "kl-mid", "kl-sd1"],
                   help="AutoencoderKL size (kl-mid: 64-128-256-256, 2 layers per block)")
    p.add_argument("--num-actors", type=int, default=None, help="encoder actors (default: the job's default)")
    p.add_argument("--actors-per-gpu", type=int, default=None, help="encoder actors sharing a GPU (default: the job's default)")
    p.add_argument("--torch-threads", type=int, default=None, help="threads per encoder actor (default: the job's default)")
    p.add_argument("--storage", default="s3", choices=["s3", "local"],
                   help="s3: inputs and outputs on a moto S3 server on loopback; local: on local disk")
    p.add_argument("--skip-scale", action="store_true", help="skip the 10x run")
    return p.parse_args()


# ---- setup: S3 server, shards, model ---------------------------------------------------


def start_moto() -> tuple[subprocess.Popen, dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    options = {"key": "bench", "secret": "bench", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}
    fsspec.filesystem("s3", **options).mkdir("bench")
    return server, options


def build_model(name: str, directory: str):
    from latentflow.models.autoencoder_kl import AutoencoderKLConfig, AutoencoderKLModel, sd1

    torch.manual_seed(0)
    widths = {"kl-small": ((32, 64, 128, 128), 1), "kl-mid": ((64, 128, 256, 256), 2)}
    cfg = sd1() if name == "kl-sd1" else AutoencoderKLConfig(block_out_channels=widths[name][0], layers_per_block=widths[name][1],
                                                              norm_num_groups=32, latent_channels=4)
    model = AutoencoderKLModel(cfg).eval()
    model.save_pretrained(directory)
    return model


# ---- the three setups -----------------------------------------------------------------------


def bare(model, urls: list[str], options: dict, args, processor: ImageProcessor) -> float:
    """Model forward only, on tensors preprocessed beforehand (uint8 codes, as the pipeline sends them)."""
    source = SourceConfig(urls=urls, storage_options=options)
    records = [r for s in list_shards(source) for r in read_shard(s, source)]
    # the pipeline's input form: uint8 codes where exact, normalized on the encoder's device
    x = torch.from_numpy(np.stack([pack_pixels(processor.process(r.image, r.key).pixel_values) for r in records]))  # (N, 3, H, W)
    encoder = LatentEncoder(model, StoreConfig(), dtype=args.dtype, device=args.device, channels_last=args.channels_last)
    encoder.encode_batch(x[: args.batch_size], [r.key for r in records[: args.batch_size]])  # warm-up
    with TreeMonitor() as clock:
        for i in range(0, len(records), args.batch_size):
            encoder.encode_batch(x[i : i + args.batch_size], [r.key for r in records[i : i + args.batch_size]])
    return {"rows": len(records), "wall_rate": len(records) / clock.wall, "cpu_rate": len(records) / clock.cpu}


def naive(model, urls: list[str], options: dict, args, processor: ImageProcessor, out: str) -> float:
    """One loop: read a tar from S3, decode with PIL, encode, write Parquet to S3."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    encoder = LatentEncoder(model, StoreConfig(), dtype=args.dtype, device=args.device, channels_last=args.channels_last)
    fs, _ = fsspec.url_to_fs(out, **options)
    fs.makedirs(out, exist_ok=True)
    rows = 0
    clock = TreeMonitor().__enter__()
    for url in urls:
        with fs.open(url, "rb") as stream:
            samples = list(group_by_keys({**f, "__url__": url} for f in tar_file_iterator(stream)))
        keys, latents = [], []
        for i in range(0, len(samples), args.batch_size):
            chunk = samples[i : i + args.batch_size]
            x = torch.from_numpy(np.stack([processor.process(s["jpg"], s["__key__"]).pixel_values for s in chunk]))
            result = encoder.encode_batch(x, [s["__key__"] for s in chunk])
            keys += list(result["key"])
            latents += [z.ravel() for z in result["latent"]]
        table = pa.table({"key": keys, "latent": pa.array([z.tolist() for z in latents], pa.list_(pa.float32()))})
        with fs.open(f"{out}/{url.rsplit('/', 1)[-1]}.parquet", "wb") as f:
            pq.write_table(table, f)
        rows += len(keys)
    clock.__exit__()
    return {"rows": rows, "wall_rate": rows / clock.wall, "cpu_rate": rows / clock.cpu}


class TreeMonitor:
    """Samples this process and its descendants (the local Ray's GCS, raylet, workers, actors):
    peak summed RSS, and CPU seconds used (per pid: last sample minus first, so processes that
    exit mid-run, like the actors at the end of a job, still count). ``exclude``: the S3 server.
    CPU-time rates hold on a shared machine where wall-clock rates follow the neighbours' load."""

    exclude: set[int] = set()

    def __init__(self, interval: float = 0.2):
        self.peak_rss, self.cpu, self.wall = 0, 0.0, 0.0
        self.peak_rss_by: dict[str, int] = {}  # RSS per process label at the peak sample
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._label: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)

    def __enter__(self):
        self._sample()
        self.wall = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        self.wall = time.perf_counter() - self.wall
        self.cpu = sum(self._last[p] - self._first[p] for p in self._last)
        self.cpu_by: dict[str, float] = {}
        for p in self._last:
            label = self._label[p]
            self.cpu_by[label] = self.cpu_by.get(label, 0.0) + self._last[p] - self._first[p]

    def _sample(self) -> None:
        me, rss, by = psutil.Process(), 0, {}
        for proc in [me, *me.children(recursive=True)]:
            if proc.pid in self.exclude:
                continue
            try:
                t, mem = proc.cpu_times(), proc.memory_info().rss
            except psutil.Error:
                continue
            rss += mem
            # a pid first seen mid-run started after __enter__: all its CPU time is this run's
            self._first.setdefault(proc.pid, t.user + t.system if not self._thread.is_alive() else 0.0)
            self._last[proc.pid] = t.user + t.system
            # a worker's title names its task once it runs one
            if self._label.get(proc.pid, "ray::IDLE") in ("ray::IDLE", "default_worker"):
                self._label[proc.pid] = "driver" if proc.pid == me.pid else _label(proc)
            by[self._label[proc.pid]] = by.get(self._label[proc.pid], 0) + mem
        if rss > self.peak_rss:
            self.peak_rss, self.peak_rss_by = rss, by

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._sample()


def _label(proc) -> str:
    """A short name for a process of the tree: Ray sets worker titles to ``ray::<task or actor>``."""
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "?"
    if cmd.startswith("ray::"):
        return cmd.split()[0][:48]
    for name in ("default_worker", "raylet", "gcs_server", "dashboard", "log_monitor", "runtime_env", "monitor.py"):
        if name in cmd:
            return name
    return proc.name()[:32]


def pipeline(model_dir: str, src: str, out: str, options: dict, args) -> dict:
    config = EncodeJobConfig.from_dict({
        "model": model_dir, "output": out, "source": {"urls": [f"{src}/*.tar"]},
        "processor": {"resolution": args.resolution}, "dtype": args.dtype, "channels_last": args.channels_last,
        "device": args.device, "batch_size": args.batch_size, "storage_options": options,
        **({"num_actors": args.num_actors} if args.num_actors else {}),
        **({"torch_threads": args.torch_threads} if args.torch_threads else {}),
        **({"actors_per_gpu": args.actors_per_gpu} if args.actors_per_gpu else {}),
    })
    server = [psutil.Process(p) for p in TreeMonitor.exclude]
    s3_cpu = -sum(sum(p.cpu_times()[:2]) for p in server)
    with TreeMonitor() as clock:
        summary = run_encode_job(config, progress=False)
    s3_cpu += sum(sum(p.cpu_times()[:2]) for p in server)
    return {"s3_server_cpu": round(s3_cpu, 2), "rows": summary.rows, "seconds": clock.wall, "cpu": clock.cpu,
            "wall_rate": summary.rows / clock.wall, "cpu_rate": summary.rows / clock.cpu, "rss": clock.peak_rss, "ok": summary.ok,
            "rss_by_process": {k: v for k, v in sorted(clock.peak_rss_by.items(), key=lambda kv: -kv[1])},
            "cpu_by_process": {k: round(v, 2) for k, v in sorted(clock.cpu_by.items(), key=lambda kv: -kv[1])}}


def report(bare_r: dict, naive_r: dict, runs: dict, cores: int, args) -> None:
    """Print images/s (wall) and images per core-second x cores (CPU time of the process tree), and the ratios."""
    def line(name: str, r: dict) -> str:
        return f"{name:<16}: {r['wall_rate']:7.2f} images/s wall, {r['cpu_rate'] * cores:7.2f} images/s at {cores} busy cores (CPU time)"

    print(line("bare forward", bare_r))
    print(line("naive loop", naive_r))
    for name, r in runs.items():
        print(line(name, r) + f"; {r['rows']} images in {r['seconds']:.1f} s; peak RSS {r['rss'] / 2**30:.2f} GiB")
        print("    CPU s by process: " + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_by_process"].items() if v >= 0.1)
              + f"; S3 server (not counted above) {r['s3_server_cpu']:.1f}")
        print("    peak RSS GiB by process: " + ", ".join(f"{k} {v / 2**30:.2f}" for k, v in r["rss_by_process"].items() if v >= 2**26))
    names = list(runs)
    if len(names) == 2:
        one, ten = runs[names[0]], runs[names[1]]
        marginal = {"wall_rate": (ten["rows"] - one["rows"]) / (ten["seconds"] - one["seconds"]),
                    "cpu_rate": (ten["rows"] - one["rows"]) / (ten["cpu"] - one["cpu"])}
        print(line("pipeline marginal", marginal) + "  (10x minus 1x: without the fixed per-job cost)")
        print(f"peak RSS {names[1]} / {names[0]}: {ten['rss'] / one['rss']:.2f}")
        runs = {**runs, "pipeline marginal": marginal}
    for name, r in runs.items():
        print(f"{name + ' / bare':<28}: wall {r['wall_rate'] / bare_r['wall_rate']:.2f}, CPU {r['cpu_rate'] / bare_r['cpu_rate']:.2f}")
        print(f"{name + ' / naive':<28}: wall {r['wall_rate'] / naive_r['wall_rate']:.2f}, CPU {r['cpu_rate'] / naive_r['cpu_rate']:.2f}")
    print(json.dumps({"bare": bare_r, "naive": naive_r, **runs}, default=str))


def main() -> None:
    args = parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(os.cpu_count() or 1)
    tmp = tempfile.mkdtemp(prefix="lf-bench-")
    if args.storage == "s3":
        server, options = start_moto()
        TreeMonitor.exclude = {server.pid}
        base = "s3://bench"
    else:
        server, options, base = None, {}, f"{tmp}/data"
    try:
        model = build_model(args.model, f"{tmp}/model")
        processor = ImageProcessor(ImageProcessorConfig(resolution=args.resolution), model.downsample_factor)
        src1 = write_sample_webdataset(f"{base}/src-1x", args.shards, args.per_shard, storage_options=options)
        big = src1 if args.skip_scale else write_sample_webdataset(
            f"{base}/src-10x", args.shards * args.scale, args.per_shard, storage_options=options, seed=1)
        where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
        print(f"model {args.model} (f{model.downsample_factor}) on {where}, {args.resolution}px, dtype {args.dtype}, "
              f"channels_last {args.channels_last}, batch {args.batch_size}, {os.cpu_count()} cores, "
              f"{args.shards} shards x {args.per_shard} images (x{args.scale} for the scale run; bare and naive run on those)")
        cores = os.cpu_count() or 1
        first = bare(model, big, options, args, processor)
        naive_r = naive(model, big, options, args, processor, f"{base}/naive-out")
        ray.init(num_cpus=cores, object_store_memory=500_000_000, include_dashboard=False, log_to_driver=False)
        # warm-up job (not reported): starts Ray's worker pool, so both measured runs pay the same fixed cost
        # as many shards as the 1x run, so that run finds as many warm worker processes as the scale run
        write_sample_webdataset(f"{base}/src-warm", args.shards, 2, storage_options=options, seed=2)
        pipeline(f"{tmp}/model", f"{base}/src-warm", f"{base}/out-warm", options, args)
        one = pipeline(f"{tmp}/model", f"{base}/src-1x", f"{base}/out-1x", options, args)
        runs = {"pipeline 1x": one}
        if not args.skip_scale:
            runs[f"pipeline {args.scale}x"] = pipeline(f"{tmp}/model", f"{base}/src-10x", f"{base}/out-10x", options, args)
        second = bare(model, big, options, args, processor)  # bare again: the machine's load drifts
        bare_r = {k: (first[k] + second[k]) / 2 for k in ("wall_rate", "cpu_rate")}
        report(bare_r, naive_r, runs, cores, args)
    finally:
        ray.shutdown()
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
