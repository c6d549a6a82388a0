"""The one save/load path for everything savable: models, quantizers and priors.

A checkpoint is a folder (local or any fsspec URL) holding ``config.json`` and
``model.safetensors``; nothing is ever pickled. Loading is strict: a checkpoint that
does not match the module its config builds raises :class:`CheckpointError` naming
the missing, unexpected and mis-shaped keys.

Each kind says only how its config reads and writes JSON (:meth:`PretrainedModule.config_json`,
:meth:`PretrainedModule.config_from_json`) and where it sits in :mod:`latentflow.registry`::

    prior.save_pretrained("runs/prior/final")               # config.json + model.safetensors
    same = GPTPrior.from_pretrained("runs/prior/final")
    q = FiniteScalarQuantizer.from_pretrained("memory://fsq")
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import fsspec
import torch
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from latentflow import hub
from latentflow.configuration import CONFIG_NAME, Config, read_config_dict
from latentflow.errors import CheckpointError, ConfigError
from latentflow.version import __version__


def check_torch_dtype(torch_dtype: Any) -> None:
    """Raise :class:`ConfigError` unless ``torch_dtype`` is None or a floating torch dtype."""
    if torch_dtype is not None and not (isinstance(torch_dtype, torch.dtype) and torch_dtype.is_floating_point):
        raise ConfigError(
            f"torch_dtype must be a floating torch.dtype such as torch.float16 or torch.bfloat16, got: {torch_dtype!r}"
        )


def rename_keys(state: dict[str, torch.Tensor], renames: tuple[tuple[str, str], ...]) -> dict[str, torch.Tensor]:
    """``state`` with every key's ``old`` substrings replaced by ``new``, for each ``(old, new)`` in order."""
    if not renames:
        return state
    out = {}
    for key, value in state.items():
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    return out


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """``t``, copied when its data is not 64-byte aligned: tensors read from a safetensors byte buffer
    sit at arbitrary offsets, and CPU convolutions over them ran ~4-14% slower (measured on an f8 KL)."""
    return t if t.data_ptr() % 64 == 0 else t.clone()


