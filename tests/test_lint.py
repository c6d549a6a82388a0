"""The tree passes the project's ruff rules (pyproject.toml [tool.ruff]): pyflakes, pycodestyle errors and
warnings, import order."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed: pip install -e '.[test]' installs it")
    done = subprocess.run([ruff, "check", "--no-cache", "latentflow", "tests", "jobs", "benchmarks", "data"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
