"""Text-only mode: the embeddings of a prompt list, cached without media (evaluation prompts), and the
prompt embeddings a text-conditioned prior samples from.

:func:`encode_prompts` writes a tiny output: ``prompts.parquet`` (``caption`` plus each text encoder's
columns, typed as in an encode job's Parquet: ``Array2D(shape=(None, D))``, bf16 as uint16) and
``text_encoders.json`` (each encoder's :class:`~latentflow.format.text.TextColumn`: the same entry an
encode job's codec holds, fingerprint included). :func:`prompt_embeddings` gives a prior trainer the
padded embeddings and masks of its prompts, either from such a cache (refused unless its encoder's
fingerprint is the one the latents' codec records) or computed once with the encoder the codec records.

Example::

    encode_prompts("prompts.txt", [TextEncoderConfig(name="t5", model="/models/t5")], "out/prompts")
    encode_prompts("prompts.txt", codec.text, "out/prompts")   # exactly the encoders the latents were cached with
    text, mask, prompts = prompt_embeddings(codec.text[0], cache="out/prompts")   # (N, L, D), (N, L)

From the shell: ``latentflow encode-prompts prompts.txt --from-output <latents> --output out/prompts``
(:mod:`latentflow.cli`). This module imports torch and transformers only when it encodes or reads embeddings.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from latentflow.encode.text_config import TextEncoderConfig
from latentflow.errors import CodecMismatchError, ConfigError, InputError
from latentflow.format.text import TextColumn

if TYPE_CHECKING:
    import torch

    from latentflow.encode.text import TextEncoder

PROMPTS_FILE, ENCODERS_FILE = "prompts.parquet", "text_encoders.json"


def read_prompt_list(prompts: str | list[str], storage_options: dict | None = None) -> list[str]:
    """A list of prompts as given, or the non-blank lines of a UTF-8 text file (local or fsspec URL)."""
    if isinstance(prompts, (list, tuple)):
        return [str(p) for p in prompts]
    with fsspec.open(prompts, "rb", **(storage_options or {})) as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"prompt file {prompts!r} is not UTF-8 ({err.reason} at byte {err.start})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"prompt file {prompts!r} holds no prompt (one per line)")
    return lines


def text_column_of(encoder: TextEncoder) -> TextColumn:
    return TextColumn(encoder.info.name, encoder.info.fingerprint(), encoder.info.to_dict())


def encode_prompts(prompts: str | list[str], configs: list[TextEncoderConfig | TextColumn], out: str,
                   storage_options: dict | None = None) -> list[TextColumn]:
    """Cache the embeddings of ``prompts`` (a list, or a file with one per line) under ``out``.

    Args:
        configs: text encoders, each a :class:`TextEncoderConfig` or a codec's :class:`TextColumn` (``codec.text``:
            the encoder it records is loaded again, refused when its files changed). Loaded one at a time.

    Returns:
        the :class:`TextColumn` of each encoder (also written to ``text_encoders.json``).

    Raises:
        CodecMismatchError: a :class:`TextColumn`'s encoder files changed since (nothing is written).
    """
    from latentflow.encode.text import TextEncoder
    from latentflow.format.tables import text_parquet_columns

    captions = read_prompt_list(prompts, storage_options)
    names = [c.name for c in configs]
    if len(set(names)) != len(names) or "caption" in names:
        raise ConfigError(f"text encoder names are the cached columns: each must be unique and not 'caption', got: {names}")
    columns: dict[str, Any] = {"caption": captions}
    written = []
    for item in configs:
        encoder = encoder_from_column(item, storage_options) if isinstance(item, TextColumn) else TextEncoder(item, storage_options)
        cfg = encoder.cfg
        for i, emb in enumerate(encoder.encode(captions)):
            if emb.hidden is not None:
                columns.setdefault(cfg.name, []).append(emb.hidden)
            columns.setdefault(f"{cfg.name}_length", []).append(emb.length)
            columns.setdefault(f"{cfg.name}_truncated", []).append(emb.truncated)
            if emb.pooled is not None:
                columns.setdefault(f"{cfg.name}_pooled", []).append(emb.pooled)
        written.append(text_column_of(encoder))
    arrays = {"caption": pa.array(captions, type=pa.string())}
    for text in written:
        arrays.update({name: arr for name, (arr, _) in text_parquet_columns(columns, text).items()})
    buf = io.BytesIO()
    pq.write_table(pa.table(arrays), buf)
    fs, root = fsspec.url_to_fs(out, **(storage_options or {}))
    fs.makedirs(root, exist_ok=True)
    fs.pipe_file(f"{root.rstrip('/')}/{PROMPTS_FILE}", buf.getvalue())
    fs.pipe_file(f"{root.rstrip('/')}/{ENCODERS_FILE}", json.dumps([t.to_dict() for t in written], indent=1).encode())
    return written


def prompt_cache_summary(out: str, storage_options: dict | None = None) -> dict[str, Any]:
    """What a prompt cache holds: prompts, distinct prompts, and per encoder its fingerprint, tokens (the prompts'
    own, summed), truncated prompts, stored token rows and bytes (embeddings as stored, per prompt too)."""
    fs, root = fsspec.url_to_fs(out, **(storage_options or {}))
    root = root.rstrip("/")
    columns = [TextColumn.from_dict(t) for t in json.loads(fs.cat_file(f"{root}/{ENCODERS_FILE}"))]
    table = pq.read_table(io.BytesIO(fs.cat_file(f"{root}/{PROMPTS_FILE}")))
    captions = table.column("caption").to_pylist()
    text = {}
    for col in columns:
        item = col.numpy_dtype.itemsize
        rows = sum(len(r) for r in table.column(col.name).to_pylist()) if col.hidden_width else 0
        stored = rows * (col.hidden_width or 0) * item + len(captions) * (col.pooled_width or 0) * item
        text[col.name] = {"fingerprint": col.fingerprint, "model": col.info.get("model"),
                          "tokens": int(sum(table.column(f"{col.name}_length").to_pylist())),
                          "truncated": int(sum(table.column(f"{col.name}_truncated").to_pylist())),
                          "stored_rows": rows, "dtype": col.dtype, "hidden_width": col.hidden_width,
                          "pooled_width": col.pooled_width, "bytes": stored,
                          "bytes_per_prompt": round(stored / max(len(captions), 1), 1)}
    files = [f"{out.rstrip('/')}/{PROMPTS_FILE}", f"{out.rstrip('/')}/{ENCODERS_FILE}"]
    return {"prompts": len(captions), "distinct": len(set(captions)), "text": text, "output": out, "files": files}


def _pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    longest = max(len(r) for r in rows)
    values = torch.zeros(len(rows), longest, rows[0].shape[-1])
    mask = torch.zeros(len(rows), longest, dtype=torch.bool)
    for i, r in enumerate(rows):
        values[i, :len(r)], mask[i, :len(r)] = r.float(), True
    return values, mask


def read_prompt_cache(cache: str, column: TextColumn, storage_options: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(text (N, L, D) float32, mask (N, L) bool, prompts)`` of ``column.name`` in a prompt cache.

    Raises:
        CodecMismatchError: the cache's encoder is not the one ``column`` records (another model, layer, dtype...).
    """
    fs, root = fsspec.url_to_fs(cache, **(storage_options or {}))
    entries = {t["name"]: TextColumn.from_dict(t) for t in json.loads(fs.cat_file(f"{root.rstrip('/')}/{ENCODERS_FILE}"))}
    cached = entries.get(column.name)
    if cached is None:
        raise ConfigError(f"prompt cache {cache!r} holds text columns {sorted(entries)}, not {column.name!r}")
    if cached.fingerprint != column.fingerprint:
        raise CodecMismatchError(f"prompt cache {cache!r} was encoded by another {column.name!r} text encoder "
                                 f"(fingerprint {cached.fingerprint}) than the latents' codec records ({column.fingerprint})")
    from latentflow.encode.text import from_storage

    table = pq.read_table(io.BytesIO(fs.cat_file(f"{root.rstrip('/')}/{PROMPTS_FILE}")))
    dtype = np.dtype(cached.numpy_dtype)
    rows = [from_storage(np.asarray(r, dtype=dtype), cached.dtype) for r in table.column(column.name).to_pylist()]
    values, mask = _pad(rows)
    return values, mask, table.column("caption").to_pylist()


