"""What every prior shares: a strict config, the codec it was trained on, safetensors checkpoints.

A prior is trained on the latents of one codec (one encoder, one processor, one
storage layout). Its config records that codec's fingerprint; :meth:`PriorModel.check_codec`
refuses latents from any other codec with :class:`~latentflow.errors.CodecMismatchError`.

Checkpoints are ``config.json`` (with ``prior_kind``) + ``model.safetensors``, written and read
(strictly, naming mismatched keys) by the path models and quantizers use
(:class:`~latentflow.pretrained.PretrainedModule`); priors sit in the ``"prior"`` table of
:mod:`latentflow.registry`::

    prior.save_pretrained("runs/prior/final")
    prior = load_prior("runs/prior/final")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from latentflow import hub, registry
from latentflow.configuration import CONFIG_NAME, Config, read_config_dict
from latentflow.errors import CodecMismatchError, ConfigError
from latentflow.pretrained import PretrainedModule, kind_and_name

PRIOR_CONFIG_NAME = CONFIG_NAME
# kind -> module that registers it on import (lazy, like latentflow.auto)
_BUILTIN_PRIORS: dict[str, str] = {
    "gpt": "latentflow.priors.gpt",
    "maskgit": "latentflow.priors.maskgit",
    "flow": "latentflow.priors.flow",
    "discrete_diffusion": "latentflow.priors.discrete_diffusion",
}
registry.declare_builtins("prior", _BUILTIN_PRIORS)
_PRIORS: dict[str, type["PriorModel"]] = registry.table("prior")


@dataclass
class PriorConfig(Config):
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
    """Register a prior class under ``cls.kind``. Usable as a decorator."""
    return registry.register_class("prior", cls.kind, cls)


def prior_class_for(kind: str) -> type["PriorModel"]:
    """The prior class registered as ``kind`` (built-ins are imported on first use)."""
    return registry.class_for("prior", kind)


class PriorModel(PretrainedModule):
    """Base of the priors: ``loss``, ``sample``, ``validation`` plus checkpoint IO and the codec check."""

    kind: ClassVar[str] = "base"
    config_class: ClassVar[type[PriorConfig]] = PriorConfig
    registry_kind: ClassVar[str] = "prior"
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

    # ---- checkpoints: the shared path of latentflow.pretrained ----------------------------
    @classmethod
    def registry_name(cls) -> str:
        return cls.kind

    def config_json(self) -> dict[str, Any]:
        return {"prior_kind": self.kind, **self.config.to_dict()}

    @classmethod
    def config_from_json(cls, data: dict[str, Any], **overrides: Any) -> PriorConfig:
        data = dict(data)
        kind = data.pop("prior_kind", cls.kind)
        if kind != cls.kind:
            raise ConfigError(f"{cls.__name__} loads prior_kind {cls.kind!r}, got: {kind!r}; use load_prior() for any kind")
        return cls.config_class.from_dict(data, **overrides)


def load_prior(directory: str, storage_options: dict | None = None, **kwargs: Any) -> PriorModel:
    """Load any prior saved with :meth:`PriorModel.save_pretrained`, whatever its kind.

    Args:
        directory: local folder or fsspec URL holding ``config.json`` + ``model.safetensors``.
        storage_options: fsspec options.
        kwargs: passed to :meth:`~latentflow.pretrained.PretrainedModule.from_pretrained`
            (``torch_dtype``, config overrides).
    """
    fs, path = hub.resolve_pretrained(directory, storage_options)
    data = read_config_dict(fs.unstrip_protocol(path), storage_options)
    if kind_and_name(data)[0] != "prior":
        raise ConfigError(f"{directory!r} is not a prior checkpoint: its {CONFIG_NAME} has no 'prior_kind' (keys: {sorted(data)})")
    return prior_class_for(data["prior_kind"]).from_pretrained(directory, storage_options=storage_options, **kwargs)


def build_prior(kind: str, config: dict[str, Any]) -> PriorModel:
    """A fresh prior of ``kind`` from a config dict (strict keys)."""
    cls = prior_class_for(kind)
    return cls(cls.config_class.from_dict(config))
