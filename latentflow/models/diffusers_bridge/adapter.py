"""The adapter: one diffusers autoencoder module presenting the ``LatentModel`` contract.

:class:`DiffusersAutoencoder` wraps the diffusers module and answers ``encode`` ->
:class:`VariationalEncoderOutput` (or :class:`QuantizedEncoderOutput` for ``VQModel``), ``decode`` ->
:class:`DecoderOutput`, the family's latent ``normalization``, ``modality``, ``layout``, ``downsample_factor``,
``temporal_downsample_factor`` (video classes), ``latent_channels``, ``latent_shape`` and ``weights_hash``
(class + config + sha256 of the weight files read). What differs per class lives in
:data:`~latentflow.models.diffusers_bridge.table.FAMILIES`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import fsspec
import torch

from latentflow import hub
from latentflow.auto import register
from latentflow.configuration import CONFIG_NAME, LatentConfig, read_config_dict
from latentflow.errors import CheckpointError, ConfigError, InputError, NotSupportedError
from latentflow.modeling import LatentModel, check_finite
from latentflow.models.diffusers_bridge.table import FAMILIES, diffusers_class, supported_classes
from latentflow.normalization import Normalization
from latentflow.outputs import DecoderOutput, DiagonalGaussian, QuantizedEncoderOutput, VariationalEncoderOutput
from latentflow.pretrained import check_torch_dtype

logger = logging.getLogger(__name__)
_RANK = {"CHW": 4, "CTHW": 5, "CT": 3, "CTF": 4}
_SHAPES = {"CHW": "(B, {c}, H, W) images", "CTHW": "(B, {c}, H, W) images or (B, {c}, T, H, W) clips",
           "CT": "(B, {c}, N) waveforms", "CTF": "(B, {c}, T, F) mel spectrograms"}


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
        self.input_rank = _RANK[self.family.layout]  # video classes also take images (rank 4)
        self.weight_files: dict[str, str] = {}
        self.hub_revision: str | None = None

    # ---- geometry ---------------------------------------------------------------------
    @property
    def _c(self) -> dict[str, Any]:
        return self.config.diffusers_config

    @property
    def modality(self) -> str:
        """``image``, ``video`` or ``audio``: what ``encode`` takes."""
        return self.family.modality

    @property
    def layout(self) -> str:
        """Per-sample latent layout: ``CHW``, ``CTHW`` (video, and images as one-frame clips), ``CT`` or ``CTF`` (audio)."""
        return self.family.layout

    @property
    def in_channels(self) -> int:
        return int(self.family.in_channels(self._c))

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent per side; for audio, samples (``CT``) or mel frames and bins (``CTF``) per latent step."""
        return int(self.family.spatial(self._c))

    @property
    def temporal_downsample_factor(self) -> int | None:
        """Frames per latent frame (after the first, for causal VAEs); None for image and audio classes."""
        return int(self.family.temporal(self._c)) if self.family.temporal else None

    @property
    def latent_channels(self) -> int:
        channels = self.family.channels
        if callable(channels):
            return int(channels(self._c))
        return int(self._c.get(channels) or self._c["latent_channels"])  # VQModel: vq_embed_dim None -> latent_channels

    @property
    def codebook_size(self) -> int | None:
        return int(self._c["num_vq_embeddings"]) if self.family.discrete else None

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of a clip of ``num_frames`` (causal: the first frame alone, then groups)."""
        if self.family.frames is not None:
            return int(self.family.frames(self._c, num_frames))
        tf = self.temporal_downsample_factor or 1
        return (num_frames - 1) // tf + 1 if self.family.causal else num_frames // tf

    def latent_shape(self, *size: int) -> tuple[int, ...]:
        """Per-sample latent shape: of an image (H, W) -> (C, h, w), or (C, 1, h, w) for ``CTHW`` classes; of a
        waveform (N,) -> (C, N / hop); of a mel spectrogram (T, F) -> (C, T', F / f)."""
        f, c = self.downsample_factor, self.latent_channels
        if self.layout == "CT":
            return (c, size[0] // f)
        if self.layout == "CTF":  # causal in time, as LTX-2's audio encoder: (T - 1) // f + 1
            return (c, (size[0] - 1) // f + 1, size[1] // f)
        spatial = (size[0] // f, size[1] // f)
        return (c, 1, *spatial) if self.layout == "CTHW" else (c, *spatial)

    @property
    def normalization(self) -> Normalization:
        """The family's rule (:data:`FAMILIES`), or the ``normalization`` override of the config."""
        if self.config.normalization is not None:
            return Normalization.from_dict(self.config.normalization)
        return self.family.rule(self._c, self.vae, self.config.pipeline)

    # ---- the contract -----------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        name, layout = self.config.class_name, self.layout
        ranks = (4, 5) if layout == "CTHW" else (self.input_rank,)
        want = _SHAPES[layout].format(c=self.in_channels)
        if not isinstance(x, torch.Tensor) or x.ndim not in ranks:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"{name} expects {want}, got: {got}")
        if x.shape[1] != self.in_channels:
            raise InputError(f"{name} expects {want}: {self.in_channels} input channels, got: {x.shape[1]} (shape {tuple(x.shape)})")
        f = self.downsample_factor
        if layout in ("CHW", "CTHW") and any(s % f for s in x.shape[-2:]):
            raise InputError(f"{name} downsamples by {f}: height and width must be multiples of {f}, got: {tuple(x.shape[-2:])}")
        if layout == "CT" and x.shape[-1] % f:
            raise InputError(f"{name} encodes {f} samples per latent frame: the length must be a multiple of {f}, "
                             f"got: {x.shape[-1]} (pad or trim the waveform)")
        if layout == "CTF" and x.shape[-1] % f:
            raise InputError(f"{name} downsamples mel bins by {f}: the bin count must be a multiple of {f}, got: {x.shape[-1]}")
        complaint = self.family.check(self._c, x) if self.family.check else None
        if complaint:
            raise InputError(complaint)
        if self.config.check_finite:
            check_finite(x, "input")

    def encode(self, x: torch.Tensor) -> VariationalEncoderOutput | QuantizedEncoderOutput:
        """Encode what :attr:`modality` names: images (B, 3, H, W) or clips (B, 3, T, H, W) in [-1, 1], waveforms
        (B, channels, N) in [-1, 1], or LTX-2's mel spectrograms (B, 2, T, F).

        Returns:
            ``VariationalEncoderOutput``: ``latents`` the posterior mode (raw, not normalized), ``latent_dist``
            the posterior (None for deterministic encoders: TAESD, DC-AE, Cosmos, RAE, SAME, LongCat); ``QuantizedEncoderOutput``
            for VQModel: ``latents`` quantized, ``pre_quant`` before it, ``indices`` (B, h, w).

        Raises:
            NotSupportedError: the class (or this checkpoint) has no encoder.
        """
        why = self.family.encoder(self._c)
        if why:
            raise NotSupportedError(f"{self.config.class_name} cannot encode: {why}; it decodes latents only")
        self.check_input(x)
        if self.layout == "CTHW" and x.ndim == 4:
            x = x.unsqueeze(2)  # one-frame clips, as QwenImagePipeline encodes images
        if self.family.unit_range:
            x = (x + 1) / 2
        out = self.family.encode_fn(self.vae, x) if self.family.encode_fn else self.vae.encode(x)
        if self.family.discrete:
            return self._quantize(out.latents)
        return _encoder_output(out, self.family.moments)

    def _quantize(self, h: torch.Tensor) -> QuantizedEncoderOutput:
        quant, _loss, (_, _, indices) = self.vae.quantize(h)  # indices flattened (B*h*w,): sane_index_shape=False
        b, _, hh, ww = h.shape
        return QuantizedEncoderOutput(latents=quant, pre_quant=h, indices=indices.reshape(b, hh, ww))

    def decode(self, latents: torch.Tensor) -> DecoderOutput:
        """Raw (not normalized) latents -> pixels in [-1, 1]: (B, 3, H, W), or (B, 3, T, H, W) for clips of T > 1;
        waveforms (B, channels, N) for audio (mel spectrograms (B, mel_bins, T) where ``family.decodes_to`` is ``mel``)."""
        z = latents
        if self.layout == "CTHW" and z.ndim == 4:
            z = z.unsqueeze(2)
        sample = self.family.decode_fn(self.vae, z) if self.family.decode_fn else self.vae.decode(z)
        sample = _sample(sample)
        if self.family.unit_range:
            sample = sample * 2 - 1
        if self.layout == "CTHW" and sample.ndim == 5 and sample.shape[2] == 1:
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
    def weights_hash(self) -> str:
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


def _encoder_output(out: Any, moments: bool) -> VariationalEncoderOutput:
    """What a diffusers ``encode`` returned (a posterior, ``latent``/``latents``, a tuple or a tensor) as our output."""
    if isinstance(out, tuple):
        out = out[0]
    if isinstance(out, torch.Tensor):
        return VariationalEncoderOutput(latents=out)
    for name in ("latent", "latents"):
        if getattr(out, name, None) is not None:
            return VariationalEncoderOutput(latents=getattr(out, name))
    dist = out.latent_dist
    logvar = getattr(dist, "logvar", None)
    if logvar is None and getattr(dist, "logs", None) is not None:  # MiniMax-H3 audio keeps log std
        logvar = 2 * dist.logs
    if not moments or logvar is None:  # Cosmos: an identity "distribution"
        return VariationalEncoderOutput(latents=dist.mode())
    posterior = DiagonalGaussian(dist.mean, logvar)
    return VariationalEncoderOutput(latents=posterior.mean, latent_dist=posterior)


def _sample(out: Any) -> torch.Tensor:
    """The decoded tensor of a diffusers ``decode`` (an output with ``sample``, a tuple or a tensor)."""
    if isinstance(out, tuple):
        out = out[0]
    return out if isinstance(out, torch.Tensor) else out.sample


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


__all__ = ["DiffusersAutoencoder", "DiffusersAutoencoderConfig"]
