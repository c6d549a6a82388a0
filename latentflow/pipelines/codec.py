"""The codec tasks: ``reconstruct``, ``encode``, ``tokenize`` (media in) and ``decode``, ``detokenize`` (latents in).

Media go through :mod:`latentflow.pipelines.media` (the encode job's processors, or native sizes); encoding runs
the encode job's :class:`~latentflow.encode.encoder.LatentEncoder` (posterior mean, discrete indices, autocast,
``force_upcast``); latents come out normalized by the model's :class:`~latentflow.normalization.Normalization`,
the rule an encode job records in its codec, and ``decode`` inverts it (or a codec's own rule, ``codec=``).

Example::

    z = pipeline("encode", model="kl-f8")("photo.png")               # (4, h, w), normalized
    image = pipeline("decode", model="kl-f8")(z)                       # a PIL image
    ids = pipeline("tokenize", model="fsq-f8")("photo.png")            # (h, w) int16
    same = pipeline("detokenize", model="fsq-f8")(ids)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from latentflow.encode.encoder import autocast
from latentflow.errors import ConfigError, InputError, NotSupportedError
from latentflow.pipelines.base import Pipeline, Unit
from latentflow.pipelines.media import (
    crop_output,
    media_units,
    modality_of,
    output_modality,
    split_batches,
    to_media,
)

MEDIA_OUTPUT_PARAMS = ("output_type", "return_dict", "output_dir", "fps")


def load_model(model: Any, storage_options: dict | None = None, task: str = "reconstruct"):
    """A loaded ``LatentModel`` in eval mode from a ``models/`` name, folder, URL or hub id, or the model itself."""
    from latentflow.auto import load_model as load
    from latentflow.modeling import LatentModel

    if model is None:
        raise ConfigError(f"pipeline({task!r}) needs model=<a models/ name such as kl-f8, a folder, an fsspec URL or a hub id>")
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        model = load(str(model), storage_options)
    if not isinstance(model, (LatentModel, torch.nn.Module)) or not hasattr(model, "decode"):
        raise ConfigError(f"pipeline({task!r}) takes a model name, folder, URL, hub id or a LatentModel, got: {type(model).__name__}")
    return model.eval()


def decode_batch(model: Any, z: torch.Tensor, normalization: Any, normalized: bool, dtype: str,
                 device: torch.device) -> torch.Tensor:
    """Latents (normalized by ``normalization`` when ``normalized``) or integer indices -> media, float32 on the CPU,
    as :func:`~latentflow.read.latents.decode_latents` decodes."""
    z = z.to(device)
    with autocast(dtype, device):
        if not z.is_floating_point():
            return model.detokenize(z.long()).float().cpu()
        z = z.float()
        if normalized and normalization is not None:
            z = normalization.denormalize(z)
        return model.decode(z).sample.float().cpu()


def _split_media_params(kwargs: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: kwargs.pop(k) for k in names if k in kwargs}


class _ModelPipeline(Pipeline):
    """A pipeline around one ``LatentModel`` (loaded by name, folder, URL or hub id, or given)."""

    def __init__(self, model: Any, device: Any = None, dtype: Any = "fp32", batch_size: int = 1,
                 storage_options: dict | None = None, **kwargs: Any):
        self.storage_options = storage_options
        super().__init__(load_model(model, storage_options, self.task), device, dtype, batch_size, **kwargs)
        self.modality = modality_of(self.model)


class _MediaInPipeline(_ModelPipeline):
    """Media in: processed as :mod:`latentflow.pipelines.media` reads them, encoded by the encode job's encoder.

    Args:
        processor: an ``ImageProcessorConfig``, ``VideoProcessorConfig`` or ``AudioProcessorConfig`` run on every
            input as an encode job runs it (None: native sizes; video files: the default ``VideoProcessorConfig``).
    """

    def __init__(self, model: Any, device: Any = None, dtype: Any = "fp32", batch_size: int = 1, processor: Any = None,
                 storage_options: dict | None = None, **kwargs: Any):
        from latentflow.encode.encoder import LatentEncoder
        from latentflow.format.codec import StoreConfig

        self.processor = processor
        super().__init__(model, device, dtype, batch_size, storage_options, **kwargs)
        discrete = getattr(self.model, "latent_kind", "continuous") == "discrete"
        self.encoder = LatentEncoder(self.model, StoreConfig(quantized=discrete), self.dtype, self.device)

    def _items(self, inputs: Any) -> tuple[list[Any], bool]:
        items, single = super()._items(inputs)
        split = split_batches(items, self.model)
        return split, single and len(split) == 1

    def preprocess(self, inputs: Any, item: int, **params: Any) -> list[Unit]:
        return media_units(inputs, item, self.model, self.processor, self.storage_options, self.task)

    def _encode(self, batch: torch.Tensor, units: list[Unit]) -> dict[str, np.ndarray]:
        """The encode job's arrays of one batch (``latent``, and ``indices`` for discrete models)."""
        out = self.encoder.encode_batch(batch, [f"input{u.item}" for u in units])
        if out["errors"]:
            raise InputError(f"task {self.task!r}: {out['errors'][0]['message']} (non-finite latents; try dtype='fp32')")
        return out


