"""``AutoencoderKLModel``: the latent-diffusion (Stable Diffusion, SDXL, SD3, FLUX) VAE.

Interchangeable with diffusers' ``AutoencoderKL``: the same config keys, the same state
dict key for key, and it reads diffusers folders (variants, shards, ``subfolder="vae"``),
original LDM/CompVis files (:meth:`AutoencoderKLModel.from_single_file`) and writes
folders that diffusers loads (``save_pretrained(..., format="diffusers")``).

Reads top to bottom: tiling -> config -> model -> presets.

Example::

    model = AutoencoderKLModel.from_pretrained("path/to/sd-pipeline", subfolder="vae")
    out = model.encode(images)                     # images: (B, 3, H, W) in [-1, 1]
    z = model.normalize_latents(out.latents)       # (B, 4, H/8, W/8), unit scale
    x_hat = model.decode(model.denormalize_latents(z)).sample
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import fsspec
import torch
import torch.nn.functional as F
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from latentflow import hub
from latentflow.auto import register
from latentflow.configuration import Config, LatentConfig, check_positive, read_config_dict
from latentflow.errors import CheckpointError, ConfigError, InputError
from latentflow.modeling import LatentModel, check_finite
from latentflow.models.ldm_blocks import Decoder, Encoder, check_attention_backend, set_upcast
from latentflow.models.ldm_conversion import infer_config, ldm_to_diffusers, rename_legacy_attention
from latentflow.outputs import AutoencoderOutput, DecoderOutput, DiagonalGaussian, VariationalEncoderOutput

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
_AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------------------
# tiling: overlapping tiles, blended with linear ramps
# ---------------------------------------------------------------------------
@dataclass
class TilingConfig(Config):
    """Tiled encode/decode for inputs too large to process at once.

    Sizes are in pixels; the latent tile is ``tile_size / downsample_factor``.
    Overlap between neighbouring tiles is ``tile_size - tile_stride``, blended linearly.

    Args:
        tile_size: side of a square pixel tile.
        tile_stride: distance between tile starts; ``tile_stride <= tile_size``.
        min_size: tile only when the height or width exceeds this (default ``tile_size``).
    """

    tile_size: int = 512
    tile_stride: int = 384
    min_size: int | None = None

    def validate(self) -> None:
        if self.tile_size <= 0:
            raise ConfigError(f"tile_size must be > 0, got: {self.tile_size}")
        if not 0 < self.tile_stride <= self.tile_size:
            raise ConfigError(f"tile_stride must be in (0, tile_size={self.tile_size}], got: {self.tile_stride}")

    @property
    def threshold(self) -> int:
        return self.tile_size if self.min_size is None else self.min_size


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    return list(range(0, size - tile, stride)) + [size - tile]


def _ramp(length: int, lead: int, trail: int) -> torch.Tensor:
    """1D blend weights: rising over the ``lead`` overlap, falling over the ``trail`` one."""
    w = torch.ones(length)
    if lead:
        w[:lead] = torch.arange(1, lead + 1) / (lead + 1)
    if trail:
        w[length - trail:] = torch.minimum(w[length - trail:], torch.arange(trail, 0, -1) / (trail + 1))
    return w


def _axis_plan(size: int, tile: int, stride: int, num: int, den: int) -> list[tuple[int, int, int, torch.Tensor]]:
    """Per tile along one axis: (input start, input length, output start, output weights)."""
    tile = min(tile, size)
    starts = _tile_starts(size, tile, stride)
    plan = []
    for i, s in enumerate(starts):
        lead = starts[i - 1] + tile - s if i > 0 else 0
        trail = s + tile - starts[i + 1] if i + 1 < len(starts) else 0
        plan.append((s, tile, s * num // den, _ramp(tile * num // den, lead * num // den, trail * num // den)))
    return plan


def blend_tiles(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], tile: int, stride: int, num: int, den: int) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``x`` and blend the results linearly.

    Args:
        x: (B, C, H, W) input.
        fn: maps a (B, C, h, w) tile to (B, C', h * num / den, w * num / den).
        tile: tile side in input units; stride: distance between tile starts.
        num, den: output/input size ratio (e.g. 1, 8 to encode; 8, 1 to decode).

    Returns:
        (B, C', H * num / den, W * num / den); overlapping outputs weighted by ramps that sum to 1.
    """
    rows = _axis_plan(x.shape[-2], tile, stride, num, den)
    cols = _axis_plan(x.shape[-1], tile, stride, num, den)
    out = weight_sum = None
    for hs, hl, ohs, wh in rows:
        for ws, wl, ows, ww in cols:
            y = fn(x[..., hs:hs + hl, ws:ws + wl])
            if out is None:
                out = y.new_zeros(*y.shape[:2], x.shape[-2] * num // den, x.shape[-1] * num // den)
                weight_sum = torch.zeros(out.shape[-2:], dtype=torch.float32, device=y.device)
            w = (wh[:, None] * ww[None, :]).to(y.device)  # (h', w')
            out[..., ohs:ohs + y.shape[-2], ows:ows + y.shape[-1]] += y * w.to(y.dtype)
            weight_sum[ohs:ohs + y.shape[-2], ows:ows + y.shape[-1]] += w
    return out / weight_sum.to(out.dtype)


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------
# diffusers config keys that describe the one architecture supported here: accepted, checked, not stored
_DIFFUSERS_FIXED_KEYS = ("act_fn", "down_block_types", "up_block_types")


def _check_diffusers_keys(data: dict[str, Any]) -> dict[str, Any]:
    """Validate and drop diffusers' fixed-architecture keys; map ``shift_factor: null`` to 0."""
    data = dict(data)
    if data.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise ConfigError(f"AutoencoderKLConfig reads diffusers AutoencoderKL configs, got _class_name: {data['_class_name']!r}")
    levels = len(data.get("block_out_channels", AutoencoderKLConfig.block_out_channels))
    act = data.pop("act_fn", "silu")
    if act not in ("silu", "swish"):
        raise ConfigError(f"act_fn must be 'silu', got: {act!r}")
    for key, block in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        types = data.pop(key, None)
        if types is not None and (not isinstance(types, (list, tuple)) or list(types) != [block] * levels):
            raise ConfigError(f"{key} must be [{block!r}] * {levels} (one per block_out_channels entry), got: {types!r}")
    if "shift_factor" in data and data["shift_factor"] is None:
        data["shift_factor"] = 0.0
    return data


@dataclass
class AutoencoderKLConfig(LatentConfig):
    """Config of :class:`AutoencoderKLModel`; its keys are diffusers' ``AutoencoderKL`` keys plus ours.

    Defaults equal diffusers' defaults, so a diffusers ``config.json`` that omits a key means
    the same thing here. Use the presets at the bottom of this file for released VAEs.

    Ours: ``attention_backend`` (sdpa | math | linear | xformers), ``tiling`` (a
    :class:`TilingConfig` or None), ``batch_slice_size`` (encode/decode at most this many
    samples at once), ``autocast_dtype`` ("bfloat16" | "float16" | None), ``channels_last``
    (True: weights and activations channels-last; None: activations channels-last on CPU, where
    oneDNN's convs are faster in that layout, and on GPUs when computing in bf16/fp16),
    ``kl_weight`` (weight of the KL term in ``forward``'s total loss).
    ``force_upcast`` keeps GroupNorm and the attention softmax in fp32 under fp16/bf16.
    """

    model_type: ClassVar[str] = "autoencoder_kl"

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (64,)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 32
    scaling_factor: float = 0.18215
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    attention_backend: str = "sdpa"
    tiling: TilingConfig | None = None
    batch_slice_size: int | None = None
    autocast_dtype: str | None = None
    channels_last: bool | None = None
    kl_weight: float = 1e-6

    def validate(self) -> None:
        super().validate()
        check_positive(type(self).__name__, in_channels=self.in_channels, out_channels=self.out_channels,
                       layers_per_block=self.layers_per_block, latent_channels=self.latent_channels,
                       norm_num_groups=self.norm_num_groups, sample_size=self.sample_size)
        if not self.block_out_channels or any(c <= 0 for c in self.block_out_channels):
            raise ConfigError(f"block_out_channels must be non-empty and > 0, got: {list(self.block_out_channels)}")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ConfigError(f"norm_num_groups={self.norm_num_groups} must divide every block_out_channels entry, got: {bad}")
        check_attention_backend(self.attention_backend)
        if self.autocast_dtype is not None and self.autocast_dtype not in _AUTOCAST_DTYPES:
            raise ConfigError(f"autocast_dtype must be one of {sorted(_AUTOCAST_DTYPES)} or None, got: {self.autocast_dtype!r}")
        if self.batch_slice_size is not None and self.batch_slice_size <= 0:
            raise ConfigError(f"batch_slice_size must be > 0, got: {self.batch_slice_size}")
        if self.latents_mean is not None and len(self.latents_mean) != self.latent_channels:
            raise ConfigError(f"latents_mean needs latent_channels={self.latent_channels} values, got: {len(self.latents_mean)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> "AutoencoderKLConfig":
        """Build from our ``to_dict`` output or a diffusers ``AutoencoderKL`` config.json dict."""
        return super().from_dict(_check_diffusers_keys({**(data or {}), **overrides}))

    def to_diffusers_dict(self) -> dict[str, Any]:
        """The ``config.json`` content diffusers' ``AutoencoderKL`` expects (our extra keys dropped)."""
        try:
            version = importlib.metadata.version("diffusers")
        except importlib.metadata.PackageNotFoundError:
            version = "0.31.0"  # first release with every key written below
        levels = len(self.block_out_channels)
        keys = ("in_channels", "out_channels", "layers_per_block", "latent_channels", "norm_num_groups", "sample_size",
                "scaling_factor", "latents_mean", "latents_std", "force_upcast", "use_quant_conv",
                "use_post_quant_conv", "mid_block_add_attention")
        return {
            "_class_name": "AutoencoderKL",
            "_diffusers_version": version,
            "act_fn": "silu",
            "block_out_channels": list(self.block_out_channels),
            "down_block_types": ["DownEncoderBlock2D"] * levels,
            "up_block_types": ["UpDecoderBlock2D"] * levels,
            "shift_factor": self.shift_factor or None,
            **{k: getattr(self, k) for k in keys},
        }


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------
@register
class AutoencoderKLModel(LatentModel):
    """The LDM KL-regularised autoencoder: conv encoder -> diagonal Gaussian posterior -> conv decoder.

    ``encode`` returns the posterior mean as ``latents`` (raw, not normalized) and the full
    posterior as ``latent_dist``; ``decode`` takes raw latents. Module names match diffusers'.
    """

    config_class: ClassVar[type[LatentConfig]] = AutoencoderKLConfig
    latent_kind: ClassVar[str] = "continuous"

    def __init__(self, config: AutoencoderKLConfig):
        super().__init__(config)
        c = config
        common = dict(block_out_channels=c.block_out_channels, layers_per_block=c.layers_per_block,
                      norm_num_groups=c.norm_num_groups, mid_block_add_attention=c.mid_block_add_attention,
                      attention_backend=c.attention_backend)
        self.encoder = Encoder(c.in_channels, c.latent_channels, double_z=True, **common)
        self.decoder = Decoder(c.latent_channels, c.out_channels, **common)
        self.quant_conv = nn.Conv2d(2 * c.latent_channels, 2 * c.latent_channels, 1) if c.use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(c.latent_channels, c.latent_channels, 1) if c.use_post_quant_conv else None
        self.tiling: TilingConfig | None = None
        self.batch_slice_size = c.batch_slice_size
        if c.tiling is not None:
            self.enable_tiling(c.tiling)
        set_upcast(self, c.force_upcast)
        if c.channels_last:
            self.to(memory_format=torch.channels_last)

    # ---- geometry ---------------------------------------------------------
    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        f = self.downsample_factor
        return (self.config.latent_channels, height // f, width // f)

    # ---- runtime switches -------------------------------------------------
    def enable_tiling(self, tiling: TilingConfig | None = None) -> None:
        """Turn tiled encode/decode on, with ``tiling`` or the default :class:`TilingConfig`."""
        tiling = tiling or TilingConfig()
        f = self.downsample_factor
        if tiling.tile_size % f or tiling.tile_stride % f:
            raise ConfigError(f"tile_size and tile_stride must be multiples of the downsample factor {f}, "
                              f"got: {tiling.tile_size}, {tiling.tile_stride}")
        self.tiling = tiling

    def disable_tiling(self) -> None:
        self.tiling = None

    def enable_slicing(self, batch_slice_size: int | None = 1) -> None:
        """Encode/decode at most ``batch_slice_size`` samples at a time (None: whole batch)."""
        self.batch_slice_size = batch_slice_size

    def set_attention_backend(self, backend: str) -> None:
        """Switch the mid-block attention kernel: ``sdpa``, ``math``, ``linear`` or ``xformers``."""
        self.encoder.set_attention_backend(backend)
        self.decoder.set_attention_backend(backend)

    def _precision(self):
        dtype = self.config.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_AUTOCAST_DTYPES[dtype])

    def _channels_last(self, x: torch.Tensor) -> bool:
        if self.config.channels_last is not None:
            return self.config.channels_last
        # oneDNN's CPU convs are faster in NHWC: fp32 encode/decode 20% / 17% faster here, and
        # bf16/fp16 take a slow path in NCHW (about 10x). On GPUs NHWC pays off at low precision.
        if x.device.type == "cpu":
            return True
        return self.config.autocast_dtype is not None or self.dtype in (torch.bfloat16, torch.float16)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self._channels_last(x):
            x = x.contiguous(memory_format=torch.channels_last)
        return x if self.config.autocast_dtype else x.to(self.dtype)

    def _sliced(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        n = self.batch_slice_size
        if n is None or x.shape[0] <= n:
            return fn(x)
        return torch.cat([fn(chunk) for chunk in x.split(n)])

    # ---- encode -----------------------------------------------------------
    def _encode_moments(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 2L, H/f, W/f)
        h = self.encoder(x)
        return self.quant_conv(h) if self.quant_conv is not None else h

    def _encode_maybe_tiled(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tiling
        if t is None or max(x.shape[-2:]) <= t.threshold:
            return self._encode_moments(x)
        return blend_tiles(x, self._encode_moments, t.tile_size, t.tile_stride, 1, self.downsample_factor)

    def encode(self, x: torch.Tensor) -> VariationalEncoderOutput:
        """Encode images to the diagonal Gaussian posterior.

        Args:
            x: (B, in_channels, H, W) images in [-1, 1]; H, W multiples of ``downsample_factor``.

        Returns:
            :class:`VariationalEncoderOutput` with ``latents`` = posterior mean (B, L, H/f, W/f)
            and ``latent_dist`` = :class:`DiagonalGaussian`.
        """
        self.check_input(x)
        with self._precision():
            moments = self._sliced(self._encode_maybe_tiled, self._prepare(x))
        moments = moments.to(self.dtype).contiguous()
        if self.config.check_finite:
            check_finite(moments, "encoder output (mean/logvar); try force_upcast=True or float32")
        posterior = DiagonalGaussian.from_moments(moments)
        return VariationalEncoderOutput(latents=posterior.mean, latent_dist=posterior)

    # ---- decode -----------------------------------------------------------
    def _decode_pixels(self, z: torch.Tensor) -> torch.Tensor:  # (B, L, h, w) -> (B, C, h*f, w*f)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def _decode_maybe_tiled(self, z: torch.Tensor) -> torch.Tensor:
        t, f = self.tiling, self.downsample_factor
        if t is None or max(z.shape[-2:]) * f <= t.threshold:
            return self._decode_pixels(z)
        return blend_tiles(z, self._decode_pixels, t.tile_size // f, t.tile_stride // f, f, 1)

    def decode(self, latents: torch.Tensor) -> DecoderOutput:
        """Decode raw (not normalized) latents.

        Args:
            latents: (B, latent_channels, h, w).

        Returns:
            :class:`DecoderOutput` with ``sample`` (B, out_channels, h * f, w * f).
        """
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[1] != self.config.latent_channels:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise InputError(f"decode expects latents of shape (B, {self.config.latent_channels}, h, w), got: {got}")
        with self._precision():
            sample = self._sliced(self._decode_maybe_tiled, self._prepare(latents))
        sample = sample.to(self.dtype).contiguous()
        if self.config.check_finite:
            check_finite(sample, "decoder output; try force_upcast=True or float32")
        return DecoderOutput(sample=sample)

    # ---- training / sampling ---------------------------------------------
    def forward(self, x: torch.Tensor, sample_posterior: bool | None = None,
                generator: torch.Generator | None = None) -> AutoencoderOutput:
        """Encode, sample (or take the mean of) the posterior, decode, and compute the losses.

        Args:
            x: (B, C, H, W) images in [-1, 1].
            sample_posterior: draw z from the posterior; default: in training mode only.
            generator: RNG for the posterior sample.

        Returns:
            :class:`AutoencoderOutput`; ``losses`` holds ``rec`` (L1, LDM's pixel term) and ``kl``
            (KL to N(0, I) summed per sample, batch mean); ``loss = rec + kl_weight * kl``.
        """
        enc = self.encode(x)
        sample = self.training if sample_posterior is None else sample_posterior
        z = enc.latent_dist.sample(generator) if sample else enc.latents
        rec = self.decode(z).sample
        losses = {"rec": F.l1_loss(rec, x.to(rec.dtype)), "kl": enc.latent_dist.kl().mean()}
        loss = losses["rec"] + self.config.kl_weight * losses["kl"]
        return AutoencoderOutput(reconstruction=rec, loss=loss, losses=losses, encoder_output=enc)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None,
               height: int | None = None, width: int | None = None) -> torch.Tensor:
        """Decode draws from the N(0, I) prior; (num_samples, out_channels, H, W), H/W default ``sample_size``."""
        if num_samples <= 0:
            raise InputError(f"num_samples must be > 0, got: {num_samples}")
        shape = self.latent_shape(height or self.config.sample_size, width or self.config.sample_size)
        z = torch.randn((num_samples, *shape), generator=generator, dtype=self.dtype, device=self.device)
        return self.decode(z).sample

    # ---- checkpoints ------------------------------------------------------
    def save_pretrained(self, directory: str, storage_options: dict | None = None, format: str = "latentflow") -> None:
        """Write the model; ``format="diffusers"`` writes a folder ``diffusers.AutoencoderKL`` loads.

        Args:
            directory: local path or fsspec URL.
            storage_options: fsspec options.
            format: ``"latentflow"`` (config.json + model.safetensors, every config key) or
                ``"diffusers"`` (diffusers' config.json + diffusion_pytorch_model.safetensors).
        """
        if format == "latentflow":
            return super().save_pretrained(directory, storage_options)
        if format != "diffusers":
            raise ConfigError(f"format must be 'latentflow' or 'diffusers', got: {format!r}")
        fs, path = fsspec.url_to_fs(str(directory), **(storage_options or {}))
        fs.makedirs(path, exist_ok=True)
        path = path.rstrip("/")
        with fs.open(f"{path}/config.json", "w") as f:
            f.write(json.dumps(self.config.to_diffusers_dict(), indent=2, sort_keys=True))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with fs.open(f"{path}/{DIFFUSERS_WEIGHTS}.safetensors", "wb") as f:
            f.write(save_safetensors_bytes(state, metadata={"format": "pt"}))

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, storage_options: dict | None = None, subfolder: str | None = None,
                        torch_dtype: torch.dtype | None = None, variant: str | None = None,
                        **config_overrides: Any) -> "AutoencoderKLModel":
        """Load a latentflow folder or a diffusers ``AutoencoderKL`` folder.

        Args:
            name_or_path: local directory, fsspec URL, ``models/`` name or cached hub id.
            storage_options: fsspec options.
            subfolder: e.g. ``"vae"`` inside a diffusers pipeline folder.
            torch_dtype: cast the weights after loading.
            variant: diffusers weight variant, e.g. ``"fp16"`` (``diffusion_pytorch_model.fp16.safetensors``).
            config_overrides: config keys to replace (e.g. ``tiling=...``, ``attention_backend="math"``).
        """
        fs, path = hub.resolve_pretrained(name_or_path, storage_options, subfolder)
        raw = read_config_dict(fs.unstrip_protocol(path), storage_options)
        config = cls.config_class.from_dict(raw, **config_overrides)
        state, sha = _read_weights(fs, path.rstrip("/"), variant)
        return cls.from_state_dict(config, rename_legacy_attention(state), weights_sha256=sha, torch_dtype=torch_dtype, assign=True)

    @classmethod
    def from_single_file(cls, path: str, *, config: AutoencoderKLConfig | None = None, storage_options: dict | None = None,
                         torch_dtype: torch.dtype | None = None, **config_overrides: Any) -> "AutoencoderKLModel":
        """Load an original LDM/CompVis safetensors file (a bare VAE, or a full SD checkpoint).

        Args:
            path: the ``.safetensors`` file (local or fsspec URL); pickle formats are refused.
            config: the architecture; default: read off the weights (``norm_num_groups`` 32).
                Pass a preset (``sdxl()``) to get its scaling factor and flags.
            config_overrides: keys replaced in the inferred config (e.g. ``scaling_factor=0.13025``).
        """
        fs, fpath = fsspec.url_to_fs(str(path), **(storage_options or {}))
        if not fs.exists(fpath):
            raise CheckpointError(f"no checkpoint file at {path!r}")
        raw, sha = hub.read_safetensors(fs, fpath)
        state = ldm_to_diffusers(raw)
        if config is None:
            try:
                config = AutoencoderKLConfig.from_dict({**infer_config(state), **config_overrides})
            except KeyError as err:
                raise CheckpointError(f"{path!r} does not hold an LDM autoencoder: {err}") from err
        elif config_overrides:
            config = config.replace(**config_overrides)
        return cls.from_state_dict(config, state, weights_sha256=sha, torch_dtype=torch_dtype, assign=True)


def _weight_candidates(variant: str | None) -> list[str]:
    if variant:
        return [f"{DIFFUSERS_WEIGHTS}.{variant}.safetensors", f"{DIFFUSERS_WEIGHTS}.safetensors.index.{variant}.json",
                f"model.{variant}.safetensors"]
    return [hub.WEIGHTS_NAME, f"{DIFFUSERS_WEIGHTS}.safetensors", f"{DIFFUSERS_WEIGHTS}.safetensors.index.json",
            "model.safetensors.index.json"]


def _read_weights(fs, path: str, variant: str | None) -> tuple[dict[str, torch.Tensor], str]:
    """Find and read the weights of a latentflow or diffusers folder (single file or sharded)."""
    candidates = _weight_candidates(variant)
    for name in candidates:
        full = f"{path}/{name}"
        if fs.exists(full):
            return hub.read_sharded_safetensors(fs, full) if name.endswith(".json") else hub.read_safetensors(fs, full)
    hub.refuse_pickles(fs, path, " or ".join(candidates))  # always raises
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------
# presets: released VAEs (architecture + latent normalization)
# ---------------------------------------------------------------------------
_SD_ARCH = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32)


def sd1(**overrides: Any) -> AutoencoderKLConfig:
    """Stable Diffusion 1.x VAE: 4 latent channels, downsample 8, scaling 0.18215."""
    return AutoencoderKLConfig.from_dict({**_SD_ARCH, "latent_channels": 4, "sample_size": 512, "scaling_factor": 0.18215}, **overrides)


def sd2(**overrides: Any) -> AutoencoderKLConfig:
    """Stable Diffusion 2.x VAE: as SD1, 768 px."""
    return sd1(**{"sample_size": 768, **overrides})


def sdxl(**overrides: Any) -> AutoencoderKLConfig:
    """SDXL VAE: scaling 0.13025; overflows in fp16 without ``force_upcast``."""
    return AutoencoderKLConfig.from_dict({**_SD_ARCH, "latent_channels": 4, "sample_size": 1024, "scaling_factor": 0.13025,
                                          "force_upcast": True}, **overrides)


def sd3(**overrides: Any) -> AutoencoderKLConfig:
    """SD3 VAE: 16 channels, no quant convs, scaling 1.5305, shift 0.0609."""
    return AutoencoderKLConfig.from_dict({**_SD_ARCH, "latent_channels": 16, "sample_size": 1024, "use_quant_conv": False,
                                          "use_post_quant_conv": False, "scaling_factor": 1.5305, "shift_factor": 0.0609}, **overrides)


def flux(**overrides: Any) -> AutoencoderKLConfig:
    """FLUX.1 VAE: 16 channels, no quant convs, scaling 0.3611, shift 0.1159."""
    return sd3(**{"scaling_factor": 0.3611, "shift_factor": 0.1159, **overrides})


PRESETS: dict[str, Callable[..., AutoencoderKLConfig]] = {"sd1": sd1, "sd2": sd2, "sdxl": sdxl, "sd3": sd3, "flux": flux}

__all__ = ["AutoencoderKLConfig", "AutoencoderKLModel", "TilingConfig", "blend_tiles", "PRESETS",
           "sd1", "sd2", "sdxl", "sd3", "flux"]
