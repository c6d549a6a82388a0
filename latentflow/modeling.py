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

import torch

from latentflow.configuration import CONFIG_NAME, LatentConfig
from latentflow.errors import CheckpointError, InputError, NotSupportedError
from latentflow.normalization import Normalization
from latentflow.outputs import AutoencoderOutput, DecoderOutput, EncoderOutput
from latentflow.pretrained import PretrainedModule


class LatentModel(PretrainedModule):
    """Base class of every latentflow model.

    Subclasses set ``config_class`` and implement ``encode``, ``decode`` and
    ``forward``; the rest of the contract is shared.

    Class attributes:
        latent_kind: ``"continuous"`` or ``"discrete"`` (what an encode job stores).
        input_rank: rank of the input, 4 for (B, C, H, W) images.
    """

    config_class: ClassVar[type[LatentConfig]] = LatentConfig
    registry_kind: ClassVar[str] = "model"
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

    # ---- latent normalization (recorded in every codec) -----------------------
    @property
    def normalization(self) -> Normalization:
        """The family's rule from raw latents to what a denoiser trains on (config-driven here;
        families whose pipelines use another rule override this)."""
        return Normalization.from_config(self.config)

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents -> the unit-scale latents a diffusion model trains on."""
        return self.normalization.normalize(z)

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize_latents`."""
        return self.normalization.denormalize(z)

    # ---- checkpoints: the shared path of latentflow.pretrained --------------------
    @classmethod
    def registry_name(cls) -> str:
        return cls.config_class.model_type

    def config_json(self) -> dict[str, Any]:
        return self.config.to_dict()

    @classmethod
    def config_from_json(cls, data: dict[str, Any], **overrides: Any) -> LatentConfig:
        return cls.config_class.from_dict(data, **overrides)


def check_finite(t: torch.Tensor, what: str) -> None:
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).sum().item()
        raise InputError(f"{what} must be finite, got {bad} NaN/Inf values of {t.numel()} (shape {tuple(t.shape)}, dtype {t.dtype})")


def normalize_latents(z: torch.Tensor, config: LatentConfig) -> torch.Tensor:
    """``(z - shift) * scale``, or ``(z - mean) / std * scale`` with per-channel stats (see :mod:`latentflow.normalization`)."""
    return Normalization.from_config(config).normalize(z)


def denormalize_latents(z: torch.Tensor, config: LatentConfig) -> torch.Tensor:
    """Inverse of :func:`normalize_latents`."""
    return Normalization.from_config(config).denormalize(z)


__all__ = ["LatentModel", "check_finite", "normalize_latents", "denormalize_latents", "CONFIG_NAME", "CheckpointError"]