class ReconstructionPipeline(_MediaInPipeline):
    """``reconstruct``: media in, the model's reconstruction out (encode -> posterior mean -> decode).

    Call parameters: ``output_type`` (images: ``pil``, ``np``, ``pt``; video: ``np``, ``pil``, ``mp4``, ``gif``,
    ``pt``; audio: ``np``, ``wav``, ``pt``), ``return_dict``, ``output_dir`` (for files), ``fps`` (video files).

    Returns:
        per input, the reconstruction of its size (an image, a (T, H, W, 3) clip, a (C, N) waveform), or a list of
        them when a processor cut it into several clips or segments.
    """

    task = "reconstruct"

    def _sanitize_parameters(self, **kwargs: Any):
        post = _split_media_params(kwargs, MEDIA_OUTPUT_PARAMS)
        super()._sanitize_parameters(**kwargs)
        return {}, {}, post

    def _forward(self, batch: torch.Tensor, units: list[Unit], **params: Any) -> list[Any]:
        z = torch.from_numpy(self._encode(batch, units)["latent"])
        return list(decode_batch(self.model, z, None, False, self.dtype, self.device))

    def postprocess(self, outputs: list[Any], units: list[Unit], **params: Any) -> Any:
        results = []
        for x, unit in zip(outputs, units):
            x = crop_output(x, unit.meta)
            meta = {"fps": unit.meta.get("fps"), "sampling_rate": unit.meta.get("sampling_rate")}
            results.append(to_media(x, output_modality(x, self.model), **{**meta, **params}))
        return results[0] if len(results) == 1 else results


class EncodePipeline(_MediaInPipeline):
    """``encode``: media in, latents normalized by the model's rule (the one its codecs record) out.

    Call parameters: ``output_type`` (``pt``, default, or ``np``), ``return_dict`` (``{"latents", "normalization",
    "input_size"}``: the rule as its JSON dict, and the input's size before padding).

    Returns:
        per input, (C, h, w) latents ((C, T', h, w) for clips, (C, t) for audio) of the input padded to the model's
        multiples, or a list of them (several clips or segments). ``pipeline("decode", model=...)`` inverts them.
    """

    task = "encode"

    def _sanitize_parameters(self, output_type: str | None = None, return_dict: bool | None = None, **kwargs: Any):
        super()._sanitize_parameters(**kwargs)
        post = {k: v for k, v in (("output_type", output_type), ("return_dict", return_dict)) if v is not None}
        if output_type not in (None, "pt", "np"):
            raise ConfigError(f"output_type of task {self.task!r} must be 'pt' or 'np', got: {output_type!r}")
        return {}, {}, post

    @property
    def normalization(self):
        """The model's :class:`~latentflow.normalization.Normalization` (what an encode job's codec records)."""
        return self.model.normalization

    def _forward(self, batch: torch.Tensor, units: list[Unit], **params: Any) -> list[Any]:
        z = torch.from_numpy(self._encode(batch, units)["latent"])
        return list(self.normalization.normalize(z))

    def postprocess(self, outputs: list[Any], units: list[Unit], output_type: str = "pt", return_dict: bool = False) -> Any:
        results = []
        for z, unit in zip(outputs, units):
            value = z.numpy() if output_type == "np" else z
            size = unit.meta.get("length") or unit.meta.get("size")
            results.append({"latents": value, "normalization": self.normalization.to_dict(), "input_size": size}
                           if return_dict else value)
        return results[0] if len(results) == 1 else results


