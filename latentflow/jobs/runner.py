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
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from latentflow.encode.refresh import refresh_captions
from latentflow.encode.shard import processor_spec
from latentflow.errors import ConfigError
from latentflow.format.marker import CommitMarker
from latentflow.jobs.cluster import ensure_ray, join_cluster
from latentflow.jobs.config import EncodeJobConfig
from latentflow.jobs.datasink import LatentDatasink, ShardResult
from latentflow.jobs.datasource import ShardDatasource
from latentflow.jobs.placement import PoolRequest, PoolShape, nodes_of, pool_shape, reserve
from latentflow.jobs.plan import EncodePlan, build_plan, load_text_encoders
from latentflow.jobs.preflight import alive_nodes, describe_nodes
from latentflow.jobs.stages import EncoderActor, TextEncoderActor, preprocess_batch
from latentflow.store.writer import finalize

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
    text: dict[str, dict[str, Any]] = field(default_factory=dict)  # per text column, over the output (latentflow.json's "text")
    captions: dict[str, int] | None = None  # refresh_captions: latentflow.encode.refresh.CaptionRefresh's counts

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
        out.pop("text")
        out.pop("captions")
        out["sample_errors"] = out.pop("errors")
        return {**out, "images_per_s": self.images_per_s}


def run_encode_job(config: EncodeJobConfig, progress: bool = True, verbose: bool = False,
                   shards: list | None = None) -> EncodeSummary:
    """Encode every not-yet-committed shard of ``config.source`` into ``config.output``.

    Args:
        config: the job config.
        progress: show progress by samples (committed rows, rows/s, ETA) on stderr.
        verbose: Ray's own logs and Ray Data's progress bars too.
        shards: what :func:`~latentflow.jobs.preflight.check_before_ray` returned for ``config``, when the caller
            already ran it (the job script does, before it imports Ray and torch); None runs it here.

    Returns:
        an :class:`EncodeSummary` (rows and errors of THIS run; the output's totals are in
        ``latentflow.json``).

    Raises:
        CodecMismatchError: the output was written by another model/processor config and
            ``config.overwrite`` is False.
        CheckpointError: the model cannot be found.
    """
    if "://" not in config.output:  # Ray's workers write it: their working directory is not the driver's
        config = config.replace(output=os.path.abspath(config.output))
    plan = build_plan(config, shards)  # ConfigError / CheckpointError before Ray starts; nothing written
    join_cluster(config, verbose)  # a running cluster: local paths and the pool's fit are checked before anything is written
    plan = plan.prepare(config.overwrite)  # records the codec; refuses another encoder's output (CodecMismatchError)
    pending = plan.pending
    summary = EncodeSummary(config.output, len(plan.shards), len(plan.shards) - len(pending), max_error_rate=config.max_error_rate)
    if config.refresh_captions:  # edited captions of committed shards: their text columns only, on the driver
        report = refresh_captions(plan, load_text_encoders(plan.text_encoders, plan.storage_options), tuple(config.formats))
        summary.captions = asdict(report)
    logger.info("%d shards, %d already committed, %d to encode", len(plan.shards), len(plan.committed), len(pending))
    start = time.perf_counter()
    results = _run_ray(config, plan, progress, verbose) if pending else []
    summary.seconds = time.perf_counter() - start
    shard_errors = _tally(summary, results)
    info = finalize(config.output, plan.codec, plan.storage_options,
                    {**summary.run_dict(), "shard_errors": shard_errors, "failed_shards": summary.shards_failed})
    summary.totals = OutputTotals.from_counts(info["counts"])
    summary.text = info.get("text", {})
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


# ---- the Ray plan -----------------------------------------------------------------------


ACTOR_INIT_DEATHS = 2


def _run_ray(config: EncodeJobConfig, plan: EncodePlan, progress: bool, verbose: bool) -> list[ShardResult]:
    from ray.data import DataContext

    ensure_ray(config.connect_timeout_s, verbose)
    nodes = alive_nodes()
    pending = plan.pending
    shape = pool_shape(PoolRequest.of(config), encoder_nodes(config, nodes), len(pending))
    ctx = DataContext.get_current()
    saved = ctx.target_max_block_size, ctx.max_consecutive_actor_init_deaths
    ctx.target_max_block_size = None  # never split a shard's block: it is the unit of commit
    # replace an encoder actor whose process dies while it loads the model (Ray Data's default
    # fails the job on the first such death); a constructor that always fails still fails the job
    ctx.max_consecutive_actor_init_deaths = ACTOR_INIT_DEATHS
    sink = LatentDatasink(config.output, plan.codec, config.formats, plan.storage_options)
    watcher = ProgressWatcher(config.output, plan.storage_options, total_shards=len(pending),
                              total_samples=_expected_samples(pending)) if progress else None
    watchdog = _watchdog(config, plan.storage_options, nodes, shape)
    restore_sigint = _interruptible()
    try:
        dataset = encode_dataset(config, plan, shape=shape)
        # commits wait on storage, not on the CPU: a small reservation lets them overlap the encoder
        dataset.write_datasink(sink, ray_remote_args={"num_cpus": shape.write_num_cpus})
    except KeyboardInterrupt:
        if watchdog is not None and watchdog.fired:  # the watchdog interrupted a job that cannot be placed
            raise ConfigError(watchdog.message) from None
        raise
    finally:
        restore_sigint()
        ctx.target_max_block_size, ctx.max_consecutive_actor_init_deaths = saved
        if watchdog is not None:
            watchdog.stop()
        if watcher:
            watcher.stop()
    return sink.results


