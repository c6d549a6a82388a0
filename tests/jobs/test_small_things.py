"""``latentflow --version``; matplotlib installed by the base install (and pinned), and plots that
degrade to one warning where it is missing anyway."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

import latentflow

ROOT = Path(__file__).resolve().parents[2]


def test_version_flag():
    done = subprocess.run([sys.executable, "-m", "latentflow.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"latentflow {latentflow.__version__}"


def test_matplotlib_is_a_base_dependency_and_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("matplotlib") for d in project["dependencies"])
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line.startswith("matplotlib==")]
    assert len(pins) == 1


PLOTS_WITHOUT_MATPLOTLIB = """
import sys, warnings
import numpy as np
sys.modules["matplotlib"] = None  # as if it were not installed
from latentflow.evaluation import plots
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = [plots.reconstruction_grid(np.zeros((1, 3, 8, 8)), {}, sys.argv[1] + "/a.png"),
           plots.latent_histograms(np.zeros((2, 10)), sys.argv[1] + "/b.png"),
           plots.codebook_histogram(np.ones(4), sys.argv[1] + "/c.png")]
print(out, len(caught), caught[0].message)
"""


def test_plots_degrade_to_one_warning_without_matplotlib(tmp_path):
    done = subprocess.run([sys.executable, "-c", PLOTS_WITHOUT_MATPLOTLIB, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("[None, None, None] 1 matplotlib is not installed"), done.stdout
    assert not list(tmp_path.iterdir())


def test_plots_write_pngs_with_matplotlib(tmp_path):
    import numpy as np

    from latentflow.evaluation import plots

    path = plots.codebook_histogram(np.arange(8), str(tmp_path / "codes.png"))
    assert path == str(tmp_path / "codes.png") and (tmp_path / "codes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
