"""The README's shell commands run as written, in order, on a fresh copy of the repository (no fresh venv):
Quick start's encode, the Ray cluster block (`ray start --head` + `export RAY_AUTH_MODE=token` + `ray job
submit`), reading back, training (step counts lowered through `train.max_steps` overrides, nothing else), video
and evaluation. Any non-zero exit fails the test with the command's output.

The script runs once per module; the tests after the first check what it left: the `ray job submit` output
read back with `datasets`, the `--num-workers 2` run resuming on two workers, and each shipped prior config's
samples (``tests/journey/test_shipped_configs.py`` chains the configs the README does not run)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.ray_head import stop_cluster

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RAY_TEMP = "/tmp/latentflow-ray"  # the README's `ray start --temp-dir`
TRAIN = re.compile(r"jobs/train_(autoencoder|prior)\.py")
STEPS = "train.max_steps=2"  # the first run of a training config; each rerun of it (a resume) trains 2 more
SAMPLE_STEPS = "sample.steps=2"  # a prior's sampling steps are step counts too (MaskGIT, discrete diffusion, flow)


def readme_commands(text: str) -> list[str]:
    """The README's ```bash blocks as scripts, in order, each as written except: Quick start's install-then-run
    lines keep their run part (the venv exists), the test commands (the suite itself) are left out, and training
    commands get ``train.max_steps=2`` (2 more for each rerun of the same config: the README's resume)."""
    blocks: list[str] = []
    runs: dict[str, int] = {}
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines = []
        for line in block.splitlines():
            if "pip install" in line:
                line = line.rsplit("&&", 1)[-1].strip()
            if "pytest" in line:  # the suite itself (either tier)
                continue
            if TRAIN.search(line):
                config = re.search(r"--config\s+(\S+)", line)
                key = config.group(1) if config else line
                runs[key] = runs.get(key, 0) + 1
                line = _lower_steps(line, 2 * runs[key])
            lines.append(line)
        if any(line.strip() and not line.strip().startswith("#") for line in lines):
            blocks.append(textwrap.dedent("\n".join(lines)).strip())
    return blocks


def _lower_steps(line: str, steps: int = 2) -> str:
    command, _, comment = line.partition("  #")
    lowered = f"train.max_steps={steps}"
    command = re.sub(r"\btrain\.max_steps=\d+", lowered, command).rstrip() + ("" if lowered in command else f" {lowered}")
    if "train_prior.py" in command:
        command = re.sub(r"\bsample\.steps=\d+", SAMPLE_STEPS, command) + ("" if SAMPLE_STEPS in command else f" {SAMPLE_STEPS}")
    return command + (f"  #{comment}" if comment else "")


def test_readme_commands_are_parsed_as_a_user_reads_them():
    commands = readme_commands((ROOT / "README.md").read_text())
    assert commands[0] == "python jobs/encode_dataset.py --config configs/encode/default.yaml"
    script = "\n".join(commands)
    assert "ray start --head" in script and "export RAY_AUTH_MODE=token" in script
    train_lines = [line for line in script.splitlines() if TRAIN.search(line)]
    assert all("train.max_steps=" in line for line in train_lines) and STEPS in train_lines[0]
    vae = [line for line in train_lines if "vae_photos.yaml" in line]
    assert "train.max_steps=2" in vae[0] and "--num-workers 2" in vae[1] and "train.max_steps=4" in vae[1]
    assert "pytest" not in script


def train_runs(script: str) -> list[tuple[str, str]]:
    """(train config, run directory) of each ``jobs/train_prior.py`` command of the README script."""
    runs = []
    for line in script.splitlines():
        if "jobs/train_prior.py" in line:
            config = re.search(r"--config\s+(\S+)", line).group(1)
            runs.append((config, yaml.safe_load((ROOT / config).read_text())["train"]["output_dir"]))
    return runs


def check_samples(run_dir: Path) -> None:
    """samples.png decodes to a non-constant RGB grid; samples.mp4 to frames; samples.wav to a waveform."""
    png, mp4, wav = run_dir / "samples.png", run_dir / "samples.mp4", run_dir / "samples.wav"
    if png.exists():
        image = np.asarray(Image.open(png))
        assert image.ndim == 3 and image.shape[2] in (3, 4) and image.shape[0] >= 64 and image.std() > 0
        return
    import av

    if wav.exists():
        with av.open(str(wav)) as container:
            samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        assert samples.size > 0 and np.std(samples) > 0
        return
    with av.open(str(mp4)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) >= 2 and frames[0].shape[0] >= 64 and np.std(frames[0]) > 0


@dataclass(frozen=True)
class ReadmeRun:
    repo: Path  # the copy the commands ran in (outputs under repo/outputs)
    script: str
    returncode: int
    stdout: str
    stderr: str

    def log(self) -> str:
        return f"{self.stdout[-4000:]}\n{self.stderr[-6000:]}"

    def results(self) -> list[dict]:
        """The ``result: {...}`` line each training command printed, in order."""
        return [json.loads(line[len("result:"):]) for line in self.stdout.splitlines() if line.startswith("result:")]


@pytest.fixture(scope="module")
def readme_run():
    work = Path(tempfile.mkdtemp(prefix="lfreadme-", dir="/tmp"))
    shutil.copytree(ROOT, work / "repo", ignore=shutil.ignore_patterns(".git", ".venv", "outputs", ".raytmp", "runs",
                                                                        "__pycache__", "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["PATH"] = f"{BIN}:{env['PATH']}"
    try:
        script = "set -xeo pipefail\n" + "\n".join(readme_commands((ROOT / "README.md").read_text()))
        done = subprocess.run(["bash", "-c", script], cwd=work / "repo", env=env, capture_output=True, text=True, timeout=1500)
        stop_cluster(RAY_TEMP)
        yield ReadmeRun(work / "repo", script, done.returncode, done.stdout, done.stderr)
    finally:
        stop_cluster(RAY_TEMP)
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow
def test_readme_commands_run_as_written(readme_run):
    assert readme_run.returncode == 0, readme_run.log()
    assert (readme_run.repo / "outputs" / "default" / "latentflow.json").exists()


@pytest.mark.slow
def test_ray_job_submit_output_reads_back_with_datasets(readme_run):
    """The README's `ray job submit` (token auth on, as Ray 2.60's `ray start` leaves it) wrote the embedded photos."""
    assert readme_run.returncode == 0, readme_run.log()
    import datasets

    ds = datasets.load_dataset(str(readme_run.repo / "outputs" / "submitted"), split="train", cache_dir=str(readme_run.repo / "hf"))
    assert ds.num_rows == 8 and set(ds["key"]) == {"astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
                                                   "immunohistochemistry", "cat"}
    assert tuple(ds.with_format("torch")[:]["latent"].shape) == (8, 4, 32, 32)


@pytest.mark.slow
def test_readme_ddp_command_resumes_on_two_workers(readme_run):
    """Stage 1 as the README chains it: 2 steps on one process, then `--num-workers 2` (Ray Train, DDP) resumes
    from that checkpoint and trains 2 more steps on each worker, evaluating on the held-out shard."""
    assert readme_run.returncode == 0, readme_run.log()
    ddp = [r for r in readme_run.results() if r.get("workers") == 2]
    assert len(ddp) == 1 and ddp[0]["steps"] == [4, 4] and ddp[0]["psnr"] > 0, readme_run.results()
    run_dir = readme_run.repo / yaml.safe_load((ROOT / "configs/train/vae_photos.yaml").read_text())["train"]["output_dir"]
    assert (run_dir / "metrics.json").exists() and (run_dir / "final").is_dir()


@pytest.mark.slow
def test_each_readme_prior_command_decodes_its_samples(readme_run):
    """Every stage-2 command of the README trains on its encode command's output with the shipped batch size and
    writes decoded samples (PNG grid, mp4 or wav)."""
    assert readme_run.returncode == 0, readme_run.log()
    runs = train_runs(readme_run.script)
    assert len(runs) >= 6
    batches = [line for line in readme_run.stdout.splitlines() if line.startswith("data: ")]
    assert len(batches) == len(runs), batches
    for (config, out), line in zip(runs, batches):
        assert f"batch_size {yaml.safe_load((ROOT / config).read_text())['data']['batch_size']}," in line, (config, line)
        check_samples(readme_run.repo / out)


@pytest.mark.slow
def test_readme_joint_audio_video_command_aligns_each_clip_s_audio(readme_run):
    """The README's joint command: every clip row of Big Buck Bunny carries the audio latents of its own span."""
    assert readme_run.returncode == 0, readme_run.log()
    import datasets

    ds = datasets.load_dataset(str(readme_run.repo / "outputs" / "video_audio"), split="train", cache_dir=str(readme_run.repo / "hf"))
    assert ds.num_rows == 4 and type(ds.features["audio"]).__name__ == "Array2D"
    hop = 32 / 22050  # audio-vae-tiny
    for row in ds:
        assert abs(row["audio_start_time"] - row["start_time"]) <= hop
        assert abs(row["audio_duration"] - row["num_frames"] / row["fps"]) <= hop
        assert row["audio_valid_length"] == len(row["audio"][0]) > 0


@pytest.mark.slow
def test_readme_tokens_command_stores_indices_that_decode(readme_run):
    """The README's FSQ command: 8 photos as (h, w) token indices in the codebook's index dtype, typed through
    ``datasets``, decoded through the codec alone (the GPT / MaskGIT / discrete diffusion commands train on them)."""
    assert readme_run.returncode == 0, readme_run.log()
    import datasets
    import torch

    import latentflow

    out = readme_run.repo / "outputs" / "vq_latents"
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(readme_run.repo / "hf")).with_format("numpy")
    codec = latentflow.read_codec(str(out))
    indices = ds[:]["indices"]
    assert codec.latent_kind == "discrete" and indices.shape == (8, 32, 32) and 0 <= indices.min() and indices.max() < 1000
    images = latentflow.decode_latents(torch.as_tensor(indices[:2].astype(np.int64)), str(out))
    assert images.shape == (2, 3, 256, 256) and torch.isfinite(images).all()
