"""Text encoders: captions -> the text-encoder outputs a trainer consumes, computed once and cached.

A :class:`TextEncoderConfig` names one encoder and one output column. A plain entry
``{name: t5, model: <folder>}`` stores the last hidden state of the caption's own tokens:
tokenized with the tokenizer's defaults (special tokens included), attended with a mask over
those tokens, trimmed to them. Family presets (:mod:`latentflow.encode.text_presets`) set the
other fields so that the cached columns combine into exactly what a diffusers pipeline's
``encode_prompt`` returns.

Storage dtypes: ``fp16`` and ``fp32`` are stored as numpy ``float16``/``float32``. ``bf16`` is
stored losslessly as its uint16 bit pattern (numpy and ``datasets`` have no bf16); read it back
with :func:`from_storage` (``torch.from_numpy(a).view(torch.bfloat16)``).

Example::

    enc = TextEncoder(TextEncoderConfig(name="t5", model="/models/t5-small"))
    [emb] = enc.encode(["a cat on a mat"])
    emb.hidden.shape                    # (L, D): L = the caption's own tokens
    key = caption_key(enc.info.fingerprint(), "a cat on a mat")
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import inspect
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentflow.encode.encoder import COMPUTE_DTYPES
from latentflow.encode.text_config import StorageDType, TextEncoderConfig
from latentflow.errors import ConfigError, InputError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.json", "tokenizer.model")
_NOT_TOKENIZER = ("config.json", "generation_config.json", "model_index.json")
_WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json", ".bin", ".pt", ".pth", ".ckpt")


# ---- storage dtypes -------------------------------------------------------------------------------
def to_storage(t: torch.Tensor, dtype: StorageDType) -> np.ndarray:
    """A tensor as the numpy array stored for ``dtype``; bf16 becomes its uint16 bit pattern."""
    t = t.detach().cpu().to(COMPUTE_DTYPES[dtype]).contiguous()
    return t.view(torch.uint16).numpy() if dtype == "bf16" else t.numpy()


def from_storage(a: np.ndarray, dtype: StorageDType) -> torch.Tensor:
    """The exact inverse of :func:`to_storage`: a uint16 array with ``dtype="bf16"`` reads as bf16."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if dtype == "bf16":
        if t.dtype != torch.uint16:
            raise InputError(f"bf16 storage must be a uint16 bit pattern, got: {a.dtype}")
        return t.view(torch.bfloat16)
    return t.to(COMPUTE_DTYPES[dtype])


# ---- captions -------------------------------------------------------------------------------------
def caption_key(fingerprint: str, caption: str) -> str:
    """Content address of one (encoder, caption) pair: sha256 over the fingerprint and the UTF-8 text."""
    return hashlib.sha256(f"{fingerprint}\x00{caption}".encode()).hexdigest()


def dedup_captions(captions: list[str]) -> tuple[list[str], list[int]]:
    """``(unique captions in first-seen order, index)`` with ``captions[i] == unique[index[i]]``.

    Encode ``unique`` once and expand with ``[results[j] for j in index]``.
    """
    first: dict[str, int] = {}
    index = [first.setdefault(c, len(first)) for c in captions]
    return list(first), index


def clean_caption(text: str, rule: str) -> str:
    """``none``: as given; ``strip``: ``str.strip`` (LTX-2); ``wan``: Wan's ``prompt_clean`` (ftfy when
    installed, HTML unescaped twice, whitespace runs collapsed, stripped)."""
    if rule == "strip":
        return text.strip()
    if rule == "wan":
        try:
            import ftfy
            text = ftfy.fix_text(text)
        except ImportError:
            pass
        text = html.unescape(html.unescape(text)).strip()
        return _whitespace().sub(" ", text).strip()
    return text


def _whitespace():
    try:  # diffusers uses the `regex` module (a transformers dependency); its \s is Unicode White_Space
        import regex
        return regex.compile(r"\s+")
    except ImportError:  # pragma: no cover
        return re.compile(r"\s+")


