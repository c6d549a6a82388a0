"""The dataset card (``README.md``) of a latent output: what ``datasets.load_dataset(<out>)`` reads.

Its YAML lists a ``default`` config over every Parquet file and, with aspect-ratio buckets,
one config per bucket shape over ``parquet/<H>x<W>/*.parquet``, with the typed features of
each (``ArrayND`` of the bucket's fixed shape; nested lists for ``default``, which mixes
shapes). Every config carries the output's :func:`content_version` as its description:
``datasets`` keys its cache of a local folder by the card's configs (their data-file
*patterns*, not the files), so without it a rewrite under the same file names (``--overwrite``
at another resolution) would be served from the old cache.

Example::

    datasets.load_dataset(out, split="train")                 # every row
    datasets.load_dataset(out, "256x384", split="train")      # one bucket, Array3D latents
"""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq

from latentflow.format.codec import Codec
from latentflow.format.marker import CommitMarker
from latentflow.format.tables import as_nested, card_features, schema_features


def content_version(markers: dict[str, CommitMarker]) -> str:
    """sha256 over the committed set (shard ids, row counts, key hashes, checksums, encoders).

    It changes whenever any committed shard changes, and goes into the dataset card so that
    ``datasets`` (whose cache id for a local folder hashes the card's configs, not the files)
    never serves an earlier content's cache after an ``--overwrite`` or an append.
    """
    parts = [[m.shard_id, m.rows, m.keys_sha256, m.checksum, m.codec_fingerprint]
             for _, m in sorted(markers.items())]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def bucket_features(fs, codec: Codec, markers: dict[str, CommitMarker]) -> dict[str, dict]:
    """``{bucket: datasets features}`` from the schema of one committed Parquet file per bucket
    (``{"": ...}`` without buckets)."""
    one_file: dict[str, str] = {}
    for m in markers.values():
        for f in m.parquet_files:  # parquet/<H>x<W>/<shard>.parquet with buckets
            one_file.setdefault(f.rsplit("/", 2)[-2] if codec.bucketed else "", f)
    features = {}
    for bucket, f in sorted(one_file.items()):
        with fs.open(f, "rb") as fh:
            features[bucket] = schema_features(pq.read_schema(fh))
    return features


def card_configs(fs, codec: Codec, markers: dict[str, CommitMarker]) -> tuple[list[dict], list[dict]]:
    """The card's ``configs`` and ``dataset_info``: ``default`` reads every Parquet file; with buckets,
    one config per bucket reads only ``parquet/<H>x<W>/*.parquet`` (fixed shape: ``ArrayND``)."""
    features = bucket_features(fs, codec, markers)
    description = f"latentflow content {content_version(markers)}"

    def config(name: str, files: str) -> dict:
        return {"config_name": name, "data_files": [{"split": "train", "path": files}], "description": description}

    configs = [config("default", "parquet/*/*.parquet" if codec.bucketed else "parquet/*.parquet")]
    merged = {k: as_nested(v) if codec.bucketed else v for part in features.values() for k, v in part.items()}
    infos = [{"config_name": "default", "features": card_features(merged)}] if merged else []
    for bucket in sorted(b for b in features if b):
        configs.append(config(bucket, f"parquet/{bucket}/*.parquet"))
        infos.append({"config_name": bucket, "features": card_features(features[bucket])})
    return configs, infos


def write_card(fs, path: str, codec: Codec, markers: dict[str, CommitMarker]) -> None:
    """``README.md``: YAML ``configs`` + ``dataset_info`` (typed features per config) and a short text."""
    import yaml

    configs, infos = card_configs(fs, codec, markers)
    header = yaml.safe_dump({"configs": configs, **({"dataset_info": infos} if infos else {})}, sort_keys=False)
    model = codec.model
    buckets = [c["config_name"] for c in configs[1:]]
    usage = "ds = latentflow.load_latents(\"<this directory>\")\n"
    if buckets:
        usage += f"one_shape = datasets.load_dataset(\"<this directory>\", \"{buckets[0]}\", split=\"train\")  # Array3D\n"
    card = (
        f"---\n{header}---\n\n"
        f"# Latents encoded by latentflow\n\nModel: `{model.cls}` (model_type `{model.model_type}`, "
        f"weights sha256 `{model.weights_sha256}`).\nStored: {', '.join(codec.arrays)} as {codec.dtype}.\n"
        f"Rows: {sum(m.rows for m in markers.values())} in {len(markers)} shards.\n"
        + (f"Buckets (one config each): {', '.join(buckets)}.\n" if buckets else "")
        + f"\n```python\nimport datasets, latentflow\n{usage}```\n"
    )
    with fs.open(path, "w") as f:
        f.write(card)
