"""The diffusers bridge: every diffusers autoencoder other than ``AutoencoderKL`` as a ``LatentModel``.

``AutoModel.from_pretrained`` sends any folder whose ``config.json`` names a diffusers
``_class_name`` here (``AutoencoderKL`` stays native: :mod:`latentflow.models.autoencoder_kl`).
One adapter class, :class:`DiffusersAutoencoder`, wraps the diffusers module and presents the
contract: ``encode`` -> :class:`VariationalEncoderOutput` (or :class:`QuantizedEncoderOutput`
for ``VQModel``), ``decode`` -> :class:`DecoderOutput`, the family's latent ``normalization``,
spatial ``downsample_factor``, ``temporal_downsample_factor`` (video classes), ``latent_channels``,
``latent_shape`` and ``fingerprint`` (class + config + sha256 of the weight files read).

What differs per class lives in one table, :data:`FAMILIES`: geometry, how ``encode`` answers,
and the normalization rule its own diffusers pipeline applies before the denoiser (each rule
cites the pipeline function it reproduces).

A video VAE given images (B, 3, H, W) encodes each as a one-frame clip (B, 3, 1, H, W), as
Qwen-Image does, and returns latents (B, C, 1, h, w); the codec then records layout ``CTHW``.
Decoding a one-frame clip gives images (B, 3, H, W) back; longer clips give (B, 3, T, H, W).

Example::

    vae = AutoModel.from_pretrained("Qwen/Qwen-Image", subfolder="vae")   # or a local folder
    z = vae.encode(images).latents                 # images (B, 3, H, W) in [-1, 1] -> (B, 16, 1, H/8, W/8)
    z_unit = vae.normalize_latents(z)              # what QwenImagePipeline feeds its transformer
    x_hat = vae.decode(vae.denormalize_latents(z_unit)).sample
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import fsspec
import torch

from latentflow import hub
from latentflow.auto import register
from latentflow.configuration import CONFIG_NAME, LatentConfig, read_config_dict
from latentflow.errors import CheckpointError, ConfigError, InputError
from latentflow.modeling import LatentModel, check_finite
from latentflow.normalization import Normalization
from latentflow.outputs import DecoderOutput, DiagonalGaussian, QuantizedEncoderOutput, VariationalEncoderOutput
from latentflow.pretrained import check_torch_dtype

logger = logging.getLogger(__name__)
INSTALL_HINT = "pip install 'latentflow[diffusers]'"


# ---------------------------------------------------------------------------
# the per-family table
# ---------------------------------------------------------------------------
def _levels(key: str) -> Callable[[dict], int]:
    """2 ** (number of levels - 1): one 2x resample between consecutive levels."""
    return lambda c: 2 ** (len(c[key]) - 1)


def _scale_rule(c: dict, module, pipeline: dict) -> Normalization:
    # StableDiffusionImg2ImgPipeline.prepare_latents: init_latents = self.vae.config.scaling_factor * init_latents
    # (pipelines/stable_diffusion/pipeline_stable_diffusion_img2img.py); TAESD (scaling_factor 1.0) gives "none".
    return Normalization.from_values(c.get("scaling_factor"), c.get("shift_factor"), source="config")


def _dc_rule(c: dict, module, pipeline: dict) -> Normalization:
    # SanaPipeline.__call__: self.vae.decode(latents / self.vae.config.scaling_factor) (pipelines/sana/pipeline_sana.py).
    # The factor is the one the pipeline's checkpoint sets (0.41407 for Sana's DC-AE f32c32), not the class default 1.0
    # (from_pretrained warns when a folder holds only the default).
    return Normalization("scale" if c.get("scaling_factor", 1.0) != 1.0 else "none", float(c.get("scaling_factor", 1.0)))


def _flux2_rule(c: dict, module, pipeline: dict) -> Normalization:
    # Flux2Pipeline._encode_vae_image (pipelines/flux2/pipeline_flux2.py): _patchify_latents (2x2 -> channels), then
    # (z - bn.running_mean) / sqrt(bn.running_var + config.batch_norm_eps). Statistics are checkpoint buffers.
    bn = module.bn
    return Normalization("batchnorm", mean=bn.running_mean.tolist(), std=bn.running_var.tolist(),
                         eps=float(c["batch_norm_eps"]), patch_size=int(c["patch_size"][0]), source="buffers")


def _config_stats_rule(c: dict, module, pipeline: dict) -> Normalization:
    # QwenImageImg2ImgPipeline._encode_vae_image (pipelines/qwenimage/pipeline_qwenimage_img2img.py) and
    # WanImageToVideoPipeline.prepare_latents (pipelines/wan/pipeline_wan_i2v.py): (z - latents_mean) * (1 / latents_std);
    # MochiPipeline.__call__ (pipelines/mochi/pipeline_mochi.py) inverts z * latents_std / scaling_factor + latents_mean.
    if c.get("latents_mean") is None:
        return _scale_rule(c, module, pipeline)
    return Normalization("per_channel", float(c.get("scaling_factor", 1.0) or 1.0), 0.0, c["latents_mean"], c["latents_std"])


def _ltx_rule(c: dict, module, pipeline: dict) -> Normalization:
    # LTXImageToVideoPipeline.prepare_latents -> _normalize_latents(init_latents, self.vae.latents_mean, self.vae.latents_std)
    # and LTXPipeline.__call__ -> _denormalize_latents(..., self.vae.config.scaling_factor) (pipelines/ltx/): statistics are
    # buffers of the checkpoint, (z - mean) * scaling_factor / std.
    return Normalization("per_channel", float(c.get("scaling_factor", 1.0)), 0.0, module.latents_mean.tolist(),
                         module.latents_std.tolist(), source="buffers")


def _cosmos_rule(c: dict, module, pipeline: dict) -> Normalization:
    # CosmosVideoToWorldPipeline.prepare_latents (pipelines/cosmos/pipeline_cosmos_video2world.py):
    # mean/std .view(1, C, -1, 1, 1)[:, :, :T] (per channel AND latent frame), then (z - mean) * sigma_data / std,
    # sigma_data from the pipeline's scheduler (EDMEulerScheduler's default 0.5 when no pipeline folder is at hand).
    sigma = float(pipeline.get("scheduler", {}).get("sigma_data", 0.5))
    if c.get("latents_mean") is None:
        return Normalization("scale" if sigma != 1.0 else "none", sigma, source="pipeline")
    channels = int(c["latent_channels"])

    def per_frame(values: list[float]) -> list[list[float]]:  # flat (C * T,) -> (C, T), as .view(1, C, -1, 1, 1)
        t = len(values) // channels
        return [list(values[k * t:(k + 1) * t]) for k in range(channels)]

    return Normalization("per_channel_per_frame", sigma, 0.0, per_frame(c["latents_mean"]), per_frame(c["latents_std"]),
                         source="pipeline")


def _vq_rule(c: dict, module, pipeline: dict) -> Normalization:
    # KandinskyV22Img2ImgPipeline.prepare_latents: init_latents = self.movq.config.scaling_factor * init_latents
    # (pipelines/kandinsky2_2/pipeline_kandinsky2_2_img2img.py); LDMTextToImagePipeline.__call__ divides it back.
    return Normalization("scale" if c.get("scaling_factor", 1.0) != 1.0 else "none", float(c.get("scaling_factor", 1.0)))


@dataclass(frozen=True)
class Family:
    """What the bridge needs to know about one diffusers autoencoder class.

    Attributes:
        since: first diffusers release with the class (named when the installed one lacks it).
        spatial: config -> spatial downsampling factor.
        temporal: config -> temporal downsampling factor; None for image classes.
        channels: config key of the latent channels.
        rule: (config, module, pipeline JSON) -> the pipeline's :class:`Normalization`.
        moments: encode's posterior is a diagonal Gaussian (False: deterministic latents).
        discrete: encode quantizes (VQModel).
    """

    since: str
    spatial: Callable[[dict], int]
    rule: Callable[[dict, Any, dict], Normalization]
    temporal: Callable[[dict], int] | None = None
    channels: str = "latent_channels"
    moments: bool = True
    discrete: bool = False


def _causal_t(c: dict) -> int:
    return 2 ** sum(bool(t) for t in c["temperal_downsample"])


def _wan_spatial(c: dict) -> int:
    """One 2x downsample per ``temperal_downsample`` entry, times Wan 2.2's patchify (``patch_size``)."""
    return c.get("scale_factor_spatial") or 2 ** len(c["temperal_downsample"]) * (c.get("patch_size") or 1)


