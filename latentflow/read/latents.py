"""Reading a latent output back: its codec, `datasets.load_dataset` with typed features, and decoding latents."""

from __future__ import annotations

import fsspec
import numpy as np
import torch

from latentflow.auto import AutoModel
from latentflow.format.codec import Codec, as_codec
from latentflow.format.state import OutputState, read_output_codec
from latentflow.format.tables import as_nested, schema_features


def read_codec(path: str, storage_options: dict | None = None) -> Codec:
    """The codec of a latent output directory (from ``latentflow.json``, or ``_codec.json`` while a job runs).

    Raises:
        FileNotFoundError: ``path`` holds no latentflow output.
    """
    codec = read_output_codec(path, storage_options)
    if codec is None:
        raise FileNotFoundError(f"{path!r} is not a latentflow output (no latentflow.json or _codec.json)")
    return codec


def load_latents(path: str, storage_options: dict | None = None, split: str = "train", bucket: str | None = None):
    """The Parquet latents of committed shards as a ``datasets.Dataset`` with typed array columns.

    Args:
        path: output directory (local or fsspec URL).
        storage_options: fsspec options.
        split: the split name to return.
        bucket: with aspect-ratio buckets, ``"HxW"`` reads only that bucket's files
            (``parquet/<H>x<W>/*.parquet``): ``ArrayND`` columns of one fixed shape. Without it a
            bucketed output comes back as nested lists (one tensor of its own shape per row).

    Returns:
        ``datasets.Dataset``; ``.with_format("torch")`` gives (C, h, w) tensors per row
        (float16 comes back as float32; cast with the codec's ``dtype`` if needed).

    The same per-bucket view without latentflow: ``datasets.load_dataset(path, "<H>x<W>", split="train")``.
    """
    import datasets

    codec = read_codec(path, storage_options)
    state = OutputState.read(path, storage_options)
    # only committed shards: a file a crashed writer left without its marker is never read
    files = state.parquet_files()
    if bucket is not None:
        files = [f for f in files if f.rsplit("/", 2)[-2] == bucket]
    if not files:
        found = sorted(state.buckets)
        raise FileNotFoundError(
            f"{path!r} has no committed Parquet shards" + (f" of bucket {bucket!r} (buckets: {found})" if bucket else ""))
    protocol = str(path).split("://")[0] if "://" in str(path) else "file"
    kwargs = {"storage_options": {protocol: storage_options}} if storage_options else {}  # datasets keys them by protocol
    if codec.bucketed and bucket is None:  # files of several shapes: read every one as nested lists
        kwargs["features"] = _nested_features(files[0], storage_options)
    return datasets.load_dataset("parquet", data_files={split: files}, split=split, **kwargs)


def load_hint(path: str, storage_options: dict | None = None) -> str:
    """How to load an output, for the job's last lines: the typed per-bucket configs of a bucketed output
    (``datasets.load_dataset(out, "256x384", split="train")``, one per bucket), else the default config.

    Example::

        print("load it:", load_hint(config.output))
    """
    out = str(path).rstrip("/")
    codec = read_codec(out, storage_options)
    buckets = sorted(OutputState.read(out, storage_options).buckets) if codec.bucketed else []
    if not buckets:
        return (f'import datasets; ds = datasets.load_dataset("{out}", split="train")'
                f'   # or latentflow.LatentDataset("{out}")')
    lines = [f"import datasets   # one typed config per bucket ({len(buckets)}); the default config mixes shapes as nested lists"]
    lines += [f'ds = datasets.load_dataset("{out}", "{b}", split="train")' for b in buckets]
    lines.append(f'# or all buckets, batched by shape: latentflow.LatentDataset("{out}").iter_batches(64)')
    return "\n".join(lines)


def _nested_features(url: str, storage_options: dict | None):
    import datasets
    import pyarrow.parquet as pq

    fs, p = fsspec.url_to_fs(str(url), **(storage_options or {}))
    with fs.open(p, "rb") as f:
        features = schema_features(pq.read_schema(f))
    return datasets.Features.from_dict({k: as_nested(v) for k, v in features.items()})


def decode_latents(latents: torch.Tensor | np.ndarray, path_or_codec: str | Codec | dict, weights: str | None = None,
                   storage_options: dict | None = None, normalized: bool = False, column: str | None = None) -> torch.Tensor:
    """Rebuild the decoder from codec metadata + weights, and decode.

    Args:
        latents: (B, C, h, w) latents, (B, C, T', h, w) for video codecs (layout ``CTHW``), (B, C, t) for
            audio codecs (layout ``CT``), or
            (B, h, w[, levels]) integer indices for discrete codecs.
        path_or_codec: a latent output directory, or its codec (or the codec's JSON dict).
        weights: checkpoint location; default: the one recorded in the codec. Its sha256 must match.
        storage_options: fsspec options for both.
        normalized: the latents were normalized with the codec's rule (``LatentDataset(normalize=True)``);
            denormalized here with the codec's rule, whatever the model's own config says.
        column: decode a track column instead (``"audio"``: a video clip's audio track), with the model and
            rule its own codec records (``codec.track(column).codec``); waveforms at its rate.

    Returns:
        (B, 3, H, W) images in [-1, 1]; (B, 3, T, H, W) frames for video codecs. To watch them:
        ``save_video_preview(frames, "clips.mp4", fps=preview_fps(path))`` (:mod:`latentflow.read.preview`;
        mp4 or GIF, local or fsspec URL, clips tiled into one grid). Audio codecs: (B, channels, t * hop)
        waveforms at the recorded rate ``codec.processor.sample_rate``; to listen:
        ``save_audio_preview(waves, "samples.wav", codec.processor.sample_rate)``.
    """
    if isinstance(path_or_codec, (Codec, dict)):
        codec = as_codec(path_or_codec)
    else:
        codec = read_codec(path_or_codec, storage_options)
    if column is not None:
        codec = codec.track(column).codec
    model = AutoModel.from_codec(codec, storage_options, weights)
    z = torch.as_tensor(np.asarray(latents) if isinstance(latents, np.ndarray) else latents)
    with torch.inference_mode():
        if not z.is_floating_point():
            return model.detokenize(z.long())
        z = z.float()
        if normalized:
            z = codec.normalization.denormalize(z)
        return model.decode(z).sample
