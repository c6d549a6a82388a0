"""Placing the encode job on a Ray cluster: the encoder pool's shape, and a watchdog that turns
"Ray waits forever for room on a node" into an error naming the cluster's shape.

Ray places each task and actor on ONE node: a 1-CPU read task needs a node with a whole free
CPU, whatever the cluster's total. :func:`pool_shape` sizes the encoder pool so a read always
fits; the watchdog catches what it cannot foresee (nodes leaving, other jobs
holding CPUs, GPUs an autoscaler never brings). It polls the cluster's pending resource
demand (what ``ray status`` shows as "Pending Demands") and the output's commit markers; when
the same demand has waited ``timeout_s`` with no shard committed, it calls ``on_stall``.

Example::

    dog = PlacementWatchdog(120, pending_demand, committed_count, on_stall=lambda msg: ...)
    ...                     # run the job
    dog.stop()
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

from latentflow.errors import ConfigError
from latentflow.jobs.preflight import alive_nodes, describe_nodes

logger = logging.getLogger(__name__)


def pending_demand() -> list[tuple[dict[str, float], int]]:
    """``[(bundle, count)]`` of tasks and actors the cluster cannot place now (``[]`` when all are placed)."""
    import ray
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(ray.get_runtime_context().gcs_address)
    out = []
    for demand in status.resource_demands.ray_task_actor_demand:
        out += [(dict(b.bundle), int(b.count)) for b in demand.bundles_by_count]
    return out


def describe_demand(demand: list[tuple[dict[str, float], int]]) -> str:
    """``"2 x {CPU: 1}"``, comma-separated."""
    return ", ".join(f"{n} x {{{', '.join(f'{k}: {v:g}' for k, v in sorted(b.items()))}}}" for b, n in demand)


class PlacementWatchdog:
    """Calls ``on_stall(message)`` once when unplaceable demand has lasted ``timeout_s`` with no progress.

    Args:
        timeout_s: how long the same pending demand may last with no new commit.
        demand: returns the pending demand (see :func:`pending_demand`).
        progress: returns a number that grows as the job progresses (committed shards).
        on_stall: called from the watchdog thread with the message.
        explain: text appended to the message (the cluster's shape and the fix).
        interval_s: seconds between polls.
    """

    def __init__(self, timeout_s: float, demand: Callable[[], list], progress: Callable[[], int],
                 on_stall: Callable[[str], None], explain: str = "", interval_s: float = 5.0):
        self.timeout_s, self.interval_s = timeout_s, min(interval_s, max(timeout_s / 4, 0.05))
        self._demand, self._progress, self._on_stall, self._explain = demand, progress, on_stall, explain
        self.message: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="placement-watchdog", daemon=True)
        self._thread.start()

    @property
    def fired(self) -> bool:
        return self.message is not None

    def _loop(self) -> None:
        since, last = None, None
        while not self._stop.wait(self.interval_s):
            try:
                demand = self._demand()
                # only whether something waits and the progress count: the pending bundles' list changes shape
                # while Ray Data retries and re-requests them (a loaded 2-core VM never saw it hold still)
                state = self._progress() if demand else None
            except Exception as err:  # noqa: BLE001 - a failed poll is no evidence of a stall
                logger.debug("placement watchdog poll failed: %s", err)
                continue
            if state is None or state != last:
                since, last = time.monotonic(), state
                continue
            if time.monotonic() - since >= self.timeout_s:
                self.message = (f"tasks waited {self.timeout_s:g} s for room on a node and none came "
                                f"(pending: {describe_demand(demand)}); {self._explain}").rstrip("; ")
                self._on_stall(self.message)
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# ---- the encoder pool ------------------------------------------------------------------

@dataclass(frozen=True)
class PoolRequest:
    """What a job asks of the encoder pool (the pool-shape keys of ``EncodeJobConfig``)."""

    num_actors: int | None = None
    actors_per_gpu: int = 2
    actor_num_cpus: float | None = None
    torch_threads: int | None = None
    preprocess_num_cpus: float | None = None
    device: str = "auto"

    @classmethod
    def of(cls, config) -> "PoolRequest":
        return cls(config.num_actors, config.actors_per_gpu, config.actor_num_cpus, config.torch_threads,
                   config.preprocess_num_cpus, config.device)



WRITE_NUM_CPUS = 0.5


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


def pool_shape(config: PoolRequest, nodes: list[dict[str, float]], blocks: int | None = None) -> PoolShape:
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


def reserve(nodes: list[dict[str, float]], actors: int, num_cpus: float, num_gpus: float = 0.0) -> list[dict[str, float]]:
    """The nodes left after placing ``actors`` of (``num_cpus``, ``num_gpus``) each, biggest free node first (how a
    second pool, the text encoders', is set aside before the encoder pool is sized).

    Raises:
        ConfigError: they do not fit (naming the cluster's shape and the pool).
    """
    left = [dict(n) for n in nodes]
    for _ in range(actors):
        fits = [n for n in left if n.get("CPU", 0) + 1e-9 >= num_cpus and n.get("GPU", 0) + 1e-9 >= num_gpus]
        if not fits:
            raise ConfigError(f"the text pool's {actors} actor(s) of {num_cpus:g} CPU and {num_gpus:g} GPU each do not fit the "
                              f"Ray cluster ({describe_nodes(nodes)}); lower text_pool.num_actors, num_cpus or num_gpus")
        node = max(fits, key=lambda n: (n.get("GPU", 0) - num_gpus, n["CPU"] - num_cpus) if num_gpus else (n["CPU"],))
        node["CPU"] = round(node["CPU"] - num_cpus, 6)
        if num_gpus:
            node["GPU"] = round(node.get("GPU", 0) - num_gpus, 6)
    return left


def nodes_of(resources: dict | list[dict] | None) -> list[dict]:
    """Nodes as ``[{"CPU": .., "GPU": ..}]``: the connected cluster's, one node's dict, or the list given."""
    if resources is None:
        return alive_nodes()
    return [resources] if isinstance(resources, dict) else list(resources)
