"""Sources: list the shards of a dataset and read the records of one shard.

Formats (all through fsspec: local paths, ``s3://``, ``memory://``):

* ``webdataset``: tar shards; jpg/jpeg/png/webp images plus json/txt/cls members. Shard = tar file.
* ``parquet``: a column of image bytes (or HF ``Image`` structs). Shard = file, or file + row group.
* ``hf``: a dataset saved with ``save_to_disk`` (shard = arrow file), or ``load_dataset``
  arguments (shard = a contiguous index range).
* ``folder``: image files under a directory. Shard = a chunk of the sorted file list.

Example::

    cfg = SourceConfig(format="webdataset", urls=["s3://bucket/train-{0000..0099}.tar"])
    for shard in list_shards(cfg):
        records = read_shard(shard, cfg)
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import tarfile
from dataclasses import dataclass, field
from typing import Any, Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from braceexpand import braceexpand

from latentflow.data.configs import DataConfig, check_choice, check_positive
from latentflow.data.records import Record, Shard, shard_id_for
from latentflow.errors import ConfigError, ShardReadError

FORMATS = ("webdataset", "parquet", "hf", "folder")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")
STORAGE_OPTIONS_ENV = "LATENTFLOW_STORAGE_OPTIONS"
_CAPTION_NAMES = ("caption", "text", "txt")
_LABEL_NAMES = ("label", "cls")


@dataclass
class SourceConfig(DataConfig):
    """Where the images are and how to read them.

    Attributes:
        format: ``webdataset``, ``parquet``, ``hf`` or ``folder``.
        urls: files, directories, globs or brace patterns (``train-{000..009}.tar``).
        image_column: column of image bytes (parquet, hf).
        key_column: column of unique keys; None means ``<file stem>/<row index>``.
        caption_column, label_column, json_column: pass-through columns; None means
            auto-detect (``caption``/``text``, ``label``/``cls``, ``json``) when present.
        row_groups: parquet only: one shard per row group instead of per file.
        shard_size: images per shard for ``folder`` and for ``hf`` loaded by arguments.
        hf_load_args: keyword arguments of ``datasets.load_dataset`` (instead of ``urls``).
        split: split to read for ``hf`` sources.
        storage_options: fsspec options (credentials); never written or logged.
            None means ``$LATENTFLOW_STORAGE_OPTIONS`` (JSON) or fsspec's own defaults.
    """

    format: str = "webdataset"
    urls: list[str] = field(default_factory=list)
    image_column: str = "image"
    key_column: str | None = None
    caption_column: str | None = None
    label_column: str | None = None
    json_column: str | None = None
    row_groups: bool = False
    shard_size: int = 1000
    hf_load_args: dict[str, Any] | None = None
    split: str = "train"
    storage_options: dict[str, Any] | None = field(default=None, repr=False)

    def validate(self) -> None:
        name = type(self).__name__
        check_choice(name, "format", self.format, FORMATS)
        check_positive(name, "shard_size", self.shard_size)
        if not self.urls and not (self.format == "hf" and self.hf_load_args):
            raise ConfigError(f"{name}.urls must name at least one file, folder or pattern, got: {self.urls}")

    def fs_options(self) -> dict[str, Any]:
        """The storage options to use: the config's, else ``$LATENTFLOW_STORAGE_OPTIONS``, else none."""
        return resolve_storage_options(self.storage_options)

    def to_public_dict(self) -> dict[str, Any]:
        """``to_dict`` without storage options (safe to write into outputs)."""
        return {k: v for k, v in self.to_dict().items() if k != "storage_options"}


