"""python benchmarks/video_encode_throughput.py --storage local --dtype fp32 --clips 160 --frames 17 --resolution 128

Clips/s and frames/s of the same video clips through the same causal video VAE, side by side in one run:

1. bare: ``LatentEncoder.encode_batch`` on clips decoded and packed beforehand, one process using
   every core (and, for reference, one thread pinned to one core);
2. decode alone: ``VideoProcessor.process_clips`` seconds per clip on one pinned core (one FFmpeg
   thread, one torch thread), and the machine's limit for the whole job,
   ``limit = 1 / (bare_s_per_clip + decode_s_per_clip / cores)`` clips/s;
3. naive: one process, one loop: read a tar -> decode clips -> encode -> write Parquet, with the
   share of its time spent decoding;
4. pipeline: ``run_encode_job`` (the real Ray job, its default pool) on ``--clips`` clips, and
   the same job on ``--clips / --scale`` clips; peak RSS of the driver plus every Ray process
   (the sampler of ``benchmarks/encode_throughput.py``) for both, 10x / 1x.

Clips come from real video: the four 33-frame Big Buck Bunny clips of the shipped shard
``data/videos/bbb-000000.tar`` (256x144 h264, a keyframe every 25 frames; (c) Blender Foundation,
CC BY 3.0), written again into ``--videos-per-shard`` videos per WebDataset tar under new keys
(``--source synthetic``: 33-frame 256x144 h264 videos from ``tests/video_samples.write_video``).
Each video gives ``--clips-per-video`` clips (``uniform`` mode) of ``--frames`` frames, resized
and center-cropped to ``--resolution``.

The model is ``models/video-vae-tiny`` when it exists (``--model`` names another checkpoint),
else a random ``CausalVideoAutoencoderKLModel`` of the same architecture as
``benchmarks/train_video_vae.py``'s (base_dim 8, z_dim 16, dim_mult 1-2-4-4, 8x space, 4x time).

Bare, naive and pipeline feed the model the same input layout: C-contiguous (B, 3, T, H, W), as
the encoder actors receive it. The processor's clips are transposed views of (T, H, W, 3) frames,
and ``np.stack`` of them is channels-last-3d, which conv3d on CPU runs about twice as fast (measured
here); the one-core line prints the encode in both layouts so that gap stays visible.

Every rate is printed from wall time and from CPU time (clips per CPU-second of this process tree,
times the cores), as in ``encode_throughput.py``: on a machine that other jobs share, wall-clock
figures follow the neighbours' load and CPU-time figures hold. Pipeline rates are end to end
(the job's fixed cost included) and marginal between the two runs, (clips_10x - clips_1x) /
(t_10x - t_1x). Bare runs twice (first and last) and is averaged: the machine's load drifts.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.pop("RAY_ADDRESS", None)  # this benchmark starts its own local Ray, never joins a neighbour's

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo root: benchmarks.encode_throughput, tests.video_samples

import fsspec  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

# isort: off
import psutil  # noqa: E402  (Ray vendors psutil; `import ray` puts it on sys.path)
# isort: on

from benchmarks.encode_throughput import TreeMonitor, start_moto  # noqa: E402
from latentflow.encode.encoder import LatentEncoder  # noqa: E402
from latentflow.encode.shard import build_processor, process_records, stack_pixels  # noqa: E402
from latentflow.format.codec import StoreConfig  # noqa: E402
from latentflow.jobs.config import EncodeJobConfig  # noqa: E402
from latentflow.jobs.runner import run_encode_job  # noqa: E402
from latentflow.media.config import VideoProcessorConfig  # noqa: E402
from latentflow.sources.shards import SourceConfig, list_shards, read_shard  # noqa: E402

SHIPPED_SHARD = ROOT / "data" / "videos" / "bbb-000000.tar"
SHIPPED_MODEL = ROOT / "models" / "video-vae-tiny"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].splitlines()[0])
    p.add_argument("--clips", type=int, default=160, help="clips of the pipeline run the targets read (>= 100)")
    p.add_argument("--scale", type=int, default=10, help="the 1x RSS run has clips / scale clips (whole shards, at least 2)")
    p.add_argument("--frames", type=int, default=17, help="frames per clip (forced to k * temporal stride + 1)")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--clips-per-video", type=int, default=2)
    p.add_argument("--videos-per-shard", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="on CUDA use bf16")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when torch sees a GPU")
    p.add_argument("--model", default=None,
                   help=f"checkpoint directory (default: {SHIPPED_MODEL.relative_to(ROOT)} if present, else random)")
    p.add_argument("--source", default="bbb", choices=["bbb", "synthetic"], help="bbb: the shipped real clips; synthetic: write_video")
    p.add_argument("--storage", default="local", choices=["s3", "local"],
                   help="s3: inputs and outputs on a moto S3 server on loopback; local: on local disk")
    p.add_argument("--skip-scale", action="store_true", help="skip the 1x run (no RSS ratio, no marginal rate)")
    args = p.parse_args()
    if args.clips < 100:
        print(f"warning: --clips {args.clips} < 100: the issue's pipeline target is read on a job of at least 100 clips")
    return args


# ---- setup: videos, shards, model ----------------------------------------------------------


def source_videos(kind: str) -> list[bytes]:
    """The mp4 files every shard repeats: the shipped shard's four real clips, or four synthetic ones."""
    if kind == "synthetic":
        from tests.video_samples import write_video

        return [write_video(fps=25, size=(144, 256), num_frames=33, gop=25) for _ in range(4)]
    with tarfile.open(SHIPPED_SHARD) as tar:
        return [tar.extractfile(m).read() for m in sorted(tar.getmembers(), key=lambda m: m.name) if m.name.endswith(".mp4")]


