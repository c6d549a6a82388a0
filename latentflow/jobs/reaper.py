"""Stop the local Ray a driver started when the driver dies without cleaning up (SIGKILL, OOM kill).

Ray 2.60's own fate-sharing stops the GCS, the raylet and the workers within seconds of such
a death, but ``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent`` stay about 65 s more: on
seeing the raylet gone they report its "unexpected" death to the (dead) GCS, with a 60 s
timeout hard-coded in ``ray._private.utils.publish_error_to_driver``, before exiting.
Measured on this machine: ``kill -9`` of a driver that ran ``ray.init()``, then ``ps``.

The reaper is a small process the driver starts beside its local Ray (in its own session, so
Ctrl-C on the driver's process group leaves it alive). While the driver lives, it records the
driver's Ray descendants (pid and start time) every second; when the driver's end of its stdin
pipe closes (the driver exited, however), it kills those still running. A pid reused since is
left alone: its start time differs. Linux only (``/proc``); elsewhere it is not started.

Example::

    start_reaper()          # right after ray.init() started a local Ray
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

_REAPER: subprocess.Popen | None = None  # kept referenced: its stdin pipe closes when this process ends


def start_reaper() -> None:
    """Start the reaper of this process's local Ray (once per process; a no-op without ``/proc``)."""
    global _REAPER
    if _REAPER is not None or not os.path.isdir("/proc/self"):
        return
    _REAPER = subprocess.Popen([sys.executable, "-m", "latentflow.jobs.reaper", str(os.getpid())],
                               stdin=subprocess.PIPE, start_new_session=True)


def _stat(pid: int) -> tuple[int, str] | None:
    """``(ppid, start time)`` of ``pid`` from ``/proc``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[19]  # fields 4 and 22 of proc(5), counted after the "(comm)"


def _is_ray(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"ray" in f.read()
    except OSError:
        return False


def ray_descendants(root: int) -> dict[int, str]:
    """``{pid: start time}`` of the Ray processes below ``root`` (raylet, GCS, agents, workers)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) is not None:
            children.setdefault(st[0], []).append(int(name))
            starts[int(name)] = st[1]
    out, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid != os.getpid() and _is_ray(pid):
            out[pid] = starts[pid]
        todo += children.get(pid, [])
    return out


def reap(driver: int, poll_s: float = 1.0, grace_s: float = 2.0) -> list[int]:
    """Record ``driver``'s Ray descendants until stdin closes, then kill the survivors. Returns their pids."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seen: dict[int, str] = {}
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], poll_s)
        if readable and not os.read(sys.stdin.fileno(), 1024):
            break  # the driver is gone
        seen.update(ray_descendants(driver))
    time.sleep(grace_s)  # let a clean shutdown (ray.shutdown at exit) finish first
    killed = []
    for pid, start in seen.items():
        st = _stat(pid)
        if st is not None and st[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
    return killed


if __name__ == "__main__":
    reap(int(sys.argv[1]))