def check_caption(caption: Any, i: int, rule: str) -> str:
    """A caption as text: bytes must be UTF-8; ``None`` or blank follows the ``empty_caption`` rule."""
    if isinstance(caption, bytes):
        try:
            caption = caption.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"caption {i} is not valid UTF-8 ({err.reason} at byte {err.start}); "
                             "re-encode the caption files as UTF-8") from err
    if caption is None:
        caption = ""
    if not isinstance(caption, str):
        raise InputError(f"caption {i} must be a str, got: {type(caption).__name__}")
    try:
        caption.encode("utf-8")
    except UnicodeEncodeError as err:  # lone surrogates from a surrogateescape decode of bad bytes
        raise InputError(f"caption {i} holds bytes that are not valid UTF-8 ({err.reason}); "
                         "re-encode the caption files as UTF-8") from err
    if not caption.strip():
        if rule == "error":
            raise InputError(f"caption {i} is empty and empty_caption='error'; "
                             "drop the sample or set empty_caption='empty_string'")
        return ""
    return caption


# ---- outputs --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TextEmbedding:
    """One caption's stored outputs (arrays in storage form: see :func:`to_storage`).

    Attributes:
        hidden: ``(L, D)``: ``L = length`` (``trim``) or ``max_length``, ``D = info.hidden_width``; ``None``
            for ``output='pooled'``.
        pooled: ``(info.pooled_width,)`` or ``None``.
        length: the caption's own tokens (after the template's dropped prefix).
        truncated: the caption was longer than ``max_length`` and was cut.
        dtype: storage dtype of the arrays.
        left_padded: pads (``padding='max_length'``) sit before the tokens.
    """

    hidden: np.ndarray | None
    pooled: np.ndarray | None
    length: int
    truncated: bool
    dtype: StorageDType
    left_padded: bool = False

    def hidden_tensor(self) -> torch.Tensor:
        return from_storage(self.hidden, self.dtype)

    def pooled_tensor(self) -> torch.Tensor:
        return from_storage(self.pooled, self.dtype)

    def attention_mask(self) -> np.ndarray:
        """``(L,)`` int64: 1 on the caption's tokens, 0 on pads."""
        total = self.length if self.hidden is None else self.hidden.shape[0]
        mask = np.zeros(total, dtype=np.int64)
        if self.left_padded:
            mask[total - self.length:] = 1
        else:
            mask[: self.length] = 1
        return mask


@dataclass(frozen=True)
class TextEncoderInfo:
    """What a cached text column means: written beside the data, read back by trainers.

    ``fingerprint()`` hashes what determines the values (weights and tokenizer content, every
    processing field, dtypes), not where the files were: the same weights from a folder or from
    the hub cache give the same key. The pinned hub ``commit`` is recorded as provenance; the
    weights hash it resolves to is what the fingerprint holds.
    """

    name: str
    model: str
    subfolder: str | None
    tokenizer_subfolder: str | None
    commit: str | None
    architecture: str
    weights_sha256: str
    tokenizer_sha256: str
    hidden_width: int | None
    pooled_width: int | None
    output: str
    layer: int | tuple[int, ...] | str | None
    final_layer_norm: bool
    pooled: bool
    attention_mask: bool
    padding: str
    padding_side: str
    max_length: int | None
    truncation: bool
    dtype: str
    compute_dtype: str
    empty_caption: str
    clean: str
    chat_template: bool
    enable_thinking: bool | None
    prompt_template: str | None
    drop_prefix_tokens: int

    _PROVENANCE = ("name", "model", "subfolder", "tokenizer_subfolder", "commit")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layer"] = list(self.layer) if isinstance(self.layer, tuple) else self.layer
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextEncoderInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(names - set(data))
        if unknown or missing:
            raise ConfigError(f"TextEncoderInfo: unknown keys {unknown}, missing keys {missing}")
        layer = data["layer"]
        return cls(**{**data, "layer": tuple(layer) if isinstance(layer, list) else layer})

    def fingerprint(self) -> str:
        content = {k: v for k, v in self.to_dict().items() if k not in self._PROVENANCE}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def storage_bytes(embeddings: list[TextEmbedding], max_length: int) -> dict[str, float]:
    """Bytes per caption as stored vs a padded fp32 baseline (``max_length`` tokens, 4 bytes).

    Returns ``{"stored": mean bytes, "padded_fp32": bytes, "ratio": padded_fp32 / stored}``.
    """
    if not embeddings:
        raise InputError("storage_bytes needs at least one embedding")
    stored = [sum(a.nbytes for a in (e.hidden, e.pooled) if a is not None) for e in embeddings]
    e = embeddings[0]
    dim = e.hidden.shape[1] if e.hidden is not None else 0
    padded = (max_length * dim + (e.pooled.shape[0] if e.pooled is not None else 0)) * 4
    mean = float(np.mean(stored))
    return {"stored": mean, "padded_fp32": float(padded), "ratio": padded / mean}


