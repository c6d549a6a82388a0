"""Sources: list the shards of a dataset and read the records of one shard.

Formats (all through fsspec: local paths, ``s3://``, ``memory://``):

* ``webdataset``: tar shards; jpg/jpeg/png/webp images or mp4/webm/mkv/mov videos, plus
  json/txt/cls members. Shard = tar file.
* ``parquet``: a column of image or video bytes (or HF ``Image``/``Video`` structs), named by
  ``source.image_column`` (the media column: one knob for both). Shard = file, or file + row group.
* ``hf``: a ``Dataset`` or ``DatasetDict`` saved with ``save_to_disk`` (shard = arrow file of
  ``source.split``), or ``load_dataset`` arguments (shard = a contiguous index range). ``Image``
  and ``Video`` columns (both ``{bytes, path}`` structs) are read by bytes, or by path (through
  fsspec) when the bytes are not embedded (datasets 5.2: a ``Video`` column of local files and a
  loaded ``videofolder`` hold paths only; ``save_to_disk`` embeds the bytes).
* ``folder``: image and video files under a directory. Shard = a chunk of the sorted file list.
  Captions come from ``<stem>.txt`` / ``<stem>.caption`` sidecars (kohya, SimpleTuner, ai-toolkit,
  musubi-tuner) or from a ``metadata.jsonl`` (HF ``imagefolder``/``videofolder``), see :func:`_metadata_line`.

A record holds the media bytes in ``Record.image`` and says what they are in ``Record.media``
(``"image"`` or ``"video"``, from the extension, else the bytes' signature). One video becomes
many rows (clips) downstream; the input shard stays the unit of work and of commit.

Keys are unique, never silently merged: the first sample read under a key keeps it, and every
later one becomes a ``read/duplicate_key`` error row naming both (:func:`~latentflow.sources.records.unique_keys`):
a folder's ``dup.jpg`` and ``dup.png`` (also across the folder's shards), a tar sample with two media
members of one kind (``a.jpg`` + ``a.png``) or a key seen again later in the tar, a Parquet/HF key
column holding a value twice in one shard.

:func:`list_shards` refuses a source that names no data or names a missing column with a
:class:`ConfigError`, before any Ray task starts; a bad sample stays a per-sample error.

Example::

    cfg = SourceConfig(format="webdataset", urls=["s3://bucket/train-{0000..0099}.tar"])
    for shard in list_shards(cfg):
        records = read_shard(shard, cfg)
"""

from __future__ import annotations

import bisect
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

from latentflow.configuration import Config, check_choice, check_positive
from latentflow.errors import ConfigError, ShardReadError
from latentflow.sources.records import (
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Record,
    Shard,
    duplicate_key,
    media_kind,
    shard_id_for,
    unique_keys,
)

FORMATS = ("webdataset", "parquet", "hf", "folder")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS  # a tar sample's first member with one of these is its media
STORAGE_OPTIONS_ENV = "LATENTFLOW_STORAGE_OPTIONS"
METADATA_FILE = "metadata.jsonl"
_CAPTION_NAMES = ("caption", "text", "txt")
_LABEL_NAMES = ("label", "cls")
_SIDECARS = (".txt", ".caption")  # caption files beside an image or video, in this order of preference


