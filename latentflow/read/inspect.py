"""`latentflow inspect`: what an output holds (codec, modality, counts, per-channel statistics)."""

from __future__ import annotations

from typing import Any

import numpy as np

from latentflow.format.state import OutputState, merge_stats
from latentflow.format.text import text_totals
from latentflow.read.latents import read_codec


def inspect(path: str, storage_options: dict | None = None) -> dict[str, Any]:
    """Metadata, counts and per-channel statistics of a latent output, with a suggested scaling factor.

    Returns:
        dict with ``model``, ``latent_kind``, ``layout`` (``CHW``, ``CTHW`` or ``CT``), ``modality``, ``stored``,
        ``dtype``, ``shapes``, ``normalization``, ``counts`` (rows, shards, errors, rows per bucket),
        ``stats`` (per-channel mean/std), ``suggested_scaling_factor`` = 1 / std over all latent values
        (as Rombach et al. derived 0.18215); for video also ``clips`` (fps, num_frames, temporal stride,
        frame buckets, clip mode, resolution: the processor as run) and ``decoder`` (name, versions); with text
        tracks, ``tracks``: per track column (a clip's audio) its model, rate, remix rule, hop and shapes; with text
        encoders, ``text``: per cached text column its encoder (model, architecture, output, layer, max_length,
        padding, dtype, weights sha256, fingerprint) and counts (rows, distinct embeddings, ``dedup_ratio``,
        truncated captions, bytes per caption against padded fp32).
    """
    codec = read_codec(path, storage_options)
    state = OutputState.read(path, storage_options)
    stats = merge_stats(state.markers)
    info: dict[str, Any] = {
        "path": str(path),
        "model": {"class": codec.model.cls, "model_type": codec.model.model_type, "weights_sha256": codec.model.weights_sha256,
                  "ref": codec.model.ref.to_dict() if codec.model.ref else None},
        "fingerprint": codec.fingerprint,
        "latent_kind": codec.latent_kind,
        "layout": codec.layout,
        "modality": codec.modality,
        "stored": codec.arrays,
        "dtype": codec.dtype,
        "dtypes": {name: str(codec.array_dtype(name)) for name in codec.arrays},
        "shapes": codec.shapes or committed_shapes(path, codec.arrays, storage_options),
        "normalization": codec.normalization.to_dict(),
        "counts": {"rows": state.rows, "shards": state.shards, "errors": state.sample_errors, "buckets": state.buckets},
        "stats": None,
        "suggested_scaling_factor": None,
    }
    if codec.modality == "video":
        p = codec.processor
        info["clips"] = {"fps": p.fps, "num_frames": p.num_frames, "temporal_stride": p.temporal_stride,
                         "frame_buckets": p.frame_buckets, "clip_mode": p.clip_mode, "num_clips": p.num_clips,
                         "clip_stride_s": p.clip_stride_s, "max_clips_per_video": p.max_clips_per_video,
                         "resolution": p.resolution, "short_clip": p.short_clip}
        info["decoder"] = codec.decoder
    if codec.modality == "audio":
        p = codec.processor
        info["segments"] = {"sample_rate": p.sample_rate, "channels": p.channels, "hop_length": p.hop_length,
                            "segment_seconds": p.segment_seconds, "duration_buckets": p.duration_buckets,
                            "segment_mode": p.segment_mode, "num_segments": p.num_segments,
                            "segment_stride_s": p.segment_stride_s, "max_segments_per_file": p.max_segments_per_file,
                            "short_audio": p.short_audio, "normalize": p.normalize, "target_db": p.target_db,
                            "max_seconds_per_file": p.max_seconds_per_file}
        info["decoder"] = codec.decoder
    if codec.text:
        totals = text_totals(codec.text, state.markers)
        keys = ("model", "architecture", "output", "layer", "pooled", "max_length", "padding", "dtype", "weights_sha256")
        info["text"] = {t.name: {**{k: t.info.get(k) for k in keys}, "width": t.hidden_width, "fingerprint": t.fingerprint,
                                 **totals[t.name]} for t in codec.text}
    if codec.tracks:
        info["tracks"] = {t.name: {"model": t.codec.model.cls, "ref": t.codec.model.ref.to_dict() if t.codec.model.ref else None,
                                   "weights_sha256": t.codec.model.weights_sha256, "required": t.required,
                                   "sample_rate": t.codec.processor.sample_rate, "channels": t.codec.processor.channels,
                                   "hop_length": t.codec.processor.hop_length, "shapes": t.codec.shapes,
                                   "normalization": t.codec.normalization.to_dict()} for t in codec.tracks}
    if stats is not None:
        count, total, sumsq = (float(np.sum(stats[k])) for k in ("count", "sum", "sumsq"))
        std = float(np.sqrt(max(sumsq / count - (total / count) ** 2, 0.0)))
        info["stats"] = {"mean": stats["mean"], "std": stats["std"], "global_mean": total / count, "global_std": std}
        info["suggested_scaling_factor"] = 1.0 / std if std > 0 else None
    return info


