"""Rows of one shard, as columns: normalizing what the pipeline hands the sink, and the Parquet schema.

The Parquet schema carries Hugging Face ``datasets`` features (``Array2D``..``Array5D``
with their dtype, under the ``huggingface`` schema-metadata key), so
``datasets.load_dataset`` returns correctly shaped arrays. With aspect-ratio buckets the
sink writes one file per (bucket, shard), each of one fixed shape, so every file is typed
too; :func:`card_features` gives the dataset card's per-config features (``ArrayND`` per
bucket, nested lists for the default config that mixes shapes). Every row has a ``bucket``
column: ``"HxW"`` of the input pixels.

Note: ``with_format("torch")``/``("numpy")`` in ``datasets`` return float16 arrays as
float32 and unsigned indices as int64; the codec records the stored dtype.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from latentflow.media.config import SEGMENT_FIELDS, TRACK_FIELDS

META_COLUMNS = ("key", "shard", "bucket", "index_in_shard", "caption", "label", "json", "original_size", "crop_box",
                "video_key", "clip_index", "start_time", "fps", "num_frames", "padded_frames",  # these six: video clips
                *(f for f in SEGMENT_FIELDS if f != "start_time"))  # and audio segments (start_time shared)
_META_TYPES = {
    "video_key": pa.string(),
    "clip_index": pa.int64(),
    "start_time": pa.float64(),
    "fps": pa.float64(),
    "num_frames": pa.int64(),
    "padded_frames": pa.int64(),
    "key": pa.string(),
    "shard": pa.string(),
    "bucket": pa.string(),
    "index_in_shard": pa.int64(),
    "caption": pa.string(),
    "label": pa.int64(),
    "json": pa.string(),
    "original_size": pa.list_(pa.int32(), 2),
    "crop_box": pa.list_(pa.int32(), 4),
    **{name: pa.type_for_alias(kind) for name, kind in SEGMENT_FIELDS.items()},
}


def column_to_numpy(col: Any) -> np.ndarray | list[np.ndarray]:
    """An array column -> one ndarray (N, ...) when shapes agree, else a list of per-row ndarrays.

    Accepts numpy arrays, lists of arrays, and Arrow columns: Ray tensor extension types,
    ``fixed_shape_tensor``, datasets' ArrayND types and nested lists.
    """
    if isinstance(col, np.ndarray) and col.dtype != object:
        return col
    if isinstance(col, (pa.ChunkedArray, pa.Array)):
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if isinstance(col, pa.ExtensionArray) and hasattr(col, "to_numpy") and not _is_hf_array(col.type):
            col = col.to_numpy(zero_copy_only=False)  # Ray / fixed_shape_tensor
        else:
            storage = _storage(col)
            dtype = _leaf_dtype(storage.type)
            col = [np.asarray(v, dtype=dtype) for v in storage.to_pylist()]
    rows = [np.asarray(r) for r in col]
    if rows and all(r.shape == rows[0].shape for r in rows):
        return np.stack(rows)
    return rows


def _is_hf_array(typ: pa.DataType) -> bool:
    return type(typ).__module__.startswith("datasets.")


def _leaf_dtype(typ: pa.DataType) -> np.dtype:
    while pa.types.is_list(typ) or pa.types.is_fixed_size_list(typ) or pa.types.is_large_list(typ):
        typ = typ.value_type
    return np.dtype(typ.to_pandas_dtype())


def _storage(col: pa.Array) -> pa.Array:
    return col.storage if isinstance(col, pa.ExtensionArray) else col


def meta_column(name: str, values: Any) -> pa.Array:
    """A metadata column with its fixed Arrow type."""
    if isinstance(values, (pa.ChunkedArray, pa.Array)):
        values = values.to_pylist()
    values = [v.tolist() if isinstance(v, np.ndarray) else v for v in values]
    if name in ("original_size", "crop_box"):
        values = [list(v) if v is not None else None for v in values]
    return pa.array(values, type=_META_TYPES[name])


def _hf_array_type(shape: tuple[int, ...], dtype: np.dtype):
    from datasets import Array2D, Array3D, Array4D, Array5D

    cls = {2: Array2D, 3: Array3D, 4: Array4D, 5: Array5D}.get(len(shape))
    return cls(shape=shape, dtype=dtype.name) if cls else None


def array_column(rows: np.ndarray | list[np.ndarray], variable: bool) -> tuple[pa.Array, dict]:
    """An array column and its ``datasets`` feature dict.

    Fixed shapes of rank 2-5 become ``ArrayND`` extension arrays; variable shapes (buckets)
    and other ranks become nested lists.
    """
    from datasets.features.features import numpy_to_pyarrow_listarray

    if isinstance(rows, np.ndarray) and not variable:
        feature = _hf_array_type(tuple(rows.shape[1:]), rows.dtype)
        if feature is not None:
            typ = feature()  # the datasets extension type
            storage = numpy_to_pyarrow_listarray(np.ascontiguousarray(rows)).cast(typ.storage_type)
            return pa.ExtensionArray.from_storage(typ, storage), _feature_dict(feature)
    rows = list(rows)
    dtype = rows[0].dtype if rows else np.dtype(np.float32)
    arr = pa.array([r.tolist() for r in rows], type=_nested_type(pa.from_numpy_dtype(dtype), rows[0].ndim if rows else 3))
    return arr, _nested_feature(dtype.name, rows[0].ndim if rows else 3)


def _nested_type(value: pa.DataType, depth: int) -> pa.DataType:
    for _ in range(depth):
        value = pa.list_(value)
    return value


def _nested_feature(dtype: str, depth: int) -> dict:
    feature: dict = {"dtype": dtype, "_type": "Value"}
    for _ in range(depth):
        feature = {"feature": feature, "_type": "List"}
    return feature


def _feature_dict(feature) -> dict:
    return {"shape": list(feature.shape), "dtype": feature.dtype, "_type": type(feature).__name__}


def _meta_feature(name: str) -> dict:
    value = {"key": "string", "shard": "string", "bucket": "string", "index_in_shard": "int64", "caption": "string", "label": "int64",
             "json": "string", "video_key": "string", "clip_index": "int64", "start_time": "float64", "fps": "float64",
             "num_frames": "int64", "padded_frames": "int64", **SEGMENT_FIELDS}
    if name in value:
        return {"dtype": value[name], "_type": "Value"}
    return {"feature": {"dtype": "int32", "_type": "Value"}, "length": 2 if name == "original_size" else 4, "_type": "List"}


def parquet_table(columns: dict[str, Any], array_names: list[str], variable: bool, codec) -> pa.Table:
    """The Parquet table of one shard, with ``huggingface`` features and the codec in its schema metadata."""
    arrays, features = {}, {}
    for name in META_COLUMNS:
        if name in columns:
            arrays[name] = meta_column(name, columns[name])
            features[name] = _meta_feature(name)
    for name in array_names:
        arrays[name], features[name] = array_column(columns[name], variable)
    for text in getattr(codec, "text", ()):  # cached text-encoder columns (latentflow.format.text)
        for name, (arr, feature) in text_parquet_columns(columns, text).items():
            arrays[name], features[name] = arr, feature
    for track in getattr(codec, "tracks", ()):  # a video clip's audio track (latentflow.format.codec.TrackColumn)
        for name, (arr, feature) in track_parquet_columns(columns, track).items():
            arrays[name], features[name] = arr, feature
    table = pa.table(arrays)
    metadata = {"huggingface": json.dumps({"info": {"features": features}}), "latentflow": codec.to_json()}
    return table.replace_schema_metadata(metadata)


def schema_features(schema: pa.Schema) -> dict[str, dict]:
    """The ``datasets`` feature dicts a Parquet file's schema metadata carries (``{}`` when none)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    return dict(json.loads(raw)["info"]["features"]) if raw else {}