# ---- loading --------------------------------------------------------------------------------------
def _localize(url: str, storage_options: dict | None) -> str:
    """An fsspec URL copied once to a local folder (transformers reads local files only). The copy is
    keyed by the URL and its files' names, sizes and change stamps, and renamed into place atomically."""
    import fsspec

    fs, path = fsspec.url_to_fs(url, **(storage_options or {}))
    listing = fs.find(path, detail=True)
    if not listing:
        raise ConfigError(f"text encoder URL {url!r} holds no files")
    stamp = sorted((k, v.get("size"), str(v.get("ETag") or v.get("mtime") or v.get("LastModified") or v.get("created")))
                   for k, v in listing.items())
    key = hashlib.sha256(json.dumps([url, stamp]).encode()).hexdigest()[:20]
    local = Path(tempfile.gettempdir()) / "latentflow-text" / key
    if not local.is_dir():
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=local.parent))
        fs.get(path.rstrip("/") + "/", str(tmp) + "/", recursive=True)
        try:
            os.replace(tmp, local)
        except OSError:  # another process put its copy in place first
            shutil.rmtree(tmp, ignore_errors=True)
    return str(local)


def resolve_model(cfg: TextEncoderConfig, storage_options: dict | None = None) -> tuple[str, str | None]:
    """``(local root folder, pinned commit or None)`` for ``cfg.model``."""
    from latentflow import hub

    if "://" in cfg.model and not cfg.model.startswith("file://"):
        if cfg.revision:
            raise ConfigError(f"revision applies to hub ids only, got a URL: {cfg.model!r}")
        return _localize(cfg.model, storage_options), None
    model = cfg.model.removeprefix("file://")
    if not hub.is_hub_id(model):
        if cfg.revision:
            raise ConfigError(f"revision applies to hub ids only, got a local path: {model!r}")
        if not Path(model).is_dir():
            raise ConfigError(f"text encoder {cfg.name!r}: model folder {model!r} does not exist")
        return str(Path(model).resolve()), None
    patterns = hub.text_encoder_allow_patterns(cfg.subfolder, cfg.tokenizer_subfolder)
    return hub.download(model, revision=cfg.revision, allow_patterns=patterns)


def _sub(root: str, sub: str | None) -> Path:
    return Path(root) / sub if sub else Path(root)


def check_tokenizer_folder(folder: Path) -> None:
    """Fail fast when ``folder`` holds no tokenizer, naming it and what was looked for."""
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if not any(name in found for name in TOKENIZER_FILES):
        raise ConfigError(f"no tokenizer in {str(folder)!r}: expected one of {list(TOKENIZER_FILES)}, found: {found}. "
                          "Save the tokenizer beside the model (tokenizer.save_pretrained), or set tokenizer_subfolder "
                          "where the pipeline keeps it apart (e.g. 'tokenizer', 'tokenizer_2').")


