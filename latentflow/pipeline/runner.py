"""``run_encode_job``: list shards, skip committed ones, stream the rest through Ray, finalize.

Example::

    summary = run_encode_job(EncodeJobConfig.from_yaml("configs/encode/default.yaml"))
    print(summary.rows, summary.images_per_s)

The plan (one block per shard end to end)::

    ShardDatasource (1 ReadTask / pending shard)
      -> map_batches(preprocess_batch)            CPU tasks, fused with the read
      -> map_batches(EncoderActor, ActorPool)     model resident once per actor
      -> write_datasink(LatentDatasink)           commit per shard, then the _done marker
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from latentflow import hub
from latentflow.encode.shard import build_processor, processor_spec
from latentflow.format.codec import Codec, ModelRef
from latentflow.format.marker import CommitMarker
from latentflow.encode.codec_builder import build_codec
from latentflow.store.writer import finalize, prepare_output
from latentflow.format.state import read_output_codec
from latentflow.errors import CheckpointError, ConfigError
from latentflow.pipeline.config import EncodeJobConfig
from latentflow.pipeline.preflight import alive_nodes, check_before_ray, check_cluster, describe_nodes
from latentflow.pipeline.reaper import start_reaper
from latentflow.pipeline.datasink import LatentDatasink, ShardResult
from latentflow.pipeline.datasource import ShardDatasource
from latentflow.pipeline.stages import EncoderActor, preprocess_batch

logger = logging.getLogger(__name__)

@dataclass
class OutputTotals:
    """What an output holds after a run, counted from its commit markers (every run, not only this one)."""

    rows: int = 0
    shards: int = 0
    sample_errors: int = 0

    @classmethod
    def from_counts(cls, counts: dict[str, Any]) -> "OutputTotals":
        return cls(int(counts.get("rows", 0)), int(counts.get("shards", 0)), int(counts.get("sample_errors", 0)))


@dataclass
class EncodeSummary:
    """What a run did (``rows``, ``errors``: sample errors of the shards it read, ``shards_*``)
    and what the output holds after it (``totals``).

    This run's counts add up: ``samples_seen == rows + errors`` (samples: images, or clips plus
    videos that gave no clip; every one read is a row or a row of ``errors.parquet``). Shards
    skipped as already committed are not read, so they add to none of the three.

    Rates are over the whole output, so a rerun that only retries a bad shard does not read as
    100% failed: ``error_rate`` is sample errors / samples of every committed shard,
    ``shard_failure_rate`` the shards still failing / every shard of the source. ``ok`` is False
    when either exceeds ``max_error_rate``.
    """

    output: str
    shards_total: int = 0
    shards_skipped: int = 0
    shards_committed: int = 0
    shards_failed: list[str] = field(default_factory=list)
    rows: int = 0
    errors: int = 0
    seconds: float = 0.0
    max_error_rate: float = 0.0
    totals: OutputTotals = field(default_factory=OutputTotals)
    samples_seen: int = 0

    @property
    def images_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rate(self) -> float:
        seen = self.totals.rows + self.totals.sample_errors
        return self.totals.sample_errors / seen if seen else 0.0

    @property
    def shard_failure_rate(self) -> float:
        return len(self.shards_failed) / self.shards_total if self.shards_total else 0.0

    @property
    def ok(self) -> bool:
        return self.error_rate <= self.max_error_rate and self.shard_failure_rate <= self.max_error_rate

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": self.images_per_s, "error_rate": self.error_rate,
                "shard_failure_rate": self.shard_failure_rate, "ok": self.ok}

    def run_dict(self) -> dict[str, Any]:
        """This run's own figures (what ``latentflow.json`` appends to ``runs``)."""
        out = asdict(self)
        out.pop("totals")
        out["sample_errors"] = out.pop("errors")
        return {**out, "images_per_s": self.images_per_s}