def write_shards(url: str, num_shards: int, videos: list[bytes], per_shard: int, options: dict) -> list[str]:
    """``num_shards`` WebDataset tars of ``per_shard`` videos each (cycled from ``videos``, unique keys)."""
    from webdataset import TarWriter

    fs, root = fsspec.url_to_fs(url, **options)
    fs.makedirs(root, exist_ok=True)
    urls = []
    for s in range(num_shards):
        buf = io.BytesIO()
        with TarWriter(buf) as sink:
            for v in range(per_shard):
                sink.write({"__key__": f"s{s:04d}v{v:02d}", "mp4": videos[(s * per_shard + v) % len(videos)],
                            "txt": f"shard {s} video {v}"})
        urls.append(f"{url}/v-{s:06d}.tar")
        with fs.open(urls[-1], "wb") as f:
            f.write(buf.getvalue())
    return urls


def build_model(path: str | None, directory: str):
    """(model, checkpoint directory): ``path``, else the shipped tiny video VAE, else a random one of its architecture."""
    from latentflow.auto import AutoModel
    from latentflow.models.causal_video_vae import CausalVideoAutoencoderKLConfig, CausalVideoAutoencoderKLModel

    path = path or (str(SHIPPED_MODEL) if (SHIPPED_MODEL / "config.json").exists() else None)
    if path:
        return AutoModel.from_pretrained(path).eval(), path, path
    torch.manual_seed(0)
    cfg = CausalVideoAutoencoderKLConfig(base_dim=8, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=1,
                                         temperal_downsample=(False, True, True))
    model = CausalVideoAutoencoderKLModel(cfg).eval()
    model.save_pretrained(directory)
    return model, directory, "random (train_video_vae.py architecture)"


# ---- decode alone and bare encode ------------------------------------------------------------


def batches(samples, batch_size: int, layout: str = "pipeline"):
    """(pixels, keys) per batch. ``pipeline``: C-contiguous (B, 3, T, H, W), what the encoder actors get
    (pixels travel as ``tobytes()``); ``processor``: the processor's own strides (its clips are
    transposed views of (T, H, W, 3) frames, so ``np.stack`` keeps them channels-last-3d)."""
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        x = stack_pixels(chunk)
        yield (x.contiguous() if layout == "pipeline" else x), [s.key for s in chunk]


def encode_cpu_s(encoder, samples, batch_size: int, layout: str) -> float:
    """CPU seconds per clip of this process for ``encode_batch`` over ``samples`` (after one warm-up batch)."""
    encoder.encode_batch(*next(batches(samples, batch_size, layout)))
    t0 = time.process_time()
    for x, keys in batches(samples, batch_size, layout):
        encoder.encode_batch(x, keys)
    return (time.process_time() - t0) / len(samples)


