"""python benchmarks/audio_encode_throughput.py --segments 3000 --scale 10

Segments/s of the same audio through the same audio VAE, side by side in one run:

1. one core: ``AudioProcessor.process_segments`` (probe, decode the span, remix, resample with
   libswresample, cut, pad) CPU seconds per segment on one pinned core, and the model's encode of
   the same segments in memory (``LatentEncoder.encode_batch``, one torch thread: what each of the
   job's CPU actors runs, same dtype and layout (B, C, T) float32);
2. the limit of the machine for the whole job: ``cores / (encode_1t_s + decode_s)`` segments/s (every
   core decoding and encoding its share, nothing else), and, for reference, the bare model with
   every core in one process;
3. pipeline: ``run_encode_job`` (the real Ray job, its default pool) on ``--segments`` segments and on
   ``--segments / --scale`` (after a warm-up job of that size that starts Ray); peak RSS of the driver
   plus every Ray process for both (10x / 1x);
4. decode+resample seconds per audio minute: one minute of real sound (the shipped CC0 WAVs, 44.1 kHz,
   tiled) as WAV and as MP3, decoded whole to the model's rate and channels on one core.

Audio: the 16 CC0 sound effects of ``data/audio`` (Kenney, arcade 3.3.3), written again under new keys
into WebDataset tars of ``--files-per-shard`` files until the plan holds ``--segments`` segments
(``slide`` segments of ``--segment-seconds``, at most 8 per file). Model: ``models/audio-vae-tiny``
(mono, 22.05 kHz, hop 32, 8 latent channels).

Rates are printed from wall time and from CPU time (segments per CPU-second of this process tree,
times the cores): on a shared machine wall-clock figures follow the neighbours' load, CPU-time figures
hold. Pipeline rates are end to end (the job's fixed cost included) and marginal between the two runs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.pop("RAY_ADDRESS", None)  # this benchmark starts its own local Ray, never joins a neighbour's

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.encode_throughput import TreeMonitor  # noqa: E402
from latentflow.auto import AutoModel  # noqa: E402
from latentflow.encode.encoder import LatentEncoder  # noqa: E402
from latentflow.encode.shard import build_processor, process_records, stack_pixels  # noqa: E402
from latentflow.format.codec import StoreConfig  # noqa: E402
from latentflow.jobs.config import EncodeJobConfig  # noqa: E402
from latentflow.jobs.runner import run_encode_job  # noqa: E402
from latentflow.media.audio import decode_audio  # noqa: E402
from latentflow.media.config import AudioProcessorConfig  # noqa: E402
from latentflow.sources.records import Record  # noqa: E402

SOUNDS = sorted((ROOT / "data" / "audio").glob("*.wav"))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--segments", type=int, default=1000, help="segments of the big pipeline run (at least)")
    p.add_argument("--scale", type=int, default=10, help="the 1x run has segments / scale (whole shards)")
    p.add_argument("--segment-seconds", type=float, default=1.0, help="1 s: per-segment work a real audio model does at least")
    p.add_argument("--files-per-shard", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--model", default="models/audio-vae-tiny")
    p.add_argument("--json", default=None, help="also write the figures here")
    return p.parse_args()


def audio_config(args) -> AudioProcessorConfig:
    return AudioProcessorConfig(segment_seconds=args.segment_seconds, segment_mode="slide",
                                segment_stride_s=args.segment_seconds, max_segments_per_file=8)


def files_for(n_segments: int, per_file: list[int]) -> int:
    """How many files (cycling over the shipped sounds) give at least ``n_segments`` segments."""
    total, n = 0, 0
    while total < n_segments:
        total += per_file[n % len(per_file)]
        n += 1
    return n


def write_shards(root: Path, n_files: int, per_shard: int) -> list[int]:
    from webdataset import TarWriter

    root.mkdir(parents=True, exist_ok=True)
    data = [p.read_bytes() for p in SOUNDS]
    for s in range(0, n_files, per_shard):
        with open(root / f"a-{s // per_shard:06d}.tar", "wb") as f, TarWriter(f) as sink:
            for i in range(s, min(s + per_shard, n_files)):
                sink.write({"__key__": f"f{i:06d}", "wav": data[i % len(data)]})
    return [min(per_shard, n_files - s) for s in range(0, n_files, per_shard)]


def one_core(model, processor, records: list[Record], args) -> dict:
    """CPU seconds per segment on one pinned core, one thread: the processor, then the model."""
    cores, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {min(cores)})
    torch.set_num_threads(1)
    try:
        processor.process_segments(records[0].image, records[0].key)  # warm-up
        t0 = time.process_time()
        samples, _ = process_records(records, processor, "one-core")
        decode_s = (time.process_time() - t0) / len(samples)
        encoder = LatentEncoder(model, StoreConfig(), dtype="fp32", device="cpu")
        encoder.encode_batch(stack_pixels(samples[: args.batch_size]), [s.key for s in samples[: args.batch_size]])
        t0 = time.process_time()
        for i in range(0, len(samples), args.batch_size):
            chunk = samples[i:i + args.batch_size]
            encoder.encode_batch(stack_pixels(chunk), [s.key for s in chunk])
        encode_s = (time.process_time() - t0) / len(samples)
        real_s = sum(s.segment.valid_length * processor.hop_length for s in samples) / processor.sample_rate
        return {"segments": len(samples), "decode_s": decode_s, "encode_1t_s": encode_s,
                "decode_s_per_audio_minute_segments": decode_s * len(samples) / (real_s / 60)}
    finally:
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, cores)


def bare_all_cores(model, samples, args) -> dict:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    encoder = LatentEncoder(model, StoreConfig(), dtype="fp32", device="cpu")
    with TreeMonitor() as clock:
        for i in range(0, len(samples), args.batch_size):
            chunk = samples[i:i + args.batch_size]
            encoder.encode_batch(stack_pixels(chunk), [s.key for s in chunk])
    return {"segments": len(samples), "seconds": clock.wall, "wall_rate": len(samples) / clock.wall}


def minute_of_audio() -> dict[str, bytes]:
    """One minute of the shipped sounds (44.1 kHz mono, tiled) as WAV and as MP3."""
    pieces = [decode_audio(p.read_bytes(), sample_rate=44100, channels="mono").samples for p in SOUNDS]
    x = np.concatenate(pieces, axis=1)
    x = np.tile(x, (1, -(-60 * 44100 // x.shape[1])))[:, :60 * 44100].astype(np.float32)
    out = {}
    for fmt, codec in (("wav", "pcm_s16le"), ("mp3", "libmp3lame")):
        buf = io.BytesIO()
        with av.open(buf, "w", format=fmt) as f:
            stream = f.add_stream(codec, rate=44100, layout="mono")
            size = stream.codec_context.frame_size or 1024
            for i in range(0, x.shape[1], size):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, i:i + size]), format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 44100, i
                for conv in av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=44100).resample(frame):
                    conv.pts = i
                    for packet in stream.encode(conv):
                        f.mux(packet)
            for packet in stream.encode(None):
                f.mux(packet)
        out[fmt] = buf.getvalue()
    return out


def decode_minute(rate: int) -> dict[str, float]:
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        result = {}
        for fmt, data in minute_of_audio().items():
            t0 = time.process_time()
            decode_audio(data, sample_rate=rate, channels="mono")
            result[fmt] = time.process_time() - t0
        return result
    finally:
        os.sched_setaffinity(0, cores)


def pipeline(model: str, src: Path, out: Path, args) -> dict:
    config = EncodeJobConfig.from_dict({
        "model": model, "output": str(out), "source": {"urls": [f"{src}/*.tar"]}, "audio": audio_config(args).to_dict(),
        "dtype": "fp32", "device": "cpu", "batch_size": args.batch_size, "max_error_rate": 0.0,
    })
    with TreeMonitor() as clock:
        summary = run_encode_job(config, progress=False)
    if not summary.ok or summary.errors:
        raise RuntimeError(f"the encode job failed or dropped segments: {summary}")
    return {"segments": summary.rows, "seconds": clock.wall, "cpu": clock.cpu, "rss": clock.peak_rss,
            "wall_rate": summary.rows / clock.wall, "cpu_rate": summary.rows / clock.cpu,
            "cpu_by_process": {k: round(v, 2) for k, v in sorted(clock.cpu_by.items(), key=lambda kv: -kv[1])}}


def main() -> None:
    args = parse_args()
    cores = len(os.sched_getaffinity(0))
    model = AutoModel.from_pretrained(args.model).eval()
    processor = build_processor(audio_config(args), model.downsample_factor, None, model.sampling_rate, model.in_channels)
    per_file = [len(processor.process_segments(p.read_bytes(), p.stem)) for p in SOUNDS]
    records = [Record(f"f{i:06d}", SOUNDS[i % len(SOUNDS)].read_bytes()) for i in range(files_for(args.segments // args.scale, per_file))]
    core = one_core(model, processor, records, args)
    samples, _ = process_records(records, processor, "bare")
    bare = bare_all_cores(model, samples, args)
    limit = cores / (core["encode_1t_s"] + core["decode_s"])
    minute = decode_minute(processor.sample_rate)
    print(f"machine: {cores} cores; model {args.model}; segments of {processor.config.segment_seconds:.4f} s "
          f"({processor.lengths[0]} samples at {processor.sample_rate} Hz)")
    print(f"one core: decode+resample {core['decode_s'] * 1e3:.2f} ms/segment, encode (1 thread) {core['encode_1t_s'] * 1e3:.2f} "
          f"ms/segment ({core['segments']} segments)")
    print(f"limit = {cores} / (encode + decode) = {limit:.1f} segments/s; bare model, all cores, in memory: "
          f"{bare['wall_rate']:.1f} segments/s")
    print(f"decode+resample of one audio minute (44.1 kHz mono -> {processor.sample_rate} Hz, one core): "
          + ", ".join(f"{k} {v:.3f} s" for k, v in minute.items())
          + f"; inside the segments: {core['decode_s_per_audio_minute_segments']:.2f} s per minute of real audio")
    sys.stdout.flush()  # the in-memory figures survive a pipeline run that fails
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:  # a warm-up job first: Ray's start is not the 1x run's cost
        for name, target in (("warm-up", args.segments // args.scale), ("1x", args.segments // args.scale), ("10x", args.segments)):
            src = Path(tmp) / f"src-{name}"
            write_shards(src, files_for(target, per_file), args.files_per_shard)
            runs[name] = pipeline(args.model, src, Path(tmp) / f"out-{name}", args)
    runs.pop("warm-up")
    big, small = runs["10x"], runs["1x"]
    marginal = (big["segments"] - small["segments"]) / (big["seconds"] - small["seconds"])
    figures = {"cores": cores, "one_core": core, "limit_segments_per_s": limit, "bare_all_cores": bare,
               "decode_s_per_audio_minute": minute, "pipeline": runs, "marginal_rate": marginal,
               "pipeline_over_limit": big["wall_rate"] / limit, "marginal_over_limit": marginal / limit,
               "pipeline_cpu_over_limit": big["cpu_rate"] * cores / limit, "rss_10x_over_1x": big["rss"] / small["rss"]}
    for name, r in runs.items():
        print(f"pipeline {name}: {r['segments']} segments in {r['seconds']:.1f} s = {r['wall_rate']:.1f} segments/s "
              f"(CPU time: {r['cpu_rate'] * cores:.1f}/s over {cores} cores); peak RSS {r['rss'] / 2**20:.0f} MiB")
        print("    CPU s by process: " + ", ".join(f"{k} {v:.1f}" for k, v in list(r["cpu_by_process"].items())[:8]))
    print(f"pipeline 10x / limit: {figures['pipeline_over_limit']:.2f} end to end, {figures['marginal_over_limit']:.2f} marginal "
          f"({marginal:.1f} segments/s), {figures['pipeline_cpu_over_limit']:.2f} by CPU time (target >= 0.85)")
    print(f"peak RSS 10x / 1x: {figures['rss_10x_over_1x']:.2f} (target <= 1.25)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=float))


if __name__ == "__main__":
    main()