@dataclass
class SourceConfig(Config):
    """Where the images or videos are and how to read them.

    Attributes:
        format: ``webdataset``, ``parquet``, ``hf`` or ``folder``.
        urls: files, directories, globs or brace patterns (``train-{000..009}.tar``); one string
            or a list, always stored as a list.
        image_column: the media column (parquet, hf): image or video bytes, or HF ``Image``/``Video``
            structs; set it to ``video`` for the usual HF video datasets.
        key_column: column of unique keys; None means ``<file stem>/<row index>``.
        caption_column, label_column, json_column: pass-through columns (and ``metadata.jsonl``
            keys of a folder); None means auto-detect (``caption``/``text``, ``label``/``cls``,
            ``json``) when present.
        row_groups: parquet only: one shard per row group instead of per file.
        shard_size: images or videos per shard for ``folder`` and for ``hf`` loaded by arguments.
        hf_load_args: keyword arguments of ``datasets.load_dataset`` (instead of ``urls``).
        split: split to read for ``hf`` sources (``load_dataset`` or a saved ``DatasetDict``).
        media: ``image``, ``video`` or ``audio`` reads only that kind (tar members, folder files; a table
            column is taken as that kind; ``audio`` reads wav/flac/mp3/ogg/opus/m4a and the audio track of
            mp4/webm/mkv/mov, set by an encode job's ``audio:`` section); None reads images and videos, and a
            tar sample with both (a video and its thumbnail) gives its video.
        storage_options: fsspec options (credentials); never written or logged.
            None means ``$LATENTFLOW_STORAGE_OPTIONS`` (JSON) or fsspec's own defaults.
    """

    format: str = "webdataset"
    urls: list[str] | str = field(default_factory=list)
    image_column: str = "image"
    key_column: str | None = None
    caption_column: str | None = None
    label_column: str | None = None
    json_column: str | None = None
    row_groups: bool = False
    shard_size: int = 1000
    hf_load_args: dict[str, Any] | None = None
    split: str = "train"
    media: str | None = None
    storage_options: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.urls, (str, tuple)):  # one pattern is a list of one
            self.urls = [self.urls] if isinstance(self.urls, str) else list(self.urls)
        super().__post_init__()

    def validate(self) -> None:
        name = type(self).__name__
        check_choice(name, "format", self.format, FORMATS)
        check_positive(name, "shard_size", self.shard_size)
        check_choice(name, "media", self.media, (None, "image", "video", "audio"))
        if not isinstance(self.urls, list) or not all(isinstance(u, str) and u for u in self.urls):
            raise ConfigError(f"{name}.urls must be a non-empty string or a list of them, got: {self.urls!r}")
        if not self.urls and not (self.format == "hf" and self.hf_load_args):
            raise ConfigError(f"{name}.urls must name at least one file, folder or pattern, got: {self.urls}")

    def fs_options(self) -> dict[str, Any]:
        """The storage options to use: the config's, else ``$LATENTFLOW_STORAGE_OPTIONS``, else none."""
        return resolve_storage_options(self.storage_options)

    def to_public_dict(self) -> dict[str, Any]:
        """``to_dict`` without storage options (safe to write into outputs)."""
        return {k: v for k, v in self.to_dict().items() if k != "storage_options"}


def media_extensions(media: str | None) -> tuple[str, ...]:
    """The member/file extensions a source with ``media`` reads, in order of preference."""
    # audio: audio files first, then the audio track of video files
    return {"image": IMAGE_EXTENSIONS, "video": VIDEO_EXTENSIONS, "audio": AUDIO_EXTENSIONS + VIDEO_EXTENSIONS}.get(
        media or "", MEDIA_EXTENSIONS)


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


def _no_match(cfg: SourceConfig, patterns: list[str], what: str = "files") -> ConfigError:
    shown = patterns[:5] + ([f"... {len(patterns) - 5} more"] if len(patterns) > 5 else [])
    return ConfigError(f"source.urls matched no {what}: {shown} (format {cfg.format}); check the path/pattern")


def _expand(cfg: SourceConfig, suffixes: tuple[str, ...], options: dict) -> list[str]:
    """Files named by ``cfg.urls`` (brace patterns, globs, directories), as full URLs, sorted and unique.

    Raises:
        ConfigError: a pattern, directory or file that matches nothing (before any Ray task).
    """
    found: set[str] = set()
    missing: list[str] = []
    for pattern in cfg.urls:
        for url in braceexpand(pattern):
            paths = _match(url, suffixes, options)
            missing += [] if paths else [url]
            found.update(paths)
    if missing:
        raise _no_match(cfg, missing)
    return sorted(found)


