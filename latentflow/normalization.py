"""Latent normalization: the one definition of how raw latents become what a denoiser trains on.

Every family's rule is a frozen, JSON-serialisable :class:`Normalization`. It lives in
the codec of every latent output, so readers, ``decode_latents`` and the prior trainer
apply and invert it without the model or its checkpoint.

Rules (``rule``), for batched latents (B, C, h, w) or (B, C, t, h, w):

============================  ===================================================================
``none``                      identity (TAESD)
``scale``                     ``z * scaling_factor`` (SD 1.x/2.x, SDXL)
``shift_scale``               ``(z - shift_factor) * scaling_factor`` (SD3, FLUX.1)
``per_channel``               ``(z - mean[c]) / std[c] * scaling_factor`` (Wan, Qwen-Image, Mochi, LTX)
``per_channel_per_frame``     the same with ``mean[c][t]``, ``std[c][t]`` per latent frame (Cosmos; the first T of T_max)
``per_channel_per_bin``       the same with ``mean[c][f]``, ``std[c][f]`` per channel and latent mel bin, over
                              spectrogram latents (B, C, T, F) (LTX-2 audio: its pipeline's packed C*F features)
``batchnorm``                 fold each ``patch_size`` x ``patch_size`` patch into channels, then
                              ``(z - mean) / sqrt(var + eps)`` per folded channel, unfold (FLUX.2)
============================  ===================================================================

Example::

    norm = Normalization.from_config(model.config)      # or Normalization("shift_scale", 0.3611, 0.1159)
    z_unit = norm.normalize(z)
    assert torch.allclose(norm.denormalize(z_unit), z)
    Normalization.from_dict(norm.to_dict()) == norm
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from latentflow.errors import ConfigError, InputError

if TYPE_CHECKING:
    import torch

RULES = ("none", "scale", "shift_scale", "per_channel", "per_channel_per_frame", "per_channel_per_bin", "batchnorm")
_STATS_RULES = ("per_channel", "per_channel_per_frame", "per_channel_per_bin", "batchnorm")


def _tuple(value: Any) -> Any:
    """Nested lists -> nested tuples (hashable, frozen)."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuple(v) for v in value)
    return None if value is None else float(value)


def _list(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_list(v) for v in value]
    return value