def _interruptible():
    """Make SIGINT raise KeyboardInterrupt in the main thread while the job runs; returns the undo.

    A driver started with SIGINT ignored (a background job of a non-interactive shell, or a child of a
    process that ignores it) inherits SIG_IGN, and then neither Ctrl-C nor the placement watchdog's
    ``interrupt_main`` (a no-op for an unhandled signal) could stop the job: it hung past
    ``placement_timeout_s``. A handler set by the caller is kept."""
    import signal

    if threading.current_thread() is not threading.main_thread() or callable(signal.getsignal(signal.SIGINT)):
        return lambda: None
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    return lambda: signal.signal(signal.SIGINT, previous)


def _watchdog(config: EncodeJobConfig, options: dict, nodes: list[dict], shape: "PoolShape"):
    """A :class:`PlacementWatchdog` that interrupts the driver (main thread only) when tasks stay unplaced."""
    import _thread

    import fsspec

    from latentflow.jobs.placement import PlacementWatchdog, pending_demand

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


def encode_dataset(config: EncodeJobConfig, plan: EncodePlan, resources: dict | list[dict] | None = None,
                   shape: PoolShape | None = None):
    """The lazy Ray Dataset of encoded shards: read + preprocess tasks, then the encoder pool.

    ``resources``: one node's ``{"CPU": n, "GPU": m}`` or a list of them, one per node (default:
    the alive nodes of the connected cluster); ``shape`` (default: :func:`pool_shape` of them).
    Nothing runs until the dataset is consumed, so a GPU plan can be built on a CPU-only cluster.
    """
    import ray

    pending = plan.pending
    shape = shape or pool_shape(PoolRequest.of(config), encoder_nodes(config, nodes_of(resources)), len(pending))
    run_config = plan.codec.processor  # the processor as run (clip lengths forced), as the codec records it
    ds = ray.data.read_datasource(
        ShardDatasource(pending, plan.source, plan.source.storage_options, config.shard_retries),
        override_num_blocks=len(pending),
        num_cpus=shape.read_num_cpus,  # as the preprocess: Ray Data fuses the two into one task
    )
    ds = ds.map_batches(
        preprocess_batch, batch_size=None, batch_format="pyarrow", num_cpus=shape.read_num_cpus,
        fn_kwargs={"spec": processor_spec(run_config, plan.downsample_factor, next(iter(plan.codec.tracks), None))},
    )
    # each call gets a whole block (one shard, the unit of commit). Public map_batches refuses
    # batch_size=None when GPUs are requested; map_batches_internal (a DeveloperAPI) is
    # map_batches without that check, as GroupedData.map_groups uses it for whole groups on GPUs
    ds = ds.map_batches_internal(EncoderActor, batch_size=None, batch_format="pyarrow", **actor_options(config, plan, shape))
    if config.text_pool is not None:  # the captions in a pool of their own, one whole shard per call as above
        ds = ds.map_batches_internal(TextEncoderActor, batch_size=None, batch_format="pyarrow", **text_pool_options(config, plan))
    return ds


def encoder_nodes(config: EncodeJobConfig, nodes: list[dict]) -> list[dict]:
    """The nodes as the encoder pool sees them: what the text pool reserves (``text_pool``) set aside first."""
    pool = config.text_pool
    return reserve(nodes, pool.num_actors, pool.cpus, pool.num_gpus) if pool is not None else nodes


