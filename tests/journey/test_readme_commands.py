"""The README's shell commands run as written, in order, on a fresh copy of the repository (no fresh venv):
Quick start's encode, the Ray cluster block (`ray start --head` + `export RAY_AUTH_MODE=token` + `ray job
submit`), reading back, training (step counts lowered through `train.max_steps` overrides, nothing else), video
and evaluation. Any non-zero exit fails the test with the command's output."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.ray_head import stop_cluster

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RAY_TEMP = "/tmp/latentflow-ray"  # the README's `ray start --temp-dir`
TRAIN = re.compile(r"jobs/train_(autoencoder|prior)\.py")
STEPS = "train.max_steps=2"
SAMPLE_STEPS = "sample.steps=2"  # a prior's sampling steps are step counts too (MaskGIT, discrete diffusion, flow)


def readme_commands(text: str) -> list[str]:
    """The README's ```bash blocks as scripts, in order, each as written except: Quick start's install-then-run
    lines keep their run part (the venv exists), the test command (the suite itself) is left out, and training
    commands get ``train.max_steps=2``."""
    blocks: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines = []
        for line in block.splitlines():
            if "pip install" in line:
                line = line.rsplit("&&", 1)[-1].strip()
                if "pytest" in line:
                    continue
            lines.append(_lower_steps(line) if TRAIN.search(line) else line)
        if any(line.strip() and not line.strip().startswith("#") for line in lines):
            blocks.append(textwrap.dedent("\n".join(lines)).strip())
    return blocks


def _lower_steps(line: str) -> str:
    command, _, comment = line.partition("  #")
    command = re.sub(r"\btrain\.max_steps=\d+", STEPS, command).rstrip() + ("" if STEPS in command else f" {STEPS}")
    if "train_prior.py" in command:
        command = re.sub(r"\bsample\.steps=\d+", SAMPLE_STEPS, command) + ("" if SAMPLE_STEPS in command else f" {SAMPLE_STEPS}")
    return command + (f"  #{comment}" if comment else "")


def test_readme_commands_are_parsed_as_a_user_reads_them():
    commands = readme_commands((ROOT / "README.md").read_text())
    assert commands[0] == "python jobs/encode_dataset.py --config configs/encode/default.yaml"
    script = "\n".join(commands)
    assert "ray start --head" in script and "export RAY_AUTH_MODE=token" in script
    assert all(STEPS in line for line in script.splitlines() if TRAIN.search(line))
    assert "pytest" not in script


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    work = Path(tempfile.mkdtemp(prefix="lfreadme-", dir="/tmp"))
    shutil.copytree(ROOT, work / "repo", ignore=shutil.ignore_patterns(".git", ".venv", "outputs", ".raytmp", "runs",
                                                                        "__pycache__", "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["PATH"] = f"{BIN}:{env['PATH']}"
    log = []
    try:
        blocks = readme_commands((ROOT / "README.md").read_text())
        script = "set -xeo pipefail\n" + "\n".join(blocks)
        done = subprocess.run(["bash", "-c", script], cwd=work / "repo", env=env, capture_output=True, text=True, timeout=1500)
        log = [done.stdout[-4000:], done.stderr[-6000:]]
        assert done.returncode == 0, "\n".join(log)
        assert (work / "repo" / "outputs" / "default" / "latentflow.json").exists()
    finally:
        stop_cluster(RAY_TEMP)
        shutil.rmtree(work, ignore_errors=True)