def _match(url: str, suffixes: tuple[str, ...], options: dict) -> list[str]:
    """What one expanded URL names: a glob's matches, a directory's files with ``suffixes``, or the file."""
    fs, path = fsspec.url_to_fs(url, **options)
    if any(ch in path for ch in "*?["):
        paths = fs.glob(path)
    else:
        try:
            is_dir = fs.info(path)["type"] == "directory"
        except FileNotFoundError:
            return []
        paths = [p for p in fs.find(path) if p.lower().endswith(suffixes)] if is_dir else [path]
    return [fs.unstrip_protocol(p) if "://" in url else p for p in paths]


def list_shards(cfg: SourceConfig) -> list[Shard]:
    """All shards of a source, sorted and deterministic, checked by :func:`check_source`.

    Args:
        cfg: the source config.

    Returns:
        the shards; their ``shard_id`` names the outputs of each.

    Raises:
        ConfigError: the URLs match no shard, or a configured column is missing (see :func:`check_source`).
    """
    shards = _list_shards(cfg)
    check_source(cfg, shards)
    return shards


def _list_shards(cfg: SourceConfig) -> list[Shard]:
    options = cfg.fs_options()
    if cfg.format == "webdataset":
        return [Shard(shard_id_for(u), u, "webdataset") for u in _expand(cfg, (".tar",), options)]
    if cfg.format == "parquet":
        return _parquet_shards(cfg, _expand(cfg, (".parquet",), options), options)
    if cfg.format == "folder":
        return _folder_shards(cfg, options)
    return _hf_shards(cfg, options)


def check_source(cfg: SourceConfig, shards: list[Shard] | None = None) -> None:
    """Refuse source-level mistakes on the driver, before Ray starts (reads one schema at most).

    Checks that the source has shards; for ``parquet`` and ``hf``, that the first shard's
    schema holds the image column (as bytes or an HF ``Image`` struct) and every configured
    column (listing a ``folder`` already checks its ``metadata.jsonl`` files). A problem with one
    sample (a corrupt or missing image) is not checked here: it stays a per-sample error.

    Args:
        cfg: the source config.
        shards: its shards, when already listed; None lists them.

    Raises:
        ConfigError: what is wrong, with the value and the fix.

    Example::

        check_source(SourceConfig(format="parquet", urls="data/*.parquet", image_column="jpg"))
    """
    shards = _list_shards(cfg) if shards is None else shards
    if not shards:
        raise _no_match(cfg, cfg.urls or [_hf_ident(cfg)], "rows" if cfg.hf_load_args else "files")
    schema = _first_schema(shards[0], cfg)
    if schema is None:
        return
    names = list(schema.names)
    for role, wanted in (("image", cfg.image_column), ("key", cfg.key_column), ("caption", cfg.caption_column),
                         ("label", cfg.label_column), ("json", cfg.json_column)):
        _column(names, wanted, (), role, shards[0].url)
    kind = schema.field(cfg.image_column).type
    if not _is_image_type(kind):
        raise ConfigError(f"image column {cfg.image_column!r} of {shards[0].url!r} holds {kind}; expected image bytes or "
                          "video bytes (binary), or an HF Image/Video struct {bytes, path}; set source.image_column")


def _first_schema(shard: Shard, cfg: SourceConfig) -> pa.Schema | None:
    """The schema of a table shard (parquet footer, arrow stream header, loaded dataset); None for files."""
    if shard.format == "hf" and shard.start is not None:
        return _load_hf(shard.url, cfg.split).features.arrow_schema
    if shard.format not in ("parquet", "hf"):
        return None
    fs, path = fsspec.url_to_fs(shard.url, **cfg.fs_options())
    try:
        with fs.open(path, "rb") as f:
            return pq.read_schema(f) if shard.format == "parquet" else pa.ipc.open_stream(f).schema
    except (OSError, pa.ArrowException) as err:
        raise ShardReadError(f"cannot read the schema of {shard.url!r} ({shard.format}): {type(err).__name__}: {err}") from err


