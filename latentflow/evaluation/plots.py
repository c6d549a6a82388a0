"""PNG plots of an evaluation (matplotlib, Agg backend: no display needed).

Each function writes one PNG through fsspec and returns its path:

* :func:`reconstruction_grid`: originals in the first row, one row per model below;
* :func:`latent_histograms`: one histogram per latent channel (first 16);
* :func:`codebook_histogram`: code usage counts sorted by frequency, dead codes marked;
* :func:`comparison_bars`: PSNR, SSIM, size reduction and throughput side by side per model;
* :func:`channel_statistics`: per-channel latent mean +- std and min/max of one model;
* :func:`diagnostics_comparison`: latent diagnostics (uniformity, probe, codebook) side by side per model.

matplotlib is a dependency of latentflow; where it is missing anyway, every function warns once
and returns None instead of a path (an evaluation still writes its report).
"""

from __future__ import annotations

import functools
import io
import math
import warnings

import fsspec
import numpy as np

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # plots are the optional part of an evaluation
    plt = None

MAX_CHANNELS = 16


_warned = False


def _needs_matplotlib(fn):
    """Without matplotlib: one warning per process, then None instead of the PNG's path."""

    @functools.wraps(fn)
    def plot(*args, **kwargs) -> str | None:
        global _warned
        if plt is None:
            if not _warned:
                warnings.warn("matplotlib is not installed: plots are skipped (pip install -e . -c constraints.txt installs it)",
                              RuntimeWarning, stacklevel=2)
                _warned = True
            return None
        return fn(*args, **kwargs)

    return plot


def _save(fig, path: str, storage_options: dict | None) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    fs, fpath = fsspec.url_to_fs(path, **(storage_options or {}))
    with fs.open(fpath, "wb") as f:
        f.write(buf.getvalue())
    return path


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


@_needs_matplotlib
def reconstruction_grid(originals: np.ndarray, reconstructions: dict[str, np.ndarray], path: str,
                        psnrs: dict[str, list[float]] | None = None, storage_options: dict | None = None) -> str:
    """Originals (N, 3, H, W) and each model's reconstructions of them, one row per model."""
    rows = [("original", originals), *reconstructions.items()]
    n = originals.shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(2 * n, 2 * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c, img in enumerate(to_uint8(imgs)):
            ax = axes[r][c]
            ax.imshow(img)
            ax.set_xticks([]), ax.set_yticks([])
            if psnrs and label in psnrs:
                ax.set_title(f"{psnrs[label][c]:.1f} dB", fontsize=8)
        axes[r][0].set_ylabel(label, fontsize=8)
    return _save(fig, path, storage_options)


@_needs_matplotlib
def latent_histograms(samples: np.ndarray, path: str, title: str = "", storage_options: dict | None = None) -> str:
    """Histograms of latent values per channel; ``samples`` is (C, N)."""
    c = min(samples.shape[0], MAX_CHANNELS)
    cols = min(c, 4)
    rows = math.ceil(c / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), squeeze=False)
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= c:
            ax.axis("off")
            continue
        values = samples[i]
        ax.hist(values, bins=50, color="tab:blue")
        ax.set_title(f"ch {i}: mean {values.mean():.2f}, std {values.std():.2f}", fontsize=8)
    fig.suptitle(title or "latent values per channel")
    return _save(fig, path, storage_options)


@_needs_matplotlib
def codebook_histogram(counts: np.ndarray, path: str, title: str = "", storage_options: dict | None = None) -> str:
    """Code hit counts (K,) sorted from most to least used; the dead tail shows at zero."""
    order = np.sort(counts)[::-1]
    dead = int((counts == 0).sum())
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(np.arange(order.size), order, width=1.0, color="tab:green")
    ax.set_xlabel("code rank")
    ax.set_ylabel("hits")
    ax.set_title(f"{title} codebook usage: {order.size - dead}/{order.size} used, {dead} dead".strip())
    return _save(fig, path, storage_options)


