"""``LatentDatasink``: a Ray Data ``Datasink`` that commits each input shard exactly once.

``write`` runs in Ray write tasks. It groups the rows it gets by shard, checks
that it holds every row of each shard (the pipeline keeps a shard in one block),
and hands each shard to the data layer's ``ShardWriter``, which writes Parquet and
Zarr under deterministic names, commits them, and only then writes the
``_done/<shard>.json`` marker. Writing a shard twice (a retried task) overwrites
the same names with the same content, so a retry never duplicates rows.

A shard that could not be read gets no marker (a rerun tries it again); its
failure is returned to the driver and lands in ``errors.parquet``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import pyarrow as pa
from ray.data.block import BlockAccessor
from ray.data.datasource import Datasink
from ray.data.datasource.datasink import WriteResult

from latentflow.jobs.schema import (
    KIND_EMPTY,
    KIND_ERROR,
    KIND_FAILED,
    KIND_SAMPLE,
    encoded_shard,
    error_rows,
)
from latentflow.store.writer import ShardWriter

logger = logging.getLogger(__name__)


@dataclass
class ShardResult:
    """What one committed (or failed) shard reports back to the driver.

    Its counts add up: ``samples == rows + len(errors)`` for every shard whose samples were read
    (committed, or all failed); an unreadable shard has ``samples == 0`` and one keyless error.

    Attributes:
        samples: samples that reached the commit step (images, or clips plus videos that gave no
            clip), counted before the writer: every one is a row or an error row.
        rows: rows the writer committed (from its marker).
        errors: ``errors.parquet`` rows of the shard.
        failed: no marker (unreadable, or every sample failed): a rerun retries the shard.
    """

    shard: str
    url: str
    rows: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    failed: bool = False
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LatentDatasink(Datasink):
    """Commits whole shards through :class:`~latentflow.store.writer.ShardWriter`.

    Args:
        out_url: output directory (local path or fsspec URL).
        codec: the job's codec metadata (``latentflow.encode.codec_builder.build_codec``).
        formats: ``("parquet", "zarr")`` or a subset.
        storage_options: fsspec options for the output (never stored).
    """

    def __init__(self, out_url: str, codec, formats: tuple[str, ...], storage_options: dict | None = None):
        self.out_url = out_url
        self.codec = codec
        self.formats = tuple(formats)
        self.storage_options = storage_options or {}
        self.results: list[ShardResult] = []
        self.session = uuid.uuid4().hex  # this job's writers write the shared Zarr parents once per process

    def get_name(self) -> str:
        return "CommitShards"

    def write(self, blocks: Iterable[pa.Table], ctx: Any) -> list[dict]:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return []
        table = pa.concat_tables(tables, promote_options="permissive")
        writer = ShardWriter(self.out_url, self.codec, formats=self.formats, storage_options=self.storage_options, session=self.session)
        return [commit_shard(writer, part).to_dict() for part in split_by_shard(table)]

    def on_write_complete(self, write_result: WriteResult) -> None:
        self.results = [ShardResult(**r) for returns in write_result.write_returns for r in (returns or [])]


def split_by_shard(table: pa.Table) -> list[pa.Table]:
    """The rows of each shard, in shard order of first appearance, sorted by index in shard."""
    shards = table.column("shard").to_pylist()
    order = list(dict.fromkeys(shards))
    parts = []
    for shard in order:
        mask = pa.array([s == shard for s in shards])
        parts.append(table.filter(mask).sort_by("index_in_shard"))
    return parts


def commit_shard(writer: ShardWriter, part: pa.Table) -> ShardResult:
    """Commit one shard's rows (samples + errors), or report it as failed."""
    kinds = part.column("kind").to_pylist()
    shard, url = part.column("shard")[0].as_py(), part.column("shard_url")[0].as_py()
    if KIND_FAILED in kinds:
        return ShardResult(shard, url, errors=error_rows(part), failed=True)
    expected = part.column("shard_rows")[0].as_py()
    got = sum(k in (KIND_SAMPLE, KIND_ERROR) for k in kinds)
    if got != expected and KIND_EMPTY not in kinds:
        # internal invariant: the pipeline never splits a shard across write calls
        raise RuntimeError(f"shard {shard!r}: write got {got} of its {expected} rows; refusing a partial commit")
    encoded = encoded_shard(part, writer.array_names)
    if encoded.all_failed:  # no marker: reported as failed, so a rerun after the fix retries it
        logger.warning("shard %s: all %d samples failed; not committed", shard, len(encoded.errors))
        return ShardResult(shard, url, errors=list(encoded.errors), failed=True, samples=got)
    marker = writer.write_shard(shard, encoded.columns, list(encoded.errors))
    if marker.rows != encoded.rows:  # keys are unique per shard at the source: the writer never drops a sample
        logger.error("shard %s: %d rows handed to the writer, %d committed (duplicate keys)", shard, encoded.rows, marker.rows)
    logger.info("committed shard %s: %d rows, %d errors", shard, marker.rows, len(encoded.errors))
    return ShardResult(shard, url, rows=marker.rows, errors=list(encoded.errors), samples=got)
