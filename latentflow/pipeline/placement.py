"""A watchdog that turns "Ray waits forever for room on a node" into an error naming the cluster's shape.

Ray places each task and actor on ONE node: a 1-CPU read task needs a node with a whole free
CPU, whatever the cluster's total. ``pipeline.runner.pool_shape`` sizes the encoder pool so a
read always fits; this watchdog catches what it cannot foresee (nodes leaving, other jobs
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
import threading
import time
from typing import Callable

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
                state = (repr(demand), self._progress()) if demand else None  # progress is listed only while tasks wait
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