class TokenizePipeline(EncodePipeline):
    """``tokenize``: media in, integer code indices out (quantized models: FSQ, VQ, LFQ, TiTok, MAGVIT-2).

    Call parameters: ``output_type`` (``pt``, default, or ``np``), ``return_dict`` (``{"indices",
    "codebook_size", "input_size"}``).

    Returns:
        per input, indices (h, w) ((K,) for TiTok, (T', h, w) for clips, a last level axis for residual or grouped
        quantizers) in the smallest integer dtype that holds the codebook, or a list of them.
    """

    task = "tokenize"

    def __init__(self, model: Any, *args: Any, **kwargs: Any):
        super().__init__(model, *args, **kwargs)
        check_discrete(self.model, self.task)

    def _forward(self, batch: torch.Tensor, units: list[Unit], **params: Any) -> list[Any]:
        return list(torch.from_numpy(self._encode(batch, units)["indices"]))

    def postprocess(self, outputs: list[Any], units: list[Unit], output_type: str = "pt", return_dict: bool = False) -> Any:
        from latentflow.encode.encoder import codebook_size_of

        results = []
        for ids, unit in zip(outputs, units):
            value = ids.numpy() if output_type == "np" else ids
            size = unit.meta.get("length") or unit.meta.get("size")
            results.append({"indices": value, "codebook_size": codebook_size_of(self.model), "input_size": size}
                           if return_dict else value)
        return results[0] if len(results) == 1 else results


def check_discrete(model: Any, task: str) -> None:
    """Raise :class:`NotSupportedError` when ``model`` has continuous latents."""
    if getattr(model, "latent_kind", "continuous") != "discrete":
        raise NotSupportedError(f"task {task!r} needs a quantized model (FSQ, VQ, LFQ, TiTok, MAGVIT-2; e.g. fsq-f8); "
                                f"{type(model).__name__} has continuous latents: use task 'encode' / 'decode'")


def sample_rank(model: Any, indices: bool = False) -> int:
    """The rank of one sample's latents (or indices) for ``model``: (C, h, w) -> 3, (K, D) -> 2, audio (C, t) -> 2."""
    modality = modality_of(model)
    if modality == "audio":
        rank = 2
    elif getattr(model, "input_rank", 4) == 5:
        rank = 4
    else:
        f = int(model.downsample_factor)
        try:
            rank = len(model.latent_shape(2 * f, 2 * f))
        except Exception:  # noqa: BLE001 - a family that reports no shape: (C, h, w)
            rank = 3
    if indices:
        levels = getattr(getattr(model, "quantizer", None), "num_levels", 1)
        rank = rank - 1 + (1 if levels > 1 else 0)
    return rank


