"""The task pipelines' base class, their registry and :func:`pipeline`, in transformers' shape.

A :class:`Pipeline` runs ``preprocess`` (one input -> one or more model inputs, :class:`Unit` s),
``_forward`` (a batch of same-shape units -> model outputs, under ``torch.inference_mode``) and
``postprocess`` (one input's outputs -> what the user gets back). ``__call__`` takes one input or a
list, batches units of one shape ``batch_size`` at a time (:func:`~latentflow.encode.shard.bucket_batches`,
the encode path's grouping) and returns one output per input, in order.

Tasks are registered by name (:data:`SUPPORTED_TASKS`: ``task -> "module:Class"``, imported on first use;
:func:`register_pipeline` adds more).

Example::

    rec = pipeline("reconstruct", model="kl-f8")
    image = rec("photo.png")                                  # a PIL image of the same size
    z = pipeline("encode", model="kl-f8")(["a.png", "b.png"], batch_size=2)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from latentflow.encode.encoder import COMPUTE_DTYPES
from latentflow.errors import ConfigError, InputError

# task -> "module:Class" (imported on first use, as the model families are)
SUPPORTED_TASKS: dict[str, str] = {
    "reconstruct": "latentflow.pipelines.codec:ReconstructionPipeline",
    "encode": "latentflow.pipelines.codec:EncodePipeline",
    "decode": "latentflow.pipelines.codec:DecodePipeline",
    "tokenize": "latentflow.pipelines.codec:TokenizePipeline",
    "detokenize": "latentflow.pipelines.codec:DetokenizePipeline",
    "generate": "latentflow.pipelines.generate:GenerationPipeline",
}
_REGISTERED: dict[str, type["Pipeline"]] = {}
DTYPES = COMPUTE_DTYPES  # the encode job's compute dtypes


def register_pipeline(task: str, cls: type["Pipeline"]) -> type["Pipeline"]:
    """Make ``pipeline(task, ...)`` build ``cls`` (a :class:`Pipeline` subclass)."""
    if not (isinstance(cls, type) and issubclass(cls, Pipeline)):
        raise ConfigError(f"register_pipeline needs a Pipeline subclass, got: {cls!r}")
    _REGISTERED[task] = cls
    return cls


def tasks() -> list[str]:
    """Every task name :func:`pipeline` knows, sorted."""
    return sorted(set(SUPPORTED_TASKS) | set(_REGISTERED))


def pipeline_class(task: str) -> type["Pipeline"]:
    """The class of ``task``.

    Raises:
        ConfigError: ``task`` is not a known task (the message lists them).
    """
    if task in _REGISTERED:
        return _REGISTERED[task]
    if task not in SUPPORTED_TASKS:
        raise ConfigError(f"unknown task {task!r}; tasks: {', '.join(tasks())}")
    module, name = SUPPORTED_TASKS[task].split(":")
    return getattr(importlib.import_module(module), name)


def pipeline(task: str, model: Any = None, device: str | int | torch.device | None = None,
             dtype: str | torch.dtype = "fp32", **kwargs: Any) -> "Pipeline":
    """Build the pipeline of ``task`` around ``model``.

    Args:
        task: ``reconstruct`` (media -> media), ``encode`` (media -> normalized latents), ``decode``
            (latents -> media), ``tokenize`` (media -> indices), ``detokenize`` (indices -> media) or
            ``generate`` (a trained prior + its codec -> decoded samples).
        model: anything ``AutoModel.from_pretrained`` loads (a ``models/`` name such as ``kl-f8``, a folder,
            an fsspec URL, a hub id) or a loaded ``LatentModel``; for ``generate``, a prior checkpoint
            folder (``<train.output_dir>/final``) or a loaded prior.
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``, a CUDA index or a ``torch.device``.
        dtype: compute dtype, ``fp32``, ``bf16``, ``fp16`` or a torch dtype (autocast; weights stay as loaded,
            models whose config sets ``force_upcast`` encode in fp32, as in the encode job).
        kwargs: the task's options (``batch_size``, ``processor``, ``codec``, ``output_type``, ...), see each class.

    Returns:
        the :class:`Pipeline`; call it on one input or a list.

    Raises:
        ConfigError: unknown task (the tasks are listed), no model.
        NotSupportedError: the model cannot do the task (``tokenize`` on a continuous model).
    """
    return pipeline_class(task)(model, device=device, dtype=dtype, **kwargs)


def resolve_device(device: str | int | torch.device | None) -> torch.device:
    """``None`` -> CPU; an int -> that CUDA device (transformers' convention)."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, int):
        return torch.device("cpu") if device < 0 else torch.device(f"cuda:{device}")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype) -> str:
    """The compute dtype's name (``fp32``, ``bf16``, ``fp16``) from a name or a torch dtype."""
    names = {v: k for k, v in DTYPES.items()}
    if isinstance(dtype, torch.dtype):
        if dtype not in names:
            raise ConfigError(f"dtype must be one of {list(DTYPES)} or their torch dtypes, got: {dtype}")
        return names[dtype]
    aliases = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
    name = aliases.get(str(dtype), str(dtype))
    if name not in DTYPES:
        raise ConfigError(f"dtype must be one of {list(DTYPES)} or their torch dtypes, got: {dtype!r}")
    return name


