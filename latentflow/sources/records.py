"""What flows from a source to the encoder: shards, records, and per-sample errors.

A :class:`Shard` is the unit of work and of commit (one tar file, one Parquet
file or row group, one chunk of a folder). A :class:`Record` is one sample read
from it: an image or a video. A :class:`SampleError` marks one bad sample; the job
records it in ``errors.parquet`` and goes on. One video gives many rows, keyed
:func:`clip_key`; they all come from (and commit with) the video's shard.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Iterator

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def shard_id_for(url: str, part: str | None = None) -> str:
    """A filesystem-safe, deterministic id for a shard URL (plus an optional part such as a row group).

    The readable stem keeps output names recognisable; the hash of the full URL
    keeps two ``train-0000.tar`` in different folders apart.

    Example::

        shard_id_for("s3://b/data/train-0001.tar")  # 'train-0001-5d41402abc'
    """
    name = url.rstrip("/").rsplit("/", 1)[-1]
    url = _portable(url)
    stem = name.split(".", 1)[0] or "shard"
    stem = _UNSAFE.sub("_", stem)[:64].strip("._") or "shard"
    ident = url if part is None else f"{url}#{part}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:10]
    return f"{stem}-{part}-{digest}" if part is not None else f"{stem}-{digest}"


def _portable(url: str) -> str:
    """Identity of a local path that survives a move of the working directory.

    ``ray job submit --working-dir .`` runs each submission in a fresh copy of the
    directory, so an absolute path under it differs between runs; relative to the
    working directory it does not, and committed shards are recognised on rerun.
    """
    if "://" in url and not url.startswith("file://"):
        return url
    path = os.path.abspath(url.removeprefix("file://"))
    cwd = os.getcwd()
    return os.path.relpath(path, cwd) if path.startswith(cwd + os.sep) else path


@dataclass(frozen=True)
class Shard:
    """One input shard.

    Attributes:
        shard_id: deterministic, filesystem-safe id; names every output file of this shard.
        url: where it lives (local path or fsspec URL).
        format: ``webdataset``, ``parquet``, ``hf`` or ``folder``.
        row_group: Parquet row group, when a shard is one row group.
        start, stop: a contiguous index range (HF datasets loaded by arguments, folders).
    """

    shard_id: str
    url: str
    format: str
    row_group: int | None = None
    start: int | None = None
    stop: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Shard":
        return cls(**data)


@dataclass
class Record:
    """One sample read from a shard.

    Attributes:
        key: unique sample key within the dataset (e.g. the tar member stem).
        image: the media bytes: an encoded image (jpg/png/...) or a video file (mp4/webm/mkv/mov),
            see ``media``; None when the sample has no media member.
        caption: text that passes through to the output row.
        label: integer class label that passes through.
        json: the sample's JSON metadata as a string (passes through verbatim).
        index_in_shard: position of the sample in its shard.
        media: ``"image"`` or ``"video"``: what ``image`` holds, from the member's or file's
            extension (or, for table columns, the bytes' container signature), see :func:`media_kind`.
        origin: where the sample came from, for messages: a file or tar member name, or a table row.
        error: set when the sample is known bad as it is read (``duplicate_key``, see
            :func:`unique_keys`); processing raises it instead of decoding ``image``.
    """

    key: str
    image: bytes | None
    caption: str | None = None
    label: int | None = None
    json: str | None = None
    index_in_shard: int = 0
    media: str = "image"
    origin: str | None = None
    error: "SampleError | None" = None


class SampleError(Exception):
    """One sample could not be processed; the job records it and continues.

    Attributes:
        stage: where it failed: ``read``, ``decode``, ``process`` or ``encode``.
        error_type: a short machine-readable kind: ``missing_image``, ``corrupt_image``,
            ``too_small``, ``decompression_bomb``, ``non_finite``; for videos ``missing_video``,
            ``corrupt_video`` (also truncated), ``empty_video``, ``no_video_stream`` (audio-only),
            ``clip_too_short``, ...; ``duplicate_key`` for a second sample under a key already read
            (:func:`unique_keys`).
        message: what happened, for a human.
    """

    def __init__(self, stage: str, error_type: str, message: str):
        super().__init__(f"[{stage}/{error_type}] {message}")
        self.stage = stage
        self.error_type = error_type
        self.message = message

    def to_row(self, key: str, shard: str) -> dict[str, str]:
        """The row written to ``errors.parquet``."""
        return {"key": key, "shard": shard, "stage": self.stage, "error_type": self.error_type, "message": self.message}

    def __reduce__(self):  # picklable across Ray workers with its fields
        return (SampleError, (self.stage, self.error_type, self.message))


def duplicate_key(key: str, origin: str | None, first: str | None) -> SampleError:
    """The error of a sample whose key an earlier sample of the shard already has (the first one wins)."""
    this = repr(origin) if origin else "a later sample"
    return SampleError("read", "duplicate_key", f"{this} has key {key!r}, as {first!r} before it; only the first "
                       "is encoded: give every sample a unique key (rename one file, or fix the key column)")


def unique_keys(records: Iterable[Record], seen: dict[str, str] | None = None) -> Iterator[Record]:
    """``records`` in order, each key kept by its first record; a later record with a key already
    seen becomes an error record (``read/duplicate_key``, naming both origins, its bytes dropped).

    The rule of every source format: a folder's ``dup.jpg`` and ``dup.png`` (both key ``dup``), a
    tar sample read twice under one key, a Parquet/HF key column holding a value twice. The writer's
    own de-duplication then only ever removes a retried batch's exact repeats, never a sample.

    Args:
        records: one shard's records.
        seen: ``{key: origin}`` already taken (e.g. by earlier files of the folder); updated.
    """
    seen = {} if seen is None else seen
    for record in records:
        if record.error is None and record.key in seen:
            record = replace(record, image=None, error=duplicate_key(record.key, record.origin, seen[record.key]))
        elif record.error is None:
            seen[record.key] = record.origin or f"the sample at index {record.index_in_shard}"
        yield record



def key_seed(seed: int, key: str) -> int:
    """The one stable 64-bit seed per (seed, sample key): the same crop, flip and noise on every
    rerun and every worker, whatever the batch or shard order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little")


def clip_key(video_key: str, index: int) -> str:
    """The one row key of clip ``index`` of a video: ``"<video key>/clip0003"`` (unique per clip, stable on rerun).

    Distinct ``(video key, index)`` never give one key: the text after the key's last ``/`` is
    ``clip`` and the index's digits, neither holding a ``/``, so the key splits back one way only
    (``v/clip0001`` -> ``("v", 1)``, ``v/clip0001/clip0000`` -> ``("v/clip0001", 0)``). With keys unique
    per shard at the source, clip rows are too.
    """
    return f"{video_key}/clip{index:04d}"


def segment_key(source_key: str, index: int) -> str:
    """The one row key of audio segment ``index`` of a file: ``"<source key>/seg0003"`` (unique and stable,
    for the reason :func:`clip_key` gives)."""
    return f"{source_key}/seg{index:04d}"


IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")
VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "mov")
AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "ogg", "opus", "m4a")


