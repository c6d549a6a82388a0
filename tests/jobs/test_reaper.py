"""A driver that started a local Ray and is SIGKILLed leaves no Ray process behind: Ray's own
fate-sharing stops the GCS, raylet and workers; the reaper stops the agents Ray leaves ~65 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from latentflow.jobs.reaper import ray_descendants

DRIVER = "from latentflow.jobs.cluster import ensure_ray; import time; ensure_ray(); print('up', flush=True); time.sleep(300)"


def _alive(pids: dict[int, str]) -> list[str]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":  # a zombie has exited
            out.append(stat.split(" ", 2)[1])
    return out


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the reaper reads /proc (Linux)")
def test_sigkilled_driver_leaves_no_ray_process():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, env=env)
    assert driver.stdout.readline().strip() == "up"
    time.sleep(2)
    ray_procs = ray_descendants(driver.pid)
    names = " ".join(_alive(ray_procs))
    assert "(raylet)" in names and "(ray::DashboardA)" in names and "(ray::RuntimeEnv)" in names, names  # comm: 15 chars

    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 20  # without the reaper the agents stay ~65 s
    while _alive(ray_procs) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(ray_procs), _alive(ray_procs)
