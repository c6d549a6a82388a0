"""The one encode path: records -> processed samples -> encoded rows of one shard.

Every consumer of "turn a shard's samples into latents" goes through here: the
in-process encode (:func:`latentflow.encode.local.encode_locally`), the Ray pipeline's
preprocess tasks and encoder actors (thin adapters that carry these values between
processes as Arrow, :mod:`latentflow.jobs.schema`), the evaluation job and the
autoencoder trainer's image stream. One error convention: a bad sample becomes a row of
``errors.parquet`` (:data:`~latentflow.sources.records.ERROR_COLUMNS`), never an exception.

Example::

    shard = encode_shard(read_shard(s, source), processor, LatentEncoder(model), s.shard_id)
    writer.write_shard(shard.shard_id, shard.columns, shard.errors)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from latentflow.errors import InputError
from latentflow.media.config import SEGMENT_FIELDS
from latentflow.sources.records import Record, SampleError

ROW_METADATA = ("key", "index_in_shard", "caption", "label", "json", "original_size", "crop_box", "bucket")
CLIP_METADATA = ("video_key", "clip_index", "start_time", "fps", "num_frames", "padded_frames")
SEGMENT_METADATA = tuple(SEGMENT_FIELDS)  # audio segment rows (latentflow.media.config.SEGMENT_FIELDS)


# ---- pixels on the wire ------------------------------------------------------------------


def pack_pixels(values: np.ndarray) -> np.ndarray:
    """uint8 codes when they rebuild ``values`` bit-exactly (the processor's ``u8 / 127.5 - 1``), else float32.

    uint8 is 4x fewer bytes through Ray's object store and to a GPU; the encoder rebuilds the
    exact float32 values on its device.
    """
    codes = np.rint((values + 1.0) * 127.5)
    if codes.min() >= 0 and codes.max() <= 255:
        codes = codes.astype(np.uint8)
        if np.array_equal(unpack_pixels(codes), values):
            return codes
    return np.ascontiguousarray(values, dtype=np.float32)


def unpack_pixels(packed: np.ndarray) -> np.ndarray:
    """float32 pixel values in [-1, 1] from :func:`pack_pixels` output."""
    if packed.dtype == np.uint8:
        return packed.astype(np.float32) / 127.5 - 1.0
    return packed.astype(np.float32, copy=False)


# ---- stage 1: records -> processed samples ----------------------------------------------------


def build_processor(config, downsample_factor: int, temporal_stride: int | None = None,
                    sample_rate: int | None = None, channels: int | None = None, audio_track=None):
    """The processor for a processor config: ``ImageProcessor``, ``VideoProcessor`` for a
    ``VideoProcessorConfig`` (clip lengths forced to the model's ``k * temporal_stride + 1``), or
    ``AudioProcessor`` for an ``AudioProcessorConfig`` (``downsample_factor`` is the hop length;
    ``sample_rate`` and ``channels`` are the model's, filling what the config leaves None).
    ``audio_track`` (video only): a :class:`~latentflow.format.codec.TrackColumn` whose audio
    processor (as run) cuts each clip's audio span. Its ``.config`` is the config as run (what the codec records)."""
    from latentflow.media.config import AudioProcessorConfig, VideoProcessorConfig
    from latentflow.media.image import ImageProcessor
    from latentflow.media.video import VideoProcessor

    if isinstance(config, AudioProcessorConfig):
        return _audio_processor(config, downsample_factor, sample_rate, channels)
    if isinstance(config, VideoProcessorConfig):
        if audio_track is None:
            return VideoProcessor(config, downsample_factor, temporal_stride)
        track = audio_track.codec
        audio = _audio_processor(track.processor, track.downsample_factor)
        return VideoProcessor(config, downsample_factor, temporal_stride, audio=audio, audio_required=audio_track.required)
    return ImageProcessor(config, downsample_factor)


def _audio_processor(config, hop_length: int, sample_rate: int | None = None, channels: int | None = None):
    from latentflow.media.audio_processor import AudioProcessor  # PyAV's audio path, loaded only by audio jobs

    return AudioProcessor(config, hop_length, sample_rate, channels)


def processor_spec(config, downsample_factor: int, audio_track=None) -> dict[str, Any]:
    """A JSON-able description of a processor (its config as run, and a video's audio track) that another
    process rebuilds with :func:`processor_from_spec`."""
    from latentflow.media.config import AudioProcessorConfig, VideoProcessorConfig

    modality = "audio" if isinstance(config, AudioProcessorConfig) else "video" if isinstance(config, VideoProcessorConfig) else "image"
    spec = {"modality": modality, "config": config.to_dict(), "downsample_factor": int(downsample_factor)}
    return {**spec, "audio_track": audio_track.to_dict()} if audio_track is not None else spec


def processor_from_spec(spec: dict[str, Any]):
    from latentflow.format.codec import TrackColumn
    from latentflow.media.config import AudioProcessorConfig, ImageProcessorConfig, VideoProcessorConfig

    cls = {"video": VideoProcessorConfig, "audio": AudioProcessorConfig}.get(spec["modality"], ImageProcessorConfig)
    track = TrackColumn.from_dict(spec["audio_track"]) if spec.get("audio_track") else None
    return build_processor(cls.from_dict(spec["config"]), spec["downsample_factor"], audio_track=track)


@dataclass(frozen=True)
class ClipInfo:
    """Where a video clip row comes from: its video, its place in it and its frames."""

    video_key: str
    clip_index: int
    start_time: float
    fps: float
    num_frames: int
    padded_frames: int = 0


@dataclass(frozen=True)
class SegmentInfo:
    """Where an audio segment row comes from: the fields of :data:`~latentflow.media.config.SEGMENT_FIELDS`, in order."""

    source_key: str
    segment_index: int
    start_time: float
    duration: float
    sample_rate: int
    channels: int
    valid_length: int


@dataclass(frozen=True)
class TrackSpan:
    """The audio of a video clip row's span (:data:`~latentflow.media.config.TRACK_FIELDS`): its waveform
    (C, N) float32 at the track model's rate, and where it lies on the clip's clock."""

    waveform: np.ndarray
    valid_length: int
    start_time: float
    duration: float


@dataclass(frozen=True)
class ProcessedSample:
    """One row after the processor: its pass-through metadata and packed pixels, (3, H, W) for an
    image or (3, T, H, W) for a video clip (with ``clip`` set), or a float32 waveform (C, T) for an
    audio segment (with ``segment`` set; no ``original_size`` / ``crop_box``); a clip with an audio
    track carries its span's waveform in ``track``."""

    key: str
    pixels: np.ndarray
    original_size: tuple[int, int] | None
    crop_box: tuple[int, int, int, int] | None
    index_in_shard: int = 0
    caption: str | None = None
    label: int | None = None
    json: str | None = None
    clip: ClipInfo | None = None
    segment: SegmentInfo | None = None
    track: TrackSpan | None = None

    @property
    def bucket(self) -> str:
        """``"HxW"`` (``"TxHxW"`` for clips; ``"T"``, samples, for audio segments) of the processed pixels."""
        return "x".join(str(s) for s in self.pixels.shape[1:])


def process_record(record: Record, processor, key: str | None = None) -> list[ProcessedSample]:
    """Process one record into its rows: one per image, one per clip of a video (a processor with
    ``process_clips``). ``key`` overrides the crop seed, e.g. per epoch in training.

    Row keys are unique in a shard when record keys are (the sources see to it): an image row has
    its record's key, and a video processor cuts every record into clips, whose keys never collide
    across distinct video keys (:func:`~latentflow.sources.records.clip_key`).

    Raises:
        SampleError: the sample is bad (read as bad: ``record.error``, e.g. ``duplicate_key``;
            missing, corrupt, too small, ...); any other failure of the processor is turned into
            one too (stage ``process``).
    """
    if record.error is not None:
        raise record.error
    try:
        if hasattr(processor, "process_segments"):
            return [_segment_sample(record, seg) for seg in processor.process_segments(record.image, key or record.key)]
        if hasattr(processor, "process_clips"):
            return [_clip_sample(record, clip) for clip in processor.process_clips(record.image, key or record.key)]
        out = processor.process(record.image, key or record.key)
    except SampleError:
        raise
    except Exception as err:  # noqa: BLE001 - an unexpected processor failure is still one sample's
        raise SampleError("process", type(err).__name__, str(err)) from None
    return [ProcessedSample(record.key, pack_pixels(out.pixel_values), tuple(out.original_size), tuple(out.crop_box),
                            record.index_in_shard, record.caption, record.label, record.json)]


def _clip_sample(record: Record, clip) -> ProcessedSample:
    info = ClipInfo(record.key, clip.clip_index, float(clip.start_time), float(clip.fps), int(clip.num_frames),
                    int(getattr(clip, "padded_frames", 0)))
    audio = getattr(clip, "audio", None)
    track = None if audio is None else TrackSpan(np.ascontiguousarray(audio.waveform, dtype=np.float32), int(audio.valid_length),
                                                 float(audio.start_time), float(audio.duration))
    return ProcessedSample(clip.key, pack_pixels(clip.pixel_values), tuple(clip.original_size),
                           tuple(clip.crop_box), record.index_in_shard, record.caption, record.label, record.json, info,
                           track=track)


def _segment_sample(record: Record, seg) -> ProcessedSample:
    info = SegmentInfo(record.key, seg.segment_index, float(seg.start_time), float(seg.duration), int(seg.sample_rate),
                       int(seg.channels), int(seg.valid_length))
    waveform = np.ascontiguousarray(seg.waveform, dtype=np.float32)  # float32 on the wire: uint8 codes never rebuild audio
    return ProcessedSample(seg.key, waveform, None, None, record.index_in_shard, record.caption, record.label, record.json,
                           segment=info)


def process_records(records: Iterable[Record], processor, shard_id: str) -> tuple[list[ProcessedSample], list[dict]]:
    """Process every record; bad ones become ``errors.parquet`` rows instead of exceptions."""
    good, errors = [], []
    for record in records:
        try:
            good += process_record(record, processor)
        except SampleError as err:
            errors.append(err.to_row(record.key, shard_id))
    return good, errors


# ---- stage 2: processed samples -> encoded rows -----------------------------------------------


def bucket_batches(shapes: list[tuple[int, ...]], batch_size: int) -> list[list[int]]:
    """Positions grouped by shape (one bucket per batch, buckets in sorted order, positions kept in
    order inside a bucket), chunked to ``batch_size``."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got: {batch_size}")
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    return [idx[s : s + batch_size] for shape in sorted(groups) for idx in [groups[shape]] for s in range(0, len(idx), batch_size)]


@dataclass(frozen=True)
class EncodedShard:
    """The encoded rows of one input shard, ready for ``ShardWriter.write_shard``.

    Attributes:
        shard_id: the input shard.
        columns: ``key`` and the other :data:`ROW_METADATA` columns, plus one list of per-row
            arrays per stored array (``latent``, ``logvar``, ``indices``, ``flip_*``).
        errors: ``errors.parquet`` rows of the shard's failed samples (read, process, encode).
    """

    shard_id: str
    columns: dict[str, list] = field(default_factory=dict)
    errors: tuple[dict, ...] = ()

    @property
    def rows(self) -> int:
        return len(self.columns.get("key", []))

    @property
    def all_failed(self) -> bool:
        """Samples were read and every one failed: such a shard is not committed (a rerun retries it)."""
        return self.rows == 0 and bool(self.errors)


def stack_pixels(samples: list[ProcessedSample]):
    """A batch tensor (B, 3, H, W) of one bucket: uint8 codes when all are, else float32 values."""
    import torch

    if all(s.pixels.dtype == np.uint8 for s in samples):  # normalized by the encoder, on its device
        return torch.from_numpy(np.stack([s.pixels for s in samples]))
    return torch.from_numpy(np.stack([unpack_pixels(s.pixels) for s in samples]))  # never stack codes with floats


def encode_processed(samples: list[ProcessedSample], encoder, shard_id: str, batch_size: int = 16,
                     errors: Iterable[dict] = ()) -> EncodedShard:
    """Encode processed samples batch by batch, one bucket per batch.

    Args:
        samples: the shard's processed samples.
        encoder: a :class:`~latentflow.encode.encoder.LatentEncoder`.
        shard_id: names the shard in error rows.
        batch_size: samples per forward.
        errors: earlier error rows of this shard (read / process), kept first.

    Returns:
        the shard's rows in input order (rows whose latents are not finite become errors).
    """
    arrays: list[dict[str, np.ndarray] | None] = [None] * len(samples)
    errors = list(errors)
    for idx in bucket_batches([s.pixels.shape for s in samples], batch_size):
        batch = [samples[i] for i in idx]
        out = encoder.encode_batch(stack_pixels(batch), [s.key for s in batch])
        errors += [{**e, "shard": shard_id} for e in out.pop("errors")]
        kept = out.pop("row").tolist()
        out.pop("key")
        for j, pos in enumerate(kept):
            arrays[idx[pos]] = {name: value[j] for name, value in out.items()}
    for name, track_encoder in getattr(encoder, "tracks", {}).items():  # the clips' audio, by the track's model
        errors += encode_tracks(samples, arrays, name, track_encoder, shard_id, batch_size)
    for text_encoder in getattr(encoder, "text_encoders", ()):  # the captions of the rows kept, per text encoder
        errors += encode_captions(samples, arrays, text_encoder, shard_id)
    return EncodedShard(shard_id, _columns(samples, arrays), tuple(errors))


def encode_tracks(samples: list[ProcessedSample], arrays: list[dict[str, np.ndarray] | None], name: str, encoder,
                  shard_id: str, batch_size: int) -> list[dict]:
    """Add the audio track's columns to the rows kept, in place: ``<name>`` (C, t) latents of each clip's span
    (batched by span length) and its :data:`~latentflow.media.config.TRACK_FIELDS`. A row whose span did not
    encode to finite latents is dropped as a whole (an error row): its video latents never go without it.

    Returns:
        the error rows.
    """
    import torch

    kept = [i for i, arr in enumerate(arrays) if arr is not None]
    missing = [i for i in kept if samples[i].track is None]
    if missing:
        raise InputError(f"rows {[samples[i].key for i in missing[:3]]} carry no audio span; the processor has no audio track")
    errors: list[dict] = []
    for idx in bucket_batches([samples[i].track.waveform.shape for i in kept], batch_size):
        rows = [kept[j] for j in idx]
        waves = torch.from_numpy(np.stack([samples[i].track.waveform for i in rows]))
        out = encoder.encode_batch(waves, [samples[i].key for i in rows])
        good = set(out["row"].tolist())
        for j, i in enumerate(rows):
            if j not in good:
                arrays[i] = None
        errors += [{**e, "shard": shard_id, "message": f"{name}: {e['message']}"} for e in out["errors"]]
        for pos, j in enumerate(out["row"].tolist()):
            span = samples[rows[j]].track
            arrays[rows[j]].update({name: out["latent"][pos], f"{name}_valid_length": np.int64(span.valid_length),
                                    f"{name}_start_time": np.float64(span.start_time), f"{name}_duration": np.float64(span.duration)})
    return errors


def encode_captions(samples: list[ProcessedSample], arrays: list[dict[str, np.ndarray] | None], text_encoder,
                    shard_id: str) -> list[dict]:
    """Add one text encoder's columns to the rows kept (``arrays[i]`` not None), in place.

    Identical captions of the shard are encoded once (:func:`~latentflow.encode.text.dedup_captions`);
    the encoder batches them by token length. A caption that is not UTF-8 text (the sources put U+FFFD
    where caption bytes were not UTF-8), or blank under ``empty_caption='error'``, drops its row: it
    becomes an ``errors.parquet`` row of stage ``text``.

    Returns:
        the error rows.
    """
    from latentflow.encode.text import check_caption, dedup_captions

    cfg, errors, keep, captions = text_encoder.cfg, [], [], []
    for i, (sample, arr) in enumerate(zip(samples, arrays)):
        if arr is None:
            continue
        try:
            if sample.caption is not None and "\ufffd" in sample.caption:
                raise InputError(f"caption of {sample.key!r} holds U+FFFD, put in place of bytes that are not UTF-8; "
                                 "re-encode the caption file as UTF-8")
            captions.append(check_caption(sample.caption, i, cfg.empty_caption))
            keep.append(i)
        except InputError as err:
            arrays[i] = None
            errors.append(SampleError("text", "bad_caption", f"{cfg.name}: {err}").to_row(sample.key, shard_id))
    unique, index = dedup_captions(captions)
    embeddings = text_encoder.encode(unique)
    for i, u in zip(keep, index):
        emb, name = embeddings[u], cfg.name
        if emb.hidden is not None:
            arrays[i][name] = emb.hidden
        arrays[i][f"{name}_length"] = np.int32(emb.length)
        arrays[i][f"{name}_truncated"] = np.bool_(emb.truncated)
        if emb.pooled is not None:
            arrays[i][f"{name}_pooled"] = emb.pooled
    return errors


def _columns(samples: list[ProcessedSample], arrays: list[dict[str, np.ndarray] | None]) -> dict[str, list]:
    clips = any(s.clip is not None for s in samples)
    segments = any(s.segment is not None for s in samples)
    columns: dict[str, list] = {name: [] for name in ROW_METADATA + (CLIP_METADATA if clips else ())
                                + (SEGMENT_METADATA if segments else ())}
    for sample, arr in zip(samples, arrays):
        if arr is None:
            continue
        for name in ROW_METADATA:
            value: Any = getattr(sample, name)
            columns[name].append(list(value) if isinstance(value, tuple) else value)
        for name in CLIP_METADATA if clips else ():
            columns[name].append(getattr(sample.clip, name) if sample.clip else None)
        for name in SEGMENT_METADATA if segments else ():
            columns[name].append(getattr(sample.segment, name) if sample.segment else None)
        for name, value in arr.items():
            columns.setdefault(name, []).append(value)
    return columns


def encode_shard(records: Iterable[Record], processor, encoder, shard_id: str, batch_size: int = 16) -> EncodedShard:
    """Read -> process -> encode one shard's records in this process."""
    samples, errors = process_records(records, processor, shard_id)
    return encode_processed(samples, encoder, shard_id, batch_size, errors)