def resolve_storage_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Explicit options, else JSON from ``$LATENTFLOW_STORAGE_OPTIONS``, else ``{}``."""
    if options is not None:
        return dict(options)
    env = os.environ.get(STORAGE_OPTIONS_ENV)
    if not env:
        return {}
    try:
        return dict(json.loads(env))
    except (json.JSONDecodeError, TypeError, ValueError) as err:  # never echo the value: it holds secrets
        raise ConfigError(f"${STORAGE_OPTIONS_ENV} must be a JSON object ({type(err).__name__})") from None


# ---- listing -------------------------------------------------------------------


def _expand(urls: list[str], suffixes: tuple[str, ...], options: dict) -> list[str]:
    """Files named by ``urls`` (brace patterns, globs, directories), as full URLs, sorted and unique."""
    found: set[str] = set()
    for pattern in urls:
        for url in braceexpand(pattern):
            fs, path = fsspec.url_to_fs(url, **options)
            if any(ch in path for ch in "*?["):
                paths = fs.glob(path)
            elif fs.isdir(path):
                paths = [p for p in fs.find(path) if p.lower().endswith(suffixes)]
            else:
                paths = [path]
            found.update(fs.unstrip_protocol(p) if "://" in url else p for p in paths)
    return sorted(found)


def list_shards(cfg: SourceConfig) -> list[Shard]:
    """All shards of a source, sorted and deterministic.

    Args:
        cfg: the source config.

    Returns:
        the shards; their ``shard_id`` names the outputs of each.
    """
    options = cfg.fs_options()
    if cfg.format == "webdataset":
        return [Shard(shard_id_for(u), u, "webdataset") for u in _expand(cfg.urls, (".tar",), options)]
    if cfg.format == "parquet":
        return _parquet_shards(cfg, _expand(cfg.urls, (".parquet",), options), options)
    if cfg.format == "folder":
        return _folder_shards(cfg, options)
    return _hf_shards(cfg, options)


def _parquet_shards(cfg: SourceConfig, urls: list[str], options: dict) -> list[Shard]:
    if not cfg.row_groups:
        return [Shard(shard_id_for(u), u, "parquet") for u in urls]
    shards = []
    for url in urls:
        fs, path = fsspec.url_to_fs(url, **options)
        with fs.open(path, "rb") as f:
            count = pq.ParquetFile(f).num_row_groups
        shards += [Shard(shard_id_for(url, f"rg{g:05d}"), url, "parquet", row_group=g) for g in range(count)]
    return shards


def _folder_files(url: str, options: dict) -> list[str]:
    suffixes = tuple(f".{e}" for e in IMAGE_EXTENSIONS)
    fs, path = fsspec.url_to_fs(url, **options)
    return sorted(p for p in fs.find(path) if p.lower().endswith(suffixes))


def _folder_shards(cfg: SourceConfig, options: dict) -> list[Shard]:
    shards = []
    for url in sorted(cfg.urls):
        count = len(_folder_files(url, options))
        for start in range(0, count, cfg.shard_size):
            stop = min(start + cfg.shard_size, count)
            shards.append(Shard(shard_id_for(url, f"{start:09d}"), url, "folder", start=start, stop=stop))
    return shards


def _hf_shards(cfg: SourceConfig, options: dict) -> list[Shard]:
    if cfg.hf_load_args:
        ident = _hf_ident(cfg)
        count = len(_load_hf(ident, cfg.split))
        return [
            Shard(shard_id_for(ident, f"{s:09d}"), ident, "hf", start=s, stop=min(s + cfg.shard_size, count))
            for s in range(0, count, cfg.shard_size)
        ]
    shards = []
    for url in cfg.urls:
        for arrow_url in _saved_arrow_files(url, options):
            shards.append(Shard(shard_id_for(arrow_url), arrow_url, "hf"))
    return sorted(shards, key=lambda s: s.url)


def _saved_arrow_files(url: str, options: dict) -> list[str]:
    """The arrow files of a ``save_to_disk`` folder, in the order ``state.json`` lists them."""
    fs, path = fsspec.url_to_fs(url, **options)
    state = f"{path.rstrip('/')}/state.json"
    if not fs.exists(state):
        raise ConfigError(f"{url!r} is not a dataset saved with save_to_disk (no state.json); use hf_load_args for hub datasets")
    with fs.open(state, "r") as f:
        files = [d["filename"] for d in json.load(f)["_data_files"]]
    return [f"{url.rstrip('/')}/{name}" for name in files]


def _hf_ident(cfg: SourceConfig) -> str:
    return "hf-load:" + json.dumps(cfg.hf_load_args, sort_keys=True)


@functools.lru_cache(maxsize=4)
def _load_hf(ident: str, split: str):
    import datasets

    args = json.loads(ident.split(":", 1)[1])
    return datasets.load_dataset(**{"split": split, **args})


# ---- reading ---------------------------------------------------------------------


def read_shard(shard: Shard, cfg: SourceConfig) -> list[Record]:
    """All records of one shard, read fully before returning (a truncated shard fails as a whole).

    Raises:
        ShardReadError: the shard is missing, truncated or unreadable.
    """
    return list(iter_shard(shard, cfg))


def iter_shard(shard: Shard, cfg: SourceConfig) -> Iterator[Record]:
    """Records of one shard, streamed. A read failure mid-way raises :class:`ShardReadError`."""
    readers = {"webdataset": _iter_tar, "parquet": _iter_parquet, "hf": _iter_hf, "folder": _iter_folder}
    try:
        yield from readers[shard.format](shard, cfg, cfg.fs_options())
    except (ShardReadError, ConfigError):
        raise
    except (OSError, EOFError, tarfile.TarError, pa.ArrowException, ValueError) as err:
        raise ShardReadError(f"cannot read shard {shard.url!r} ({shard.format}): {type(err).__name__}: {err}") from err


def sanitize_member(name: str) -> str:
    """A tar member path made safe: no absolute path, no ``..``, no empty parts."""
    parts = [p for p in posixpath.normpath(name.replace("\\", "/")).split("/") if p not in ("", ".", "..")]
    return "/".join(parts)


def _iter_tar(shard: Shard, cfg: SourceConfig, options: dict) -> Iterator[Record]:
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    fs, path = fsspec.url_to_fs(shard.url, **options)
    with fs.open(path, "rb") as stream:
        files = ({**f, "__url__": shard.url} for f in tar_file_iterator(stream, rename_files=sanitize_member))
        for index, sample in enumerate(group_by_keys(files)):
            yield _tar_record(sample, index)


def _tar_record(sample: dict[str, Any], index: int) -> Record:
    image = next((sample[e] for e in IMAGE_EXTENSIONS if e in sample), None)
    text = sample.get("txt", sample.get("caption"))
    label = sample.get("cls")
    return Record(
        key=sample["__key__"],
        image=image,
        caption=text.decode("utf-8", "replace") if text is not None else None,
        label=_parse_label(label),
        json=sample["json"].decode("utf-8", "replace") if "json" in sample else None,
        index_in_shard=index,
    )


def _parse_label(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw.decode("utf-8").strip())
    except ValueError:
        return None


def _iter_parquet(shard: Shard, cfg: SourceConfig, options: dict) -> Iterator[Record]:
    fs, path = fsspec.url_to_fs(shard.url, **options)
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        if shard.row_group is None:
            table, offset = pf.read(), 0
        else:
            table = pf.read_row_group(shard.row_group)
            offset = sum(pf.metadata.row_group(g).num_rows for g in range(shard.row_group))
    yield from _table_records(table, cfg, _stem(shard.url), offset)


def _iter_hf(shard: Shard, cfg: SourceConfig, options: dict) -> Iterator[Record]:
    if shard.start is not None:  # load_dataset arguments: an index range
        table = _load_hf(shard.url, cfg.split).with_format("arrow")[shard.start : shard.stop]
        yield from _table_records(table, cfg, "hf", shard.start)
        return
    fs, path = fsspec.url_to_fs(shard.url, **options)
    with fs.open(path, "rb") as f:
        table = pa.ipc.open_stream(f).read_all()
    yield from _table_records(table, cfg, _stem(shard.url), 0)


def _iter_folder(shard: Shard, cfg: SourceConfig, options: dict) -> Iterator[Record]:
    fs, root = fsspec.url_to_fs(shard.url, **options)
    root = root.rstrip("/")
    for index, path in enumerate(_folder_files(shard.url, options)[shard.start : shard.stop]):
        with fs.open(path, "rb") as f:
            data = f.read()
        key = sanitize_member(path[len(root) :].rsplit(".", 1)[0])
        yield Record(key=key, image=data, index_in_shard=index)


def _stem(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]


def _column(table: pa.Table, wanted: str | None, candidates: tuple[str, ...], role: str) -> str | None:
    if wanted is not None:
        if wanted not in table.column_names:
            raise ConfigError(f"{role} column {wanted!r} not found; columns: {table.column_names}")
        return wanted
    return next((c for c in candidates if c in table.column_names), None)


def _table_records(table: pa.Table, cfg: SourceConfig, stem: str, offset: int) -> Iterator[Record]:
    image_col = _column(table, cfg.image_column, (), "image")
    key_col = _column(table, cfg.key_column, ("__key__", "key"), "key")
    cols = {
        "caption": _column(table, cfg.caption_column, _CAPTION_NAMES, "caption"),
        "label": _column(table, cfg.label_column, _LABEL_NAMES, "label"),
        "json": _column(table, cfg.json_column, ("json",), "json"),
    }
    data = {name: table.column(c).to_pylist() if c else None for name, c in {"image": image_col, "key": key_col, **cols}.items()}
    for i in range(table.num_rows):
        meta = data["json"][i] if data["json"] is not None else None
        yield Record(
            key=str(data["key"][i]) if data["key"] is not None else f"{stem}/{offset + i:09d}",
            image=_image_bytes(data["image"][i]),
            caption=data["caption"][i] if data["caption"] is not None else None,
            label=int(data["label"][i]) if data["label"] is not None and data["label"][i] is not None else None,
            json=meta if meta is None or isinstance(meta, str) else json.dumps(meta, sort_keys=True),
            index_in_shard=i,
        )


def _image_bytes(value: Any) -> bytes | None:
    """Raw bytes, or an HF ``Image`` struct ``{"bytes": ..., "path": ...}``."""
    if isinstance(value, dict):
        value = value.get("bytes")
    return bytes(value) if value else None
