"""Checks an encode job makes before it writes anything or starts Ray: each one fails with one
line that names the fix, instead of a traceback, a hang, or an output in the wrong place.

Example::

    shards = check_before_ray(config)      # source matches shards, output writable and absolute under a Ray job
    check_cluster(config, alive_nodes())   # local paths on a multi-node cluster need shared_filesystem=true

The encoder pool's fit on the cluster's nodes is checked by ``jobs.placement.pool_shape``.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import fsspec

from latentflow.errors import ConfigError
from latentflow.sources.shards import list_shards

RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by `ray job submit` for the driver process
WORKING_DIR_MARK = "runtime_resources/working_dir_files"  # where Ray unpacks --working-dir


def is_local(url: str) -> bool:
    """True for a path on this machine's disk (``/x``, ``./x``, ``file://x``), False for ``s3://`` etc."""
    return "://" not in url or url.startswith("file://")


def check_before_ray(config) -> list:
    """Every check that needs neither Ray nor the model. Returns the source's shards.

    Raises:
        ConfigError: the source matches no shard; the output is relative inside a Ray job's
            working-dir copy; the output cannot be written.
        CheckpointError: a model names nothing (:func:`check_models`).
    """
    shards = check_source(config)
    check_models(config)
    check_output_location(config.output)
    check_writable(config.output, config.resolved_storage_options())
    check_text_encoders(config)
    return shards


def check_models(config) -> None:
    """The encoder's model and the audio track's each name something: a misspelled ``models/`` name is refused
    here, listing the shipped names, in under a second instead of after torch and the plan have loaded.

    Raises:
        CheckpointError: see :func:`latentflow.hub.check_model_name`.
    """
    from latentflow.hub import check_model_name  # torch-free at import

    check_model_name(config.model)
    if config.audio_track is not None:
        check_model_name(config.audio_track.model)


def check_text_encoders(config) -> None:
    """Each text encoder's folder exists and holds a tokenizer (local folders and hub ids; a URL is
    checked when its copy is made).

    Raises:
        ConfigError: naming the folder, the files looked for and those found.
    """
    if not getattr(config, "text_encoders", ()):
        return
    from latentflow.encode.text import (  # transformers: only for text encoders
        _sub,
        check_tokenizer_folder,
        resolve_model,
    )

    for cfg in config.text_encoders:
        if "://" in cfg.model and not cfg.model.startswith("file://"):
            continue
        root, _ = resolve_model(cfg, config.resolved_storage_options())
        check_tokenizer_folder(_sub(root, cfg.tokenizer_subfolder if cfg.tokenizer_subfolder is not None else cfg.subfolder))


def check_source(config) -> list:
    """The source's shards. ``list_shards`` refuses a source that matches none, or whose first
    shard lacks a configured column (:func:`latentflow.sources.shards.check_source`), with a ConfigError."""
    return list_shards(config.source.replace(storage_options=config.source_storage_options()))


def in_ray_job_working_dir() -> bool:
    """True when this driver runs inside the copy of ``ray job submit --working-dir``."""
    try:
        runtime_env = json.loads(os.environ.get(RAY_JOB_CONFIG_ENV, "{}")).get("runtime_env") or {}
    except (ValueError, AttributeError):
        runtime_env = {}
    return bool(runtime_env.get("working_dir")) or WORKING_DIR_MARK in os.getcwd().replace(os.sep, "/")


def check_output_location(output: str) -> None:
    """Refuse a relative local output under ``--working-dir``: Ray deletes that copy, and the output with it."""
    path = output[len("file://"):] if output.startswith("file://") else output
    if is_local(output) and not os.path.isabs(path) and in_ray_job_working_dir():
        raise ConfigError(f"output {output!r} is relative, and this job runs in the temporary copy of "
                          f"`ray job submit --working-dir` (deleted after the job); give output as an absolute path or s3:// URL")


def check_writable(output: str, storage_options: dict[str, Any] | None = None) -> None:
    """Create the output directory and a probe file in it, then remove both (and any folder made for it).

    Raises:
        ConfigError: the output cannot be created or written (permission, read-only, a file in the way).
    """
    fs, root = fsspec.url_to_fs(output, **(storage_options or {}))
    created = _missing_dirs(root) if is_local(output) else []
    probe = root.rstrip("/") + f"/.latentflow-probe-{uuid.uuid4().hex[:8]}"
    try:
        fs.makedirs(root, exist_ok=True)
        with fs.open(probe, "wb") as f:
            f.write(b"")
        fs.rm(probe)
    except OSError as err:  # PermissionError, read-only file system, a file in the way
        reason = getattr(err, "strerror", None) or type(err).__name__
        raise ConfigError(f"output {output!r} is not writable ({reason}); give an output you can write, "
                          f"e.g. output=/abs/path/you/own or output=s3://bucket/prefix") from None
    finally:
        for path in created:  # deepest first: leave the disk as it was
            try:
                os.rmdir(path)
            except OSError:
                break


def _missing_dirs(path: str) -> list[str]:
    """The folders ``makedirs(path)`` would create, deepest first."""
    missing = []
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        missing.append(str(p))
        p = p.parent
    return missing


def alive_nodes() -> list[dict[str, float]]:
    """``[{"CPU": .., "GPU": .., "NodeID": ..}]`` of the connected Ray cluster's alive nodes."""
    import ray

    return [{**{k: float(v) for k, v in n["Resources"].items() if k in ("CPU", "GPU")}, "NodeID": n["NodeID"]}
            for n in ray.nodes() if n.get("Alive")]


def describe_nodes(nodes: list[dict[str, float]]) -> str:
    """``"2 nodes: 1 CPU, 1 CPU"`` (GPUs shown where there are any)."""
    parts = []
    for n in nodes:
        gpu = f" + {n.get('GPU', 0):g} GPU" if n.get("GPU") else ""
        parts.append(f"{n.get('CPU', 0):g} CPU{gpu}")
    return f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}: {', '.join(parts)}"


def check_cluster(config, nodes: list[dict[str, float]]) -> None:
    """Refuse local paths on a cluster of several nodes unless ``shared_filesystem`` says every node sees them.

    Raises:
        ConfigError: a local output or source on a multi-node cluster without ``shared_filesystem=true``.
    """
    if len(nodes) <= 1 or config.shared_filesystem:
        return
    local = [("output", config.output)] if is_local(config.output) else []
    local += [("source", u) for u in config.source.urls if is_local(u)]
    if local:
        what, url = local[0]
        raise ConfigError(f"{what} {url!r} is a local path but the Ray cluster has {describe_nodes(nodes)}: each node would "
                          f"use its own disk; give s3:// URLs, or set shared_filesystem=true if every node mounts {url!r}")
