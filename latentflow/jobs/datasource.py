"""``ShardDatasource``: a Ray Data ``Datasource`` with one ReadTask per input shard not yet committed.

A shard is the unit of work and of commit, so each ReadTask returns the whole
shard as ONE block, and the runner keeps Ray from splitting it
(``override_num_blocks=len(shards)``, no target block size). Every row carries
its shard id and the shard's record count, so the sink can check it has the
whole shard before committing.

Row kinds (column ``kind``):
    ``sample``: a record to preprocess and encode;
    ``error``: a record that already failed (filled by later stages);
    ``shard_failed``: the shard could not be read after retries (one row, no key);
    ``shard_empty``: the shard holds no records (one row, so it still gets committed).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Iterable

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from latentflow.jobs.schema import (
    KIND_FAILED,
    RECORD_SCHEMA,
    records_table,
    shard_row,
)
from latentflow.sources.records import Shard
from latentflow.sources.shards import SourceConfig, read_shard

logger = logging.getLogger(__name__)

class ShardDatasource(Datasource):
    """Reads input shards, one block per shard, retrying unreadable shards.

    Args:
        shards: the shards to read (already filtered to those not committed).
        source: the source config (format, columns, ...).
        storage_options: fsspec options for the source (never stored).
        retries: extra read attempts before a shard is recorded as failed.
    """

    def __init__(self, shards: list[Shard], source: SourceConfig, storage_options: dict | None = None, retries: int = 2):
        super().__init__()
        self._shards = list(shards)
        self._source = source
        self._storage_options = storage_options or {}
        self._retries = retries

    def get_name(self) -> str:
        return "ReadShards"

    def estimate_inmemory_data_size(self) -> int | None:
        return None  # unknown until read; Ray then keeps one block per read task

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None) -> list[ReadTask]:
        """One ReadTask per shard, whatever ``parallelism`` asks: a shard is never split or merged."""
        return [
            ReadTask(
                functools.partial(read_shard_block, shard, self._source, self._storage_options, self._retries),
                BlockMetadata(num_rows=None, size_bytes=None, input_files=[shard.url], exec_stats=None),
                schema=RECORD_SCHEMA,
            )
            for shard in self._shards
        ]


def read_shard_block(shard: Shard, source: SourceConfig, storage_options: dict, retries: int) -> Iterable[pa.Table]:
    """Read one shard into one block (runs inside a Ray read task)."""
    source = _with_storage_options(source, storage_options)
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            records = list(read_shard(shard, source))
            return [records_table(shard, records)]
        except Exception as err:  # noqa: BLE001 - any read failure is retried, then recorded
            last = err
            logger.warning("reading shard %s failed (attempt %d/%d): %s", shard.shard_id, attempt + 1, retries + 1, err)
            time.sleep(min(0.2 * 2**attempt, 2.0))
    return [shard_failed_table(shard, last, retries + 1)]


def _with_storage_options(source: SourceConfig, storage_options: dict) -> SourceConfig:
    if storage_options and not getattr(source, "storage_options", None):
        return source.replace(storage_options=storage_options)
    return source


def shard_failed_table(shard: Shard, err: Exception | None, attempts: int) -> pa.Table:
    message = f"{type(err).__name__}: {err} (after {attempts} attempts)"
    return shard_row(shard, KIND_FAILED, ("read", "shard_unreadable", message))