class PretrainedModule(nn.Module):
    """Base of every savable module: strict safetensors checkpoints with a JSON config.

    Class attributes:
        config_class: the config dataclass.
        registry_kind: ``"model"``, ``"quantizer"`` or ``"prior"`` (see :mod:`latentflow.registry`).
        legacy_key_renames: ``(old, new)`` substrings applied to checkpoint keys before loading,
            so checkpoints written before a module was renamed still load.
    """

    config_class: ClassVar[type[Config]] = Config
    registry_kind: ClassVar[str] = ""
    legacy_key_renames: ClassVar[tuple[tuple[str, str], ...]] = ()
    weights_sha256: str | None = None  # set when loaded from a checkpoint

    # ---- what each kind says ---------------------------------------------------------
    @classmethod
    def registry_name(cls) -> str:
        """This class's name in the registry (``model_type``, quantizer ``name``, prior ``kind``)."""
        raise NotImplementedError

    def config_json(self) -> dict[str, Any]:
        """The JSON written to ``config.json`` (it names this module's registry entry)."""
        raise NotImplementedError

    @classmethod
    def config_from_json(cls, data: dict[str, Any], **overrides: Any) -> Config:
        """The config read back from :meth:`config_json`'s dict, with ``overrides`` applied."""
        raise NotImplementedError

    # ---- files -----------------------------------------------------------------------
    def save_pretrained(self, directory: str, storage_options: dict | None = None) -> None:
        """Write ``config.json`` and ``model.safetensors`` to a directory or fsspec URL."""
        fs, path = fsspec.url_to_fs(str(directory), **(storage_options or {}))
        fs.makedirs(path, exist_ok=True)
        config = self.config_json()
        with fs.open(f"{path.rstrip('/')}/{CONFIG_NAME}", "w") as f:
            f.write(json.dumps({**config, "_latentflow_version": __version__}, indent=2, sort_keys=True))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        metadata = {"format": "pt", "kind": self.registry_kind, "name": self.registry_name()}
        with fs.open(f"{path.rstrip('/')}/{hub.WEIGHTS_NAME}", "wb") as f:
            f.write(save_safetensors_bytes(state, metadata=metadata))

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        storage_options: dict | None = None,
        subfolder: str | None = None,
        torch_dtype: torch.dtype | None = None,
        **config_overrides: Any,
    ):
        """Load a module saved with :meth:`save_pretrained`.

        Args:
            name_or_path: local directory, fsspec URL (``s3://``, ``memory://``), a name
                under ``models/``, or a hub id already in the local cache.
            storage_options: fsspec options (credentials are used, never stored).
            subfolder: e.g. ``"vae"`` inside a pipeline folder.
            torch_dtype: cast the weights after loading (a floating dtype).
            config_overrides: config keys to replace (validated like the rest).

        Returns:
            The module in eval mode, with ``weights_sha256`` set to the file's hash.
        """
        check_torch_dtype(torch_dtype)
        fs, path = hub.resolve_pretrained(name_or_path, storage_options, subfolder)
        config = cls.config_from_json(read_config_dict(fs.unstrip_protocol(path), storage_options), **config_overrides)
        weights = f"{path.rstrip('/')}/{hub.WEIGHTS_NAME}"
        if not fs.exists(weights):
            hub.refuse_pickles(fs, path, hub.WEIGHTS_NAME)
        state, sha = hub.read_safetensors(fs, weights)
        return cls.from_state_dict(config, state, weights_sha256=sha, torch_dtype=torch_dtype, assign=True)

    @classmethod
    def from_state_dict(cls, config: Config, state: dict[str, torch.Tensor], weights_sha256: str | None = None,
                        torch_dtype: torch.dtype | None = None, assign: bool = False):
        """Build from ``config`` and load ``state`` strictly; the module comes back in eval mode.

        ``assign=True`` (the loaders, whose ``state`` is freshly read): build without random
        initialization and take ``state``'s tensors (cast to the module's dtypes) instead of copying
        them, as diffusers' ``low_cpu_mem_usage`` does: faster, and no second copy of the weights.
        Modules that tie weights or compute non-persistent buffers in ``__init__`` are built normally.
        """
        check_torch_dtype(torch_dtype)
        state = rename_keys(state, cls.legacy_key_renames)
        model = cls._adopt(config, state) if assign else None
        if model is None:
            model = cls(config)
            model.load_state_dict_strict(state)
        model.weights_sha256 = weights_sha256
        if torch_dtype is not None:
            model.to(torch_dtype)
        return model.eval()

    @classmethod
    def _adopt(cls, config: Config, state: dict[str, torch.Tensor]):
        """The module built on the meta device with ``state``'s tensors; None where that would not
        give the module ``cls(config)`` + a strict load gives (the caller then takes that path, which
        also reports a mismatched checkpoint)."""
        try:
            with torch.device("meta"):
                model = cls(config)
        except Exception:  # noqa: BLE001 - an __init__ that needs real tensors: build it normally
            return None
        own = model.state_dict()
        tied = len(list(model.named_parameters(remove_duplicate=False))) != len(list(model.named_parameters()))
        computed = any(name not in own for name, _ in model.named_buffers())  # non-persistent: made in __init__
        if tied or computed or set(own) != set(state) or any(own[k].shape != state[k].shape for k in own):
            return None
        model.load_state_dict({k: _aligned(v.to(own[k].dtype)) for k, v in state.items()}, strict=True, assign=True)
        return model

    def load_state_dict_strict(self, state: dict[str, torch.Tensor]) -> None:
        """Load weights, raising :class:`CheckpointError` that lists missing, unexpected and mis-shaped keys."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = sorted(
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in set(own) & set(state)
            if tuple(state[k].shape) != tuple(own[k].shape)
        )
        if missing or unexpected or shapes:
            raise CheckpointError(
                f"checkpoint does not match {type(self).__name__} built from its config: "
                f"missing keys {missing}; unexpected keys {unexpected}; shape mismatches {shapes}"
            )
        self.load_state_dict(state, strict=True)

    def weights_hash(self) -> str:
        """sha256 of the weights: the file's when loaded, else of the state dict content (the codec records it
        as ``model.weights_sha256``; a codec's *fingerprint* is the hash of the whole encoder setup)."""
        return self.weights_sha256 or hub.state_dict_sha256(self.state_dict())


def kind_and_name(config: dict[str, Any]) -> tuple[str, str]:
    """Which registry entry a saved ``config.json`` names: ``("prior", kind)`` for ``prior_kind``,
    ``("quantizer", name)`` for ``{"name", "configuration"}``, else ``("model", model_type)``."""
    if "prior_kind" in config:
        return "prior", config["prior_kind"]
    if "configuration" in config and "name" in config:
        return "quantizer", config["name"]
    from latentflow.auto import model_type_of  # models also read diffusers' _class_name

    return "model", model_type_of(config)


def load_pretrained(name_or_path: str, *, storage_options: dict | None = None, subfolder: str | None = None,
                    **kwargs: Any) -> PretrainedModule:
    """Load any saved model, quantizer or prior: its ``config.json`` names the registry entry.

    Example::

        prior = load_pretrained("runs/prior/final")      # a GPTPrior, MaskGITPrior or FlowPrior
        vae = load_pretrained("kl-f8")                   # what AutoModel.from_pretrained gives
    """
    from latentflow import registry

    fs, path = hub.resolve_pretrained(name_or_path, storage_options, subfolder)
    kind, name = kind_and_name(read_config_dict(fs.unstrip_protocol(path), storage_options))
    cls = registry.class_for(kind, name)
    return cls.from_pretrained(name_or_path, storage_options=storage_options, subfolder=subfolder, **kwargs)
