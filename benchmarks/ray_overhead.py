"""python benchmarks/ray_overhead.py [--shards 24] [--per-shard 64] [--blocks 48] [--task-seconds 0.1] [--reps 3]

What Ray Data costs around the encoder, measured side by side in one run on a local Ray that
has all of this machine's CPUs: the part of the encode job's start-up and of its CPU stages'
shortfall that belongs to Ray Data, not to our code.

1. read + preprocess of the same WebDataset shards (real photos, 128 px): in one plain loop
   against the encode job's own Ray Data stage (``ShardDatasource`` -> ``map_batches(
   preprocess_batch)``, one task per shard); images/s, the ratios to one loop and to one loop
   per CPU (what the stage could reach), and the mean tasks in flight;
2. task concurrency: ``--blocks`` map tasks that each sleep ``--task-seconds`` (no CPU), one
   block each, ``num_cpus=1``: wall time against the ideal ``blocks * t / CPUs``, measured
   once as Ray Data comes, once with its executor's wait for finished tasks cut from 0.1 s to
   ``--short-wait`` (a private constant, patched here only to show where the time goes: the
   executor notices a finished task only when that wait times out);
3. for both: when two tasks first ran at once, counted from the first task's start. Ray Data
   2.60 takes its resource limits from an autoscaling-coordinator actor, asked asynchronously;
   until the answer arrives (refreshed once a second) the limits are zero and Ray Data lets one
   task run at a time.

Every figure comes from timestamps taken inside the tasks, so it holds whatever the driver does.
Repetitions run in the same Ray instance: the first one includes the coordinator's start.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pyarrow as pa
import ray

from latentflow.encode.shard import processor_spec
from latentflow.jobs.datasource import ShardDatasource, read_shard_block
from latentflow.jobs.stages import preprocess_batch
from latentflow.media.config import ImageProcessorConfig
from latentflow.sources.shards import SourceConfig, list_shards

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.samples
from tests.samples import write_sample_webdataset  # noqa: E402

SPAN = "span"  # "<start> <end>" (epoch seconds) of the task that made the block


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=24)
    p.add_argument("--per-shard", type=int, default=64)
    p.add_argument("--blocks", type=int, default=48, help="sleep tasks")
    p.add_argument("--task-seconds", type=float, default=0.1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--short-wait", type=float, default=0.01, help="seconds, for the second sleep-task run")
    return p.parse_args()


def timed_preprocess(batch: pa.Table, **kwargs) -> pa.Table:
    start = time.time()
    out = preprocess_batch(batch, **kwargs)
    return out.append_column(SPAN, pa.array([f"{start} {time.time()}"] * len(out)))


def sleeper(batch: pa.Table, seconds: float) -> pa.Table:
    start = time.time()
    time.sleep(seconds)
    return pa.table({SPAN: [f"{start} {time.time()}"] * len(batch)})


def run(ds) -> tuple[float, list[tuple[float, float]]]:
    """Consume ``ds``; returns wall seconds and the (start, end) of every task."""
    spans, t0 = set(), time.perf_counter()
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        spans.update(block.column(SPAN).to_pylist())
    return time.perf_counter() - t0, [tuple(map(float, s.split())) for s in spans]


def concurrency(spans: list[tuple[float, float]]) -> tuple[float, float]:
    """Mean tasks in flight between the first start and the last end, and the seconds from
    the first start until two tasks first overlapped (inf: never)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    first, last = events[0][0], events[-1][0]
    running, busy, prev, overlap = 0, 0.0, first, float("inf")
    for t, step in events:
        busy += running * (t - prev)
        running, prev = running + step, t
        if running >= 2 and overlap == float("inf"):
            overlap = t - first
    return busy / max(last - first, 1e-9), overlap


def main() -> None:
    args = parse_args()
    tmp = tempfile.mkdtemp(prefix="lf-ray-overhead-")
    source = SourceConfig(urls=write_sample_webdataset(f"{tmp}/src", args.shards, args.per_shard))
    shards = list_shards(source)
    images = args.shards * args.per_shard
    kwargs = {"spec": processor_spec(ImageProcessorConfig(resolution=128), 8)}

    t0 = time.perf_counter()
    for shard in shards:
        preprocess_batch(read_shard_block(shard, source, {}, 0)[0], **kwargs)
    direct = images / (time.perf_counter() - t0)

    from ray.data._internal.execution import streaming_executor_state as executor_state

    default_wait = executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S
    cpus = os.cpu_count() or 1
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().target_max_block_size = None  # one block per shard, as the job
    ray.data.DataContext.get_current().enable_progress_bars = False
    print(f"{cpus} CPUs; read+preprocess in one loop: {direct:.0f} images/s ({1e3 / direct:.2f} ms/image)")
    for rep in range(args.reps):
        ds = ray.data.read_datasource(ShardDatasource(shards, source, {}, 0), override_num_blocks=len(shards))
        wall, spans = run(ds.map_batches(timed_preprocess, batch_size=None, batch_format="pyarrow", num_cpus=1, fn_kwargs=kwargs))
        mean, overlap = concurrency(spans)
        in_task = sum(e - s for s, e in spans) / images
        rate = images / wall
        print(f"rep {rep}: Ray Data read+preprocess {rate:.0f} images/s ({rate / direct:.2f} of one loop, "
              f"{rate / (direct * cpus):.2f} of {cpus} loops' worth, "
              f"{1e3 * in_task:.2f} ms/image inside the tasks); tasks in flight {mean:.2f} of {cpus}; "
              f"two at once after {overlap:.2f} s")
        ideal = args.blocks * args.task_seconds / cpus
        for wait in (default_wait, args.short_wait):
            executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = wait
            ds = ray.data.range(args.blocks, override_num_blocks=args.blocks)
            wall, spans = run(ds.map_batches(sleeper, batch_size=None, batch_format="pyarrow", num_cpus=1,
                                             fn_kwargs={"seconds": args.task_seconds}))
            mean, overlap = concurrency(spans)
            print(f"rep {rep}: {args.blocks} sleep tasks of {args.task_seconds:.2f} s, executor wait {wait:.2f} s: {wall:.2f} s wall, "
                  f"ideal {ideal:.2f} s ({ideal / wall:.2f} of ideal); tasks in flight {mean:.2f} of {cpus}; "
                  f"two at once after {overlap:.2f} s")
        executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = default_wait


if __name__ == "__main__":
    main()
