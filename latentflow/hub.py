"""Finding and reading checkpoints: local dirs, fsspec URLs, ``models/`` names, hub cache.

Only safetensors and JSON are ever read. Pickle-based files (``.bin``, ``.pt``,
``.pth``, ``.ckpt``) are refused: unpickling runs arbitrary code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import fsspec
import torch
from safetensors.torch import load as load_safetensors_bytes

from latentflow.errors import CheckpointError

WEIGHTS_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
MODELS_DIR_ENV = "LATENTFLOW_MODELS_DIR"


def models_dir() -> Path:
    """Where named checkpoints live: ``$LATENTFLOW_MODELS_DIR`` or the repo's ``models/``."""
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "models"


def _is_url(path: str) -> bool:
    return "://" in path


def resolve_pretrained(name_or_path: str, storage_options: dict | None = None, subfolder: str | None = None):
    """Resolve a checkpoint location to ``(fs, path)``.

    Order: an fsspec URL; an existing local path; a name under ``models/``;
    a Hugging Face hub id found in the local cache (never downloaded here).
    """
    name_or_path = str(name_or_path)
    fs, path = None, None
    if _is_url(name_or_path):
        fs, path = fsspec.url_to_fs(name_or_path, **(storage_options or {}))
    elif Path(name_or_path).exists():
        fs, path = fsspec.filesystem("file"), str(Path(name_or_path).resolve())
    elif (models_dir() / name_or_path).is_dir():
        fs, path = fsspec.filesystem("file"), str(models_dir() / name_or_path)
    else:
        path = _from_hub_cache(name_or_path)
        fs = fsspec.filesystem("file")
    if subfolder:
        path = f"{path.rstrip('/')}/{subfolder}"
    if not fs.exists(path):
        raise CheckpointError(f"checkpoint path {name_or_path!r} (subfolder={subfolder!r}) does not exist")
    return fs, path


def _from_hub_cache(repo_id: str) -> str:
    available = sorted(p.name for p in models_dir().iterdir()) if models_dir().is_dir() else []
    hint = (
        f"{repo_id!r} is not a local path, an fsspec URL, or a name in {str(models_dir())!r} "
        f"(available: {available})"
    )
    if repo_id.count("/") != 1:
        raise CheckpointError(hint)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, local_files_only=True, allow_patterns=["*.json", "*.safetensors"])
    except Exception as err:  # offline cache miss, or huggingface_hub missing
        raise CheckpointError(f"{hint}; not in the local hub cache either ({type(err).__name__})") from err


def refuse_pickles(fs, directory: str, wanted: str) -> None:
    """Raise a clear error when only pickle-format weights exist where ``wanted`` was expected."""
    try:
        names = [p.rsplit("/", 1)[-1] for p in fs.ls(directory, detail=False)]
    except FileNotFoundError:
        names = []
    pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise CheckpointError(
            f"found only pickle-format weights {pickles} in {directory!r}, expected {wanted!r}. "
            "latentflow never unpickles files (unpickling can run arbitrary code); "
            "convert them to safetensors once, in a trusted environment."
        )
    raise CheckpointError(f"no {wanted!r} in {directory!r}; found: {sorted(names)}")


def read_safetensors(fs, path: str) -> tuple[dict[str, torch.Tensor], str]:
    """Read one safetensors file through fsspec. Returns ``(state_dict, sha256 of the bytes)``."""
    if path.endswith(PICKLE_SUFFIXES):
        raise CheckpointError(f"refusing to unpickle {path!r}: only safetensors weights are loaded")
    with fs.open(path, "rb") as f:
        data = f.read()
    try:
        tensors = load_safetensors_bytes(data)
    except Exception as err:
        raise CheckpointError(f"{path!r} is not a valid safetensors file: {err}") from err
    return tensors, hashlib.sha256(data).hexdigest()


def read_sharded_safetensors(fs, index_path: str) -> tuple[dict[str, torch.Tensor], str]:
    """Read a ``*.safetensors.index.json`` and every shard it names."""
    with fs.open(index_path, "r") as f:
        index = json.load(f)
    directory = index_path.rsplit("/", 1)[0]
    state, digest = {}, hashlib.sha256()
    for shard in sorted(set(index["weight_map"].values())):
        tensors, sha = read_safetensors(fs, f"{directory}/{shard}")
        state.update(tensors)
        digest.update(sha.encode())
    return state, digest.hexdigest()


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """A content hash of a state dict, independent of file layout (sorted keys, raw bytes)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(t.dtype).encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