_BARS = (
    ("PSNR (dB)", lambda m: (m.get("psnr") or {}).get("mean")),
    ("SSIM", lambda m: (m.get("ssim") or {}).get("mean")),
    ("size reduction (x)", lambda m: m.get("size_reduction_factor")),
    ("encode images/s", lambda m: m["throughput"].get("encode_images_per_s")),
    ("decode images/s", lambda m: m["throughput"].get("decode_images_per_s")),
)


@_needs_matplotlib
def comparison_bars(models: dict[str, dict], path: str, storage_options: dict | None = None) -> str:
    """One panel per metric, one bar per model."""
    names = list(models)
    fig, axes = plt.subplots(1, len(_BARS), figsize=(3.2 * len(_BARS), 3.2))
    colors = plt.cm.tab10(np.arange(len(names)) % 10)
    for ax, (label, get) in zip(axes, _BARS):
        values = [get(models[n]) or 0.0 for n in names]
        ax.bar(range(len(names)), values, color=colors)
        ax.set_xticks(range(len(names)), [n.rstrip("/").rsplit("/", 1)[-1] for n in names], rotation=30, ha="right", fontsize=7)
        ax.set_title(label, fontsize=9)
    return _save(fig, path, storage_options)


@_needs_matplotlib
def channel_statistics(channels: dict, path: str, title: str = "", storage_options: dict | None = None) -> str:
    """Per-channel mean +- std (bars) and min/max (markers) from ``ChannelStats.to_dict()``."""
    mean, std = np.asarray(channels["channel_mean"]), np.asarray(channels["channel_std"])
    idx = np.arange(len(mean))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.4 * len(mean) + 2), 3.2))
    ax.errorbar(idx, mean, yerr=std, fmt="o", color="tab:blue", capsize=3, label="mean +- std")
    ax.scatter(idx, channels["channel_min"], marker="v", color="tab:gray", s=12, label="min")
    ax.scatter(idx, channels["channel_max"], marker="^", color="tab:gray", s=12, label="max")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("channel"), ax.set_xticks(idx)
    ax.legend(fontsize=7)
    ax.set_title(title or "latent channels", fontsize=9)
    return _save(fig, path, storage_options)


_DIAGNOSTICS = (
    ("density CV (lower: more uniform)", lambda d: (d["uniformity"] or {}).get("density_cv")),
    ("normalized entropy (higher: more uniform)", lambda d: (d["uniformity"] or {}).get("entropy")),
    ("Gini (lower: more uniform)", lambda d: (d["uniformity"] or {}).get("gini")),
    ("linear probe accuracy (line: chance)", lambda d: (d["probe"] or {}).get("accuracy")),
    ("codebook usage", lambda d: (d["codebook"] or {}).get("usage")),
)


@_needs_matplotlib
def diagnostics_comparison(models: dict[str, dict], path: str, storage_options: dict | None = None) -> str:
    """One panel per diagnostic (``LatentDiagnostics.to_dict()`` per model), one bar per model; a
    missing value (no labels, a continuous codec) is left empty."""
    names = list(models)
    fig, axes = plt.subplots(1, len(_DIAGNOSTICS), figsize=(3.2 * len(_DIAGNOSTICS), 3.2))
    colors = plt.cm.tab10(np.arange(len(names)) % 10)
    for ax, (label, get) in zip(axes, _DIAGNOSTICS):
        values = [get(models[n]) for n in names]
        ax.bar(range(len(names)), [v or 0.0 for v in values], color=colors)
        if label.startswith("linear probe"):
            for i, n in enumerate(names):
                if models[n]["probe"]:
                    ax.hlines(models[n]["probe"]["chance"], i - 0.4, i + 0.4, colors="black", linestyles="dashed")
        ax.set_xticks(range(len(names)), [n.rstrip("/").rsplit("/", 1)[-1] for n in names], rotation=30, ha="right", fontsize=7)
        ax.set_title(label, fontsize=8)
    return _save(fig, path, storage_options)
