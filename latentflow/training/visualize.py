"""Training outputs a human looks at: image grids and loss curves (PNG), from tensors and ``log.jsonl``.

Video samples are written as mp4/GIF previews by :func:`latentflow.read.preview.save_video_preview`,
which owns the [-1, 1] -> uint8 conversion used here too.
"""

from __future__ import annotations

import io
import json

import fsspec
import numpy as np
import torch
from PIL import Image

from latentflow.read.preview import to_uint8  # (B, C, H, W) in [-1, 1] -> (B, H, W, 3) uint8


def image_grid(rows: list[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Stack rows of (B, C, H, W) images into one (R*(H+pad), B*(W+pad), 3) uint8 canvas."""
    arrays = [to_uint8(r) for r in rows]
    b, h, w, _ = arrays[0].shape
    canvas = np.full((len(rows) * (h + pad) + pad, b * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, arr in enumerate(arrays):
        for j in range(arr.shape[0]):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            canvas[top:top + h, left:left + w] = arr[j]
    return canvas


def save_png(array: np.ndarray, url: str, storage_options: dict | None = None) -> None:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    with fsspec.open(url, "wb", **(storage_options or {})) as f:
        f.write(buf.getvalue())


def save_reconstruction_grid(inputs: torch.Tensor, reconstructions: torch.Tensor, url: str,
                             storage_options: dict | None = None) -> None:
    """PNG with the inputs in the top row and their reconstructions below."""
    save_png(image_grid([inputs, reconstructions]), url, storage_options)


def save_sample_grid(samples: torch.Tensor, url: str, per_row: int = 8, storage_options: dict | None = None) -> None:
    """PNG grid of decoded samples (N, C, H, W), ``per_row`` per row."""
    rows = [samples[i:i + per_row] for i in range(0, samples.shape[0], per_row)]
    if len(rows) > 1 and rows[-1].shape[0] < per_row:  # pad the last row with white
        fill = torch.ones(per_row - rows[-1].shape[0], *samples.shape[1:])
        rows[-1] = torch.cat([rows[-1], fill])
    save_png(image_grid(rows), url, storage_options)


def read_log(url: str, storage_options: dict | None = None) -> list[dict]:
    """The per-step JSON log (one JSON object per line)."""
    with fsspec.open(url, "r", **(storage_options or {})) as f:
        return [json.loads(line) for line in f if line.strip()]


def save_loss_curve(log: list[dict], url: str, keys: tuple[str, ...] = ("loss",), storage_options: dict | None = None) -> None:
    """Plot ``keys`` against ``step`` (log-scale y when positive) with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for key in keys:
        points = [(r["step"], r[key]) for r in log if key in r and r[key] is not None]
        if points:
            ax.plot(*zip(*points), label=key)
    ax.set_xlabel("step")
    if all(r.get(k, 1) > 0 for r in log for k in keys if isinstance(r.get(k), (int, float))):
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    with fsspec.open(url, "wb", **(storage_options or {})) as f:
        f.write(buf.getvalue())
