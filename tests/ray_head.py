"""Ray helpers of the tests: a `ray start --head` cluster on loopback for the README's commands as
subprocesses, polling, and the encoder actor processes of the test session's local Ray (fault injection)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

# isort: off
import ray  # noqa: F401  (puts Ray's vendored psutil on sys.path: first)
import psutil  # noqa: E402
# isort: on

BIN = Path(sys.executable).parent


def wait_for(predicate, timeout: float = 120.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def encoder_actor_pids() -> list[int]:
    """Encoder actor processes of THIS test session's Ray (descendants of this process only)."""
    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "EncoderActor" in " ".join(proc.cmdline()):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_processes(temp_dir: str) -> list[psutil.Process]:
    """Processes of the cluster started under ``temp_dir`` (and only those)."""
    procs = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if temp_dir in " ".join(proc.info["cmdline"] or []):
                procs.append(proc)
        except psutil.Error:
            continue
    return procs


def stop_cluster(temp_dir: str) -> None:
    procs = cluster_processes(temp_dir)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


@contextlib.contextmanager
def ray_head(num_cpus: int = 2) -> Iterator[tuple[str, str, dict]]:
    """Start a head node with its own ports and temp dir (stopped by PID, never `ray stop`).

    Yields:
        (GCS address for ``RAY_ADDRESS``, dashboard URL for ``ray job submit``, the env to run clients with).
    """
    temp_dir = tempfile.mkdtemp(prefix="lfray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PATH": f"{BIN}:{os.environ['PATH']}"}
    port, dashboard = free_port(), free_port()
    cmd = [
        str(BIN / "ray"), "start", "--head", f"--num-cpus={num_cpus}", "--object-store-memory=500000000", "--include-dashboard=true",
        f"--port={port}", f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}",
        f"--metrics-export-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        f"--temp-dir={temp_dir}", "--disable-usage-stats", "--dashboard-host=127.0.0.1",
    ]
    try:
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}", env
    finally:
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