@dataclass(frozen=True)
class Unit:
    """One model input cut from one pipeline input (an image, a video clip, an audio segment, a latent).

    Attributes:
        values: the tensor the model takes, without the batch axis: pixels (3, H, W) or (3, T, H, W) and
            waveforms (C, N) in [-1, 1], latents, or integer indices.
        item: position of the pipeline input it comes from.
        meta: what postprocess needs: ``modality``, the size to crop back to, ``fps``, ``sampling_rate``, ...
    """

    values: torch.Tensor
    item: int
    meta: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    """Base of the task pipelines: ``preprocess`` -> ``_forward`` -> ``postprocess``, batched.

    Args:
        model: the loaded model the task runs.
        device: where to run (:func:`resolve_device`).
        dtype: compute dtype (:func:`resolve_dtype`).
        batch_size: units per forward (a call's ``batch_size`` overrides it); only units of one shape
            share a batch.
        kwargs: defaults of the call parameters (``output_type``, ``return_dict``, ...).

    Subclasses set :attr:`task` and implement the three steps; :meth:`_sanitize_parameters` splits a call's
    keyword arguments between them (unknown ones are refused).
    """

    task: ClassVar[str] = ""

    def __init__(self, model: Any, device: str | int | torch.device | None = None, dtype: str | torch.dtype = "fp32",
                 batch_size: int = 1, **kwargs: Any):
        self.model = model
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.batch_size = _check_batch_size(batch_size)
        self._defaults = self._sanitize_parameters(**kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, model={type(self.model).__name__}, device={self.device}, dtype={self.dtype})"

    # ---- the three steps ---------------------------------------------------------------
    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Split keyword arguments into (preprocess, forward, postprocess) parameters.

        Raises:
            ConfigError: an argument no step takes.
        """
        if kwargs:
            raise ConfigError(f"task {self.task!r} takes no argument(s) {sorted(kwargs)}")
        return {}, {}, {}

    def preprocess(self, inputs: Any, item: int, **params: Any) -> list[Unit]:
        raise NotImplementedError

    def _forward(self, batch: torch.Tensor, units: list[Unit], **params: Any) -> list[Any]:
        raise NotImplementedError

    def postprocess(self, outputs: list[Any], units: list[Unit], **params: Any) -> Any:
        raise NotImplementedError

    # ---- running -------------------------------------------------------------------------
    def __call__(self, inputs: Any, batch_size: int | None = None, **kwargs: Any) -> Any:
        """Run the task on one input, or on a list of them (one output per input, in order).

        Args:
            inputs: one input of the task, or a list.
            batch_size: units per forward for this call (default: the pipeline's).
            kwargs: the task's call parameters; they override the pipeline's defaults.
        """
        pre, fwd, post = (dict(d) for d in self._defaults)
        for default, given in zip((pre, fwd, post), self._sanitize_parameters(**kwargs)):
            default.update(given)
        items, single = self._items(inputs)
        units = [u for i, x in enumerate(items) for u in self.preprocess(x, i, **pre)]
        outputs = self.run_units(units, _check_batch_size(batch_size or self.batch_size), **fwd)
        results = []
        for i in range(len(items)):
            mine = [k for k, u in enumerate(units) if u.item == i]
            results.append(self.postprocess([outputs[k] for k in mine], [units[k] for k in mine], **post))
        return results[0] if single else results

    def _items(self, inputs: Any) -> tuple[list[Any], bool]:
        """``(inputs as a list, whether one input was given)``."""
        if isinstance(inputs, (list, tuple)):
            return list(inputs), False
        return [inputs], True

    def run_units(self, units: list[Unit], batch_size: int, **params: Any) -> list[Any]:
        """``_forward`` over every unit, ``batch_size`` units of one shape at a time; outputs in unit order."""
        from latentflow.encode.shard import bucket_batches

        outputs: list[Any] = [None] * len(units)
        shapes = [(str(u.values.dtype), *u.values.shape) for u in units]
        for idx in bucket_batches(shapes, batch_size):
            group = [units[i] for i in idx]
            batch = torch.stack([u.values for u in group])
            with torch.inference_mode():
                results = self._forward(batch, group, **params)
            for i, out in zip(idx, results):
                outputs[i] = out
        return outputs


def _check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an int >= 1, got: {batch_size!r}")
    return batch_size


__all__ = ["Pipeline", "Unit", "pipeline", "pipeline_class", "register_pipeline", "tasks", "SUPPORTED_TASKS"]
