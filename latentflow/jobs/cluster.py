"""Joining or starting Ray for a job, never hanging on a cluster that is gone.

- ``$RAY_ADDRESS`` set (as inside ``ray job submit``): the job joins that cluster. Its GCS port is
  probed first, for ``connect_timeout_s``; a cluster that does not answer fails the job with one
  line naming ``RAY_ADDRESS`` instead of Ray's endless ``Failed to get cluster ID from GCS server``.
- ``$RAY_ADDRESS`` unset: the job starts its own local Ray (``address="local"``). A plain
  ``ray.init()`` would join the cluster named in Ray's address file (``/tmp/ray/ray_current_cluster``)
  even when that cluster died long ago, and hang; a stale file is reported in one log line and ignored.

Ray's own INFO logs and Ray Data's progress bars stay quiet unless ``verbose``: the job prints its own
progress by samples.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from latentflow.errors import ConfigError
from latentflow.jobs.placement import PoolRequest, pool_shape
from latentflow.jobs.preflight import alive_nodes, check_cluster
from latentflow.jobs.reaper import start_reaper

logger = logging.getLogger(__name__)
ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")  # where `ray start` records the last cluster's GCS address


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a GCS address ``host:port`` (``ray://`` and ``http://`` URLs too); None for ``auto``."""
    if address in ("", "auto", "local"):
        return None
    rest = address.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    return (host or "127.0.0.1", int(port)) if port.isdigit() else None


def answers(address: str, timeout_s: float) -> bool:
    """Whether something listens at ``address`` within ``timeout_s`` (a TCP connect, no Ray)."""
    hp = _host_port(address)
    if hp is None:
        return True
    try:
        with socket.create_connection(hp, timeout=timeout_s):
            return True
    except OSError:
        return False


def stale_address_file(timeout_s: float = 1.0) -> str | None:
    """The address in Ray's address file when no cluster answers there (None: no file, or a live cluster)."""
    try:
        address = ADDRESS_FILE.read_text().strip()
    except OSError:
        return None
    return address if address and not answers(address, timeout_s) else None


def ensure_ray(connect_timeout_s: float = 30.0, verbose: bool = False) -> None:
    """Join ``$RAY_ADDRESS``'s cluster, else start a local Ray; already connected: nothing.

    Raises:
        ConfigError: ``$RAY_ADDRESS`` names a cluster that does not answer within ``connect_timeout_s``.
    """
    import ray

    if ray.is_initialized():
        return
    _quiet_ray(verbose)
    address = os.environ.get("RAY_ADDRESS", "")
    if address:
        if not answers(address, connect_timeout_s):
            raise ConfigError(f"no Ray cluster answers at RAY_ADDRESS={address!r} (waited {connect_timeout_s:g} s): start it "
                              "(ray start --head) or unset RAY_ADDRESS to run on a local Ray")
        # quiet while connecting (a refusal right after stays one line)
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
    else:
        stale = stale_address_file()
        if stale:
            logger.warning("ignoring Ray's address file %s: no cluster answers at %s (a cluster that is gone); "
                           "starting a local Ray", ADDRESS_FILE, stale)
        ray.init(address="local", include_dashboard=False, log_to_driver=True,
                 logging_level=logging.INFO if verbose else logging.WARNING)
        start_reaper()  # a SIGKILLed driver would leave Ray's agents running ~65 s (see pipeline.reaper)
    if verbose:
        logging.getLogger("ray").setLevel(logging.INFO)


def _quiet_ray(verbose: bool) -> None:
    """Ray Data's progress bars and start-up log lines off unless ``verbose`` (the job reports its own progress)."""
    if verbose:
        return
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # first: turning the bars off logs a line at INFO
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def join_cluster(config, verbose: bool = False) -> list[dict] | None:
    """Join the running Ray cluster (``$RAY_ADDRESS``, or an initialized Ray) and check the job fits it:
    local paths on several nodes need ``shared_filesystem``, and the encoder pool must fit per node.
    Returns its alive nodes; None (nothing started) when the job will start its own local Ray.

    Raises:
        ConfigError: a check failed (the message names the cluster's shape and the fix).
    """
    import ray

    if not (ray.is_initialized() or os.environ.get("RAY_ADDRESS")):
        return None
    ensure_ray(config.connect_timeout_s, verbose)
    nodes = alive_nodes()
    check_cluster(config, nodes)
    pool_shape(PoolRequest.of(config), nodes)
    return nodes