def _dtypes(info: dict[str, Any]) -> dict[str, str]:
    return info.get("dtypes") or {name: info["dtype"] for name in info["stored"]}


def committed_shapes(path: str, arrays: tuple[str, ...], storage_options: dict | None = None) -> dict[str, dict[str, list[int]]]:
    """Per-row array shapes per bucket, read from the committed rows (for codecs that record none, as the
    diffusers bridge's): the Zarr groups' array metadata, else each bucket's first Parquet file's schema."""
    from latentflow.read.dataset import LatentDataset

    shapes: dict[str, dict[str, list[int]]] = {}
    try:
        for group in LatentDataset(path, storage_options=storage_options, fields=("key",)).groups:
            shapes.setdefault(group.bucket, {n: list(group.specs[n].row_shape) for n in arrays if n in group.specs})
    except (OSError, KeyError, ValueError):  # no Zarr copy: the Parquet schemas say it too
        shapes = {}
    return shapes or _parquet_shapes(path, arrays, storage_options)


def _parquet_shapes(path: str, arrays: tuple[str, ...], storage_options: dict | None) -> dict[str, dict[str, list[int]]]:
    import fsspec
    import pyarrow.parquet as pq

    from latentflow.format.tables import schema_features

    firsts: dict[str, str] = {}
    for url in OutputState.read(path, storage_options).parquet_files():
        bucket = url.rsplit("/", 2)[-2]
        firsts.setdefault("all" if bucket == "parquet" else bucket, url)
    shapes = {}
    for bucket, url in sorted(firsts.items()):
        fs, p = fsspec.url_to_fs(url, **(storage_options or {}))
        with fs.open(p, "rb") as f:
            features = schema_features(pq.read_schema(f))
        shapes[bucket] = {n: list(features[n]["shape"]) for n in arrays if "shape" in features.get(n, {})}
    return shapes


def _format_clips(info: dict[str, Any]) -> list[str]:
    """The video lines of :func:`format_inspect`: clip config as run, and the decoder."""
    c, d = info["clips"], info.get("decoder") or {}
    mode = {"uniform": f"uniform, {c['num_clips']} per video", "slide": f"slide every {c['clip_stride_s']} s",
            "head": "head"}.get(c["clip_mode"], c["clip_mode"])
    lengths = f", frame buckets {c['frame_buckets']}" if c["frame_buckets"] else ""
    return [f"  clips:        {c['num_frames']} frames at {c['fps'] or 'native'} fps, temporal stride {c['temporal_stride']}"
            f"{lengths}; {mode} (at most {c['max_clips_per_video']}), {c['resolution']} px, short clips: {c['short_clip']}",
            f"  decoder:      {d.get('name', '?')} {d.get('version', '')} (FFmpeg {d.get('ffmpeg', '?')})"]