@dataclass(frozen=True)
class Normalization:
    """How raw latents map to unit-scale latents, and back.

    Attributes:
        rule: one of :data:`RULES`.
        scaling_factor: multiplies after shifting / standardizing (1.0 when unused).
        shift_factor: subtracted first (``shift_scale``).
        mean, std: per-channel statistics (C,), per channel and latent frame (C, T) or mel bin (C, F), or the
            running mean and variance of a BatchNorm over folded channels (``batchnorm``:
            ``std`` holds the *variance*, as BatchNorm's ``running_var``).
        eps: ``batchnorm``'s epsilon.
        patch_size: ``batchnorm``'s patch folded into channels before normalizing.
        source: where the values came from (``config``, ``pipeline``, ``buffers``, ``dataset``): provenance only.
    """

    rule: str = "none"
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    mean: tuple | None = None
    std: tuple | None = None
    eps: float = 0.0
    patch_size: int = 1
    source: str = "config"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ConfigError(f"normalization rule must be one of {list(RULES)}, got: {self.rule!r}")
        object.__setattr__(self, "mean", _tuple(self.mean))
        object.__setattr__(self, "std", _tuple(self.std))
        if self.rule in _STATS_RULES and (self.mean is None or self.std is None):
            raise ConfigError(f"normalization rule {self.rule!r} needs mean and std, got: mean={self.mean}, std={self.std}")
        if self.scaling_factor == 0:
            raise ConfigError("normalization scaling_factor must be != 0, got: 0")

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Any, source: str = "config") -> "Normalization":
        """The rule a ``LatentConfig`` (``scaling_factor``, ``shift_factor``, ``latents_mean``/``std``) describes."""
        scale = float(getattr(config, "scaling_factor", 1.0) or 1.0)
        shift = float(getattr(config, "shift_factor", 0.0) or 0.0)
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        return cls.from_values(scale, shift, mean, std, source)

    @classmethod
    def from_values(cls, scaling_factor: float | None = 1.0, shift_factor: float | None = 0.0, latents_mean: Any = None,
                    latents_std: Any = None, source: str = "config") -> "Normalization":
        """The simplest rule that gives ``(z - shift) * scale`` or ``(z - mean) / std * scale``."""
        scale, shift = float(scaling_factor or 1.0), float(shift_factor or 0.0)
        if latents_mean is not None:
            return cls("per_channel", scale, 0.0, latents_mean, latents_std, source=source)
        if shift != 0.0:
            return cls("shift_scale", scale, shift, source=source)
        return cls("scale" if scale != 1.0 else "none", scale, source=source)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean"], out["std"] = _list(self.mean), _list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Normalization":
        """Inverse of :meth:`to_dict`; also reads the version-1 codec block
        ``{scaling_factor, shift_factor, latents_mean, latents_std}``."""
        data = dict(data or {})
        if "rule" not in data:
            unknown = set(data) - {"scaling_factor", "shift_factor", "latents_mean", "latents_std"}
            if unknown:
                raise ConfigError(f"unknown normalization keys {sorted(unknown)}")
            return cls.from_values(data.get("scaling_factor"), data.get("shift_factor"), data.get("latents_mean"), data.get("latents_std"))
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown normalization keys {sorted(unknown)}; expected some of {sorted(cls.__dataclass_fields__)}")
        return cls(**data)

    # ---- apply -------------------------------------------------------------------------
    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents (B, C, ...) -> unit-scale latents."""
        if self.rule == "batchnorm":
            return self._batchnorm(z, inverse=False)
        mean, std = self._stats(z)
        if mean is not None:
            return (z - mean) / std * self.scaling_factor
        return (z - self.shift_factor) * self.scaling_factor

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`: what the decoder expects."""
        if self.rule == "batchnorm":
            return self._batchnorm(z, inverse=True)
        mean, std = self._stats(z)
        if mean is not None:
            return z / self.scaling_factor * std + mean
        return z / self.scaling_factor + self.shift_factor

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.rule not in ("per_channel", "per_channel_per_frame", "per_channel_per_bin"):
            return None, None
        import torch

        mean = torch.tensor(self.mean, dtype=z.dtype, device=z.device)
        std = torch.tensor(self.std, dtype=z.dtype, device=z.device)
        if mean.shape[0] != z.shape[1]:
            raise InputError(f"normalization has {mean.shape[0]} channels, latents have {z.shape[1]} (shape {tuple(z.shape)})")
        if self.rule == "per_channel_per_frame":  # (C, T_max) over (B, C, T, h, w): the first T frames' statistics
            if z.ndim != 5 or mean.shape[1] < z.shape[2]:
                raise InputError(f"per-frame statistics of shape {tuple(mean.shape)} need latents (B, C, T <= {mean.shape[1]}, h, w), "
                                 f"got: {tuple(z.shape)}")
            t = z.shape[2]  # as Cosmos' pipelines slice [:, :, :T]
            mean, std = mean[:, :t], std[:, :t]
            shape = (1, mean.shape[0], t) + (1,) * (z.ndim - 3)
        elif self.rule == "per_channel_per_bin":  # (C, F) over (B, C, T, F): one statistic per channel and bin
            if z.ndim != 4 or mean.shape[1] != z.shape[3]:
                raise InputError(f"per-bin statistics of shape {tuple(mean.shape)} need latents (B, C, T, {mean.shape[1]}), "
                                 f"got: {tuple(z.shape)}")
            shape = (1, mean.shape[0], 1, mean.shape[1])
        else:
            shape = (1, -1) + (1,) * (z.ndim - 2)
        return mean.view(shape), std.view(shape)

    def _batchnorm(self, z: torch.Tensor, inverse: bool) -> torch.Tensor:
        import torch

        p = self.patch_size
        folded = fold_patches(z, p)  # (B, C*p*p, h/p, w/p)
        shape = (1, -1) + (1,) * (folded.ndim - 2)
        mean = torch.tensor(self.mean, dtype=z.dtype, device=z.device).view(shape)
        var = torch.tensor(self.std, dtype=z.dtype, device=z.device).view(shape)
        if mean.shape[1] != folded.shape[1]:
            raise InputError(f"batchnorm statistics have {mean.shape[1]} channels, folded latents have {folded.shape[1]}")
        scale = torch.sqrt(var + self.eps)
        out = folded * scale + mean if inverse else (folded - mean) / scale
        return unfold_patches(out, p)


def fold_patches(z: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C*p*p, h/p, w/p), channel-major as diffusers' ``_patchify_latents``."""
    if p == 1:
        return z
    b, c, h, w = z.shape
    if h % p or w % p:
        raise InputError(f"latent size {h}x{w} is not divisible by the patch size {p}")
    z = z.view(b, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4)
    return z.reshape(b, c * p * p, h // p, w // p)


def unfold_patches(z: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of :func:`fold_patches`."""
    if p == 1:
        return z
    b, cpp, h, w = z.shape
    c = cpp // (p * p)
    z = z.reshape(b, c, p, p, h, w).permute(0, 1, 4, 2, 5, 3)
    return z.reshape(b, c, h * p, w * p)