def as_nested(feature: dict) -> dict:
    """An ``ArrayND`` feature dict as the nested ``List`` feature that holds any shape of its rank
    (the default config of a bucketed output mixes shapes); other features unchanged."""
    if feature.get("_type", "").startswith("Array") and feature["_type"].endswith("D"):
        return _nested_feature(feature["dtype"], len(feature["shape"]))
    return feature


def card_features(features: dict[str, dict]) -> list[dict]:
    """Feature dicts as the dataset card's YAML ``dataset_info.features`` list."""
    from datasets import Features

    return Features.from_dict(features)._to_yaml_list()


def ragged_column(rows: list[np.ndarray], width: int, dtype: np.dtype) -> pa.Array:
    """Rows ``(L_i, width)`` (``L_i`` varies) as the storage of ``Array2D(shape=(None, width))``:
    ``list<list<dtype>>`` built from one flat buffer (no per-value Python objects)."""
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    flat = np.concatenate([np.asarray(r, dtype=dtype).reshape(-1) for r in rows]) if rows else np.zeros(0, dtype)
    inner = pa.ListArray.from_arrays(pa.array(np.arange(0, flat.size + 1, width, dtype=np.int32)), pa.array(flat))
    return pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)), inner)


def text_parquet_columns(columns: dict[str, Any], text) -> dict[str, tuple[pa.Array, dict]]:
    """The Parquet columns of one text encoder (a :class:`~latentflow.format.text.TextColumn`) and their
    ``datasets`` features: ``<name>`` as ``Array2D(shape=(None, D))`` (a variable first dimension: the
    caption's tokens), ``<name>_length`` int32, ``<name>_truncated`` bool, ``<name>_pooled`` a fixed-length list."""
    from datasets import Array2D

    out: dict[str, tuple[pa.Array, dict]] = {}
    dtype, name = text.numpy_dtype, text.name
    if text.hidden_width:
        feature = Array2D(shape=(None, text.hidden_width), dtype=dtype.name)
        storage = ragged_column(list(columns[name]), text.hidden_width, dtype)
        out[name] = (pa.ExtensionArray.from_storage(feature(), storage), _feature_dict(feature))
    out[f"{name}_length"] = (pa.array(np.asarray(columns[f"{name}_length"], dtype=np.int32).reshape(-1)),
                             {"dtype": "int32", "_type": "Value"})
    out[f"{name}_truncated"] = (pa.array(np.asarray(columns[f"{name}_truncated"], dtype=bool).reshape(-1)),
                                {"dtype": "bool", "_type": "Value"})
    if text.pooled_width:
        pooled = np.asarray(columns[f"{name}_pooled"], dtype=dtype).reshape(-1, text.pooled_width)
        arr = pa.FixedSizeListArray.from_arrays(pa.array(pooled.reshape(-1)), text.pooled_width)
        out[f"{name}_pooled"] = (arr, {"feature": {"dtype": dtype.name, "_type": "Value"}, "length": text.pooled_width, "_type": "List"})
    return out


def track_parquet_columns(columns: dict[str, Any], track) -> dict[str, tuple[pa.Array, dict]]:
    """The Parquet columns of a :class:`~latentflow.format.codec.TrackColumn` and their ``datasets`` features:
    ``<name>`` the span's latents (``Array2D`` (C, t) of the track codec's dtype: one span length per file,
    as one clip length per file) and its :data:`~latentflow.media.config.TRACK_FIELDS` as values."""
    if track.name not in columns:  # a shard whose samples all failed
        return {}
    dtype = np.dtype(track.codec.dtype)
    latents = (np.stack([np.asarray(v, dtype=dtype) for v in columns[track.name]]) if len(columns[track.name])
               else np.zeros((0, 1, 1), dtype))
    out = {track.name: array_column(latents, variable=False)}
    for field, kind in TRACK_FIELDS.items():
        name = f"{track.name}_{field}"
        values = np.asarray(columns[name], dtype=kind).reshape(-1)
        out[name] = (pa.array(values, type=pa.type_for_alias(kind)), {"dtype": kind, "_type": "Value"})
    return out
