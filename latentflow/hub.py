"""Finding and reading checkpoints: local dirs, fsspec URLs, ``models/`` names, Hugging Face hub ids.

Only safetensors and JSON are ever read. Pickle-based files (``.bin``, ``.pt``,
``.pth``, ``.ckpt``) are refused: unpickling runs arbitrary code.

Importing this module does not import torch (the readers of weights import it when called), so a job
refuses a model name that names nothing (:func:`check_model_name`) in under a second, before torch loads.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import fsspec

from latentflow.errors import CheckpointError, ConfigError
from latentflow.format.codec import ModelRef

if TYPE_CHECKING:
    import torch

WEIGHTS_NAME = "model.safetensors"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
MODELS_DIR_ENV = "LATENTFLOW_MODELS_DIR"


def models_dir() -> Path:
    """Where named checkpoints live: ``$LATENTFLOW_MODELS_DIR`` or the repo's ``models/``."""
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "models"


def shipped_models() -> list[str]:
    """The checkpoint names under :func:`models_dir` (folders holding a ``config.json``), sorted."""
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file())


def model_not_found_message(name: str) -> str:
    """The error for a model name that is no folder, URL, hub id or ``models/`` name: it lists the shipped names.

    Example::

        raise CheckpointError(model_not_found_message("kl-f16"))
    """
    shipped = shipped_models()
    listing = ", ".join(shipped) if shipped else "none"
    return (f"model {name!r} not found: expected a checkpoint folder {models_dir() / name} (config.json + model.safetensors). "
            f"Shipped models in {models_dir()}: {listing}. Use one of those names, train or copy a checkpoint there, "
            f"or pass model=<directory, s3:// URL or Hugging Face hub id>.")


def check_model_name(name_or_path: str) -> None:
    """Refuse a model that is no URL, no existing path, no hub id (``org/name``) and no name under ``models/``.

    Raises:
        CheckpointError: :func:`model_not_found_message`, which lists the shipped names.
    """
    name = str(name_or_path)
    if not _is_url(name) and not Path(name).exists() and not is_hub_id(name) and not (models_dir() / name).is_dir():
        raise CheckpointError(model_not_found_message(name))


def is_models_name(location: str) -> bool:
    """A name of a shipped checkpoint under :func:`models_dir` (not a local path of the same name)."""
    return "/" not in location.strip("/") and (models_dir() / location).is_dir() and not os.path.isdir(location)


def model_ref_from_user(location: str, subfolder: str | None = None, variant: str | None = None,
                        revision: str | None = None) -> ModelRef:
    """A :class:`~latentflow.format.codec.ModelRef` as a user typed it: an existing relative local folder
    becomes absolute, so a reader in another working directory still finds it (``models/`` names stay names)."""
    if "://" not in location and os.path.isdir(location) and not is_models_name(location):
        location = os.path.abspath(location)
    return ModelRef(location, subfolder, variant, revision)


def _is_url(path: str) -> bool:
    return "://" in path


def is_hub_id(name_or_path: str) -> bool:
    """``org/name``: not a URL, not an existing local path, not a name under ``models/``."""
    name = str(name_or_path)
    return (not _is_url(name) and not Path(name).exists() and not (models_dir() / name).is_dir()
            and name.count("/") == 1 and not name.startswith((".", "/")))


