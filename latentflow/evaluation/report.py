"""Merge an evaluator's per-batch rows into one model report, and write the JSON report.

A model report (one entry of ``report["models"]``)::

    {"model": ..., "model_type": ..., "latent_kind": ..., "weights_sha256": ..., "num_parameters": ...,
     "num_images": N, "input_shape": [3, H, W], "latent_shape": [C, h, w], "size_reduction_factor": ...,
     "psnr": {"mean", "std", "min", "max"}, "ssim": {...}, "lpips": {...} | None, "lpips_note": "...",
     "latent_stats": ChannelStats.to_dict(), "codebook": CodebookStats fields | None,
     "diagnostics": LatentDiagnostics.to_dict() (channels, uniformity, probe | None, codebook | None),
     "throughput": {"encode_images_per_s", "decode_images_per_s", "encode_s", "decode_s"},
     "per_image": [{"key", "psnr", "ssim", "lpips"}], "skipped": [{"key", "error"}]}
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Iterable

import fsspec
import numpy as np

from latentflow.metrics import ChannelStats, codebook_stats, size_reduction_factor
from latentflow.version import __version__

REPORT_NAME = "report.json"


def summarize(values: list[float]) -> dict[str, float] | None:
    """Mean/std/min/max of the finite values, or None when there are none."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return None
    return {"mean": float(arr.mean()), "std": float(arr.std()), "min": float(arr.min()), "max": float(arr.max())}


def merge_rows(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Combine ``ModelEvaluator`` rows: metrics per image, exact latent stats, code counts, timings.

    Returns:
        a partial model report plus ``_latent_sample`` (C, N) and ``_codes`` (K,) numpy arrays
        for the plots, ``_channel_stats`` and ``_probe_features`` (M, D) / ``_probe_labels`` (M,) for
        the diagnostics (keys starting with ``_`` are dropped from the JSON).
    """
    per_image, skipped, samples, features, labels = [], [], [], [], []
    stats, codes = ChannelStats(), None
    enc_s = dec_s = 0.0
    for row in rows:
        per_image += json.loads(row["per_image"])
        skipped += json.loads(row["skipped"])
        enc_s, dec_s = enc_s + float(row["encode_s"]), dec_s + float(row["decode_s"])
        if row["stats"]:
            stats.merge(ChannelStats.from_state({k: np.asarray(v) for k, v in json.loads(row["stats"]).items()}))
            samples.append(np.asarray(json.loads(row["latent_sample"]), dtype=np.float32))
        if row["codes"]:
            counts = np.asarray(json.loads(row["codes"]), dtype=np.int64)
            codes = counts if codes is None else codes + counts
        if row.get("probe"):
            probe = json.loads(row["probe"])
            features += probe["features"]
            labels += probe["labels"]
    per_image.sort(key=lambda r: r["key"])
    n = len(per_image)
    out = {
        "num_images": n,
        "psnr": summarize([r["psnr"] for r in per_image]),
        "ssim": summarize([r["ssim"] for r in per_image]),
        "lpips": summarize([r["lpips"] for r in per_image]),
        "latent_stats": stats.to_dict() if stats.mean is not None else None,
        "codebook": dataclasses.asdict(codebook_stats(codes)) if codes is not None and codes.sum() > 0 else None,
        "throughput": {
            "encode_s": enc_s,
            "decode_s": dec_s,
            "encode_images_per_s": n / enc_s if enc_s > 0 else None,
            "decode_images_per_s": n / dec_s if dec_s > 0 else None,
        },
        "per_image": per_image,
        "skipped": skipped,
        "_latent_sample": np.concatenate(samples, axis=1) if samples else None,  # (C, N)
        "_codes": codes,
        "_channel_stats": stats,
        "_probe_features": np.asarray(features, dtype=np.float32) if features else None,
        "_probe_labels": np.asarray(labels, dtype=np.int64) if labels else None,
    }
    return out


def model_metadata(name: str, model, input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """Identity and geometry of a model: type, weights hash, sizes, reduction factor."""
    latent_shape = tuple(int(s) for s in model.latent_shape(*input_shape[1:]))
    return {
        "model": name,
        "model_type": model.config.model_type,
        "latent_kind": getattr(model, "latent_kind", "continuous"),
        "weights_sha256": model.weights_hash(),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "downsample_factor": int(model.downsample_factor),
        "input_shape": list(input_shape),
        "latent_shape": list(latent_shape),
        "size_reduction_factor": size_reduction_factor(input_shape, latent_shape),
    }


def public(model_report: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able part of a model report (drops ``_`` keys)."""
    return {k: v for k, v in model_report.items() if not k.startswith("_")}


def write_report(report: dict[str, Any], output: str, storage_options: dict | None = None) -> str:
    """Write ``report.json`` (strict JSON: NaN/Inf are refused) under ``output``. Returns its path."""
    fs, root = fsspec.url_to_fs(output, **(storage_options or {}))
    fs.makedirs(root, exist_ok=True)
    path = f"{root.rstrip('/')}/{REPORT_NAME}"
    text = json.dumps({"latentflow_version": __version__, **report}, indent=2, allow_nan=False, default=_jsonable)
    with fs.open(path, "w") as f:
        f.write(text)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to the report")