def _is_image_type(kind: pa.DataType) -> bool:
    if pa.types.is_struct(kind):
        return any(kind.field(i).name in ("bytes", "path") for i in range(kind.num_fields))
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)


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


def _folder_shards(cfg: SourceConfig, options: dict) -> list[Shard]:
    shards, empty = [], []
    for url in sorted({u for pattern in cfg.urls for u in braceexpand(pattern)}):
        fs, _, images, files = _folder_listing(url, options, cfg.media)
        _check_metadata_files(cfg, fs, files)
        count = len(images)
        empty += [] if count else [url]
        # read by Ray workers, whose working directory is not this one: an absolute path (the id keeps the URL as given)
        where = url if "://" in url else os.path.abspath(url)
        for start in range(0, count, cfg.shard_size):
            stop = min(start + cfg.shard_size, count)
            shards.append(Shard(shard_id_for(url, f"{start:09d}"), where, "folder", start=start, stop=stop))
    if empty:
        raise _no_match(cfg, empty, f"media files ({'/'.join(media_extensions(cfg.media))})")
    return shards


def _check_metadata_files(cfg: SourceConfig, fs: Any, files: dict[str, dict]) -> None:
    """Parse every ``metadata.jsonl`` of a folder; a configured caption/label key must be in its first line."""
    for path in (p for p in files if posixpath.basename(p) == METADATA_FILE):
        first = next(iter(_metadata_lines(fs, path, _stamp(files[path])).values()), "{}")
        for role, wanted in (("caption", cfg.caption_column), ("label", cfg.label_column)):
            _column(list(json.loads(first)), wanted, (), role, path)


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
        for arrow_url in _saved_arrow_files(url, cfg.split, options):
            shards.append(Shard(shard_id_for(arrow_url), arrow_url, "hf"))
    return sorted(shards, key=lambda s: s.url)


def _saved_arrow_files(url: str, split: str, options: dict) -> list[str]:
    """The arrow files of a ``save_to_disk`` folder, in the order ``state.json`` lists them.

    A saved ``DatasetDict`` (``dataset_dict.json`` and one folder per split) reads the folder of ``split``.
    """
    fs, path = fsspec.url_to_fs(url, **options)
    path, url = path.rstrip("/"), url.rstrip("/")
    if not fs.exists(f"{path}/state.json") and fs.exists(f"{path}/dataset_dict.json"):
        with fs.open(f"{path}/dataset_dict.json", "r") as f:
            splits = json.load(f)["splits"]
        if split not in splits:
            raise ConfigError(f"source.split {split!r} is not a split of the DatasetDict {url!r}; available splits: {splits}")
        path, url = f"{path}/{split}", f"{url}/{split}"
    if not fs.exists(f"{path}/state.json"):
        raise ConfigError(f"{url!r} is not a dataset saved with save_to_disk (no state.json); use hf_load_args for hub datasets")
    with fs.open(f"{path}/state.json", "r") as f:
        files = [d["filename"] for d in json.load(f)["_data_files"]]
    return [f"{url}/{name}" for name in files]


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
    """Records of one shard, streamed, keys unique (a repeated key is a ``duplicate_key`` error record,
    see the module doc). A read failure mid-way raises :class:`ShardReadError`."""
    readers = {"webdataset": _iter_tar, "parquet": _iter_parquet, "hf": _iter_hf, "folder": _iter_folder}
    try:
        yield from unique_keys(readers[shard.format](shard, cfg, cfg.fs_options()))
    except (ShardReadError, ConfigError):
        raise
    except (OSError, EOFError, tarfile.TarError, pa.ArrowException, ValueError) as err:
        raise ShardReadError(f"cannot read shard {shard.url!r} ({shard.format}): {type(err).__name__}: {err}") from err