def _format_segments(info: dict[str, Any]) -> list[str]:
    """The audio lines of :func:`format_inspect`: segment config as run, and the decoder."""
    s, d = info["segments"], info.get("decoder") or {}
    mode = {"uniform": f"uniform, {s['num_segments']} per file", "slide": f"slide every {s['segment_stride_s']:.3f} s",
            "head": "head"}.get(s["segment_mode"], s["segment_mode"])
    buckets = f", duration buckets {[round(b, 3) for b in s['duration_buckets']]} s" if s["duration_buckets"] else ""
    norm = f", normalize {s['normalize']} to {s['target_db']} dBFS" if s["normalize"] else ""
    return [f"  segments:     {s['segment_seconds']:.4f} s at {s['sample_rate']} Hz, {s['channels']}, hop {s['hop_length']}"
            f"{buckets}; {mode} (at most {s['max_segments_per_file']}), short audio: {s['short_audio']}{norm}, "
            f"at most {s['max_seconds_per_file']} s per file",
            f"  decoder:      {d.get('decoder', '?')} {d.get('pyav', '')} (FFmpeg {d.get('ffmpeg', '?')}), {d.get('resampler', '?')}; "
            f"remix {d.get('remix', '?')}"]


def format_inspect(info: dict[str, Any]) -> str:
    """A human-readable report of :func:`inspect`."""
    axes = {"CTHW": "(C, T', h, w)", "CT": "(C, t)"}.get(info["layout"], "(C, h, w)")
    lines = [f"latentflow output: {info['path']}",
             f"  model:        {info['model']['class']} (model_type {info['model']['model_type']})",
             f"  weights:      sha256 {info['model']['weights_sha256']}",
             f"  fingerprint:  {info['fingerprint']}",
             f"  modality:     {info.get('modality', 'image')}",
             f"  latents:      {info['latent_kind']} ({info['layout']}: {axes}), stored "
             + ", ".join(f"{name} as {dtype}" for name, dtype in _dtypes(info).items()),
             f"  shapes:       {info['shapes']}"]
    if "clips" in info:
        lines += _format_clips(info)
    if "segments" in info:
        lines += _format_segments(info)
    for name, t in (info.get("text") or {}).items():
        layer = f" layer {t['layer']}" if t["layer"] is not None else ""
        lines.append(f"  text {name}:".ljust(16) + f"{t['architecture']} {t['model']} ({t['output']}{layer}, max_length "
                     f"{t['max_length']}, padding {t['padding']}, {t['dtype']}, D={t['width']}); {t['rows']} rows, "
                     f"{t['unique']} distinct embeddings (dedup ratio {t['dedup_ratio']}), {t['truncated']} truncated; "
                     f"{t['bytes_per_caption']} bytes per caption vs {t['padded_fp32_bytes']} padded fp32 "
                     f"({t['vs_padded_fp32']}x smaller)")
    for name, t in (info.get("tracks") or {}).items():
        where = t["ref"]["location"] if t["ref"] else t["model"]
        lines.append(f"  track {name}:".ljust(16) + f"{t['model'].rsplit('.', 1)[-1]} {where} ({t['sample_rate']} Hz, "
                     f"{t['channels']}, hop {t['hop_length']}; {'required' if t['required'] else 'optional'}); "
                     f"shapes {t['shapes']}")
    buckets = info["counts"].get("buckets") or {}
    lines += [f"  counts:       {info['counts']['rows']} rows, {info['counts']['shards']} shards, {info['counts']['errors']} errors"
              + (f"; rows per bucket {buckets}" if buckets else ""),
              f"  normalization: {info['normalization']}"]
    if info["stats"]:
        lines.append("  per-channel statistics:")
        lines += [f"    c{c}: mean {m:+.5f}  std {s:.5f}" for c, (m, s) in enumerate(zip(info["stats"]["mean"], info["stats"]["std"]))]
        lines.append(f"  global std: {info['stats']['global_std']:.5f}")
        factor = info["suggested_scaling_factor"]
        lines.append(f"  suggested scaling_factor (1/std): {factor:.5f}" if factor else
                     "  suggested scaling_factor (1/std): none (every latent value is the same)")
    return "\n".join(lines)
