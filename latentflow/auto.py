"""``AutoConfig`` / ``AutoModel``: build or load any model from its ``model_type``.

Built-in families are imported lazily (a module per family), so importing one
never pays for the others. Third-party models join with :func:`register`::

    @register
    class MyModel(LatentModel):
        config_class = MyConfig        # MyConfig.model_type == "mine"

    AutoModel.from_pretrained("path/to/saved/mine")
"""

from __future__ import annotations

from typing import Any

from latentflow import hub, registry
from latentflow.configuration import LatentConfig, read_config_dict
from latentflow.errors import CheckpointError, ConfigError
from latentflow.format.codec import Codec, ModelRef

# model_type -> module that registers it on import.
_BUILTIN_MODULES: dict[str, str] = {
    "autoencoder": "latentflow.models.autoencoder",
    "vae": "latentflow.models.vae",
    "beta_vae": "latentflow.models.vae",
    "mae": "latentflow.models.mae",
    "autoencoder_kl": "latentflow.models.autoencoder_kl",
    "vq_autoencoder": "latentflow.models.vq_autoencoder",
    "vqvae2": "latentflow.models.vq_autoencoder",
    "transvae": "latentflow.models.transvae",
    "causal_video_autoencoder_kl": "latentflow.models.causal_video_vae",
    "titok": "latentflow.models.titok",
    "magvit2": "latentflow.models.magvit2",
    "audio_autoencoder_oobleck": "latentflow.models.audio_vae",
    "diffusers": "latentflow.models.diffusers_bridge",  # every other diffusers autoencoder class
}

# diffusers' "_class_name" -> our model_type, for folders written by diffusers.
_CLASS_NAME_ALIASES: dict[str, str] = {"AutoencoderKL": "autoencoder_kl", "AutoencoderOobleck": "audio_autoencoder_oobleck"}

registry.declare_builtins("model", _BUILTIN_MODULES)
_MODELS: dict[str, type] = registry.table("model")  # the live model table of the one registry


def register(model_cls: type) -> type:
    """Register a ``LatentModel`` subclass under its ``config_class.model_type``. Usable as a decorator."""
    return registry.register_class("model", model_cls.config_class.model_type, model_cls)


def model_class_for(model_type: str) -> type:
    """The model class registered for ``model_type`` (built-in families are imported on first use)."""
    if model_type not in _MODELS and model_type not in _BUILTIN_MODULES:
        raise ConfigError(f"unknown model_type {model_type!r}; registered: {registry.known_names('model')}")
    return registry.class_for("model", model_type)


def model_type_of(config_dict: dict[str, Any]) -> str:
    if "_diffusers_version" in config_dict and "_class_name" in config_dict:  # diffusers wrote it: its class decides
        # (a diffusers config may carry a "model_type" of its own: Cosmos3AVAEAudioTokenizer's "autoencoder_v2")
        return _CLASS_NAME_ALIASES.get(config_dict["_class_name"], "diffusers")
    if "model_type" in config_dict:
        return config_dict["model_type"]
    if config_dict.get("_class_name") in _CLASS_NAME_ALIASES:
        return _CLASS_NAME_ALIASES[config_dict["_class_name"]]
    if "_class_name" in config_dict:  # a diffusers folder: the bridge supports it or names the classes it does
        return "diffusers"
    raise ConfigError(f"config has no 'model_type' key (keys: {sorted(config_dict)})")


class AutoConfig:
    """Build the right config class from a dict or a saved ``config.json``."""

    @staticmethod
    def for_model(model_type: str, **kwargs: Any) -> LatentConfig:
        return model_class_for(model_type).config_class.from_dict(kwargs)

    @staticmethod
    def from_dict(data: dict[str, Any], **overrides: Any) -> LatentConfig:
        model_type = model_type_of(data)
        cls = model_class_for(model_type).config_class
        data = {k: v for k, v in data.items() if k != "model_type"}
        return cls.from_dict(data, **overrides)

    @staticmethod
    def from_pretrained(name_or_path: str, storage_options: dict | None = None, subfolder: str | None = None,
                        **overrides: Any) -> LatentConfig:
        fs, path = hub.resolve_pretrained(name_or_path, storage_options, subfolder)
        return AutoConfig.from_dict(read_config_dict(fs.unstrip_protocol(path), storage_options), **overrides)


class AutoModel:
    """Build or load any registered model by its ``model_type``."""

    @staticmethod
    def from_config(config: LatentConfig | dict[str, Any]):
        if isinstance(config, dict):
            config = AutoConfig.from_dict(config)
        return model_class_for(config.model_type)(config)

    @staticmethod
    def from_pretrained(name_or_path: str, storage_options: dict | None = None, subfolder: str | None = None,
                        revision: str | None = None, **kwargs: Any):
        """Load any model: a latentflow or diffusers folder, an fsspec URL, a ``models/`` name or a hub id.

        A hub id is fetched (only ``subfolder``'s config and safetensors of ``kwargs["variant"]``; from the
        local cache with ``HF_HUB_OFFLINE=1``) and ``model.hub_revision`` is the commit it resolved to.
        ``kwargs`` (``variant``, ``torch_dtype``, config overrides) go to the family's ``from_pretrained``.
        """
        location, commit = hub.locate(name_or_path, subfolder, kwargs.get("variant"), revision)
        fs, path = hub.resolve_pretrained(location, storage_options, subfolder)
        model_type = model_type_of(read_config_dict(fs.unstrip_protocol(path), storage_options))
        model = model_class_for(model_type).from_pretrained(
            location, storage_options=storage_options, subfolder=subfolder, **kwargs
        )
        model.hub_revision = commit
        return model

    @staticmethod
    def from_ref(ref: ModelRef, storage_options: dict | None = None, **kwargs: Any):
        """The model a codec's typed :class:`~latentflow.format.codec.ModelRef` points at (variant and
        pinned revision included)."""
        extra = {k: v for k, v in (("variant", ref.variant), ("revision", ref.revision)) if v}
        return AutoModel.from_pretrained(ref.location, storage_options=storage_options, subfolder=ref.subfolder, **extra, **kwargs)

    @staticmethod
    def from_codec(codec: Codec, storage_options: dict | None = None, weights: str | None = None):
        """Rebuild the encoder/decoder of a latent output from its codec alone (``weights`` overrides
        the recorded location), in eval mode.

        Raises:
            CheckpointError: no location is recorded, or the weights found are not the ones that
                made these latents (sha256 differs).
        """
        ref = hub.model_ref_from_user(weights) if weights else codec.model.ref
        if ref is None:
            raise CheckpointError("the codec records no model location; pass weights=<checkpoint dir, URL or models/ name>")
        model = AutoModel.from_ref(ref, storage_options)
        if codec.model.weights_sha256 not in (model.weights_hash(), hub.state_dict_sha256(model.state_dict())):
            raise CheckpointError(f"weights at {ref.location!r} (sha256 {model.weights_hash()}) are not the ones that encoded "
                                  f"these latents (sha256 {codec.model.weights_sha256})")
        return model.eval()


def load_model(name_or_path: str, storage_options: dict | None = None, **kwargs: str):
    """A model by ``models/`` name, folder, fsspec URL or hub id, with one clear error for a name that is none
    of those (it lists the shipped models). The one loader the encode plan, evaluation and pipelines use.

    ``kwargs``: ``subfolder``, ``variant``, ``revision`` (hub ids: ``model.hub_revision`` is the commit loaded).

    Raises:
        CheckpointError: no such model.
    """
    hub.check_model_name(name_or_path)
    return AutoModel.from_pretrained(name_or_path, storage_options=storage_options, **kwargs)