def _ltx_ratio(c: dict, axis: str, patch_key: str) -> int:
    """The configured ratio, else the patch times one 2x per ``spatio_temporal_scaling`` level (AutoencoderKLLTXVideo)."""
    return c.get(f"{axis}_compression_ratio") or c[patch_key] * 2 ** sum(c["spatio_temporal_scaling"])


def _cosmos_ratio(c: dict, axis: str) -> int:
    """The patch, then one 2x downsample per level but the last two, up to the configured ratio (CosmosEncoder3d)."""
    patch = int(c["patch_size"])
    layers = int(math.log2(c[f"{axis}_compression_ratio"])) - int(math.log2(patch))
    return patch * 2 ** max(0, min(layers, len(c["encoder_block_out_channels"]) - 2))


FAMILIES: dict[str, Family] = {
    "AutoencoderTiny": Family("0.20.0", lambda c: c["upsampling_scaling_factor"] ** (len(c["encoder_block_out_channels"]) - 1),
                              _scale_rule, moments=False),
    "AutoencoderDC": Family("0.32.0", _levels("encoder_block_out_channels"), _dc_rule, moments=False),
    "AutoencoderKLFlux2": Family("0.36.0", _levels("block_out_channels"), _flux2_rule),
    "AutoencoderKLQwenImage": Family("0.35.0", lambda c: 2 ** len(c["temperal_downsample"]), _config_stats_rule, _causal_t,
                                     channels="z_dim"),
    "AutoencoderKLWan": Family("0.33.0", _wan_spatial, _config_stats_rule, lambda c: c.get("scale_factor_temporal") or _causal_t(c),
                               channels="z_dim"),
    "AutoencoderKLHunyuanVideo": Family("0.32.0", lambda c: c["spatial_compression_ratio"], _scale_rule,
                                        lambda c: c["temporal_compression_ratio"]),
    "AutoencoderKLLTXVideo": Family("0.32.0", lambda c: _ltx_ratio(c, "spatial", "patch_size"), _ltx_rule,
                                    lambda c: _ltx_ratio(c, "temporal", "patch_size_t")),
    "AutoencoderKLCogVideoX": Family("0.30.0", _levels("block_out_channels"), _scale_rule,
                                     lambda c: int(c["temporal_compression_ratio"])),
    # CogVideoXVideoToVideoPipeline.prepare_latents: init_latents = self.vae_scaling_factor_image * init_latents (scale only)
    "AutoencoderKLMochi": Family("0.32.0", lambda c: math.prod(c["spatial_expansions"]), _config_stats_rule,
                                 lambda c: math.prod(c["temporal_expansions"])),
    "AutoencoderKLCosmos": Family("0.34.0", lambda c: _cosmos_ratio(c, "spatial"), _cosmos_rule,
                                  lambda c: _cosmos_ratio(c, "temporal"), moments=False),
    "VQModel": Family("0.20.0", _levels("block_out_channels"), _vq_rule, channels="vq_embed_dim", moments=False, discrete=True),
}
NATIVE = ("AutoencoderKL",)  # loaded by latentflow.models.autoencoder_kl, not bridged


