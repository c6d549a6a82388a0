"""``LatentModel``: the one contract every autoencoder family implements.

Entrypoints: ``encode`` -> :class:`EncoderOutput`, ``decode`` -> :class:`DecoderOutput`,
``forward`` -> :class:`AutoencoderOutput`, ``reconstruct``, ``sample`` (families with a
prior), ``tokenize``/``detokenize`` (quantized families), ``normalize_latents``/
``denormalize_latents``, and ``save_pretrained``/``from_pretrained`` (``config.json`` +
``model.safetensors``; never pickles).

Example::

    model = VariationalAutoencoderModel(VariationalAutoencoderConfig(latent_channels=4))
    out = model.encode(x)                       # x: (B, 3, H, W) in [-1, 1]
    x_hat = model.decode(out.latents).sample
    model.save_pretrained("my-vae")
    same = AutoModel.from_pretrained("my-vae")
"""

from __future__ import annotations

from typing import Any, ClassVar

import fsspec
import torch
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from latentflow import hub
from latentflow.configuration import CONFIG_NAME, LatentConfig, read_config_dict
from latentflow.errors import CheckpointError, InputError, NotSupportedError
from latentflow.outputs import AutoencoderOutput, DecoderOutput, EncoderOutput


class LatentModel(nn.Module):
    """Base class of every latentflow model.

    Subclasses set ``config_class`` and implement ``encode``, ``decode`` and
    ``forward``; the rest of the contract is shared.

    Class attributes:
        latent_kind: ``"continuous"`` or ``"discrete"`` (what an encode job stores).
        input_rank: rank of the input, 4 for (B, C, H, W) images.
    """

    config_class: ClassVar[type[LatentConfig]] = LatentConfig
    latent_kind: ClassVar[str] = "continuous"
    input_rank: ClassVar[int] = 4

    def __init__(self, config: LatentConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got: {type(config).__name__}")
        self.config = config
        self.weights_sha256: str | None = None  # set when loaded from a checkpoint

    # ---- geometry every family reports --------------------------------
    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def downsample_factor(self) -> int:
        """Spatial reduction from input pixels to latent positions (1 for none)."""
        return 1

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Per-sample latent shape for an input of ``height`` x ``width``."""
        raise NotSupportedError(f"{type(self).__name__} does not report a latent shape")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # ---- input checks at the edge --------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` when ``x`` does not fit this model."""
        if not isinstance(x, torch.Tensor):
            raise InputError(f"expected a torch.Tensor, got: {type(x).__name__}")
        if x.ndim != self.input_rank:
            raise InputError(
                f"{type(self).__name__} expects a rank-{self.input_rank} input (B, C, H, W), "
                f"got rank {x.ndim} with shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise InputError(f"{type(self).__name__} expects {self.in_channels} input channels, got: {x.shape[1]} (shape {tuple(x.shape)})")
        f = self.downsample_factor
        spatial = tuple(x.shape[2:])
        if f > 1 and any(s % f for s in spatial):
            raise InputError(
                f"{type(self).__name__} downsamples by {f}: spatial size must be a multiple of {f}, "
                f"got: {spatial}; resize or crop to e.g. {tuple(s - s % f or f for s in spatial)}"
            )
        if self.config.check_finite:
            check_finite(x, "input")

    # ---- the contract ---------------------------------------------------
    def encode(self, x: torch.Tensor) -> EncoderOutput:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> DecoderOutput:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, **kwargs: Any) -> AutoencoderOutput:
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Encode then decode deterministically (posterior mode, no masking)."""
        return self.decode(self.encode(x).latents).sample

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotSupportedError(
            f"{type(self).__name__} has no prior to sample from; sample() exists on families with one "
            "(VariationalAutoencoderModel: N(0, I)). Train a prior over its latents instead (jobs/train_prior.py)."
        )

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        raise NotSupportedError(f"{type(self).__name__} has continuous latents; tokenize() exists on quantized models")

    def detokenize(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotSupportedError(f"{type(self).__name__} has continuous latents; detokenize() exists on quantized models")

    # ---- latent normalization (config-driven) -----------------------------
    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents -> the unit-scale latents a diffusion model trains on."""
        return normalize_latents(z, self.config)

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize_latents`."""
        return denormalize_latents(z, self.config)

    # ---- checkpoints -----------------------------------------------------------
    def save_pretrained(self, directory: str, storage_options: dict | None = None) -> None:
        """Write ``config.json`` and ``model.safetensors`` to a directory or fsspec URL."""
        fs, path = fsspec.url_to_fs(str(directory), **(storage_options or {}))
        fs.makedirs(path, exist_ok=True)
        self.config.save_pretrained(directory, storage_options)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with fs.open(f"{path.rstrip('/')}/{hub.WEIGHTS_NAME}", "wb") as f:
            f.write(save_safetensors_bytes(state, metadata={"format": "pt", "model_type": self.config.model_type}))

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        storage_options: dict | None = None,
        subfolder: str | None = None,
        torch_dtype: torch.dtype | None = None,
        **config_overrides: Any,
    ) -> "LatentModel":
        """Load a model saved with :meth:`save_pretrained`.

        Args:
            name_or_path: local directory, fsspec URL (``s3://``, ``memory://``), a name
                under ``models/``, or a hub id already in the local cache.
            storage_options: fsspec options (credentials are used, never stored).
            subfolder: e.g. ``"vae"`` inside a pipeline folder.
            torch_dtype: cast the weights after loading.
            config_overrides: config keys to replace (validated like the rest).
        """
        fs, path = hub.resolve_pretrained(name_or_path, storage_options, subfolder)
        config = cls.config_class.from_dict(read_config_dict(fs.unstrip_protocol(path), storage_options), **config_overrides)
        weights = f"{path.rstrip('/')}/{hub.WEIGHTS_NAME}"
        if not fs.exists(weights):
            hub.refuse_pickles(fs, path, hub.WEIGHTS_NAME)
        state, sha = hub.read_safetensors(fs, weights)
        return cls.from_state_dict(config, state, weights_sha256=sha, torch_dtype=torch_dtype, assign=True)

    @classmethod
    def from_state_dict(cls, config: LatentConfig, state: dict[str, torch.Tensor], weights_sha256: str | None = None,
                        torch_dtype: torch.dtype | None = None, assign: bool = False) -> "LatentModel":
        """Build from ``config`` and load ``state`` strictly; the model comes back in eval mode.

        ``assign=True`` (the loaders, whose ``state`` is freshly read): build without random
        initialization and take ``state``'s tensors (cast to the model's dtypes) instead of copying
        them, as diffusers' ``low_cpu_mem_usage`` does: faster, and no second copy of the weights.
        Models that tie weights or compute non-persistent buffers in ``__init__`` are built normally.
        """
        model = cls._adopt(config, state) if assign else None
        if model is None:
            model = cls(config)
            model.load_state_dict_strict(state)
        model.weights_sha256 = weights_sha256
        if torch_dtype is not None:
            model.to(torch_dtype)
        return model.eval()

    @classmethod
    def _adopt(cls, config: LatentConfig, state: dict[str, torch.Tensor]) -> "LatentModel | None":
        """The model built on the meta device with ``state``'s tensors; None where that would not
        give the model ``cls(config)`` + a strict load gives (the caller then takes that path, which
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
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True, assign=True)
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

    def fingerprint(self) -> str:
        """sha256 of the weights: the file's when loaded, else of the state dict content."""
        return self.weights_sha256 or hub.state_dict_sha256(self.state_dict())


def check_finite(t: torch.Tensor, what: str) -> None:
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).sum().item()
        raise InputError(f"{what} must be finite, got {bad} NaN/Inf values of {t.numel()} (shape {tuple(t.shape)}, dtype {t.dtype})")


def _stats(config: LatentConfig, z: torch.Tensor):
    shape = (1, -1) + (1,) * (z.ndim - 2)
    mean = torch.tensor(config.latents_mean, dtype=z.dtype, device=z.device).view(shape)
    std = torch.tensor(config.latents_std, dtype=z.dtype, device=z.device).view(shape)
    if mean.shape[1] != z.shape[1]:
        raise InputError(f"latents_mean has {mean.shape[1]} channels, latents have {z.shape[1]}")
    return mean, std


def normalize_latents(z: torch.Tensor, config: LatentConfig) -> torch.Tensor:
    """``(z - shift) * scale``, or ``(z - mean) / std * scale`` with per-channel stats."""
    if config.latents_mean is not None:
        mean, std = _stats(config, z)
        return (z - mean) / std * config.scaling_factor
    return (z - config.shift_factor) * config.scaling_factor


def denormalize_latents(z: torch.Tensor, config: LatentConfig) -> torch.Tensor:
    if config.latents_mean is not None:
        mean, std = _stats(config, z)
        return z / config.scaling_factor * std + mean
    return z / config.scaling_factor + config.shift_factor


__all__ = ["LatentModel", "check_finite", "normalize_latents", "denormalize_latents", "CONFIG_NAME", "CheckpointError"]