def tokenizer_sha256(folder: Path) -> str:
    """sha256 over the tokenizer's files (names and bytes; weights and model configs excluded)."""
    digest = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if (p.is_file() and not p.name.startswith(".") and p.name not in _NOT_TOKENIZER
                and not p.name.endswith(_WEIGHT_SUFFIXES)):
            digest.update(p.name.encode() + b"\x00" + p.read_bytes())
    return digest.hexdigest()


def weights_sha256(folder: Path) -> str:
    """sha256 over the safetensors files (one, or the shards sorted by name). A file in the HF cache
    is a link to a blob named by its sha256, which is used as is instead of re-reading the bytes."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in folder.iterdir() if p.name.endswith(_WEIGHT_SUFFIXES[2:]))
        why = f"only pickle-format weights {pickles} (never unpickled)" if pickles else "no *.safetensors"
        raise ConfigError(f"text encoder folder {str(folder)!r} has {why}; save the model with save_pretrained "
                          "(safetensors) or convert it once in a trusted environment")
    digest = hashlib.sha256()
    for p in files:
        blob = Path(os.path.realpath(p)).name
        sha = blob if re.fullmatch(r"[0-9a-f]{64}", blob) else _file_sha256(p)
        digest.update(p.name.encode() + b"\x00" + sha.encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model(folder: Path, compute_dtype: str):
    """The class named by ``config.json``'s ``architectures`` (``T5EncoderModel``,
    ``CLIPTextModelWithProjection``, ``Qwen3ForCausalLM``...), safetensors only, in eval mode."""
    import transformers

    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"no config.json in text encoder folder {str(folder)!r}; set subfolder where the "
                          "pipeline keeps the encoder (e.g. 'text_encoder', 'text_encoder_2')")
    arch = (json.loads(config_path.read_text()).get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        raise ConfigError(f"{str(config_path)!r} names architectures={arch!r}, not a transformers model class")
    model = cls.from_pretrained(str(folder), dtype=COMPUTE_DTYPES[compute_dtype], use_safetensors=True)
    return model.eval(), arch


# ---- the encoder ----------------------------------------------------------------------------------
class TextEncoder:
    """A resident text encoder (load once per actor): ``encode(captions) -> list[TextEmbedding]``.

    Captions are sorted by token count and run in batches of ``cfg.batch_size`` (less padding
    work), then returned in the order given.
    """

    def __init__(self, cfg: TextEncoderConfig, storage_options: dict | None = None):
        from transformers import AutoTokenizer

        self.cfg = cfg
        root, commit = resolve_model(cfg, storage_options)
        model_dir = _sub(root, cfg.subfolder)
        tok_dir = _sub(root, cfg.tokenizer_subfolder if cfg.tokenizer_subfolder is not None else cfg.subfolder)
        check_tokenizer_folder(tok_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        if cfg.padding_side is not None:
            self.tokenizer.padding_side = cfg.padding_side
        if self.tokenizer.pad_token is None:  # as LTX-2 does: pad with EOS (pads are masked or trimmed)
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model, arch = load_model(model_dir, cfg.compute_dtype)
        # causal LMs: run the base model (hidden states are its own), skip the logits over the vocabulary
        self._net = self.model.model if hasattr(self.model, "lm_head") and hasattr(self.model, "model") else self.model
        self._use_cache = "use_cache" in inspect.signature(self._net.forward).parameters
        self.max_length = self._max_length()
        self._check_template_prefix()
        self.info = TextEncoderInfo(
            name=cfg.name, model=cfg.model, subfolder=cfg.subfolder, tokenizer_subfolder=cfg.tokenizer_subfolder,
            commit=commit, architecture=arch, weights_sha256=weights_sha256(model_dir),
            tokenizer_sha256=tokenizer_sha256(tok_dir), hidden_width=self._widths()[0],
            pooled_width=self._widths()[1], output=cfg.output,
            layer=cfg.layer, final_layer_norm=cfg.final_layer_norm, pooled=cfg.pooled,
            attention_mask=cfg.attention_mask, padding=cfg.padding, padding_side=self.tokenizer.padding_side,
            max_length=self.max_length, truncation=cfg.truncation, dtype=cfg.dtype, compute_dtype=cfg.compute_dtype,
            empty_caption=cfg.empty_caption, clean=cfg.clean, chat_template=cfg.chat_template,
            enable_thinking=cfg.enable_thinking, prompt_template=cfg.prompt_template,
            drop_prefix_tokens=cfg.drop_prefix_tokens)

    def fingerprint(self) -> str:
        return self.info.fingerprint()

    def to(self, device: str | torch.device) -> "TextEncoder":
        """Run the forward on ``device`` (an encoder actor's GPU); stored arrays still come back on the host."""
        self.model.to(device)
        return self

    def _max_length(self) -> int | None:
        limit = self.cfg.max_length or self.tokenizer.model_max_length
        if limit is None or limit > 1_000_000:  # transformers' "no limit" sentinel
            if self.cfg.padding == "max_length":
                raise ConfigError(f"text encoder {self.cfg.name!r}: padding='max_length' needs max_length "
                                  "(the tokenizer sets no model_max_length)")
            return None
        return int(limit)

    def _widths(self) -> tuple[int | None, int | None]:
        """``(D of the stored hidden, D of the stored pooled)``, ``None`` where not stored: a reader's schema."""
        cfg, c = self.cfg, self.model.config
        c = getattr(c, "text_config", None) or c
        d = getattr(c, "hidden_size", None) or c.d_model
        n = {"all": c.num_hidden_layers + 1}.get(cfg.layer, len(cfg.layer) if isinstance(cfg.layer, tuple) else 1)
        hidden = None if cfg.output == "pooled" else d * n
        proj = getattr(c, "projection_dim", None) if hasattr(self.model, "text_projection") else None
        return hidden, (proj or d) if cfg.pooled or cfg.output == "pooled" else None

    def _check_template_prefix(self) -> None:
        """The dropped prefix must be the template's own tokens, or caption tokens would be cut."""
        cfg = self.cfg
        if not cfg.drop_prefix_tokens:
            return
        if cfg.prompt_template is None:
            raise ConfigError(f"text encoder {cfg.name!r}: drop_prefix_tokens needs a prompt_template")
        prefix = cfg.prompt_template.split("{}")[0]
        n = len(self.tokenizer(prefix)["input_ids"])
        if n != cfg.drop_prefix_tokens:
            raise ConfigError(f"text encoder {cfg.name!r}: drop_prefix_tokens={cfg.drop_prefix_tokens} but the "
                              f"template's prefix is {n} tokens with this tokenizer; the drop would cut caption "
                              "tokens or keep template tokens")

    # -- text -> token ids
    def _text(self, caption: str) -> str:
        cfg = self.cfg
        caption = clean_caption(caption, cfg.clean)
        if cfg.prompt_template is not None:
            return cfg.prompt_template.format(caption)
        if cfg.chat_template:
            kwargs = {} if cfg.enable_thinking is None else {"enable_thinking": cfg.enable_thinking}
            return self.tokenizer.apply_chat_template([{"role": "user", "content": caption}], tokenize=False,
                                                      add_generation_prompt=True, **kwargs)
        return caption

    def tokenize(self, captions: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids per caption (special tokens included, truncated to ``max_length``) and the truncation flags."""
        texts = [self._text(check_caption(c, i, self.cfg.empty_caption)) for i, c in enumerate(captions)]
        ids = self.tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []
        limit = self.max_length
        truncated = [limit is not None and len(x) > limit for x in ids]
        if any(truncated) and not self.cfg.truncation:
            i = truncated.index(True)
            raise InputError(f"caption {i} is {len(ids[i])} tokens, over max_length={limit}, and truncation=False")
        long = [i for i, t in enumerate(truncated) if t]
        if long:  # re-tokenize with the tokenizer's own truncation (it keeps the closing special tokens)
            cut = self.tokenizer([texts[i] for i in long], truncation=True, max_length=limit)["input_ids"]
            for i, x in zip(long, cut):
                ids[i] = x
        return ids, truncated

    # -- forward
    def encode(self, captions: list[str]) -> list[TextEmbedding]:
        """Encode captions; results come back in the order given.

        Raises:
            InputError: a caption is not UTF-8 text, is blank with ``empty_caption='error'``, or is
                longer than ``max_length`` with ``truncation=False``.
        """
        ids, truncated = self.tokenize(list(captions))
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[TextEmbedding | None] = [None] * len(ids)
        for start in range(0, len(order), self.cfg.batch_size):
            chunk = order[start:start + self.cfg.batch_size]
            for i, emb in zip(chunk, self._encode_batch([ids[i] for i in chunk])):
                out[i] = dataclasses.replace(emb, truncated=truncated[i])
        return out  # type: ignore[return-value]

    def _pad(self, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        padding = "max_length" if cfg.padding == "max_length" else "longest"
        return self.tokenizer.pad({"input_ids": ids}, padding=padding, max_length=self.max_length,
                                  return_tensors="pt", return_attention_mask=True)

    @torch.inference_mode()
    def _encode_batch(self, ids: list[list[int]]) -> list[TextEmbedding]:
        cfg = self.cfg
        device = next(self._net.parameters()).device
        batch = {k: v.to(device) for k, v in self._pad(ids).items()}
        mask = batch["attention_mask"]
        kwargs = {"use_cache": False} if self._use_cache else {}
        out = self._net(input_ids=batch["input_ids"], attention_mask=mask if cfg.attention_mask else None,
                        output_hidden_states=cfg.output == "hidden_state", return_dict=True, **kwargs)
        hidden = self._hidden(out)  # (B, S, D) or None
        pooled = self._pooled(out) if cfg.pooled or cfg.output == "pooled" else None  # (B, D)
        left = self.tokenizer.padding_side == "left"
        results = []
        for b, row_ids in enumerate(ids):
            n = len(row_ids) - cfg.drop_prefix_tokens
            h = None
            if hidden is not None:
                h = hidden[b][mask[b].bool()][cfg.drop_prefix_tokens:] if cfg.padding == "trim" else hidden[b]
                h = to_storage(h, cfg.dtype)
            p = to_storage(pooled[b], cfg.dtype) if pooled is not None else None
            results.append(TextEmbedding(hidden=h, pooled=p, length=n, truncated=False, dtype=cfg.dtype,
                                         left_padded=left and cfg.padding == "max_length"))
        return results

    def _hidden(self, out) -> torch.Tensor | None:
        cfg = self.cfg
        if cfg.output == "pooled":
            return None
        if cfg.output == "last_hidden_state":
            return out.last_hidden_state
        states = out.hidden_states
        layers = range(len(states)) if cfg.layer == "all" else (cfg.layer,) if isinstance(cfg.layer, int) else cfg.layer
        h = torch.cat([states[k] for k in layers], dim=-1)  # (B, S, len(layers) * D)
        if cfg.final_layer_norm:
            norm = getattr(getattr(self._net, "text_model", self._net), "final_layer_norm", None)
            if norm is None:
                raise ConfigError(f"text encoder {cfg.name!r}: final_layer_norm=True but the model has none")
            h = norm(h)
        return h

    def _pooled(self, out) -> torch.Tensor:
        for key in ("text_embeds", "pooler_output"):
            value = getattr(out, key, None)
            if value is not None:
                return value
        raise ConfigError(f"text encoder {self.cfg.name!r}: pooled output asked for, but "
                          f"{type(self.model).__name__} returns no text_embeds/pooler_output")