def supported_classes() -> list[str]:
    return sorted(NATIVE + tuple(FAMILIES))


def diffusers_class(class_name: str) -> type:
    """The diffusers class named ``class_name``, with the errors a user can act on."""
    if class_name not in FAMILIES:
        raise ConfigError(f"diffusers class {class_name!r} is not an autoencoder latentflow supports; "
                          f"supported: {supported_classes()}")
    try:
        diffusers = importlib.import_module("diffusers")
    except ImportError as err:
        raise ConfigError(f"this folder holds a diffusers {class_name}; loading it needs diffusers: {INSTALL_HINT}") from err
    cls = getattr(diffusers, class_name, None)
    if cls is None:
        raise ConfigError(f"diffusers {class_name} needs diffusers >= {FAMILIES[class_name].since}, installed: "
                          f"{diffusers.__version__}; pip install -U 'diffusers>={FAMILIES[class_name].since}'")
    return cls


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------
@dataclass
class DiffusersAutoencoderConfig(LatentConfig):
    """Config of :class:`DiffusersAutoencoder`: the diffusers class and its full config (defaults filled in).

    ``normalization`` (a :meth:`Normalization.to_dict`) overrides the family's rule; ``pipeline`` holds the
    pipeline JSON some rules read (``{"scheduler": {...}}``). ``scaling_factor`` & co. of the base class are
    unused here: the family table decides.
    """

    model_type: ClassVar[str] = "diffusers"

    class_name: str = "AutoencoderTiny"
    diffusers_config: dict[str, Any] = field(default_factory=dict)
    pipeline: dict[str, Any] = field(default_factory=dict)
    normalization: dict[str, Any] | None = None
    force_upcast: bool = False

    def validate(self) -> None:
        super().validate()
        if self.class_name not in FAMILIES:
            raise ConfigError(f"diffusers class {self.class_name!r} is not an autoencoder latentflow supports; "
                              f"supported: {supported_classes()}")
        if self.normalization is not None:
            Normalization.from_dict(self.normalization)


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))


