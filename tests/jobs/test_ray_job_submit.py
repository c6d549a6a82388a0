"""The README way: `ray start --head` + `ray job submit`. Without the README's auth step Ray's own message shows; with it,
the job runs (tests/journey/test_readme_commands.py submits the README's command and reads its output back)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_submit_without_the_readme_auth_step_fails_with_ray_s_message(ray_cluster):
    """What users saw before the README showed the auth step: the suite sees Ray's default, never hides it."""
    _, address, env = ray_cluster
    done = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", address, "--", "python", "-c", "print(1)"],
                          env={k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "authentication token" in (done.stdout + done.stderr).lower()