def resolve_pretrained(name_or_path: str, storage_options: dict | None = None, subfolder: str | None = None):
    """Resolve a checkpoint location to ``(fs, path)``.

    Order: an fsspec URL; an existing local path; a name under ``models/``; a Hugging Face
    hub id (its snapshot, downloaded or, with ``HF_HUB_OFFLINE=1``, from the local cache:
    see :func:`download`).
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
        path = _from_hub(name_or_path, subfolder)
        fs = fsspec.filesystem("file")
    if subfolder:
        path = f"{path.rstrip('/')}/{subfolder}"
    if not fs.exists(path):
        raise CheckpointError(f"checkpoint path {name_or_path!r} (subfolder={subfolder!r}) does not exist")
    return fs, path


def locate(name_or_path: str, subfolder: str | None = None, variant: str | None = None,
           revision: str | None = None) -> tuple[str, str | None]:
    """``(location to load from, pinned commit)``: a hub id becomes its local snapshot folder and the
    commit hash it resolved to; anything else comes back unchanged with ``None``.

    Raises:
        ConfigError: ``revision`` was given for something that is not a hub id.
    """
    if not is_hub_id(name_or_path):
        if revision:
            raise ConfigError(f"revision={revision!r} applies to hub ids (org/name) only, got a local path or URL: {name_or_path!r}")
        return str(name_or_path), None
    return download(str(name_or_path), subfolder, variant, revision)


def hub_allow_patterns(subfolder: str | None = None, variant: str | None = None) -> list[str]:
    """The files an autoencoder needs from a hub repo: its ``config.json`` and the safetensors of
    ``variant`` (single or sharded, diffusers or latentflow names), inside ``subfolder``; with a
    subfolder also the pipeline's small JSON files (some families read ``scheduler_config.json``).
    Never pickles, never other variants, never the other components of a pipeline."""
    p = f"{subfolder.strip('/')}/" if subfolder else ""
    shard = "-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9]"
    if variant:
        weights = [f"{DIFFUSERS_WEIGHTS}.{variant}.safetensors", f"{DIFFUSERS_WEIGHTS}{shard}.{variant}.safetensors",
                   f"{DIFFUSERS_WEIGHTS}.safetensors.index.{variant}.json", f"model.{variant}.safetensors"]
    else:
        weights = [WEIGHTS_NAME, f"model{shard}.safetensors", "model.safetensors.index.json",
                   f"{DIFFUSERS_WEIGHTS}.safetensors", f"{DIFFUSERS_WEIGHTS}{shard}.safetensors",
                   f"{DIFFUSERS_WEIGHTS}.safetensors.index.json"]
    pipeline = ["model_index.json", "scheduler/scheduler_config.json"] if subfolder else []
    return [f"{p}config.json"] + [p + w for w in weights] + pipeline


def text_encoder_allow_patterns(subfolder: str | None = None, tokenizer_subfolder: str | None = None) -> list[str]:
    """The files a text encoder needs from a hub repo: the model's ``config.json`` and safetensors
    (single or sharded) in ``subfolder``, and the tokenizer's files (JSON, text and sentencepiece
    vocabularies, chat template) in ``tokenizer_subfolder`` (default: the model's folder). Never pickles."""
    model = f"{subfolder.strip('/')}/" if subfolder else ""
    tok = tokenizer_subfolder if tokenizer_subfolder is not None else subfolder
    tok = f"{tok.strip('/')}/" if tok else ""
    weights = [f"{model}config.json", f"{model}*.safetensors", f"{model}*.safetensors.index.json"]
    return weights + [f"{tok}{name}" for name in ("*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken")]


def download(repo_id: str, subfolder: str | None = None, variant: str | None = None,
             revision: str | None = None, allow_patterns: list[str] | None = None) -> tuple[str, str]:
    """Fetch what :func:`hub_allow_patterns` names (or ``allow_patterns``, e.g.
    :func:`text_encoder_allow_patterns`) from the Hugging Face hub into its cache.

    With ``HF_HUB_OFFLINE=1`` (read at call time) nothing is fetched: the snapshot resolves from
    the local cache (``$HF_HUB_CACHE``, ``refs/<revision>`` -> ``snapshots/<commit>``).

    Returns:
        ``(snapshot folder, commit hash)``; the commit pins the revision in a codec.
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:  # pragma: no cover - a core dependency
        raise CheckpointError(f"loading hub id {repo_id!r} needs huggingface_hub: pip install huggingface_hub") from err
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns or hub_allow_patterns(subfolder, variant),
                                   cache_dir=os.environ.get("HF_HUB_CACHE") or None, local_files_only=offline)
    except Exception as err:
        where = "the local hub cache (HF_HUB_OFFLINE=1)" if offline else "the hub"
        raise CheckpointError(
            f"{repo_id!r} (revision={revision!r}, subfolder={subfolder!r}, variant={variant!r}) is not a local path, "
            f"an fsspec URL or a name in {str(models_dir())!r}, and could not be read from {where}: "
            f"{type(err).__name__}: {err}"
        ) from err
    return str(folder), Path(folder).name


def _from_hub(repo_id: str, subfolder: str | None = None) -> str:
    if repo_id.count("/") != 1:
        available = sorted(p.name for p in models_dir().iterdir()) if models_dir().is_dir() else []
        raise CheckpointError(f"{repo_id!r} is not a local path, an fsspec URL, or a name in {str(models_dir())!r} "
                              f"(available: {available})")
    return download(repo_id, subfolder)[0]


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
    from safetensors.torch import load as load_safetensors_bytes  # torch: see the module docstring

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
    import torch  # see the module docstring

    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(t.dtype).encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