# ---------------------------------------------------------------------------
# the adapter
# ---------------------------------------------------------------------------
@register
class DiffusersAutoencoder(LatentModel):
    """A diffusers autoencoder presenting the ``LatentModel`` contract (see the module docstring).

    Attributes:
        vae: the wrapped diffusers module (its own methods stay available).
        weight_files: ``{file name: sha256}`` of the weights read (empty when built from a config).
    """

    config_class: ClassVar[type[LatentConfig]] = DiffusersAutoencoderConfig

    def __init__(self, config: DiffusersAutoencoderConfig, module: torch.nn.Module | None = None):
        super().__init__(config)
        self.family = FAMILIES[config.class_name]
        self.vae = module if module is not None else diffusers_class(config.class_name).from_config(config.diffusers_config)
        self.latent_kind = "discrete" if self.family.discrete else "continuous"
        self.input_rank = 5 if self.family.temporal else 4  # video classes take clips (and images)
        self.weight_files: dict[str, str] = {}
        self.hub_revision: str | None = None

    # ---- geometry ---------------------------------------------------------------------
    @property
    def _c(self) -> dict[str, Any]:
        return self.config.diffusers_config

    @property
    def in_channels(self) -> int:
        return 3 if self.config.class_name == "AutoencoderKLMochi" else int(self._c.get("in_channels", self._c.get("input_channels", 3)))

    @property
    def downsample_factor(self) -> int:
        return int(self.family.spatial(self._c))

    @property
    def temporal_downsample_factor(self) -> int | None:
        """Frames per latent frame (after the first, for causal VAEs); None for image classes."""
        return int(self.family.temporal(self._c)) if self.family.temporal else None

    @property
    def latent_channels(self) -> int:
        return int(self._c.get(self.family.channels) or self._c["latent_channels"])

    @property
    def codebook_size(self) -> int | None:
        return int(self._c["num_vq_embeddings"]) if self.family.discrete else None

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of a clip of ``num_frames`` (causal: the first frame alone, then groups)."""
        tf = self.temporal_downsample_factor or 1
        return (num_frames - 1) // tf + 1

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Per-sample latent shape of one image: (C, h, w), or (C, 1, h, w) for video classes."""
        f = self.downsample_factor
        spatial = (height // f, width // f)
        return (self.latent_channels, 1, *spatial) if self.family.temporal else (self.latent_channels, *spatial)

    @property
    def normalization(self) -> Normalization:
        """The family's rule (:data:`FAMILIES`), or the ``normalization`` override of the config."""
        if self.config.normalization is not None:
            return Normalization.from_dict(self.config.normalization)
        return self.family.rule(self._c, self.vae, self.config.pipeline)

    # ---- the contract -----------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        ranks = (4, 5) if self.family.temporal else (4,)
        if not isinstance(x, torch.Tensor) or x.ndim not in ranks:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            want = "(B, 3, H, W) images or (B, 3, T, H, W) clips" if self.family.temporal else "(B, 3, H, W) images"
            raise InputError(f"{self.config.class_name} expects {want}, got: {got}")
        if x.shape[1] != self.in_channels:
            raise InputError(f"{self.config.class_name} expects {self.in_channels} input channels, got: {x.shape[1]} (shape {tuple(x.shape)})")
        f = self.downsample_factor
        if any(s % f for s in x.shape[-2:]):
            raise InputError(f"{self.config.class_name} downsamples by {f}: height and width must be multiples of {f}, "
                             f"got: {tuple(x.shape[-2:])}")
        if self.config.check_finite:
            check_finite(x, "input")

    def encode(self, x: torch.Tensor) -> VariationalEncoderOutput | QuantizedEncoderOutput:
        """Encode images (B, 3, H, W), or clips (B, 3, T, H, W) for video classes, in [-1, 1].

        Returns:
            ``VariationalEncoderOutput``: ``latents`` the posterior mode (raw, not normalized), ``latent_dist``
            the posterior (None for deterministic encoders: TAESD, DC-AE, Cosmos); ``QuantizedEncoderOutput``
            for VQModel: ``latents`` quantized, ``pre_quant`` before it, ``indices`` (B, h, w).
        """
        self.check_input(x)
        if self.family.temporal and x.ndim == 4:
            x = x.unsqueeze(2)  # one-frame clips, as QwenImagePipeline encodes images
        out = self.vae.encode(x)
        if self.family.discrete:
            return self._quantize(out.latents)
        if self.config.class_name == "AutoencoderDC":
            return VariationalEncoderOutput(latents=out.latent)
        if not self.family.moments and not hasattr(out, "latent_dist"):
            return VariationalEncoderOutput(latents=out.latents)
        dist = out.latent_dist
        if not self.family.moments or not hasattr(dist, "logvar"):  # Cosmos: an identity "distribution"
            return VariationalEncoderOutput(latents=dist.mode())
        posterior = DiagonalGaussian(dist.mean, dist.logvar)
        return VariationalEncoderOutput(latents=posterior.mean, latent_dist=posterior)

    def _quantize(self, h: torch.Tensor) -> QuantizedEncoderOutput:
        quant, loss, (_, _, indices) = self.vae.quantize(h)  # indices flattened (B*h*w,): sane_index_shape=False
        b, _, hh, ww = h.shape
        return QuantizedEncoderOutput(latents=quant, pre_quant=h, indices=indices.reshape(b, hh, ww))

    def decode(self, latents: torch.Tensor) -> DecoderOutput:
        """Raw (not normalized) latents -> pixels in [-1, 1]: (B, 3, H, W), or (B, 3, T, H, W) for clips of T > 1."""
        z = latents
        if self.family.temporal and z.ndim == 4:
            z = z.unsqueeze(2)
        sample = self.vae.decode(z).sample
        if sample.ndim == 5 and sample.shape[2] == 1:
            sample = sample.squeeze(2)
        return DecoderOutput(sample=sample)

    def forward(self, x: torch.Tensor, **kwargs: Any):
        raise NotImplementedError(f"{type(self).__name__} wraps a pretrained diffusers {self.config.class_name} "
                                  "for encoding and decoding; train it with diffusers")

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.family.discrete:
            return super().tokenize(x)
        return self.encode(x).indices

    def detokenize(self, indices: torch.Tensor) -> torch.Tensor:
        """VQModel: code indices (B, h, w) -> pixels (codebook lookup, then the decoder)."""
        if not self.family.discrete:
            return super().detokenize(indices)
        b, h, w = indices.shape
        quant = self.vae.quantize.get_codebook_entry(indices.reshape(-1), (b, h, w, self.latent_channels))
        return self.vae.decode(quant, force_not_quantize=True).sample

    # ---- identity and files -----------------------------------------------------------
    def fingerprint(self) -> str:
        """sha256 of the class, the config and the weight files read (or of the weights, when built from a config)."""
        files = self.weight_files or {"state_dict": hub.state_dict_sha256(self.vae.state_dict())}
        blob = json.dumps({"class": self.config.class_name, "config": self._c, "files": files}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def save_pretrained(self, directory: str, storage_options: dict | None = None) -> None:
        """Write a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) that diffusers loads."""
        from safetensors.torch import save as save_safetensors_bytes

        fs, path = fsspec.url_to_fs(str(directory), **(storage_options or {}))
        fs.makedirs(path, exist_ok=True)
        config = {"_class_name": self.config.class_name, "_diffusers_version": _diffusers_version(), **self._c}
        with fs.open(f"{path.rstrip('/')}/{CONFIG_NAME}", "w") as f:
            f.write(json.dumps(config, indent=2, sort_keys=True))
        state = {k: v.detach().contiguous().cpu() for k, v in self.vae.state_dict().items()}
        with fs.open(f"{path.rstrip('/')}/{hub.DIFFUSERS_WEIGHTS}.safetensors", "wb") as f:
            f.write(save_safetensors_bytes(state, metadata={"format": "pt"}))

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, storage_options: dict | None = None, subfolder: str | None = None,
                        variant: str | None = None, torch_dtype: torch.dtype | None = None,
                        normalization: Normalization | dict | None = None, **unused: Any) -> "DiffusersAutoencoder":
        """Load a diffusers autoencoder folder (local, fsspec URL, or a hub snapshot :func:`hub.locate` fetched).

        Args:
            name_or_path: the folder, or a pipeline root with ``subfolder="vae"``.
            storage_options: fsspec options.
            subfolder: inside ``name_or_path``.
            variant: weights variant (``"fp16"`` reads ``diffusion_pytorch_model.fp16.safetensors``).
            torch_dtype: cast the weights after loading.
            normalization: replaces the family's rule (e.g. a DC-AE whose config lacks its pipeline's factor).

        Raises:
            ConfigError: the class is not supported, or diffusers is missing / too old.
            CheckpointError: no safetensors weights, or weights that do not match the config.
        """
        if unused:
            raise ConfigError(f"unknown arguments {sorted(unused)} for a diffusers autoencoder; expected: subfolder, "
                              "variant, revision, torch_dtype, normalization, storage_options")
        check_torch_dtype(torch_dtype)
        fs, path = hub.resolve_pretrained(name_or_path, storage_options, subfolder)
        raw = read_config_dict(fs.unstrip_protocol(path), storage_options)
        dcls = diffusers_class(raw.get("_class_name", ""))
        module_config = _json_safe({k: v for k, v in _full_config(dcls, raw).items() if not k.startswith("_")})
        if isinstance(normalization, Normalization):
            normalization = normalization.to_dict()
        config = DiffusersAutoencoderConfig(class_name=raw["_class_name"], diffusers_config=module_config,
                                            pipeline=_pipeline_json(fs, path, subfolder), normalization=normalization,
                                            force_upcast=bool(module_config.get("force_upcast", False)))
        if config.class_name == "AutoencoderDC" and normalization is None and module_config.get("scaling_factor") == 1.0:
            logger.warning("%s: AutoencoderDC config has scaling_factor 1.0 (the class default), so latents are not scaled; "
                           "Sana's pipelines use the factor their checkpoint sets (0.41407 for dc-ae-f32c32-sana-1.0). "
                           "Pass normalization=Normalization('scale', <factor>) if this folder lacks it.", name_or_path)
        state, files = _read_weights(fs, path.rstrip("/"), variant)
        model = cls(config, _build(dcls, module_config, state))
        model.weight_files = files
        if torch_dtype is not None:
            model.to(torch_dtype)
        return model.eval()


def _diffusers_version() -> str:
    return importlib.import_module("diffusers").__version__


def _full_config(dcls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """The class's config with every default filled in (so two folders that differ only in omitted keys agree)."""
    init, _unused = dcls.extract_init_dict(dict(raw))[:2]
    return dict(init)


def _build(dcls: type, config: dict[str, Any], state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The diffusers module holding ``state``: built on the meta device and given the tensors when it has no
    buffers computed in ``__init__``, else built normally and loaded; strict either way."""
    with torch.device("meta"):
        module = dcls.from_config(config)
    own = module.state_dict()
    _check_keys(dcls.__name__, own, state)
    computed = any(name not in own for name, _ in module.named_buffers())  # non-persistent (Cosmos' wavelets)
    if computed:
        module = dcls.from_config(config)
        module.load_state_dict(state, strict=True)
    else:
        # copies: tensors read from a bytes buffer can sit unaligned, and convolutions over them ran 9-14%
        # slower (benchmarks/bridge_overhead.py); fresh tensors are allocated aligned
        module.load_state_dict({k: v.to(own[k].dtype, copy=True) for k, v in state.items()}, strict=True, assign=True)
    return module.eval()


def _check_keys(name: str, own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        raise CheckpointError(f"weights do not match the diffusers {name} its config builds: missing keys {missing[:8]}; "
                              f"unexpected keys {unexpected[:8]}; shape mismatches {shapes[:8]}")


def _weight_candidates(variant: str | None) -> list[str]:
    w = hub.DIFFUSERS_WEIGHTS
    if variant:
        return [f"{w}.{variant}.safetensors", f"{w}.safetensors.index.{variant}.json", f"model.{variant}.safetensors"]
    return [f"{w}.safetensors", f"{w}.safetensors.index.json", hub.WEIGHTS_NAME, "model.safetensors.index.json"]


def _read_weights(fs, path: str, variant: str | None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict and ``{file: sha256}`` of the first weights found (single file or shards)."""
    for name in _weight_candidates(variant):
        full = f"{path}/{name}"
        if not fs.exists(full):
            continue
        if not name.endswith(".json"):
            state, sha = hub.read_safetensors(fs, full)
            return state, {name: sha}
        with fs.open(full, "r") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state, files = {}, {}
        for shard in shards:
            tensors, files[shard] = hub.read_safetensors(fs, f"{path}/{shard}")
            state.update(tensors)
        return state, files
    hub.refuse_pickles(fs, path, " or ".join(_weight_candidates(variant)))  # always raises
    raise AssertionError("unreachable")


def _pipeline_json(fs, path: str, subfolder: str | None) -> dict[str, Any]:
    """``{"scheduler": scheduler_config.json}`` of the pipeline root above ``subfolder``, when there is one."""
    if not subfolder:
        return {}
    root = path.rstrip("/")[: -len(subfolder.strip("/"))].rstrip("/")
    target = f"{root}/scheduler/scheduler_config.json"
    if not fs.exists(target):
        return {}
    with fs.open(target, "r") as f:
        data = json.load(f)
    return {"scheduler": {k: v for k, v in data.items() if k == "sigma_data"}}


__all__ = ["DiffusersAutoencoder", "DiffusersAutoencoderConfig", "FAMILIES", "Family", "diffusers_class", "supported_classes"]