def config_from_column(column: TextColumn) -> TextEncoderConfig:
    """The :class:`TextEncoderConfig` a codec's column records (a hub id pinned to the commit it resolved to)."""
    info = column.info
    keys = set(TextEncoderConfig.field_types()) - {"batch_size", "revision"}
    fields = {k: info[k] for k in keys if k in info}
    if info.get("commit"):  # a hub id: the commit it resolved to when the latents were encoded
        fields["revision"] = info["commit"]
    return TextEncoderConfig.from_dict(fields)


def encoder_from_column(column: TextColumn, storage_options: dict | None = None) -> TextEncoder:
    """The text encoder a codec's column records, loaded again (refused when its files changed)."""
    from latentflow.encode.text import TextEncoder

    info = column.info
    encoder = TextEncoder(config_from_column(column), storage_options)
    if encoder.fingerprint() != column.fingerprint:
        raise CodecMismatchError(f"text encoder {column.name!r} at {info.get('model')!r} is not the one the codec records "
                                 f"(fingerprint {encoder.fingerprint()} != {column.fingerprint}); its files changed")
    return encoder


def prompt_embeddings(column: TextColumn, prompts: str | list[str] | None = None, cache: str | None = None,
                      storage_options: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(text (N, L, D), mask (N, L), prompts)`` for a text-conditioned prior: from a prompt ``cache``
    (:func:`encode_prompts`), else ``prompts`` encoded once with the encoder ``column`` records."""
    if cache:
        return read_prompt_cache(cache, column, storage_options)
    if prompts is None:
        raise ConfigError("a text-conditioned prior samples from prompts: set sample.prompts (a list or a file) "
                          "or sample.prompt_cache (an encode_prompts output)")
    captions = read_prompt_list(prompts, storage_options)
    embeddings = encoder_from_column(column, storage_options).encode(captions)
    values, mask = _pad([e.hidden_tensor() for e in embeddings])
    return values, mask, captions
