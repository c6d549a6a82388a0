"""``run_evaluation``: score one or more models on one dataset with Ray Data; write JSON + PNGs.

Data path: the encode job's own read and preprocess stages (``ShardDatasource`` ->
``preprocess_batch``, one block per shard) -> rows of float pixels -> materialized once -> per model,
``map_batches`` with :class:`ModelEvaluator` on a
one-actor pool (fractional CPUs, so read tasks always find a CPU) -> rows merged on
the driver (:func:`~latentflow.evaluation.report.merge_rows`) -> report and plots.

Example::

    report = run_evaluation(EvalJobConfig.from_yaml("configs/eval/photos.yaml"))
    report["models"]["models/transvae-tiny-photos"]["psnr"]["mean"]
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import torch

from latentflow.encode.shard import processor_spec, unpack_pixels
from latentflow.evaluation import plots
from latentflow.evaluation.config import EvalJobConfig
from latentflow.evaluation.diagnostics import latent_diagnostics
from latentflow.evaluation.evaluator import ModelEvaluator, load_lpips, load_model
from latentflow.evaluation.report import merge_rows, model_metadata, public, write_report
from latentflow.jobs.datasource import ShardDatasource
from latentflow.jobs.schema import KIND_EMPTY, KIND_SAMPLE, sample_of
from latentflow.jobs.stages import preprocess_batch
from latentflow.progress import Progress
from latentflow.sources.shards import list_shards

logger = logging.getLogger(__name__)


def evaluation_rows(batch: pa.Table, resolution: int) -> dict[str, np.ndarray]:
    """A preprocessed block (the encode job's stages) -> rows ``{key, pixel_values (3, R, R) float32, error, label}``
    (label -1 where the sample has none); failed samples and unreadable shards keep zeros and their error."""
    rows = []
    for row in batch.to_pylist():
        if row["kind"] == KIND_SAMPLE:
            pixels, error = unpack_pixels(sample_of(row).pixels), ""
        else:
            pixels, error = (np.zeros((3, resolution, resolution), np.float32),
                             f"{row['error_stage']}/{row['error_type']}: {row['error_message']}")
            if row["kind"] == KIND_EMPTY:
                continue
        label = row.get("label")
        rows.append({"key": row["key"] or row["shard"], "pixel_values": pixels, "error": error, "label": -1 if label is None else label})
    return {"key": np.array([r["key"] for r in rows], dtype=object), "error": np.array([r["error"] for r in rows], dtype=object),
            "label": np.array([r["label"] for r in rows], dtype=np.int64),
            "pixel_values": np.stack([r["pixel_values"] for r in rows]) if rows else np.zeros((0, 3, resolution, resolution), np.float32)}


def build_dataset(cfg: EvalJobConfig, downsample_factor: int):
    """The processed images as a materialized Ray Dataset, in shard order, at most ``max_images`` rows.

    The same read and preprocess stages as the encode job (one block per shard), so evaluation
    sees exactly the pixels an encode job would encode.
    """
    import ray

    ray.data.DataContext.get_current().execution_options.preserve_order = True
    shards = list_shards(cfg.source)
    ds = ray.data.read_datasource(ShardDatasource(shards, cfg.source, cfg.source.storage_options), override_num_blocks=len(shards))
    ds = ds.map_batches(preprocess_batch, batch_size=None, batch_format="pyarrow",
                        fn_kwargs={"spec": processor_spec(cfg.processor, downsample_factor)})
    ds = ds.map_batches(evaluation_rows, batch_size=None, batch_format="pyarrow", fn_kwargs={"resolution": cfg.processor.resolution})
    if cfg.max_images is not None:
        ds = ds.limit(cfg.max_images)
    return ds.materialize()


def evaluate_model(ds, name: str, cfg: EvalJobConfig) -> dict[str, Any]:
    """Run :class:`ModelEvaluator` over ``ds`` on a one-actor pool and merge its rows (streamed, counted
    by images with rate and ETA)."""
    import ray

    scored = ds.map_batches(
        ModelEvaluator,
        fn_constructor_kwargs={
            "model": name, "storage_options": cfg.fs_options() or None, "histogram_samples": cfg.histogram_samples,
            "lpips_weights": cfg.lpips_weights, "seed": cfg.seed, "torch_threads": cfg.torch_threads, "device": cfg.device,
        },
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=cfg.actor_num_cpus,
        num_gpus=1 if cfg.device == "cuda" else 0,
    )
    rows = []
    with Progress(ds.count(), f"evaluate {name}", unit="image") as progress:
        for row in scored.iter_rows():
            rows.append(row)
            progress.update(1)
    return merge_rows(rows)


def _grid_images(ds, n: int) -> tuple[np.ndarray, list[str]]:
    rows = [r for r in ds.take(4 * n) if not r["error"]][:n]
    return np.stack([r["pixel_values"] for r in rows]), [r["key"] for r in rows]


def _write_plots(cfg: EvalJobConfig, reports: dict[str, dict], originals: np.ndarray, recons: dict[str, np.ndarray]) -> dict[str, Any]:
    out = cfg.output.rstrip("/")
    so = cfg.fs_options() or None
    fs, root = fsspec.url_to_fs(out, **(so or {}))
    fs.makedirs(root, exist_ok=True)
    written: dict[str, Any] = {"reconstruction_grid": plots.reconstruction_grid(
        originals, recons, f"{out}/reconstruction_grid.png", storage_options=so)}
    written["latent_histograms"], written["codebook_usage"], written["channel_statistics"] = {}, {}, {}
    for i, (name, rep) in enumerate(reports.items()):
        if rep["diagnostics"] is not None:
            written["channel_statistics"][name] = plots.channel_statistics(
                rep["diagnostics"]["channels"], f"{out}/channel_statistics_{i}.png", title=name, storage_options=so)
        if rep["_latent_sample"] is not None:
            written["latent_histograms"][name] = plots.latent_histograms(
                rep["_latent_sample"], f"{out}/latent_histograms_{i}.png", title=name, storage_options=so)
        if rep["_codes"] is not None:
            written["codebook_usage"][name] = plots.codebook_histogram(
                rep["_codes"], f"{out}/codebook_usage_{i}.png", title=name, storage_options=so)
    if len(reports) > 1:
        written["comparison"] = plots.comparison_bars(
            {n: public(r) for n, r in reports.items()}, f"{out}/comparison.png", storage_options=so)
        written["diagnostics_comparison"] = plots.diagnostics_comparison(
            {n: r["diagnostics"] for n, r in reports.items() if r["diagnostics"]}, f"{out}/diagnostics_comparison.png", storage_options=so)
    return written


def diagnose(rep: dict[str, Any], seed: int = 0) -> dict[str, Any] | None:
    """The latent diagnostics of one merged model report (channel statistics, uniformity of the latent
    subsample, linear probe where the images have labels, codebook use), as a JSON-able dict."""
    if rep["_channel_stats"].mean is None:  # no image could be encoded
        return None
    sample = rep["_latent_sample"]  # (C, N): N token vectors
    return latent_diagnostics(rep["_channel_stats"], None if sample is None else sample.T, rep["_probe_features"],
                              rep["_probe_labels"], rep["_codes"], seed).to_dict()


def run_evaluation(cfg: EvalJobConfig) -> dict[str, Any]:
    """Evaluate every model in ``cfg.models`` on ``cfg.source``; write ``report.json`` and the plots.

    Args:
        cfg: the job config.

    Returns:
        the report dict (as written to ``<output>/report.json``).
    """
    import ray

    if not ray.is_initialized():
        ray.init(configure_logging=False, log_to_driver=False)
    start = time.perf_counter()
    models = {name: load_model(name, cfg.fs_options() or None) for name in cfg.models}
    factor = math.lcm(*(int(m.downsample_factor) for m in models.values()))
    ds = build_dataset(cfg, factor)
    originals, grid_keys = _grid_images(ds, cfg.grid_images)
    lpips_note = load_lpips(cfg.lpips_weights)[1]
    reports, recons = {}, {}
    for name, model in models.items():
        t0 = time.perf_counter()
        rep = evaluate_model(ds, name, cfg)
        rep.update(model_metadata(name, model, tuple(originals.shape[1:])))
        rep["diagnostics"] = diagnose(rep, cfg.seed)
        rep["lpips_note"] = lpips_note
        rep["throughput"]["wall_s"] = time.perf_counter() - t0
        reports[name] = rep
        with torch.inference_mode():
            recons[name] = model.reconstruct(torch.from_numpy(originals)).clamp(-1, 1).numpy()
        logger.info("%s: PSNR %.2f dB over %d images", name, (rep["psnr"] or {}).get("mean", float("nan")), rep["num_images"])
    report = {
        "config": cfg.to_public_dict(),
        "num_images": next(iter(reports.values()))["num_images"],
        "grid_keys": grid_keys,
        "models": {n: public(r) for n, r in reports.items()},
        "plots": _write_plots(cfg, reports, originals, recons),
        "wall_s": time.perf_counter() - start,
    }
    report["report_path"] = write_report(report, cfg.output, cfg.fs_options() or None)
    return report