def one_core(model, processor, records, args) -> dict:
    """CPU seconds per clip on one pinned core, one thread: ``process_clips`` (decode, resize, crop,
    float32) and, for reference, the model's encode in the pipeline's input layout and in the
    processor's (channels-last-3d). Affinity and threads are restored after."""
    cores, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {min(cores)})
    torch.set_num_threads(1)
    try:
        processor.process_clips(records[0].image, records[0].key)  # warm-up (codec init)
        t0 = time.process_time()
        clips = [c for r in records for c in processor.process_clips(r.image, r.key)]
        result = {"decode_s": (time.process_time() - t0) / len(clips), "encode_1t_s": float("nan"), "encode_1t_cl3d_s": float("nan")}
        if args.device == "cpu":
            samples, _ = process_records(records, processor, "one-core")
            encoder = LatentEncoder(model, StoreConfig(), dtype=args.dtype, device=args.device)
            result["encode_1t_s"] = encode_cpu_s(encoder, samples, args.batch_size, "pipeline")
            result["encode_1t_cl3d_s"] = encode_cpu_s(encoder, samples, args.batch_size, "processor")
        return result
    finally:
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, cores)


def bare(model, processor, records, args) -> dict:
    """The model's encode only, on clips decoded and packed beforehand (uint8 codes in the layout the
    pipeline sends its encoder actors), in this process with every core."""
    samples, _ = process_records(records, processor, "bare")
    encoder = LatentEncoder(model, StoreConfig(), dtype=args.dtype, device=args.device)
    encoder.encode_batch(*next(batches(samples, args.batch_size)))  # warm-up
    with TreeMonitor() as clock:
        for x, keys in batches(samples, args.batch_size):
            encoder.encode_batch(x, keys)
    return rates(len(samples), clock)


def rates(clips: int, clock: TreeMonitor, **extra) -> dict:
    return {"clips": clips, "seconds": clock.wall, "cpu": clock.cpu,
            "wall_rate": clips / clock.wall, "cpu_rate": clips / clock.cpu, **extra}


# ---- naive loop and pipeline ------------------------------------------------------------------