def media_kind(name: str | None = None, data: bytes | None = None) -> str:
    """``"video"``, ``"audio"`` or ``"image"``: from a file or member name's extension, else from the bytes' signature.

    The signature check knows the video containers of :data:`VIDEO_EXTENSIONS`: ISO-BMFF
    (mp4, mov: ``ftyp`` at byte 4, or a QuickTime ``moov``/``mdat``/``wide``/``free`` box first)
    and Matroska/WebM (EBML magic), and the audio files WAV (``RIFF....WAVE``), FLAC, Ogg and ID3-tagged MP3.
    Anything else is an image.

    Example::

        media_kind("clips/0001.mp4")   # 'video'
        media_kind(data=png_bytes)     # 'image'
    """
    if name is not None and "." in name:
        ext = name.rsplit(".", 1)[-1].lower()
        if ext in VIDEO_EXTENSIONS:
            return "video"
        if ext in IMAGE_EXTENSIONS:
            return "image"
        if ext in AUDIO_EXTENSIONS:
            return "audio"
    head = (data or b"")[:12]
    if (head[:4] == b"RIFF" and head[8:12] == b"WAVE") or head[:4] in (b"fLaC", b"OggS") or head[:3] == b"ID3":
        return "audio"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free") or head[:4] == b"\x1a\x45\xdf\xa3":
        return "video"
    return "image"
