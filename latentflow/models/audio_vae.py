"""``AudioAutoencoderOobleckModel``: the Stable Audio ("Oobleck") waveform VAE.

Interchangeable with diffusers' ``AutoencoderOobleck``: the same config keys and the same state
dict, key for key (weight-normalized convolutions keep their ``weight_g``/``weight_v`` pair), so
weights move either way: :meth:`AudioAutoencoderOobleckModel.from_pretrained` reads a diffusers
folder and ``save_pretrained(dir, format="diffusers")`` writes one that diffusers loads.

How it reads a waveform (B, C, T), samples in [-1, 1], T a multiple of the hop length
``prod(downsampling_ratios)`` (2048 for Stable Audio Open: 44.1 kHz -> 21.5 latent frames a second):

- every nonlinearity is a Snake, ``x + sin(a x)^2 / b`` with a learned per-channel frequency
  ``a`` and magnitude ``b`` (kept as logs): a periodic inductive bias that suits audio;
- an encoder block is three residual units (dilated kernel-7 convs, dilations 1, 3, 9, so the
  receptive field grows fast) then a strided conv (kernel 2s, stride s) that widens the channels;
  a decoder block mirrors it with a transposed conv first;
- the encoder's last conv gives ``2 * latent`` channels: a mean and a scale, std = softplus(scale) + 1e-4
  (not a log-variance: Stable Audio's VAE bottleneck);
- no latent normalization: Stable Audio's pipelines use the raw latents (``scaling_factor`` 1),
  and the decoder's output is not clamped (diffusers does not clamp it either).

Reads top to bottom: helpers -> blocks -> encoder/decoder -> config -> model -> presets.

Example::

    model = AudioAutoencoderOobleckModel(AudioAutoencoderOobleckConfig(encoder_hidden_size=16,
        downsampling_ratios=(2, 4), channel_multiples=(1, 2), decoder_channels=16, decoder_input_channels=8))
    out = model.encode(waveforms)                  # (B, 2, T) in [-1, 1], T % 8 == 0
    out.latents.shape                              # (B, 8, T / 8), the posterior mean
    audio = model.decode(out.latents).sample       # (B, 2, T)
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import fsspec
import torch
import torch.nn.functional as F
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from latentflow import hub
from latentflow.auto import register
from latentflow.configuration import LatentConfig, check_positive, read_config_dict
from latentflow.errors import ConfigError, InputError
from latentflow.modeling import LatentModel, check_finite
from latentflow.outputs import AutoencoderOutput, DecoderOutput, DiagonalGaussian, VariationalEncoderOutput

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
RESIDUAL_DILATIONS = (1, 3, 9)
STD_FLOOR = 1e-4  # std = softplus(scale) + STD_FLOOR, as Stable Audio's VAE bottleneck


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
class WeightNormConv1d(nn.Module):
    """A Conv1d (or ConvTranspose1d) whose weight is ``g * v / ||v||``, the norm taken per output row.

    The parameters are ``bias``, ``weight_g`` (rows, 1, 1) and ``weight_v`` (the weight's shape): the
    names and order ``torch.nn.utils.weight_norm`` gives, so diffusers' checkpoints load key for key.
    The row is dim 0 of the weight: the output channel of a conv, the *input* channel of a
    transposed conv (weight (C_in, C_out, k)), as ``weight_norm(dim=0)`` takes it for both.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, bias: bool = True, transpose: bool = False):
        super().__init__()
        shape = (in_channels, out_channels, kernel_size) if transpose else (out_channels, in_channels, kernel_size)
        self.stride, self.padding, self.dilation, self.transpose = stride, padding, dilation, transpose
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.weight_g = nn.Parameter(torch.empty(shape[0], 1, 1))
        self.weight_v = nn.Parameter(torch.empty(shape))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """PyTorch's conv init for the weight (then ``g = ||v||``, so the weight starts as that init)."""
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
        self.weight_g.copy_(self.weight_v.norm(dim=(1, 2), keepdim=True))
        if self.bias is not None:
            fan_in = self.weight_v.shape[1] * self.weight_v.shape[2]
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    @property
    def weight(self) -> torch.Tensor:
        v = self.weight_v
        return v * (self.weight_g / v.norm(dim=(1, 2), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, T) -> (B, C_out, T')
        if self.transpose:
            return F.conv_transpose1d(x, self.weight, self.bias, self.stride, self.padding, dilation=self.dilation)
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


class Snake(nn.Module):
    """Snake activation ``x + sin(exp(alpha) x)^2 / (exp(beta) + 1e-9)`` per channel (Ziyin et al., 2020).

    ``alpha`` and ``beta`` are log-scale parameters (1, C, 1) that start at 0 (frequency and magnitude 1).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(1, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        return x + torch.sin(self.alpha.exp() * x).pow(2) / (self.beta.exp() + 1e-9)


# ---------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------
class ResidualUnit(nn.Module):
    """Snake -> dilated kernel-7 conv -> Snake -> 1x1 conv, plus the input (length kept)."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.snake1 = Snake(channels)
        self.conv1 = WeightNormConv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation)
        self.snake2 = Snake(channels)
        self.conv2 = WeightNormConv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        return x + self.conv2(self.snake2(self.conv1(self.snake1(x))))


class EncoderBlock(nn.Module):
    """Three residual units, Snake, then a strided conv: (B, C_in, T) -> (B, C_out, T / stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.res_unit1, self.res_unit2, self.res_unit3 = (ResidualUnit(in_channels, d) for d in RESIDUAL_DILATIONS)
        self.snake1 = Snake(in_channels)
        self.conv1 = WeightNormConv1d(in_channels, out_channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res_unit3(self.res_unit2(self.res_unit1(x)))
        return self.conv1(self.snake1(x))


class DecoderBlock(nn.Module):
    """Snake, a transposed strided conv, then three residual units: (B, C_in, t) -> (B, C_out, t * stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.snake1 = Snake(in_channels)
        self.conv_t1 = WeightNormConv1d(in_channels, out_channels, 2 * stride, stride=stride,
                                        padding=math.ceil(stride / 2), transpose=True)
        self.res_unit1, self.res_unit2, self.res_unit3 = (ResidualUnit(out_channels, d) for d in RESIDUAL_DILATIONS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_t1(self.snake1(x))
        return self.res_unit3(self.res_unit2(self.res_unit1(x)))


# ---------------------------------------------------------------------------
# encoder / decoder
# ---------------------------------------------------------------------------
class Encoder(nn.Module):
    """(B, audio_channels, T) -> (B, hidden, T / hop): the stacked mean and scale of the posterior.

    Widths: ``hidden * m`` for m in ``(1, *channel_multiples)``, one step per ratio.
    """

    def __init__(self, audio_channels: int, hidden: int, ratios: tuple[int, ...], multiples: tuple[int, ...]):
        super().__init__()
        widths = [hidden * m for m in (1, *multiples)]
        self.conv1 = WeightNormConv1d(audio_channels, hidden, 7, padding=3)
        self.block = nn.ModuleList([EncoderBlock(a, b, s) for a, b, s in zip(widths[:-1], widths[1:], ratios)])
        self.snake1 = Snake(widths[-1])
        self.conv2 = WeightNormConv1d(widths[-1], hidden, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x))


class Decoder(nn.Module):
    """(B, latent, t) -> (B, audio_channels, t * hop). Widths mirror the encoder's, from ``channels``."""

    def __init__(self, latent: int, channels: int, audio_channels: int, ratios: tuple[int, ...], multiples: tuple[int, ...]):
        super().__init__()
        widths = [channels * m for m in (1, *multiples)][::-1]  # widest first
        self.conv1 = WeightNormConv1d(latent, widths[0], 7, padding=3)
        self.block = nn.ModuleList([DecoderBlock(a, b, s) for a, b, s in zip(widths[:-1], widths[1:], ratios[::-1])])
        self.snake1 = Snake(channels)
        self.conv2 = WeightNormConv1d(channels, audio_channels, 7, padding=3, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv1(z)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x))


class SoftplusGaussian(DiagonalGaussian):
    """The Oobleck posterior: ``std = softplus(scale) + 1e-4`` from the encoder's second half.

    A :class:`DiagonalGaussian` (``kl`` sums per sample, ``sample``, ``mode``) that keeps the exact std
    (``logvar = 2 log std`` serves the KL).
    """

    @classmethod
    def from_moments(cls, moments: torch.Tensor, dim: int = 1) -> "SoftplusGaussian":
        mean, scale = moments.chunk(2, dim=dim)
        std = F.softplus(scale) + STD_FLOOR
        posterior = cls(mean, 2.0 * torch.log(std))
        posterior._std = std
        return posterior

    @property
    def std(self) -> torch.Tensor:
        return self._std

    @property
    def var(self) -> torch.Tensor:
        return self._std * self._std


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------
def _check_diffusers_keys(data: dict[str, Any]) -> dict[str, Any]:
    name = data.get("_class_name", "AutoencoderOobleck")
    if name != "AutoencoderOobleck":
        raise ConfigError(f"AudioAutoencoderOobleckConfig reads diffusers AutoencoderOobleck configs, got _class_name: {name!r}")
    return data


@dataclass
class AudioAutoencoderOobleckConfig(LatentConfig):
    """Config of :class:`AudioAutoencoderOobleckModel`: diffusers ``AutoencoderOobleck``'s keys plus ours.

    Architecture defaults equal diffusers' (Stable Audio Open 1.0: stereo 44.1 kHz, hop 2048, 64 latent
    channels). ``encoder_hidden_size`` is the encoder's width *and* its output (mean + scale), so it
    must be ``2 * decoder_input_channels``.

    Ours: ``reconstruction_loss`` (l1 | mse, the time-domain ``rec`` term), ``stft_weight`` (weight of
    the multi-resolution STFT term ``stft``, see :func:`latentflow.training.losses.multi_resolution_stft_loss`),
    ``stft_fft_sizes`` (its resolutions; hops are a quarter), ``kl_weight`` (weight of ``kl``),
    ``sample_size`` (samples that ``sample`` draws, a multiple of the hop length).
    """

    model_type: ClassVar[str] = "audio_autoencoder_oobleck"

    encoder_hidden_size: int = 128
    downsampling_ratios: tuple[int, ...] = (2, 4, 4, 8, 8)
    channel_multiples: tuple[int, ...] = (1, 2, 4, 8, 16)
    decoder_channels: int = 128
    decoder_input_channels: int = 64
    audio_channels: int = 2
    sampling_rate: int = 44100
    reconstruction_loss: str = "l1"
    stft_weight: float = 1.0
    stft_fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64, 32)
    kl_weight: float = 1e-4
    sample_size: int = 65536

    def validate(self) -> None:
        super().validate()
        check_positive(type(self).__name__, encoder_hidden_size=self.encoder_hidden_size,
                       decoder_channels=self.decoder_channels, decoder_input_channels=self.decoder_input_channels,
                       audio_channels=self.audio_channels, sampling_rate=self.sampling_rate,
                       sample_size=self.sample_size)
        ratios, mults = self.downsampling_ratios, self.channel_multiples
        if not ratios or any(r < 2 or r % 2 for r in ratios):
            raise ConfigError(f"downsampling_ratios must be even numbers >= 2 (the transposed conv of an odd stride s "
                              f"gives t * s - 1 samples), got: {list(ratios)}")
        if len(mults) != len(ratios) or any(m <= 0 for m in mults):
            raise ConfigError(f"channel_multiples needs one value > 0 per downsampling ratio ({len(ratios)}), got: {list(mults)}")
        if self.encoder_hidden_size != 2 * self.decoder_input_channels:
            raise ConfigError(f"encoder_hidden_size must be 2 * decoder_input_channels (the encoder outputs a mean and a "
                              f"scale per latent channel), got: {self.encoder_hidden_size} and {self.decoder_input_channels}")
        if self.sample_size % self.hop_length:
            raise ConfigError(f"sample_size must be a multiple of the hop length {self.hop_length}, got: {self.sample_size}")
        if self.reconstruction_loss not in ("l1", "mse"):
            raise ConfigError(f"reconstruction_loss must be 'l1' or 'mse', got: {self.reconstruction_loss!r}")
        if self.kl_weight < 0 or self.stft_weight < 0:
            raise ConfigError(f"kl_weight and stft_weight must be >= 0, got: {self.kl_weight}, {self.stft_weight}")
        if not self.stft_fft_sizes or any(n < 4 for n in self.stft_fft_sizes):
            raise ConfigError(f"stft_fft_sizes must be non-empty, each >= 4, got: {list(self.stft_fft_sizes)}")

    @property
    def hop_length(self) -> int:
        return math.prod(self.downsampling_ratios)

    @property
    def latent_channels(self) -> int:
        return self.decoder_input_channels

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **overrides: Any) -> "AudioAutoencoderOobleckConfig":
        """Build from our ``to_dict`` output or a diffusers ``AutoencoderOobleck`` config dict."""
        return super().from_dict(_check_diffusers_keys({**(data or {}), **overrides}))

    def to_diffusers_dict(self) -> dict[str, Any]:
        """Keyword arguments (and ``config.json`` content) for diffusers' ``AutoencoderOobleck``."""
        try:
            version = importlib.metadata.version("diffusers")
        except importlib.metadata.PackageNotFoundError:
            version = "0.30.0"
        keys = ("encoder_hidden_size", "decoder_channels", "decoder_input_channels", "audio_channels", "sampling_rate")
        return {"_class_name": "AutoencoderOobleck", "_diffusers_version": version, **{k: getattr(self, k) for k in keys},
                "downsampling_ratios": list(self.downsampling_ratios), "channel_multiples": list(self.channel_multiples)}


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------
@register
class AudioAutoencoderOobleckModel(LatentModel):
    """Oobleck encoder -> softplus Gaussian (B, latent, T / hop) -> Oobleck decoder, on waveforms (B, C, T).

    Module names match diffusers' ``AutoencoderOobleck``.
    """

    config_class: ClassVar[type[LatentConfig]] = AudioAutoencoderOobleckConfig
    latent_kind: ClassVar[str] = "continuous"
    input_rank: ClassVar[int] = 3

    def __init__(self, config: AudioAutoencoderOobleckConfig):
        super().__init__(config)
        c = config
        ratios, mults = tuple(c.downsampling_ratios), tuple(c.channel_multiples)
        self.encoder = Encoder(c.audio_channels, c.encoder_hidden_size, ratios, mults)
        self.decoder = Decoder(c.decoder_input_channels, c.decoder_channels, c.audio_channels, ratios, mults)

    # ---- geometry ---------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return self.config.audio_channels

    @property
    def hop_length(self) -> int:
        """Waveform samples per latent frame (2048 for Stable Audio Open)."""
        return self.config.hop_length

    @property
    def downsample_factor(self) -> int:
        return self.config.hop_length

    @property
    def latent_channels(self) -> int:
        return self.config.decoder_input_channels

    @property
    def sampling_rate(self) -> int:
        return self.config.sampling_rate

    def latent_shape(self, length: int) -> tuple[int, int]:
        """Per-sample latent shape (C, t) of a waveform of ``length`` samples (a multiple of the hop)."""
        return (self.latent_channels, length // self.hop_length)

    # ---- input checks -----------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        name, hop = type(self).__name__, self.hop_length
        if not isinstance(x, torch.Tensor) or x.ndim != 3:
            got = f"rank {x.ndim} with shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"{name} expects a rank-3 input (B, C, T) of waveforms, got {got}")
        if x.shape[1] != self.in_channels:
            raise InputError(f"{name} expects {self.in_channels} input channels, got: {x.shape[1]} (shape {tuple(x.shape)}); "
                             f"remix the audio (latentflow.media.audio: channels='mono' or 'stereo')")
        t = x.shape[2]
        if t == 0 or t % hop:
            raise InputError(f"{name} has a hop length of {hop} samples: T must be a positive multiple of {hop}, got: {t}; "
                             f"pad to {-(-max(t, 1) // hop) * hop} (latentflow.media.audio.plan_segments pads with a mask)")
        if self.config.check_finite:
            check_finite(x, "input")

    def _check_latents(self, z: torch.Tensor) -> None:
        c = self.latent_channels
        if not isinstance(z, torch.Tensor) or z.ndim != 3 or z.shape[1] != c:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise InputError(f"decode expects latents of shape (B, {c}, t), got: {got}")

    # ---- encode / decode ----------------------------------------------------
    def encode(self, x: torch.Tensor) -> VariationalEncoderOutput:
        """Encode waveforms (B, audio_channels, T) in [-1, 1], T a multiple of the hop length.

        Returns:
            :class:`VariationalEncoderOutput`: ``latents`` the posterior mean (B, latent, T / hop), raw
            (Stable Audio applies no scaling); ``latent_dist`` the :class:`SoftplusGaussian` posterior.
        """
        self.check_input(x)
        moments = self.encoder(x.to(self.dtype))
        if self.config.check_finite:
            check_finite(moments, "encoder output (mean/scale)")
        posterior = SoftplusGaussian.from_moments(moments)
        return VariationalEncoderOutput(latents=posterior.mean, latent_dist=posterior)

    def decode(self, latents: torch.Tensor) -> DecoderOutput:
        """Decode raw latents (B, latent, t) to waveforms (B, audio_channels, t * hop), not clamped (as diffusers)."""
        self._check_latents(latents)
        sample = self.decoder(latents.to(self.dtype))
        if self.config.check_finite:
            check_finite(sample, "decoder output")
        return DecoderOutput(sample=sample)

    # ---- training / sampling ---------------------------------------------
    def forward(self, x: torch.Tensor, sample_posterior: bool | None = None,
                generator: torch.Generator | None = None) -> AutoencoderOutput:
        """Encode, sample (or take the mean of) the posterior, decode, and compute the losses.

        Returns:
            :class:`AutoencoderOutput`; ``losses``: ``rec`` (the config's l1/mse in time, mean over elements),
            ``stft`` (multi-resolution spectral convergence + log magnitude, mean over resolutions) and ``kl``
            (summed per sample, batch mean); ``loss = rec + stft_weight * stft + kl_weight * kl``.
        """
        from latentflow.training.losses import multi_resolution_stft_loss

        enc = self.encode(x)
        sample = self.training if sample_posterior is None else sample_posterior
        z = enc.latent_dist.sample(generator) if sample else enc.latents
        rec = self.decoder(z)
        target = x.to(rec.dtype)
        err = F.l1_loss(rec, target) if self.config.reconstruction_loss == "l1" else F.mse_loss(rec, target)
        stft = multi_resolution_stft_loss(rec, target, fft_sizes=tuple(self.config.stft_fft_sizes))
        losses = {"rec": err, "stft": stft, "kl": enc.latent_dist.kl().mean()}
        loss = err + self.config.stft_weight * stft + self.config.kl_weight * losses["kl"]
        return AutoencoderOutput(reconstruction=rec, loss=loss, losses=losses, encoder_output=enc)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None, length: int | None = None) -> torch.Tensor:
        """Decode draws from the N(0, I) prior: (num_samples, audio_channels, length or config.sample_size)."""
        if num_samples <= 0:
            raise InputError(f"num_samples must be > 0, got: {num_samples}")
        length = length or self.config.sample_size
        if length % self.hop_length:
            raise InputError(f"length must be a multiple of the hop length {self.hop_length}, got: {length}")
        z = torch.randn((num_samples, *self.latent_shape(length)), generator=generator, dtype=self.dtype).to(self.device)
        return self.decode(z).sample

    # ---- checkpoints ------------------------------------------------------
    def save_pretrained(self, directory: str, storage_options: dict | None = None, format: str = "latentflow") -> None:
        """Write the model; ``format="diffusers"`` writes a folder that ``diffusers.AutoencoderOobleck`` loads.

        (The diffusers layout is ``AutoencoderKLModel.save_pretrained``'s: config.json +
        diffusion_pytorch_model.safetensors.)
        """
        if format == "latentflow":
            return super().save_pretrained(directory, storage_options)
        if format != "diffusers":
            raise ConfigError(f"format must be 'latentflow' or 'diffusers', got: {format!r}")
        fs, path = fsspec.url_to_fs(str(directory), **(storage_options or {}))
        path = path.rstrip("/")
        fs.makedirs(path, exist_ok=True)
        with fs.open(f"{path}/config.json", "w") as f:
            f.write(json.dumps(self.config.to_diffusers_dict(), indent=2, sort_keys=True))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with fs.open(f"{path}/{DIFFUSERS_WEIGHTS}.safetensors", "wb") as f:
            f.write(save_safetensors_bytes(state, metadata={"format": "pt"}))

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, storage_options: dict | None = None, subfolder: str | None = None,
                        torch_dtype: torch.dtype | None = None, variant: str | None = None,
                        **config_overrides: Any) -> "AudioAutoencoderOobleckModel":
        """Load a latentflow folder or a diffusers ``AutoencoderOobleck`` folder (e.g. ``subfolder="vae"``
        of a Stable Audio pipeline; ``variant="fp16"``; sharded index files)."""
        from latentflow.models.autoencoder_kl import _read_weights  # one reader of diffusers weight files

        fs, path = hub.resolve_pretrained(name_or_path, storage_options, subfolder)
        config = cls.config_class.from_dict(read_config_dict(fs.unstrip_protocol(path), storage_options), **config_overrides)
        state, sha = _read_weights(fs, path.rstrip("/"), variant)
        return cls.from_state_dict(config, state, weights_sha256=sha, torch_dtype=torch_dtype, assign=True)


# ---------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------
def stable_audio_open(**overrides: Any) -> AudioAutoencoderOobleckConfig:
    """Stable Audio Open 1.0's VAE (stabilityai/stable-audio-open-1.0, subfolder ``vae``): stereo 44.1 kHz,
    hop 2048, 64 latent channels, widths 128-2048, no latent scaling."""
    return AudioAutoencoderOobleckConfig.from_dict({"sample_size": 2097152}, **overrides)


PRESETS: dict[str, Callable[..., AudioAutoencoderOobleckConfig]] = {"stable_audio_open": stable_audio_open}

__all__ = ["AudioAutoencoderOobleckConfig", "AudioAutoencoderOobleckModel", "SoftplusGaussian", "Snake",
           "WeightNormConv1d", "PRESETS", "stable_audio_open"]