class DecodePipeline(_ModelPipeline):
    """``decode``: latents in (normalized, as ``encode`` gives them and priors sample them), media out.

    Args:
        model: the decoder (a name, folder, URL, hub id or model); with ``codec`` it overrides the weights' location
            the codec records (their sha256 must still match).
        codec: a latent output's directory (or its :class:`~latentflow.format.codec.Codec` or JSON dict): the
            decoder is rebuilt from it and its normalization rule is inverted (``AutoModel.from_codec``).
        normalized: the latents are normalized (default); False: raw latents, decoded as they are.

    Call parameters: as :class:`ReconstructionPipeline` (``output_type``, ``return_dict``, ``output_dir``, ``fps``).
    Inputs: one sample's latents (tensor or numpy), a list of them, or a batch (one more leading axis);
    integer inputs are indices (detokenized).
    """

    task = "decode"

    def __init__(self, model: Any = None, device: Any = None, dtype: Any = "fp32", batch_size: int = 1,
                 codec: Any = None, normalized: bool = True, storage_options: dict | None = None, **kwargs: Any):
        self.codec = None
        self.fps = None
        if codec is not None:
            model, self.codec, self.fps = _from_codec(codec, model, storage_options)
        self.normalized = normalized
        super().__init__(model, device, dtype, batch_size, storage_options, **kwargs)
        self.model.to(self.device)
        self.normalization = self.codec.normalization if self.codec is not None else self.model.normalization

    def _sanitize_parameters(self, **kwargs: Any):
        post = _split_media_params(kwargs, MEDIA_OUTPUT_PARAMS)
        super()._sanitize_parameters(**kwargs)
        return {}, {}, post

    def _items(self, inputs: Any) -> tuple[list[Any], bool]:
        rank = sample_rank(self.model, indices=self.task == "detokenize")
        if isinstance(inputs, (torch.Tensor, np.ndarray)) and inputs.ndim == rank + 1:
            return list(inputs), False
        return super()._items(inputs)

    def preprocess(self, inputs: Any, item: int, **params: Any) -> list[Unit]:
        if isinstance(inputs, np.ndarray):
            inputs = torch.from_numpy(np.ascontiguousarray(inputs))
        if not isinstance(inputs, torch.Tensor):
            raise InputError(f"task {self.task!r} takes latents as a torch tensor or numpy array (or a list of them), "
                             f"got: {type(inputs).__name__}")
        x = inputs.detach().cpu()
        return [Unit(x.float() if x.is_floating_point() else x.long(), item, {})]

    def _forward(self, batch: torch.Tensor, units: list[Unit], **params: Any) -> list[Any]:
        return list(decode_batch(self.model, batch, self.normalization, self.normalized, self.dtype, self.device))

    def postprocess(self, outputs: list[Any], units: list[Unit], **params: Any) -> Any:
        x = outputs[0]
        rate = _sampling_rate(self.model, self.codec)
        return to_media(x, output_modality(x, self.model), **{"fps": self.fps, "sampling_rate": rate, **params})


class DetokenizePipeline(DecodePipeline):
    """``detokenize``: integer code indices in (as ``tokenize`` gives them), media out.

    Inputs: one sample's indices, a list of them, or a batch (one more leading axis). Call parameters: as
    :class:`ReconstructionPipeline`.
    """

    task = "detokenize"

    def __init__(self, model: Any = None, *args: Any, **kwargs: Any):
        super().__init__(model, *args, **kwargs)
        check_discrete(self.model, self.task)

    def preprocess(self, inputs: Any, item: int, **params: Any) -> list[Unit]:
        units = super().preprocess(inputs, item, **params)
        if units[0].values.is_floating_point():
            raise InputError(f"task 'detokenize' takes integer indices, got {inputs.dtype} values (decode latents with task 'decode')")
        return units


def _sampling_rate(model: Any, codec: Any) -> int | None:
    if codec is not None and codec.modality == "audio":
        return int(codec.processor.sample_rate)
    from latentflow.encode.codec_builder import audio_format

    return audio_format(model)[0] if modality_of(model) == "audio" else None


def _from_codec(codec: Any, weights: Any, storage_options: dict | None):
    """``(decoder model, codec, clip fps)`` of a latent output directory, a Codec or its JSON dict."""
    from latentflow.auto import AutoModel
    from latentflow.format.codec import Codec, as_codec

    fps = None
    if isinstance(codec, (Codec, dict)):
        codec = as_codec(codec)
    else:
        from latentflow.read.latents import read_codec
        from latentflow.read.preview import preview_fps

        path = str(codec)
        codec = read_codec(path, storage_options)
        fps = preview_fps(path, storage_options) if codec.modality == "video" else None
    if weights is not None and not isinstance(weights, str):
        return weights, codec, fps  # a loaded model: the caller vouches for it
    return AutoModel.from_codec(codec, storage_options, weights), codec, fps


__all__ = ["ReconstructionPipeline", "EncodePipeline", "DecodePipeline", "TokenizePipeline", "DetokenizePipeline",
           "decode_batch", "load_model"]
