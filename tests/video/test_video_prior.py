"""Video latents to something a human watches: the shipped Big Buck Bunny shard encoded by a tiny causal
video VAE, then ``python jobs/train_prior.py --config configs/train/flow_prior_video.yaml`` trains a 3D-patch
flow prior and writes ``samples.mp4``; ``save_video_preview`` (mp4 / GIF, through fsspec) of decoded
latents; ``latentflow inspect`` of a video output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from latentflow.encode.local import encode_locally
from latentflow.errors import InputError
from latentflow.format.codec import ModelRef
from latentflow.read.preview import preview_fps, save_video_preview, tile_clips, to_uint8
from latentflow.sources.shards import SourceConfig
from tests.video.test_video_encode import SHARD, VIDEO, tiny_video_vae

ROOT = Path(__file__).resolve().parents[2]
FRAMES, SIDE, LATENT = 9, 32, (4, 5, 8, 8)  # VIDEO's clips: 9 frames of 32 px; (C, 1 + 8/2, 32/4, 32/4)


@pytest.fixture(scope="module")
def video_latents(tmp_path_factory) -> str:
    """The shipped shard, 4 videos x 2 clips, encoded by a tiny random causal video VAE."""
    tmp = tmp_path_factory.mktemp("video-prior")
    model, model_dir = tiny_video_vae(tmp)
    out = str(tmp / "latents")
    encode_locally(model, SourceConfig(urls=[str(SHARD)], media="video"), out, processor_config=VIDEO,
                   model_ref=ModelRef(model_dir))
    return out


def read_video(url: str | Path) -> tuple[np.ndarray, float]:
    """Every frame of a video file (T, H, W, 3) uint8 and its frame rate, decoded with PyAV."""
    with av.open(str(url)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        return frames, float(container.streams.video[0].average_rate)


def grid_side(n: int, side: int, pad: int = 2) -> int:
    return n * (side + pad) + pad


# ---- the journey: encode -> train_prior.py -> samples.mp4 --------------------------------------------


def test_train_prior_job_on_video_latents_writes_an_mp4_of_decoded_samples(video_latents, tmp_path):
    run = tmp_path / "prior"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(
        [sys.executable, "jobs/train_prior.py", "--config", "configs/train/flow_prior_video.yaml", f"data.path={video_latents}",
         f"train.output_dir={run}", "train.max_steps=3", "train.log_every=1", "train.checkpoint_every=3", "train.eval_every=3",
         "data.batch_size=2", "prior.config.hidden_size=32", "prior.config.num_layers=1", "prior.config.num_heads=2",
         "sample.num_samples=3", "sample.steps=2"],
        cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-4000:]}"
    result = json.loads(done.stdout.split("result:", 1)[1])
    assert result["samples_mp4"] == f"{run}/samples.mp4" and result["steps"] == 3
    assert np.isfinite(result["metrics"]["flow_loss"]) and not (run / "samples.png").exists()

    # the prior was built from the data: 3D patches over (C, T', h, w)
    config = json.loads((run / "final" / "config.json").read_text())
    assert config["latent_shape"] == list(LATENT) and config["patch_size"] == [1, 2, 2]

    # samples.mp4: 3 decoded clips of 9 frames, tiled 3 in a row, at the clips' native 25 fps
    frames, fps = read_video(run / "samples.mp4")
    assert frames.shape == (FRAMES, grid_side(1, SIDE), grid_side(3, SIDE), 3) and fps == 25.0
    assert frames[:, 2:2 + SIDE, 2:2 + SIDE].std() > 0  # a decoded clip, not the white background


# ---- save_video_preview ------------------------------------------------------------------------------


def decoded_clips(path: str, n: int = 2) -> torch.Tensor:
    import latentflow

    ds = latentflow.LatentDataset(path)
    z = torch.stack([torch.as_tensor(ds[i]["latent"]) for i in range(n)])
    return latentflow.decode_latents(z, path)  # (n, 3, T, H, W) in [-1, 1]


@pytest.mark.parametrize("suffix,tolerance", [(".mp4", 12.0), (".gif", 24.0)])
def test_preview_of_decoded_latents_round_trips_through_pyav(video_latents, tmp_path, suffix, tolerance):
    clips = decoded_clips(video_latents)
    assert clips.shape == (2, 3, FRAMES, SIDE, SIDE)
    url = save_video_preview(clips, str(tmp_path / f"clips{suffix}"), fps=preview_fps(video_latents))
    frames, fps = read_video(url)
    expected = tile_clips(to_uint8(clips), per_row=4)  # (T, H', W', 3): the two clips side by side
    assert frames.shape == expected.shape == (FRAMES, grid_side(1, SIDE), grid_side(2, SIDE), 3) and fps == 25.0
    # lossy codecs: the mean error stays small (a wrong layout or frame order would be far off)
    assert np.abs(frames.astype(float) - expected).mean() < tolerance


def test_preview_takes_uint8_frames_pads_odd_sides_and_writes_through_fsspec(tmp_path):
    import fsspec

    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 256, (4, 1, 1, 3), dtype=np.uint8), 21, axis=1).repeat(15, axis=2)  # (4, 21, 15, 3)
    save_video_preview(frames, "memory://previews/odd.mp4", fps=12.5)
    with fsspec.open("memory://previews/odd.mp4", "rb") as f:
        (tmp_path / "odd.mp4").write_bytes(f.read())
    decoded, fps = read_video(tmp_path / "odd.mp4")
    assert decoded.shape == (4, 22, 16, 3) and fps == 12.5  # H.264's 4:2:0 needs even sides: one line added
    assert np.abs(decoded[:, :21, :15].astype(float) - frames).mean() < 8


def test_preview_refuses_bad_input_with_what_it_takes(tmp_path):
    with pytest.raises(InputError, match="must end in one of"):
        save_video_preview(np.zeros((2, 8, 8, 3), np.uint8), str(tmp_path / "x.avi"))
    with pytest.raises(InputError, match=r"\(T, H, W, 3\) uint8, or float \(3, T, H, W\).*got: \(2, 3, 8, 8\)"):
        save_video_preview(torch.zeros(2, 3, 8, 8), str(tmp_path / "x.mp4"))  # images, not clips
    with pytest.raises(InputError, match="fps must be > 0"):
        save_video_preview(np.zeros((2, 8, 8, 3), np.uint8), str(tmp_path / "x.gif"), fps=0)


def test_preview_fps_is_the_processors_else_the_rows(video_latents, tmp_path):
    import shutil

    assert preview_fps(video_latents) == 25.0  # VIDEO keeps native frames: the rows' fps (BBB is 25 fps)
    copy = tmp_path / "resampled"
    shutil.copytree(video_latents, copy)
    info = json.loads((copy / "latentflow.json").read_text())
    codec = info.get("codec", info)
    codec["processor"]["fps"] = 8.0
    (copy / "latentflow.json").write_text(json.dumps(info))
    assert preview_fps(str(copy)) == 8.0


# ---- inspect -----------------------------------------------------------------------------------------


def test_inspect_reports_a_video_output(video_latents, capsys):
    from latentflow.cli import main
    from latentflow.read.inspect import inspect

    info = inspect(video_latents)
    assert info["layout"] == "CTHW" and info["modality"] == "video"
    assert info["clips"]["num_frames"] == FRAMES and info["clips"]["temporal_stride"] == 2 and info["clips"]["fps"] is None
    assert info["clips"]["clip_mode"] == "uniform" and info["decoder"]["name"] == "pyav"
    assert info["decoder"]["version"] == av.__version__
    assert info["counts"]["rows"] == 8 and info["counts"]["buckets"] == {f"{FRAMES}x{SIDE}x{SIDE}": 8}
    assert info["shapes"] == {f"{FRAMES}x{SIDE}x{SIDE}": {"latent": list(LATENT)}}
    assert len(info["stats"]["mean"]) == LATENT[0] and all(s > 0 for s in info["stats"]["std"])

    # the per-channel statistics are those of the stored latents, over (T', h, w) and rows
    import latentflow

    z = torch.stack([torch.as_tensor(r["latent"]) for r in latentflow.LatentDataset(video_latents)])  # (8, C, T', h, w)
    np.testing.assert_allclose(info["stats"]["mean"], z.mean(dim=(0, 2, 3, 4)).numpy(), atol=1e-5)
    np.testing.assert_allclose(info["stats"]["std"], z.std(dim=(0, 2, 3, 4), unbiased=False).numpy(), atol=1e-4)

    assert main(["inspect", video_latents]) == 0
    text = capsys.readouterr().out
    assert "modality:     video" in text and "(CTHW: (C, T', h, w))" in text
    assert "9 frames at native fps, temporal stride 2; uniform, 2 per video" in text and "decoder:      pyav" in text
    assert main(["inspect", video_latents, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["clips"]["temporal_stride"] == 2
