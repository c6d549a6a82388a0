"""Helpers of the audio job tests: the shipped shard and config, the job script, an output's rows read back
(local or s3://), small tar shards of the shipped sounds, and a direct encode (no Ray) of the same segments."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import torch

from latentflow.encode.shard import build_processor, process_records, stack_pixels
from latentflow.format.state import committed_shards
from latentflow.sources.shards import SourceConfig, list_shards, read_shard

ROOT = Path(__file__).resolve().parents[2]
SHARD = str(ROOT / "data" / "audio" / "shards" / "audio-000000.tar")
CONFIG = str(ROOT / "configs" / "encode" / "audio_default.yaml")
MODEL = str(ROOT / "models" / "audio-vae-tiny")
sys.path.insert(0, str(ROOT / "jobs"))
import encode_dataset  # noqa: E402  (the job script itself)


def encode(out: Path | str, *overrides: str) -> int:
    """``python jobs/encode_dataset.py --config configs/encode/audio_default.yaml`` with ``overrides``."""
    return encode_dataset.main(["--config", CONFIG, "--no-progress", f"output={out}", "num_actors=1", *overrides])


def parquet_rows(out: Path | str, storage_options: dict | None = None) -> dict[str, dict]:
    """``{key: row}`` of an output's Parquet files. They are exactly the committed shards' files (no
    leftover of a killed writer), each holds its marker's row count, and no key is in two rows."""
    fs, root = fsspec.url_to_fs(str(out), **(storage_options or {}))
    fs.invalidate_cache()
    markers = committed_shards(str(out), storage_options)
    files = {fsspec.url_to_fs(f, **(storage_options or {}))[1]: m for m in markers.values() for f in m.parquet_files}
    assert sorted(fs.glob(f"{root.rstrip('/')}/parquet/**/*.parquet")) == sorted(files)
    rows: dict[str, dict] = {}
    per_marker: dict[str, int] = {}
    for path, marker in files.items():
        with fs.open(path, "rb") as f:
            table = pq.read_table(f).to_pylist()
        per_marker[marker.shard_id] = per_marker.get(marker.shard_id, 0) + len(table)
        for row in table:
            assert row["key"] not in rows, f"duplicated row {row['key']}"
            rows[row["key"]] = row
    assert per_marker == {m.shard_id: m.rows for m in markers.values() if m.rows}
    return rows


def write_sound_shards(folder: Path, names: list[str]) -> list[str]:
    """One WebDataset tar per shipped sound of ``names`` (``<folder>/sounds-NNN.tar``: ``<name>.wav`` and a
    caption ``<name>.txt``); returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        path = folder / f"sounds-{i:03d}.tar"
        members = {f"{name}.wav": (ROOT / "data" / "audio" / f"{name}.wav").read_bytes(), f"{name}.txt": f"the {name} sound".encode()}
        with tarfile.open(path, "w") as tar:
            for member, data in members.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        paths.append(str(path))
    return paths


def direct_encode(model, processor_config, source: SourceConfig) -> tuple[list, np.ndarray]:
    """Every shard of ``source`` read, cut by ``processor_config`` (the codec's processor, as run) and encoded
    (posterior mean) here in one batch, without Ray: ``(segments, latents)`` in the same order."""
    processor = build_processor(processor_config, model.downsample_factor)
    segments = []
    for shard in list_shards(source):
        good, errors = process_records(read_shard(shard, source), processor, shard.shard_id)
        assert not errors, errors
        segments += good
    with torch.no_grad():
        z = model.encode(stack_pixels(segments)).latent_dist.mean.numpy()  # (B, C, t)
    return segments, z


def assert_rows_equal_the_direct_encode(rows: dict[str, dict], segments: list, z: np.ndarray, sample_rate: int,
                                        channels: int = 1) -> None:
    """The job's rows are the direct encode's segments, once each: latents and segment metadata."""
    assert sorted(rows) == sorted(s.key for s in segments)
    for i, s in enumerate(segments):
        row = rows[s.key]
        np.testing.assert_allclose(np.asarray(row["latent"], np.float32), z[i], atol=1e-5, rtol=1e-5, err_msg=s.key)
        assert (row["source_key"], row["segment_index"], row["valid_length"]) == (s.segment.source_key, s.segment.segment_index,
                                                                               s.segment.valid_length)
        assert (row["start_time"], row["duration"], row["sample_rate"], row["channels"]) == (
            s.segment.start_time, s.segment.duration, sample_rate, channels)