def run_encode_job(config: EncodeJobConfig, progress: bool = True) -> EncodeSummary:
    """Encode every not-yet-committed shard of ``config.source`` into ``config.output``.

    Args:
        config: the job config.
        progress: show a committed-rows progress bar (rows/s, errors) on stderr.

    Returns:
        an :class:`EncodeSummary` (rows and errors of THIS run; the output's totals are in
        ``latentflow.json``).

    Raises:
        CodecMismatchError: the output was written by another model/processor config and
            ``config.overwrite`` is False.
        CheckpointError: the model cannot be found.
    """
    options = config.resolved_storage_options()
    shards = check_before_ray(config)  # the source matches shards, the output can be written (ConfigError)
    model = load_model(config.model, options, **model_load_kwargs(config))
    source = config.source.replace(storage_options=config.source_storage_options())
    join_cluster(config)  # a running cluster: local paths and the pool's fit are checked before anything is written
    # the codec pins the commit a hub id resolved to (not a branch name), so readers rebuild the same weights
    pinned = getattr(model, "hub_revision", None) or config.model_revision
    model_ref = hub.model_ref_from_user(config.model, config.model_subfolder, config.model_variant, pinned)
    codec = build_codec(model, config.processor_config, config.store, source.urls, config.dtype, model_ref=model_ref)
    codec = merged_sources_codec(config.output, codec, options, config.overwrite)
    # refuses another encoder's output (CodecMismatchError) unless overwrite; records the codec first
    done = prepare_output(config.output, codec, options, config.overwrite)
    pending = [s for s in shards if s.shard_id not in done]
    summary = EncodeSummary(config.output, len(shards), len(shards) - len(pending), max_error_rate=config.max_error_rate)
    logger.info("%d shards, %d already committed, %d to encode", len(shards), len(done), len(pending))
    start = time.perf_counter()
    results = _run_ray(config, source, model, codec, pending, options, progress) if pending else []
    summary.seconds = time.perf_counter() - start
    shard_errors = _tally(summary, results)
    info = finalize(config.output, codec, options, {**summary.run_dict(), "shard_errors": shard_errors, "failed_shards": summary.shards_failed})
    summary.totals = OutputTotals.from_counts(info["counts"])
    return summary


def _tally(summary: EncodeSummary, results: list[ShardResult]) -> list[dict]:
    """Add the shard results to ``summary``; returns the error rows of failed shards (they have no marker).

    An unreadable shard counts once, in ``shards_failed``, never among the sample errors. A shard
    whose samples were read and all failed is in ``shards_failed`` too, and its samples are sample
    errors (each is a row of ``errors.parquet``), so ``samples_seen == rows + errors``.
    """
    shard_errors = []
    for r in results:
        summary.samples_seen += r.samples
        summary.errors += len(r.errors) if r.samples else 0  # an unreadable shard's error names no sample
        if r.failed:
            summary.shards_failed.append(r.url)
            shard_errors += r.errors
        else:
            summary.shards_committed += 1
            summary.rows += r.rows
    return shard_errors


# ---- model and output ---------------------------------------------------------------


def model_load_kwargs(config: EncodeJobConfig, revision: str | None = None) -> dict[str, str]:
    """``subfolder`` / ``variant`` / ``revision`` of the job's model, those that are set."""
    kwargs = {"subfolder": config.model_subfolder, "variant": config.model_variant, "revision": revision or config.model_revision}
    return {k: v for k, v in kwargs.items() if v}


def load_model(name_or_path: str, storage_options: dict | None = None, **kwargs: str):
    """Load the encoder on the driver (for its geometry and fingerprint), with a clear error for a missing name.

    ``kwargs``: ``subfolder``, ``variant``, ``revision`` (hub ids: ``model.hub_revision`` is the commit loaded).
    """
    from latentflow.auto import AutoModel

    local = "://" not in name_or_path and not Path(name_or_path).exists() and not hub.is_hub_id(name_or_path)
    if local and not (hub.models_dir() / name_or_path).is_dir():
        raise CheckpointError(
            f"model {name_or_path!r} not found: expected a checkpoint folder {hub.models_dir() / name_or_path} "
            f"(config.json + model.safetensors). Train or copy it there, or pass model=<directory or s3:// URL>."
        )
    return AutoModel.from_pretrained(name_or_path, storage_options=storage_options, **kwargs)


def merged_sources_codec(out_url: str, codec: Codec, storage_options: dict, overwrite: bool) -> Codec:
    """``codec`` whose source URLs also list those already recorded in the output (appending keeps them all)."""
    existing = None if overwrite else read_output_codec(out_url, storage_options)
    if not existing:
        return codec
    return codec.with_sources([*existing.sources, *codec.sources])


# ---- the Ray plan -----------------------------------------------------------------------


WRITE_NUM_CPUS = 0.5
ACTOR_INIT_DEATHS = 2