def sanitize_member(name: str) -> str:
    """A tar member path made safe: no absolute path, no ``..``, no empty parts."""
    parts = [p for p in posixpath.normpath(name.replace("\\", "/")).split("/") if p not in ("", ".", "..")]
    return "/".join(parts)


def _iter_tar(shard: Shard, cfg: SourceConfig, options: dict) -> Iterator[Record]:
    from webdataset.tariterators import tar_file_iterator

    fs, path = fsspec.url_to_fs(shard.url, **options)
    index = 0
    with fs.open(path, "rb") as stream:
        for sample in _tar_samples(tar_file_iterator(stream, rename_files=sanitize_member)):
            for record in _tar_records(sample, index, media_extensions(cfg.media)):
                yield record
                index += 1


def _tar_samples(files: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Consecutive members grouped by key (``a.jpg``, ``a.txt`` -> ``{"__key__": "a", "jpg": ..., "txt": ...}``).

    As webdataset's ``group_by_keys`` (same key/suffix split, suffix lowercased), except that a
    member whose suffix the current sample already holds (``a.jpg`` twice) starts a new sample with
    the same key, which :func:`~latentflow.sources.records.unique_keys` reports as a duplicate,
    instead of failing the whole shard. ``__names__`` maps each suffix to its member name.
    """
    from webdataset.tariterators import base_plus_ext

    sample: dict[str, Any] | None = None
    for member in files:
        prefix, suffix = base_plus_ext(member["fname"])
        if prefix is None:
            continue
        suffix = suffix.lower()
        if sample is None or prefix != sample["__key__"] or suffix in sample:
            if sample is not None:
                yield sample
            sample = {"__key__": prefix, "__names__": {}}
        sample[suffix] = member["data"]
        sample["__names__"][suffix] = member["fname"]
    if sample is not None:
        yield sample


def _tar_records(sample: dict[str, Any], index: int, extensions: tuple[str, ...]) -> list[Record]:
    """The record of one tar sample, plus a ``duplicate_key`` error record per extra media member.

    The media is the first member with one of ``extensions`` (videos before images): a sample
    with a video and an image gives its video (the image is its thumbnail). A second member of the
    chosen kind (``a.jpg`` + ``a.png``, ``a.mp4`` + ``a.webm``) is another sample under the same key.
    """
    names = sample["__names__"]
    present = [e for e in extensions if e in sample]
    kind = media_kind(f".{present[0]}") if present else None
    media = [e for e in present if media_kind(f".{e}") == kind]
    text = sample.get("txt", sample.get("caption"))
    record = Record(
        key=sample["__key__"],
        image=sample[media[0]] if media else None,
        caption=text.decode("utf-8", "replace") if text is not None else None,
        label=_parse_label(sample.get("cls")),
        json=sample["json"].decode("utf-8", "replace") if "json" in sample else None,
        index_in_shard=index,
        media=media_kind(f".{media[0]}" if media else None),
        origin=names[media[0]] if media else f"tar sample {sample['__key__']!r}",
    )
    extra = [Record(record.key, None, index_in_shard=index + 1 + i, media=record.media, origin=names[e],
                    error=duplicate_key(record.key, names[e], record.origin)) for i, e in enumerate(media[1:])]
    return [record, *extra]


def _parse_label(raw: Any) -> int | None:
    """An integer label from a ``.cls`` member, a column or a metadata value; None when it is not an integer."""
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        return int(raw.strip()) if isinstance(raw, str) else None
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


def _stem(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]


def _column(names: list[str], wanted: str | None, candidates: tuple[str, ...], role: str, where: str = "the table") -> str | None:
    """``wanted`` when set (an error names the columns there are), else the first candidate present."""
    if wanted is not None:
        if wanted not in names:
            raise ConfigError(f"{role} column {wanted!r} not found in {where}; columns: {names}; set source.{role}_column")
        return wanted
    return next((c for c in candidates if c in names), None)


def _table_records(table: pa.Table, cfg: SourceConfig, stem: str, offset: int) -> Iterator[Record]:
    names, options = table.column_names, cfg.fs_options()
    image_col = _column(names, cfg.image_column, (), "image")
    key_col = _column(names, cfg.key_column, ("__key__", "key"), "key")
    cols = {
        "caption": _column(names, cfg.caption_column, _CAPTION_NAMES, "caption"),
        "label": _column(names, cfg.label_column, _LABEL_NAMES, "label"),
        "json": _column(names, cfg.json_column, ("json",), "json"),
    }
    data = {name: table.column(c).to_pylist() if c else None for name, c in {"image": image_col, "key": key_col, **cols}.items()}
    for i in range(table.num_rows):
        meta = data["json"][i] if data["json"] is not None else None
        media = _image_bytes(data["image"][i], options)
        yield Record(
            key=str(data["key"][i]) if data["key"] is not None else f"{stem}/{offset + i:09d}",
            image=media,
            caption=_text(data["caption"][i]) if data["caption"] is not None else None,
            label=_parse_label(data["label"][i]) if data["label"] is not None else None,
            json=meta if meta is None or isinstance(meta, str) else json.dumps(meta, sort_keys=True),
            index_in_shard=i,
            media=cfg.media or media_kind(_path_of(data["image"][i]), media),
            origin=f"row {offset + i} of {stem}",
        )


def _path_of(value: Any) -> str | None:
    """The ``path`` of an HF ``Image``/``Video`` struct (its extension tells the media), else None."""
    return value.get("path") if isinstance(value, dict) else None


def _image_bytes(value: Any, options: dict) -> bytes | None:
    """Raw bytes, or an HF ``Image``/``Video`` struct ``{"bytes": ..., "path": ...}``.

    A struct without bytes is read from its path (what ``load_dataset("imagefolder")`` holds, and
    what ``save_to_disk`` of older ``datasets`` versions stores); a path that does not exist gives
    None, which the processor records as a per-sample ``missing_image`` error.
    """
    if isinstance(value, dict):
        if not value.get("bytes") and value.get("path"):
            return _read_image_path(value["path"], options)
        value = value.get("bytes")
    return bytes(value) if value else None


def _read_image_path(path: str, options: dict) -> bytes | None:
    # the source's storage options belong to its object store; a local path needs none
    fs, fs_path = fsspec.url_to_fs(path, **(options if "://" in path else {}))
    try:
        with fs.open(fs_path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


# ---- folders -------------------------------------------------------------------


def _folder_listing(url: str, options: dict, media: str | None) -> tuple[Any, str, list[str], dict[str, dict]]:
    """``(fs, root, sorted media paths, {every file path: its info})`` under one folder URL (one ``find``)."""
    suffixes = tuple(f".{e}" for e in media_extensions(media))
    fs, root = fsspec.url_to_fs(url, **options)
    files = fs.find(root, detail=True)
    images = sorted(p for p in files if p.lower().endswith(suffixes))
    return fs, root.rstrip("/"), images, files


def _folder_key(root: str, path: str) -> str:
    """A folder file's key: its path under the root without the extension (``sub/cat.jpg`` -> ``sub/cat``)."""
    return sanitize_member(path[len(root) :].rsplit(".", 1)[0])


def _earlier_with_key(images: list[str], start: int, root: str, path: str) -> str | None:
    """The name of the first file before ``images[start]`` (a sorted listing) with the key of ``path``.

    Files of one key differ only after their stem's last dot, so they are one sorted run beginning
    with ``<stem>.``: a bisection finds it, and a shard checks only its own files' runs.
    """
    stem, key = path.rsplit(".", 1)[0] + ".", _folder_key(root, path)
    for other in images[bisect.bisect_left(images, stem, 0, start) : start]:
        if not other.startswith(stem):
            return None
        if _folder_key(root, other) == key:
            return other[len(root) + 1 :]
    return None


def _iter_folder(shard: Shard, cfg: SourceConfig, options: dict) -> Iterator[Record]:
    fs, root, images, files = _folder_listing(shard.url, options, cfg.media)
    for index, path in enumerate(images[shard.start : shard.stop]):
        key, name = _folder_key(root, path), path[len(root) + 1 :]
        first = _earlier_with_key(images, shard.start, root, path)  # dup.png in the shard after dup.jpg's
        if first is not None:
            yield Record(key, None, index_in_shard=index, media=media_kind(path), origin=name,
                         error=duplicate_key(key, name, first))
            continue
        with fs.open(path, "rb") as f:
            data = f.read()
        line = _metadata_line(fs, root, path, files)
        row = json.loads(line) if line else {}
        caption = _sidecar_caption(fs, path, files)
        yield Record(
            key=key,
            image=data,
            caption=caption if caption is not None else _text(_pick(row, cfg.caption_column, _CAPTION_NAMES)),
            label=_parse_label(_pick(row, cfg.label_column, _LABEL_NAMES)),
            json=line,
            index_in_shard=index,
            media=media_kind(path),
            origin=name,
        )


def _sidecar_caption(fs: Any, image_path: str, files: dict) -> str | None:
    """The text of ``<stem>.txt`` (else ``<stem>.caption``) beside an image or video, trailing whitespace stripped."""
    stem = image_path.rsplit(".", 1)[0]
    for sidecar in (stem + ext for ext in _SIDECARS):
        if sidecar in files:
            with fs.open(sidecar, "rb") as f:
                return f.read().decode("utf-8", "replace").rstrip()
    return None


def _metadata_line(fs: Any, root: str, image_path: str, files: dict) -> str | None:
    """The ``metadata.jsonl`` line of an image, from the nearest such file in its folder or above (up to the root).

    As in HF ``imagefolder``, ``file_name`` is relative to the folder holding ``metadata.jsonl``.
    Unlike it, an image no line names is still read (without metadata), not dropped.
    """
    folder = posixpath.dirname(image_path)
    while True:
        meta = f"{folder}/{METADATA_FILE}"
        if meta in files:
            line = _metadata_lines(fs, meta, _stamp(files[meta])).get(image_path[len(folder) + 1 :])
            if line is not None:
                return line
        if len(folder) <= len(root) or posixpath.dirname(folder) == folder:
            return None
        folder = posixpath.dirname(folder)


def _stamp(info: dict) -> str:
    """Size and modification time of a listed file: a changed file is parsed again."""
    return f"{info.get('size')}:{info.get('mtime') or info.get('LastModified') or info.get('created')}"


@functools.lru_cache(maxsize=8)  # every shard of a folder shares its metadata files: parse each once per process
def _metadata_lines(fs: Any, path: str, stamp: str) -> dict[str, str]:
    """``file_name`` (normalized, relative to the folder of ``path``) -> its line of ``metadata.jsonl``."""
    rows = {}
    with fs.open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            line = raw.decode("utf-8", "replace").strip()
            if line:
                rows[_metadata_file_name(line, f"{path}:{number}")] = line
    return rows


def _metadata_file_name(line: str, where: str) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        row = None
    name = row.get("file_name") if isinstance(row, dict) else None
    if not isinstance(name, str):
        raise ConfigError(f"{where}: each metadata.jsonl line must be a JSON object with a string 'file_name', got: {line[:120]!r}")
    rel = posixpath.normpath(name.replace("\\", "/"))
    if "://" in name or rel.startswith("/") or rel == ".." or rel.startswith("../"):
        raise ConfigError(f"{where}: file_name must be a relative path inside the folder of metadata.jsonl "
                          f"(as in HF imagefolder), got: {name!r}")
    return rel


def _pick(row: dict, wanted: str | None, candidates: tuple[str, ...]) -> Any:
    key = wanted if wanted is not None else next((c for c in candidates if c in row), None)
    return row.get(key) if key is not None else None


def _text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else json.dumps(value)
