"""The quantizer interface every family implements, and what they share.

A quantizer maps features to the nearest entries of a (learned or implicit)
codebook. Every family here:

- accepts channel-first feature maps (B, C, H, W), videos (B, C, T, H, W) and
  channel-last sequences (B, N, D); it moves channels last, quantizes rows of
  (.., D) in fp32 (autocast off) and moves channels back;
- returns :class:`~latentflow.outputs.QuantizerOutput`;
- inverts exactly: ``indices_to_codes(out.indices)`` equals ``out.quantized`` in
  eval mode, bit for bit;
- has a JSON config ``{"name": ..., "configuration": {...}}`` that round-trips
  through :func:`quantizer_from_config` / :meth:`Quantizer.to_config`.

Example::

    q = quantizer_from_config({"name": "fsq", "configuration": {"levels": [8, 5, 5, 5]}})
    out = q(torch.randn(2, 4, 16, 16))          # out.indices: (2, 16, 16)
    assert torch.equal(q.eval()(x).quantized, q.indices_to_codes(q(x).indices))

Subclasses implement three methods on flat rows: ``quantize_flat(z)`` (N, D) ->
:class:`FlatQuantized`, ``decode_flat(indices)`` -> (N, D) codes and
``encode_flat(z)`` -> indices, with no state update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist

from latentflow import registry
from latentflow.configuration import Config
from latentflow.errors import ConfigError, InputError, NotSupportedError
from latentflow.outputs import QuantizerOutput
from latentflow.pretrained import PretrainedModule

# name -> module that registers it on import (lazy, like latentflow.auto)
_BUILTIN_QUANTIZERS: dict[str, str] = {
    "vq": "latentflow.quantizers.vq",
    "gumbel": "latentflow.quantizers.gumbel",
    "residual_vq": "latentflow.quantizers.residual",
    "grouped_vq": "latentflow.quantizers.grouped",
    "fsq": "latentflow.quantizers.fsq",
    "lfq": "latentflow.quantizers.lfq",
    "bsq": "latentflow.quantizers.bsq",
}
registry.declare_builtins("quantizer", _BUILTIN_QUANTIZERS)
_QUANTIZERS: dict[str, type["Quantizer"]] = registry.table("quantizer")


# ---- config ----------------------------------------------------------------
@dataclass
class QuantizerConfig(Config):
    """Base of every quantizer config: a strict dataclass with a JSON form.

    Subclasses set ``name`` and extend :meth:`validate` (calling super).
    """

    name: ClassVar[str] = "base"

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **overrides: Any) -> "QuantizerConfig":
        """Build from a ``configuration`` dict, rejecting unknown keys and wrong types."""
        return super().from_dict(data, **overrides)


def register_quantizer(cls: type["Quantizer"]) -> type["Quantizer"]:
    """Register a quantizer class under ``cls.config_class.name``. Usable as a decorator."""
    return registry.register_class("quantizer", cls.config_class.name, cls)


def quantizer_class_for(name: str) -> type["Quantizer"]:
    """The quantizer class registered as ``name`` (built-ins are imported on first use)."""
    return registry.class_for("quantizer", name)


def quantizer_from_config(config: dict[str, Any]) -> "Quantizer":
    """Build a quantizer from ``{"name": ..., "configuration": {...}}``.

    Args:
        config: the JSON-able dict written by :meth:`Quantizer.to_config`.

    Returns:
        A freshly initialised quantizer (load its state dict for trained codebooks).
    """
    if not isinstance(config, dict) or set(config) - {"name", "configuration"} or "name" not in config:
        raise ConfigError(f'quantizer config must be {{"name": ..., "configuration": {{...}}}}, got: {config!r}')
    cls = quantizer_class_for(config["name"])
    return cls(cls.config_class.from_dict(config.get("configuration", {})))


# ---- index dtypes ------------------------------------------------------------
def index_dtype_for(codebook_size: int) -> torch.dtype:
    """Smallest torch integer dtype holding indices ``0 .. codebook_size - 1`` (and -1 for "dropped")."""
    if codebook_size <= 2**8:
        return torch.uint8
    if codebook_size <= 2**15:
        return torch.int16
    if codebook_size <= 2**31:
        return torch.int32
    return torch.int64


def numpy_index_dtype_for(codebook_size: int) -> np.dtype:
    """The numpy twin of :func:`index_dtype_for` (for writers of index arrays)."""
    return np.dtype(str(index_dtype_for(codebook_size)).removeprefix("torch."))


# ---- distributed ---------------------------------------------------------------
def distributed_ready() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place when torch.distributed is initialised; a no-op otherwise."""
    if distributed_ready():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_rows(z: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """Rows ``picks`` of the rank-ordered concatenation of every rank's ``z`` (N_r, D).

    Every rank must pass the same ``picks`` (global row numbers); each fills in the
    rows it holds and an all-reduce assembles them, so all ranks get the same
    rows a single process would take from the concatenated batch.
    """
    counts = torch.zeros(dist.get_world_size() if distributed_ready() else 1, dtype=torch.long, device=z.device)
    rank = dist.get_rank() if distributed_ready() else 0
    counts[rank] = z.shape[0]
    all_reduce_sum(counts)
    start = int(counts[:rank].sum())
    local = (picks >= start) & (picks < start + z.shape[0])
    out = torch.zeros(picks.shape[0], z.shape[1], dtype=z.dtype, device=z.device)
    out[local] = z[picks[local] - start]
    return all_reduce_sum(out)


def pick_weighted_row(weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Global row number drawn with probability proportional to ``weights`` (N_r,) across ranks.

    Every rank draws the same uniform number (same generator state), finds the rank
    that owns it from the all-reduced per-rank totals, and that rank names the row.
    """
    world = dist.get_world_size() if distributed_ready() else 1
    rank = dist.get_rank() if distributed_ready() else 0
    totals = torch.zeros(world, dtype=torch.float64, device=weights.device)
    counts = torch.zeros(world, dtype=torch.long, device=weights.device)
    totals[rank], counts[rank] = weights.double().sum(), weights.shape[0]
    all_reduce_sum(totals), all_reduce_sum(counts)
    u = float(torch.rand((), generator=generator, dtype=torch.float64)) * float(totals.sum())
    # first index whose cumulative weight reaches u (searchsorted, on any device)
    owner = min(int((totals.cumsum(0) < u).sum()), world - 1)
    pick = torch.zeros((), dtype=torch.long, device=weights.device)
    if owner == rank:
        local = u - float(totals[:rank].sum())
        pick += min(int((weights.double().cumsum(0) < local).sum()), weights.shape[0] - 1)
        pick += int(counts[:rank].sum())
    return all_reduce_sum(pick)


def nearest_rows(z: torch.Tensor, table: torch.Tensor, chunk_elements: int = 2**24) -> torch.Tensor:
    """Index of the nearest row of ``table`` (K, D) for each row of ``z`` (N, D), by exact differences.

    Unlike the expanded ``|z|^2 - 2 z.c + |c|^2`` form this has no cancellation error,
    so a code is always nearest to itself. Chunked to bound memory. Shape (N,).
    """
    step = max(1, chunk_elements // max(1, table.numel()))
    parts = [(z[i : i + step, None] - table[None]).pow(2).sum(-1).argmin(-1) for i in range(0, z.shape[0], step)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=z.device)


def global_row_count(z: torch.Tensor) -> int:
    n = torch.tensor([z.shape[0]], dtype=torch.long, device=z.device)
    return int(all_reduce_sum(n))


# ---- statistics -------------------------------------------------------------------
def code_histogram(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts of each code in ``indices`` (any shape; negative entries are ignored). Shape (K,)."""
    flat = indices.reshape(-1).long()
    return torch.bincount(flat[flat >= 0], minlength=codebook_size).float()


def usage_and_perplexity(indices: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fraction of codes used and ``exp(entropy)`` of the code histogram.

    Args:
        indices: integer codes, any shape.
        codebook_size: K.

    Returns:
        ``(usage, perplexity)`` as 0-d float tensors; perplexity is K for a uniform
        histogram and 1 when one code takes everything.
    """
    counts = code_histogram(indices, codebook_size)
    probs = counts / counts.sum().clamp_min(1.0)
    entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum()
    return (counts > 0).float().mean(), torch.exp(entropy)


def exact_straight_through(value: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``value`` exactly, with the gradient of ``source`` (identity straight-through).

    ``source - source.detach()`` is exactly zero, so unlike ``x + (q - x).detach()``
    the result equals ``value`` bit for bit; this is what makes ``indices_to_codes``
    exact.
    """
    return value.detach() + (source - source.detach())


# ---- the module ----------------------------------------------------------------------
@dataclass
class FlatQuantized:
    """What ``quantize_flat`` returns for rows (N, D).

    ``codes`` carry gradients to the input (straight-through or rotation);
    ``indices`` are (N,) or (N, L) for multi-level quantizers.
    """

    codes: torch.Tensor
    indices: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    dead_codes: torch.Tensor | None = None


class Quantizer(PretrainedModule):
    """Base class: layouts, fp32 math, statistics, the JSON config and checkpoints
    (``save_pretrained``/``from_pretrained``, the path models and priors use).

    Class attributes:
        config_class: the config dataclass (its ``name`` is the JSON ``name``).
        num_levels: indices per position (1, or L for residual/grouped; then
            indices carry a trailing (.., L) axis).
    """

    config_class: ClassVar[type[QuantizerConfig]] = QuantizerConfig
    registry_kind: ClassVar[str] = "quantizer"

    def __init__(self, config: QuantizerConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got: {type(config).__name__}")
        self.config = config

    def _apply(self, fn, recurse: bool = True):
        """Moves follow the model; fp32 state stays fp32 under ``model.to(float16)`` or
        ``from_pretrained(torch_dtype=...)``: the quantizer computes in fp32 (a half-precision
        codebook would change which code is nearest) and casts its output to the input's dtype."""

        def move_only(t: torch.Tensor) -> torch.Tensor:
            out = fn(t)
            if t.dtype == torch.float32 and out.dtype != torch.float32:
                return t.to(out.device)  # the cast dropped, never rounded through half precision
            return out

        return super()._apply(move_only, recurse)

    # ---- what every family reports --------------------------------------------
    @property
    def dim(self) -> int:
        """Feature channels expected at the input."""
        return self.config.dim

    @property
    def codebook_size(self) -> int:
        """Number of codes per level (indices lie in ``0 .. codebook_size - 1``)."""
        raise NotImplementedError

    @property
    def num_levels(self) -> int:
        return 1

    @property
    def index_dtype(self) -> torch.dtype:
        """Smallest torch integer dtype that stores this quantizer's indices."""
        return index_dtype_for(self.codebook_size)

    @property
    def numpy_index_dtype(self) -> np.dtype:
        return numpy_index_dtype_for(self.codebook_size)

    def to_config(self) -> dict[str, Any]:
        """``{"name": ..., "configuration": {...}}``: JSON-able, rebuilt by :func:`quantizer_from_config`."""
        return {"name": self.config_class.name, "configuration": self.config.to_dict()}

    # ---- checkpoints: the shared path of latentflow.pretrained ------------------------
    @classmethod
    def registry_name(cls) -> str:
        return cls.config_class.name

    def config_json(self) -> dict[str, Any]:
        return self.to_config()

    @classmethod
    def config_from_json(cls, data: dict[str, Any], **overrides: Any) -> QuantizerConfig:
        data = {k: v for k, v in data.items() if not k.startswith("_")}  # _latentflow_version, ...
        if set(data) != {"name", "configuration"} or data["name"] != cls.config_class.name:
            raise ConfigError(
                f'{cls.__name__} reads {{"name": {cls.config_class.name!r}, "configuration": {{...}}}}, got: {data!r}')
        return cls.config_class.from_dict(data["configuration"], **overrides)

    # ---- family hooks on flat rows -------------------------------------------
    def quantize_flat(self, z: torch.Tensor) -> FlatQuantized:
        """Quantize rows (N, D) in fp32; may update state in train mode."""
        raise NotImplementedError

    def decode_flat(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices (N,) or (N, L) -> codes (N, D)."""
        raise NotImplementedError

    def encode_flat(self, z: torch.Tensor) -> torch.Tensor:
        """Rows (N, D) -> indices, without updating anything."""
        raise NotImplementedError

    # ---- layouts -------------------------------------------------------------
    def _to_rows(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """(B, C, *S) or (B, N, D) -> rows (M, D) and the channel-last shape to restore."""
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{type(self).__name__} expects a torch.Tensor, got: {type(x).__name__}")
        if x.ndim not in (3, 4, 5):
            raise InputError(
                f"{type(self).__name__} expects (B, N, D), (B, C, H, W) or (B, C, T, H, W), "
                f"got rank {x.ndim} with shape {tuple(x.shape)}"
            )
        channel_axis = -1 if x.ndim == 3 else 1
        if x.shape[channel_axis] != self.dim:
            where = "last" if x.ndim == 3 else "channel (dim 1)"
            raise InputError(f"{type(self).__name__} expects {self.dim} features on the {where} axis, "
                             f"got: {x.shape[channel_axis]} (shape {tuple(x.shape)})")
        if x.ndim > 3:
            x = x.movedim(1, -1)  # (B, *S, C)
        return x.reshape(-1, self.dim), tuple(x.shape)

    @staticmethod
    def _from_rows(rows: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        out = rows.reshape(shape)
        return out.movedim(-1, 1) if len(shape) > 3 else out

    def _index_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape[:-1] + ((self.num_levels,) if self.num_levels > 1 else ())

    # ---- public API -------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        """Quantize ``x``: (B, C, H, W), (B, C, T, H, W) or (B, N, D).

        Returns:
            QuantizerOutput with ``quantized`` in ``x``'s layout and dtype, ``indices``
            (B, H, W) / (B, T, H, W) / (B, N) (+ a trailing level axis for
            multi-level quantizers), losses, perplexity and usage of this batch.
        """
        rows, shape = self._to_rows(x)
        with torch.autocast(device_type=rows.device.type, enabled=False):
            flat = self.quantize_flat(rows.float())
        quantized = self._from_rows(flat.codes.to(x.dtype), shape)
        indices = flat.indices.reshape(self._index_shape(shape))
        usage, perplexity = self.statistics(indices)
        zero = rows.new_zeros((), dtype=torch.float32)
        loss = sum(flat.losses.values(), zero)
        return QuantizerOutput(quantized, indices, loss, flat.losses, perplexity, usage, flat.dead_codes)

    def statistics(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Usage and perplexity of ``indices``, averaged over levels for multi-level quantizers."""
        if self.num_levels == 1:
            return usage_and_perplexity(indices, self.codebook_size)
        pairs = [usage_and_perplexity(indices[..., i], self.codebook_size) for i in range(self.num_levels)]
        return torch.stack([u for u, _ in pairs]).mean(), torch.stack([p for _, p in pairs]).mean()

    @torch.no_grad()
    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Exact inverse of the indices in :meth:`forward`'s output.

        Args:
            indices: (B, H, W) -> codes (B, C, H, W); (B, T, H, W) -> (B, C, T, H, W);
                (B, N) -> (B, N, D). Multi-level quantizers take a trailing level axis.

        Returns:
            fp32 codes equal to ``forward(x).quantized`` (eval mode) for the same positions.
        """
        indices = self._check_indices(indices)
        spatial = indices.shape[:-1] if self.num_levels > 1 else indices.shape
        flat = indices.reshape(-1, self.num_levels) if self.num_levels > 1 else indices.reshape(-1)
        codes = self.decode_flat(flat.long())
        return self._from_rows(codes, tuple(spatial) + (self.dim,))

    @torch.no_grad()
    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Indices of the codes nearest to ``codes`` (any accepted layout); updates nothing."""
        rows, shape = self._to_rows(codes)
        with torch.autocast(device_type=rows.device.type, enabled=False):
            indices = self.encode_flat(rows.float())
        return indices.reshape(self._index_shape(shape))

    def nearest_output_code(self, z: torch.Tensor, max_codes: int = 2**16) -> torch.Tensor:
        """Indices of the nearest codes in the *output* space, by enumerating the codebook.

        The generic :meth:`codes_to_indices` for quantizers whose output projection
        cannot be inverted. Rows (N, D) -> (N,).
        """
        if self.codebook_size > max_codes:
            raise NotSupportedError(
                f"codes_to_indices would enumerate {self.codebook_size} codes through the output projection "
                f"(limit {max_codes}); keep the indices from forward() instead"
            )
        return nearest_rows(z, self.decode_flat(torch.arange(self.codebook_size, device=z.device)))

    def _check_indices(self, indices: torch.Tensor) -> torch.Tensor:
        if not isinstance(indices, torch.Tensor) or indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise InputError(f"indices must be an integer tensor, got: {getattr(indices, 'dtype', type(indices).__name__)}")
        extra = 1 if self.num_levels > 1 else 0
        if indices.ndim - extra not in (2, 3, 4):
            raise InputError(f"{type(self).__name__} takes indices (B, N), (B, H, W) or (B, T, H, W){' + (L,)' if extra else ''}, "
                             f"got shape {tuple(indices.shape)}")
        if extra and indices.shape[-1] != self.num_levels:
            raise InputError(f"last axis of indices must hold {self.num_levels} levels, got: {indices.shape[-1]}")
        if indices.numel() and (int(indices.max()) >= self.codebook_size or int(indices.min()) < -extra):
            raise InputError(f"indices must lie in [0, {self.codebook_size}), got range [{int(indices.min())}, {int(indices.max())}]")
        return indices

    def extra_repr(self) -> str:
        return f"dim={self.dim}, codebook_size={self.codebook_size}"


def entropy(probs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats along ``dim``."""
    return -(probs * torch.log(probs.clamp_min(1e-30))).sum(dim=dim)