def _run_ray(config: EncodeJobConfig, source, model, codec: Codec, pending: list, options: dict, progress: bool) -> list[ShardResult]:
    from ray.data import DataContext

    ensure_ray()
    nodes = alive_nodes()
    shape = pool_shape(config, nodes, len(pending))
    ctx = DataContext.get_current()
    saved = ctx.target_max_block_size, ctx.max_consecutive_actor_init_deaths
    ctx.target_max_block_size = None  # never split a shard's block: it is the unit of commit
    # replace an encoder actor whose process dies while it loads the model (Ray Data's default
    # fails the job on the first such death); a constructor that always fails still fails the job
    ctx.max_consecutive_actor_init_deaths = ACTOR_INIT_DEATHS
    sink = LatentDatasink(config.output, codec, config.formats, options)
    watcher = ProgressWatcher(config.output, options, total_shards=len(pending)) if progress else None
    watchdog = _watchdog(config, options, nodes, shape)
    try:
        # commits wait on storage, not on the CPU: a small reservation lets them overlap the encoder
        plan = encode_plan(config, source, model, pending, options, shape=shape)
        plan.write_datasink(sink, ray_remote_args={"num_cpus": shape.write_num_cpus})
    except KeyboardInterrupt:
        if watchdog is not None and watchdog.fired:  # the watchdog interrupted a job that cannot be placed
            raise ConfigError(watchdog.message) from None
        raise
    finally:
        ctx.target_max_block_size, ctx.max_consecutive_actor_init_deaths = saved
        if watchdog is not None:
            watchdog.stop()
        if watcher:
            watcher.stop()
    return sink.results


def _watchdog(config: EncodeJobConfig, options: dict, nodes: list[dict], shape: "PoolShape"):
    """A :class:`PlacementWatchdog` that interrupts the driver (main thread only) when tasks stay unplaced."""
    import _thread

    import fsspec

    from latentflow.pipeline.placement import PlacementWatchdog, pending_demand

    if not config.placement_timeout_s or threading.current_thread() is not threading.main_thread():
        return None
    explain = (f"the Ray cluster has {describe_nodes(nodes)}, and the job reserves {shape.num_cpus:g} CPU per encoder actor "
               f"({shape.actors} actors), {shape.read_num_cpus:g} per read and {shape.write_num_cpus:g} per write, each on "
               f"one node; free CPUs on the nodes (other jobs?), lower preprocess_num_cpus / num_actors, or raise placement_timeout_s")
    fs, root = fsspec.url_to_fs(config.output, **options)
    done = root.rstrip("/") + "/_done"

    def committed() -> int:  # one listing, no marker read
        fs.invalidate_cache(done)
        return len(fs.glob(done + "/*.json")) if fs.exists(done) else 0

    return PlacementWatchdog(config.placement_timeout_s, pending_demand, committed,
                             on_stall=lambda _: _thread.interrupt_main(), explain=explain)


def encode_plan(config: EncodeJobConfig, source, model, pending: list, options: dict,
                resources: dict | list[dict] | None = None, shape: "PoolShape | None" = None):
    """The lazy Ray Dataset of encoded shards: read + preprocess tasks, then the encoder pool.

    ``resources``: one node's ``{"CPU": n, "GPU": m}`` or a list of them, one per node (default:
    the alive nodes of the connected cluster); ``shape`` (default: :func:`pool_shape` of them).
    Nothing runs until the dataset is consumed, so a GPU plan can be built on a CPU-only cluster.
    """
    import ray

    shape = shape or pool_shape(config, _node_list(resources), len(pending))
    stride = getattr(model, "temporal_downsample_factor", None)
    run_config = build_processor(config.processor_config, model.downsample_factor, stride).config  # as the codec records it

    ds = ray.data.read_datasource(
        ShardDatasource(pending, source, source.storage_options, config.shard_retries),
        override_num_blocks=len(pending),
        num_cpus=shape.read_num_cpus,  # as the preprocess: Ray Data fuses the two into one task
    )
    ds = ds.map_batches(
        preprocess_batch, batch_size=None, batch_format="pyarrow", num_cpus=shape.read_num_cpus,
        fn_kwargs={"spec": processor_spec(run_config, model.downsample_factor)},
    )
    # each call gets a whole block (one shard, the unit of commit). Public map_batches refuses
    # batch_size=None when GPUs are requested; map_batches_internal (a DeveloperAPI) is
    # map_batches without that check, as GroupedData.map_groups uses it for whole groups on GPUs
    return ds.map_batches_internal(EncoderActor, batch_size=None, batch_format="pyarrow",
                                   **actor_options(config, options, model, len(pending), resources, shape))