def text_pool_options(config: EncodeJobConfig, plan: EncodePlan) -> dict[str, Any]:
    """``map_batches`` kwargs of the text-encoder pool (``text_pool``): its actors, reservation and encoders."""
    from ray.data import ActorPoolStrategy

    pool = config.text_pool
    logger.info("text pool: %d actor(s), %g CPU and %g GPU each", pool.num_actors, pool.cpus, pool.num_gpus)
    return {
        "compute": ActorPoolStrategy(size=pool.num_actors, max_tasks_in_flight_per_actor=None if pool.num_gpus else 1),
        "num_cpus": pool.cpus,
        "num_gpus": pool.num_gpus,
        "fn_constructor_kwargs": {
            "text_encoders": [t.to_dict() for t in plan.text_encoders],
            "text_fingerprints": {t.name: t.fingerprint for t in plan.codec.text},
            "device": "cuda" if pool.num_gpus else "cpu", "torch_threads": pool.threads, "storage_options": plan.storage_options,
        },
    }


def actor_options(config: EncodeJobConfig, plan: EncodePlan, shape: PoolShape) -> dict[str, Any]:
    """``map_batches`` kwargs of the encoder pool of ``shape`` (see :func:`pool_shape`).

    Ray Data's actor pools restart dead actors and retry their tasks by default
    (``max_restarts=-1``, ``max_task_retries=-1``): a killed encoder costs a re-encode of
    the blocks it held, never a lost or duplicated row (the sink commits whole shards).
    A block is a whole shard (seconds of compute), so CPU actors take one at a time: a
    second one queued on a busy actor would wait while another actor idles. There are never
    more actors than pending shards: each one costs a model load.
    """
    from ray.data import ActorPoolStrategy

    logger.info("encoder pool: %d actor(s) x %d thread(s), %g CPU and %g GPU each; reads %g CPU, writes %g CPU",
                shape.actors, shape.threads, shape.num_cpus, shape.num_gpus, shape.read_num_cpus, shape.write_num_cpus)
    return {
        "compute": ActorPoolStrategy(size=shape.actors, max_tasks_in_flight_per_actor=None if shape.num_gpus else 1),
        "num_gpus": shape.num_gpus,
        "num_cpus": shape.num_cpus,
        "fn_constructor_kwargs": {
            # actors load what the plan resolved (a hub id's pinned commit), never the user's string again
            "model_ref": plan.model_ref.to_dict(), "store": plan.codec.store.to_dict(), "dtype": config.dtype,
            "batch_size": config.batch_size, "device": "cuda" if shape.num_gpus else "cpu",
            "channels_last": config.channels_last, "torch_threads": shape.threads,
            "storage_options": plan.storage_options, "expected_weights_sha256": plan.codec.model.weights_sha256,
            "text_encoders": [] if config.text_pool is not None else [t.to_dict() for t in plan.text_encoders],
            "text_fingerprints": {t.name: t.fingerprint for t in plan.codec.text},
            "tracks": [t.to_dict() for t in plan.codec.tracks],
        },
    }


def _expected_samples(shards: list) -> int | None:
    """Samples the shards hold when the listing knows it (folders, HF datasets), else None (tars, Parquet)."""
    sizes = [s.stop - s.start for s in shards if s.start is not None and s.stop is not None]
    return sum(sizes) if len(sizes) == len(shards) else None


class ProgressWatcher:
    """Progress by samples on stderr: committed rows, rows/s and an ETA (tqdm on a terminal, a log line
    per interval otherwise), polled from the ``_done`` markers.

    Each poll is one listing of ``_done/``; only markers not seen before are read. The total is in
    samples when the listing knows each shard's size (folders, HF datasets), else in shards.
    """

    def __init__(self, out_url: str, storage_options: dict, total_shards: int, total_samples: int | None = None,
                 interval: float = 2.0):
        import sys

        import fsspec
        from tqdm import tqdm

        self._fs, root = fsspec.url_to_fs(out_url, **storage_options)
        self._done = root.rstrip("/") + "/_done"
        self._seen: set[str] = set(self._list())  # committed before this job: not counted
        self._rows = self._errors = self._shards = 0
        self._by_samples = total_samples is not None
        self._tty = sys.stderr.isatty()
        self._bar = tqdm(total=total_samples if self._by_samples else total_shards, unit="sample" if self._by_samples else "shard",
                         desc="encode", dynamic_ncols=True, disable=not self._tty)
        self._total = self._bar.total
        self._t0 = time.perf_counter()
        self._stop = threading.Event()
        self._interval = interval if self._tty else max(interval, 10.0)
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
        done = self._rows + self._errors if self._by_samples else self._shards
        self._bar.n = done
        self._bar.set_postfix(rows=self._rows, errors=self._errors, shards=self._shards, refresh=True)
        if not self._tty and new:
            rate = done / elapsed
            eta = f"{(self._total - done) / rate:.0f} s" if rate > 0 and self._total else "?"
            logger.warning("encode: %d/%s %s, %d rows committed (%.1f rows/s), %d errors, ETA %s", done, self._total,
                           "samples" if self._by_samples else "shards", self._rows, self._rows / elapsed, self._errors, eta)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._update()
        self._bar.close()
