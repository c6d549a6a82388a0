"""What every prior shares: a strict config, the codec it was trained on, safetensors checkpoints.

A prior is trained on the latents of one codec (one encoder, one processor, one
storage layout). Its config records that codec's fingerprint; :meth:`PriorModel.check_codec`
refuses latents from any other codec with :class:`~latentflow.errors.CodecMismatchError`.

Checkpoints are ``config.json`` (with ``prior_kind``) + ``model.safetensors``::

    prior.save_pretrained("runs/prior/final")
    prior = load_prior("runs/prior/final")
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import fsspec
import torch
from safetensors.torch import save as st_save
from torch import nn

from latentflow.errors import CodecMismatchError, ConfigError
from latentflow.training.config import SectionConfig

PRIOR_CONFIG_NAME = "config.json"
_PRIORS: dict[str, type["PriorModel"]] = {}


@dataclass
class PriorConfig(SectionConfig):
    """Fields every prior has.

    Attributes:
        latent_shape: per-sample shape of what is modelled: token grid (h, w) [or (h, w, levels)]
            for discrete priors, (C, h, w) for continuous ones.
        num_classes: class-conditional when > 0 (index ``num_classes`` is "no class").
        codec_fingerprint: fingerprint of the latent codec the prior is trained on ("" = unset).
    """

    latent_shape: tuple[int, ...] = (8, 8)
    num_classes: int = 0
    codec_fingerprint: str = ""

    def validate(self) -> None:
        if not self.latent_shape or any(s <= 0 for s in self.latent_shape):
            raise ConfigError(f"latent_shape must be non-empty and positive, got: {self.latent_shape}")
        if self.num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, got: {self.num_classes}")

    @property
    def seq_len(self) -> int:
        return math.prod(self.latent_shape)


def register_prior(cls: type["PriorModel"]) -> type["PriorModel"]:
    _PRIORS[cls.kind] = cls
    return cls


def prior_class_for(kind: str) -> type["PriorModel"]:
    import importlib

    if kind not in _PRIORS:
        module = {"gpt": "gpt", "maskgit": "maskgit", "flow": "flow"}.get(kind)
        if module is None:
            raise ConfigError(f"unknown prior kind {kind!r}; expected one of gpt, maskgit, flow")
        importlib.import_module(f"latentflow.priors.{module}")
    return _PRIORS[kind]


class PriorModel(nn.Module):
    """Base of the priors: ``loss``, ``sample``, ``validation`` plus checkpoint IO and the codec check."""

    kind: ClassVar[str] = "base"
    config_class: ClassVar[type[PriorConfig]] = PriorConfig
    discrete: ClassVar[bool] = True

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config

    def class_labels(self, labels: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """Labels (B,), with the "no class" index where none is given."""
        if labels is None or self.config.num_classes == 0:
            return torch.full((batch,), self.config.num_classes, dtype=torch.long, device=device)
        return labels.long().to(device)

    def check_codec(self, fingerprint: str) -> None:
        """Raise :class:`CodecMismatchError` when ``fingerprint`` is not the codec this prior was trained on."""
        expected = self.config.codec_fingerprint
        if expected and fingerprint != expected:
            raise CodecMismatchError(
                f"this {self.kind} prior was trained on latents of codec {expected!r}, but the dataset's codec is "
                f"{fingerprint!r}: its indices/latents mean something else. Use the matching latent dataset or retrain.")

    # ---- the contract ------------------------------------------------------------------
    def loss(self, latents: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    @torch.no_grad()
    def validation(self, latents: torch.Tensor, labels: torch.Tensor | None = None, seed: int = 0) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, num_samples: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
               **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError

    # ---- files ----------------------------------------------------------------------------
    def save_pretrained(self, directory: str, storage_options: dict | None = None) -> None:
        """Write ``config.json`` (with ``prior_kind``) and ``model.safetensors``."""
        from latentflow import hub

        fs, path = fsspec.url_to_fs(str(directory), **(storage_options or {}))
        fs.makedirs(path, exist_ok=True)
        with fs.open(f"{path}/{PRIOR_CONFIG_NAME}", "w") as f:
            json.dump({"prior_kind": self.kind, **self.config.to_dict()}, f, indent=2, sort_keys=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with fs.open(f"{path}/{hub.WEIGHTS_NAME}", "wb") as f:
            f.write(st_save(state, metadata={"format": "pt", "prior_kind": self.kind}))


def load_prior(directory: str, storage_options: dict | None = None) -> PriorModel:
    """Load any prior saved with :meth:`PriorModel.save_pretrained`."""
    from latentflow import hub

    fs, path = fsspec.url_to_fs(str(directory), **(storage_options or {}))
    with fs.open(f"{path}/{PRIOR_CONFIG_NAME}", "r") as f:
        data = json.load(f)
    cls = prior_class_for(data.pop("prior_kind", ""))
    model = cls(cls.config_class.from_dict(data))
    state, _ = hub.read_safetensors(fs, f"{path}/{hub.WEIGHTS_NAME}")
    model.load_state_dict(state)
    return model.eval()


def build_prior(kind: str, config: dict[str, Any]) -> PriorModel:
    """A fresh prior of ``kind`` from a config dict (strict keys)."""
    cls = prior_class_for(kind)
    return cls(cls.config_class.from_dict(config))