MAX_AUTO_CPU_ACTORS = 8
MIN_ACTOR_CPUS = 0.1


@dataclass(frozen=True)
class PoolShape:
    """How the encoder pool uses a cluster: ``actors`` x ``threads`` intra-op threads, each
    reserving ``num_cpus`` logical CPUs and ``num_gpus`` GPUs (a fraction when actors share one);
    each read+preprocess task reserves ``read_num_cpus`` and each write task ``write_num_cpus``."""

    actors: int
    threads: int
    num_cpus: float
    num_gpus: float
    read_num_cpus: float = 1.0
    write_num_cpus: float = 0.5


def pool_shape(config: EncodeJobConfig, nodes: list[dict[str, float]], blocks: int | None = None) -> PoolShape:
    """The encoder pool for a cluster whose alive nodes have ``nodes`` = ``[{"CPU": c, "GPU": g}, ...]``.

    GPUs: ``actors_per_gpu`` actors per GPU, each reserving its share (``num_actors`` overrides;
    each actor then reserves ``1/k`` of a GPU, ``k`` actors per GPU rounded up, so every actor
    fits on one GPU). A lone actor leaves its GPU idle between blocks while Ray hands blocks in
    and out; measured on an H100 (``benchmarks/encode_throughput.py``), two per GPU encode
    1838 against 996 img/s in the steady state with the mid-size KL model at 128 px, and 371
    against 281 with an SD-1-size VAE at 256 px. CPU only: independent single-threaded
    actors, one per core up to :data:`MAX_AUTO_CPU_ACTORS`, then more threads per actor.
    Separate processes keep both cores busy where one two-thread process stalls at every
    intra-op barrier whenever a read, write or Ray's own work takes a core: measured with
    the mid-size KL model on 2 cores, 2 x 1 thread encodes about 0.86 of the bare model's rate in
    the steady state against 0.77 for 1 x 2 threads (``benchmarks/encode_throughput.py``).

    Ray places every task and actor on ONE node, so the fit is per node: however Ray spreads
    the actors, some node must keep a read task's CPUs free beside them (a pool that leaves
    none hangs Ray Data forever: two 1-CPU nodes, each holding a 0.5-CPU actor, never place a
    1-CPU read). Actors reserve half a CPU per thread, less where that is needed to fit; an
    automatic pool shrinks; reads reserve ``preprocess_num_cpus`` (default 1, half a CPU on
    nodes of one CPU). ``blocks``: pending shards; an automatic pool has no more actors.

    Raises:
        ConfigError: no pool fits the cluster (the message names its shape and the fix).
    """
    nodes = [n for n in nodes if n.get("CPU", 0) > 0]
    if not nodes:
        raise ConfigError("the Ray cluster has no alive node with a CPU; start a node with --num-cpus >= 1")
    biggest = max(n["CPU"] for n in nodes)
    read = config.preprocess_num_cpus if config.preprocess_num_cpus is not None else min(1.0, biggest / 2)
    write = min(WRITE_NUM_CPUS, read)
    gpus = sum(int(n.get("GPU", 0)) for n in nodes)
    on_gpu = gpus >= 1 and config.device != "cpu"
    hosts = [n for n in nodes if int(n.get("GPU", 0)) >= 1] if on_gpu else nodes  # where actors can go
    cores = max(1, int(sum(n["CPU"] for n in hosts)))
    if config.num_actors or on_gpu:
        actors = config.num_actors or gpus * config.actors_per_gpu  # no num_actors: on_gpu holds
        per_node = -(-actors // len(hosts))
        threads = config.torch_threads or max(1, int(min(n["CPU"] for n in hosts)) // per_node)
    elif config.torch_threads:
        threads = config.torch_threads
        actors = max(1, cores // threads)
    else:
        actors = min(cores, MAX_AUTO_CPU_ACTORS)
        threads = max(1, min(cores // actors, int(biggest)))
    auto = not config.num_actors
    if blocks is not None and auto:
        actors = max(1, min(actors, blocks))
    share = _gpu_share(actors, gpus) if on_gpu else 0
    wanted = 1.0 if on_gpu else 0.5 * threads
    while True:
        num_cpus = config.actor_num_cpus if config.actor_num_cpus is not None else _spare(wanted, nodes, hosts, actors, read, share)
        if config.actor_num_cpus is None and num_cpus is not None and not share and abs(num_cpus - read) < 1e-9:
            num_cpus = round(num_cpus - 0.001, 3)  # equal resources make Ray Data fuse the reads INTO the actors
        if num_cpus is not None and _fits(actors, num_cpus, nodes, hosts, read, share):
            return PoolShape(actors, threads, num_cpus, share, read, write)
        if not auto or actors == 1:
            raise ConfigError(
                f"no encoder pool of {actors} actor(s) fits the Ray cluster ({describe_nodes(nodes)}): Ray places each task on "
                f"one node, and however the actors ({num_cpus or MIN_ACTOR_CPUS:g} CPU each) are spread, some node must keep "
                f"{read:g} CPU free for a read task; set num_actors lower or preprocess_num_cpus=0.5, or use nodes with more CPUs")
        actors -= 1
        share = _gpu_share(actors, gpus) if on_gpu else 0


def _gpu_share(actors: int, gpus: int) -> float:
    """The GPU fraction per actor: ``1/k`` for ``k`` actors per GPU (rounded up), floored to Ray's
    1e-4 resource precision so ``k`` of them always fit on one GPU."""
    per_gpu = -(-actors // gpus)
    return 1.0 if per_gpu <= 1 else math.floor(10_000 / per_gpu) / 10_000


def _spare(wanted: float, nodes: list[dict], hosts: list[dict], actors: int, read: float, share: float) -> float | None:
    """The most CPUs per actor, up to ``wanted`` (in steps of 0.001, never below 0.1), with which
    the pool fits (:func:`_fits`); None when even 0.1 does not."""
    hi = math.floor(wanted * 1000)
    lo = round(MIN_ACTOR_CPUS * 1000)
    if hi < lo or not _fits(actors, lo / 1000, nodes, hosts, read, share):
        return None
    while lo < hi:  # fewer CPUs per actor fit at least as well: bisect for the largest that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _fits(actors, mid / 1000, nodes, hosts, read, share) else (lo, mid - 1)
    return lo / 1000


def _fits(actors: int, num_cpus: float, nodes: list[dict], hosts: list[dict], read: float, share: float) -> bool:
    """Whether ``actors`` of ``num_cpus`` (and ``share`` of a GPU) can all be placed, and however Ray
    places them, some node keeps ``read`` CPUs free.

    A node of ``c`` CPUs is left without room for a read once it holds ``floor((c - read) / u) + 1``
    actors of ``u`` CPUs; when that is more actors than it can hold, it never is. The pool is safe
    when the actors are too few to do that on every node that could take a read.
    """
    eps = 1e-9

    def room(n: dict) -> int:  # actors this node can hold
        by_gpu = math.floor(int(n.get("GPU", 0)) / share + eps) if share else actors
        return min(math.floor(n["CPU"] / num_cpus + eps), by_gpu)

    if sum(room(n) for n in hosts) < actors:
        return False
    readers = [n for n in nodes if n["CPU"] + eps >= read]
    if any(all(n is not h for h in hosts) for n in readers):
        return True  # a node no actor can use always has room for reads
    blocking = [math.floor((n["CPU"] - read) / num_cpus + eps) + 1 for n in readers]
    if any(b > room(n) for b, n in zip(blocking, readers)):
        return True
    return bool(readers) and actors < sum(blocking)


def _node_list(resources: dict | list[dict] | None) -> list[dict]:
    """Nodes as ``[{"CPU": .., "GPU": ..}]``: the connected cluster's, one node's dict, or the list given."""
    if resources is None:
        return alive_nodes()
    return [resources] if isinstance(resources, dict) else list(resources)


def actor_options(config: EncodeJobConfig, options: dict, model, blocks: int | None = None,
                  resources: dict | list[dict] | None = None, shape: PoolShape | None = None) -> dict[str, Any]:
    """``map_batches`` kwargs of the encoder pool (see :func:`pool_shape`).

    Ray Data's actor pools restart dead actors and retry their tasks by default
    (``max_restarts=-1``, ``max_task_retries=-1``): a killed encoder costs a re-encode of
    the blocks it held, never a lost or duplicated row (the sink commits whole shards).
    A block is a whole shard (seconds of compute), so CPU actors take one at a time: a
    second one queued on a busy actor would wait while another actor idles. There are never
    more actors than ``blocks`` (pending shards): each one costs a model load.
    """
    from ray.data import ActorPoolStrategy

    shape = shape or pool_shape(config, _node_list(resources), blocks)
    logger.info("encoder pool: %d actor(s) x %d thread(s), %g CPU and %g GPU each; reads %g CPU, writes %g CPU",
                shape.actors, shape.threads, shape.num_cpus, shape.num_gpus, shape.read_num_cpus, shape.write_num_cpus)
    return {
        "compute": ActorPoolStrategy(size=shape.actors, max_tasks_in_flight_per_actor=None if shape.num_gpus else 1),
        "num_gpus": shape.num_gpus,
        "num_cpus": shape.num_cpus,
        "fn_constructor_kwargs": {
            "model": config.model, "store": config.store.to_dict(), "dtype": config.dtype,
            "batch_size": config.batch_size, "device": "cuda" if shape.num_gpus else "cpu",
            "channels_last": config.channels_last, "torch_threads": shape.threads,
            "storage_options": options, "expected_fingerprint": model.fingerprint(),
            # actors load the commit the driver resolved, never a branch that moved meanwhile
            "model_kwargs": model_load_kwargs(config, getattr(model, "hub_revision", None)),
        },
    }


def ensure_ray() -> None:
    """Connect to ``$RAY_ADDRESS`` / the job's cluster when there is one, else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        # quiet while connecting (a refusal right after stays one line), Ray's INFO logs (Ray Data progress) after
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True, logging_level=logging.WARNING)
        logging.getLogger("ray").setLevel(logging.INFO)
    else:
        ray.init(include_dashboard=False, log_to_driver=True)
        start_reaper()  # a SIGKILLed driver would leave Ray's agents running ~65 s (see pipeline.reaper)


def join_cluster(config: EncodeJobConfig) -> list[dict] | None:
    """Join the running Ray cluster (``$RAY_ADDRESS``, or an initialized Ray) and check the job fits it:
    local paths on several nodes need ``shared_filesystem``, and the encoder pool must fit per node.
    Returns its alive nodes; None (nothing started) when the job will start its own local Ray.

    Raises:
        ConfigError: a check failed (the message names the cluster's shape and the fix).
    """
    import ray

    if not (ray.is_initialized() or os.environ.get("RAY_ADDRESS")):
        return None
    ensure_ray()
    nodes = alive_nodes()
    check_cluster(config, nodes)
    pool_shape(config, nodes)
    return nodes


class ProgressWatcher:
    """A tqdm bar over committed shards (rows, rows/s, errors), polled from the ``_done`` markers.

    Each poll is one listing of ``_done/``; only markers not seen before are read.
    """

    def __init__(self, out_url: str, storage_options: dict, total_shards: int, interval: float = 2.0):
        import fsspec
        from tqdm import tqdm

        self._fs, root = fsspec.url_to_fs(out_url, **storage_options)
        self._done = root.rstrip("/") + "/_done"
        self._seen: set[str] = set(self._list())  # committed before this job: not counted
        self._rows = self._errors = self._shards = 0
        self._bar = tqdm(total=total_shards, unit="shard", desc="encode", dynamic_ncols=True)
        self._t0 = time.perf_counter()
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _list(self) -> list[str]:
        self._fs.invalidate_cache(self._done)
        return self._fs.glob(self._done + "/*.json") if self._fs.exists(self._done) else []

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._update()

    def _update(self) -> None:
        try:
            new = [p for p in self._list() if p not in self._seen]
            contents = self._fs.cat(new) if new else {}
        except Exception:  # noqa: BLE001 - progress is best effort
            return
        for path, data in contents.items():
            marker = CommitMarker.from_dict(json.loads(data))
            self._seen.add(path)
            self._shards += 1
            self._rows += marker.rows
            self._errors += len(marker.errors)
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        self._bar.n = self._shards
        self._bar.set_postfix(rows=self._rows, rows_per_s=f"{self._rows / elapsed:.1f}", errors=self._errors, refresh=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._update()
        self._bar.close()