def naive(model, processor, urls: list[str], records, options: dict, args, out: str) -> dict:
    """One loop: read a tar, decode its clips (the same VideoProcessor), encode (the pipeline's input
    layout), write Parquet.
    Times the decode step on its own (wall and this process's CPU) for its share of the loop."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    encoder = LatentEncoder(model, StoreConfig(), dtype=args.dtype, device=args.device)
    warm = [c for r in records for c in processor.process_clips(r.image, r.key)][: args.batch_size]
    # as bare: steady state
    encoder.encode_batch(torch.from_numpy(np.ascontiguousarray(np.stack([c.pixel_values for c in warm]))), [c.key for c in warm])
    fs, _ = fsspec.url_to_fs(out, **options)
    fs.makedirs(out, exist_ok=True)
    clips, decode_wall, decode_cpu = 0, 0.0, 0.0
    cpu0 = time.process_time()
    with TreeMonitor() as clock:
        for url in urls:
            with fs.open(url, "rb") as stream:
                samples = list(group_by_keys({**f, "__url__": url} for f in tar_file_iterator(stream)))
            w, c = time.perf_counter(), time.process_time()
            decoded = [clip for s in samples for clip in processor.process_clips(s["mp4"], s["__key__"])]
            decode_wall, decode_cpu = decode_wall + time.perf_counter() - w, decode_cpu + time.process_time() - c
            keys, latents = [], []
            for i in range(0, len(decoded), args.batch_size):
                chunk = decoded[i : i + args.batch_size]
                x = torch.from_numpy(np.ascontiguousarray(np.stack([c.pixel_values for c in chunk])))  # the pipeline's layout
                result = encoder.encode_batch(x, [c.key for c in chunk])
                keys += list(result["key"])
                latents += [z.ravel() for z in result["latent"]]
            table = pa.table({"key": keys, "latent": pa.array([z.tolist() for z in latents], pa.list_(pa.float32()))})
            with fs.open(f"{out}/{url.rsplit('/', 1)[-1]}.parquet", "wb") as f:
                pq.write_table(table, f)
            clips += len(keys)
    own_cpu = time.process_time() - cpu0
    return rates(clips, clock, decode_share_wall=decode_wall / clock.wall, decode_share_cpu=decode_cpu / own_cpu)


def pipeline(model_dir: str, src: str, out: str, options: dict, args) -> dict:
    """``run_encode_job`` with its default pool, timed and sampled over the whole process tree."""
    config = EncodeJobConfig.from_dict({
        "model": model_dir, "output": out, "source": {"urls": [f"{src}/*.tar"]},
        "video": {"num_frames": args.frames, "resolution": args.resolution, "clip_mode": "uniform", "num_clips": args.clips_per_video},
        "dtype": args.dtype, "device": args.device, "batch_size": args.batch_size, "storage_options": options,
    })
    server = [psutil.Process(p) for p in TreeMonitor.exclude]
    s3_cpu = -sum(sum(p.cpu_times()[:2]) for p in server)
    with TreeMonitor() as clock:
        summary = run_encode_job(config, progress=False)
    s3_cpu += sum(sum(p.cpu_times()[:2]) for p in server)
    if not summary.ok or summary.errors:
        raise RuntimeError(f"the encode job failed or dropped clips: {summary}")
    return rates(summary.rows, clock, rss=clock.peak_rss, s3_server_cpu=round(s3_cpu, 2),
                 rss_by_process={k: v for k, v in sorted(clock.peak_rss_by.items(), key=lambda kv: -kv[1])},
                 cpu_by_process={k: round(v, 2) for k, v in sorted(clock.cpu_by.items(), key=lambda kv: -kv[1])})


# ---- report -----------------------------------------------------------------------------------


def report(bare_r: dict, core: dict, naive_r: dict, runs: dict, cores: int, frames: int) -> None:
    """Clips/s and frames/s from wall and from CPU time, the limit, and every ratio against its target."""
    def line(name: str, r: dict) -> str:
        return (f"{name:<22}: {r['wall_rate']:7.3f} clips/s ({r['wall_rate'] * frames:7.1f} frames/s) wall, "
                f"{r['cpu_rate'] * cores:7.3f} clips/s at {cores} busy cores (CPU time)")

    limit = {"wall_rate": 1 / (1 / bare_r["wall_rate"] + core["decode_s"] / cores),
             "cpu_rate": 1 / (1 / bare_r["cpu_rate"] + core["decode_s"])}  # per CPU-second; x cores when printed
    limits = {"limit": limit}
    print(f"decode alone (one core): {core['decode_s'] * 1000:.1f} ms/clip CPU; encode alone (one thread, one core): "
          f"{core['encode_1t_s'] * 1000:.1f} ms/clip CPU in the pipeline's layout (NCDHW), "
          f"{core['encode_1t_cl3d_s'] * 1000:.1f} with channels-last-3d input "
          f"({core['encode_1t_s'] / core['encode_1t_cl3d_s']:.2f}x faster)")
    print(line("bare encode", bare_r) + f"; {1 / bare_r['wall_rate']:.3f} s/clip wall, {1 / bare_r['cpu_rate']:.3f} CPU-s/clip")
    print(line("limit", limit) + "  = 1 / (bare s/clip + decode s/clip / cores)")
    if core["encode_1t_s"] == core["encode_1t_s"]:  # not NaN: on CPU
        # every core encoding and decoding single-threaded, nothing lost to sharing: what an idle machine would do
        ideal = 1 / (core["encode_1t_s"] + core["decode_s"])
        limits["limit, 1 thread/core"] = {"wall_rate": ideal * cores, "cpu_rate": ideal}
        print(line("limit, 1 thread/core", limits["limit, 1 thread/core"]) + "  = cores / (one-thread encode + decode CPU-s/clip)")
    print(line("naive loop", naive_r) + f"; decoding {naive_r['decode_share_wall']:.1%} of its wall time, "
          f"{naive_r['decode_share_cpu']:.1%} of its CPU time")
    for name, r in runs.items():
        print(line(name, r) + f"; {r['clips']} clips in {r['seconds']:.1f} s; peak RSS {r['rss'] / 2**30:.2f} GiB")
        print("    CPU s by process: " + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_by_process"].items() if v >= 0.1)
              + f"; S3 server (not counted above) {r['s3_server_cpu']:.1f}")
        print("    peak RSS GiB by process: " + ", ".join(f"{k} {v / 2**30:.2f}" for k, v in r["rss_by_process"].items() if v >= 2**26))
    main_name = next(n for n in runs if n != "pipeline 1x")
    table = {main_name: runs[main_name]}
    if len(runs) == 2:
        one, big = runs["pipeline 1x"], runs[main_name]
        marginal = {"wall_rate": (big["clips"] - one["clips"]) / (big["seconds"] - one["seconds"]),
                    "cpu_rate": (big["clips"] - one["clips"]) / (big["cpu"] - one["cpu"])}
        print(line("pipeline marginal", marginal) + f"  ({main_name} minus 1x: without the fixed per-job cost)")
        rss = big["rss"] / one["rss"]
        print(f"peak RSS {main_name} / 1x: {rss:.2f}  (target <= 1.25: {'met' if rss <= 1.25 else 'NOT met'})")
        table["pipeline marginal"] = marginal
    for name, r in table.items():
        for label, base, target in (*((k, v, 0.85) for k, v in limits.items()), ("naive", naive_r, 1.0), ("bare", bare_r, None)):
            wall, cpu = r["wall_rate"] / base["wall_rate"], r["cpu_rate"] / base["cpu_rate"]
            goal = "" if target is None else (
                f"  (target {'>=' if target < 1 else '>'} {target}: wall {_met(wall, target)}, CPU {_met(cpu, target)})")
            print(f"{name + ' / ' + label:<44}: wall {wall:.2f}, CPU {cpu:.2f}{goal}")
    print(json.dumps({"bare": bare_r, "one_core": core, **limits, "naive": naive_r, **runs}, default=str))


def _met(ratio: float, target: float) -> str:
    return "met" if (ratio >= target if target < 1 else ratio > target) else "NOT met"


def main() -> None:
    args = parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    tmp = tempfile.mkdtemp(prefix="lf-vbench-")
    server, options, base = (None, {}, f"{tmp}/data")
    if args.storage == "s3":
        server, options = start_moto()
        TreeMonitor.exclude, base = {server.pid}, "s3://bench"
    try:
        model, model_dir, model_name = build_model(args.model, f"{tmp}/model")
        processor = build_processor(VideoProcessorConfig(num_frames=args.frames, resolution=args.resolution, clip_mode="uniform",
                                                         num_clips=args.clips_per_video), model.downsample_factor,
                                    model.temporal_downsample_factor)
        frames = processor.config.num_frames
        per_shard = args.videos_per_shard * args.clips_per_video  # clips per shard (every video is long enough)
        shards = -(-args.clips // per_shard)
        small = max(2, round(shards / args.scale))
        videos = source_videos(args.source)
        write_shards(f"{base}/src-big", shards, videos, args.videos_per_shard, options)
        small_urls = write_shards(f"{base}/src-1x", small, videos, args.videos_per_shard, options)
        where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
        print(f"model {model_name}: f{model.downsample_factor} x t{model.temporal_downsample_factor}, "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, on {where}, dtype {args.dtype}, batch {args.batch_size}; "
              f"clips of {frames} frames at {args.resolution} px from {args.source} videos (256x144 h264), "
              f"{args.clips_per_video} per video, {per_shard} per shard; {cores} cores, load average {os.getloadavg()[0]:.1f}; "
              f"pipeline on {shards} shards ({shards * per_shard} clips) and {small} ({small * per_shard}) for 1x; "
              f"bare and naive on the {small * per_shard} clips of the 1x shards; storage {args.storage}")
        source = SourceConfig(urls=small_urls, storage_options=options, media="video")
        records = [r for s in list_shards(source) for r in read_shard(s, source)]
        core = one_core(model, processor, records, args)
        first = bare(model, processor, records, args)
        naive_r = naive(model, processor, small_urls, records, options, args, f"{base}/naive-out")
        ray.init(address="local", num_cpus=cores, object_store_memory=500_000_000, include_dashboard=False, log_to_driver=False)
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # the figures, not Ray Data's progress log
        # warm-up job (not reported): starts Ray's worker pool, so both measured runs pay the same fixed cost
        write_shards(f"{base}/src-warm", small, videos[:1], 1, options)
        pipeline(model_dir, f"{base}/src-warm", f"{base}/out-warm", options, args)
        runs = {} if args.skip_scale else {"pipeline 1x": pipeline(model_dir, f"{base}/src-1x", f"{base}/out-1x", options, args)}
        runs[f"pipeline {'' if args.skip_scale else f'{shards // small}x, '}{shards * per_shard} clips"] = pipeline(
            model_dir, f"{base}/src-big", f"{base}/out-big", options, args)
        ray.shutdown()
        second = bare(model, processor, records, args)  # bare again: the machine's load drifts
        bare_r = {k: (first[k] + second[k]) / 2 for k in ("wall_rate", "cpu_rate")}
        print(f"load average at the end {os.getloadavg()[0]:.1f}; "
              f"bare first/last wall {first['wall_rate']:.3f}/{second['wall_rate']:.3f} clips/s")
        report(bare_r, core, naive_r, runs, cores, frames)
    finally:
        ray.shutdown()
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
