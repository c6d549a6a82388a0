"""Model inputs -> latent arrays: what an encode job stores, for any ``LatentModel``.

Continuous models store the posterior mean (default), optionally its logvar (so
training can resample), or a sample whose noise is seeded per key (a rerun gives
the same sample whatever the batch). Quantized models store code indices in the
smallest integer dtype that holds the codebook, optionally the quantized vectors.

Usable in a plain loop and inside a Ray actor (the encoder holds no global state).

Example::

    encoder = LatentEncoder(model, StoreConfig(logvar=True), dtype="bf16")
    out = encoder.encode_batch(pixels, keys)    # pixels: (B, 3, H, W) in [-1, 1]
    out["latent"].shape                         # (B', C, h, w); B' <= B (non-finite rows dropped)
    out["errors"]                               # one dict per dropped row
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np
import torch

from latentflow.configuration import check_choice
from latentflow.errors import ConfigError
from latentflow.format.codec import StoreConfig
from latentflow.quantizers.base import numpy_index_dtype_for
from latentflow.sources.records import SampleError, key_seed

COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(dtype: str, device: torch.device):
    """``torch.autocast`` at the compute dtype ``dtype`` on ``device``'s type; nothing for fp32."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=COMPUTE_DTYPES[dtype])


def codebook_size_of(model: torch.nn.Module) -> int:
    """``model.quantizer.codebook_size`` (or ``model.codebook_size``), with a clear error when absent."""
    size = getattr(getattr(model, "quantizer", None), "codebook_size", None) or getattr(model, "codebook_size", None)
    if size is None:
        raise ConfigError(f"{type(model).__name__} is discrete but exposes no quantizer.codebook_size")
    return int(size)


def _warn_if_slow_bf16(dtype: str, device: torch.device) -> None:
    """bf16 on a CPU without native bf16 (no avx512_bf16/AMX) is emulated and several times slower than fp32."""
    if dtype == "bf16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        warnings.warn(
            "dtype=bf16 on a CPU without native bf16 support (measured 4x or more slower than fp32 here); "
            "use dtype=fp32 on this machine",
            RuntimeWarning,
            stacklevel=3,
        )


def to_pixels(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """float32 pixels in [-1, 1] on ``device``; uint8 codes are moved first, then normalized there."""
    if x.dtype == torch.uint8:
        return x.to(device).float() / 127.5 - 1.0  # same float32 ops as the processor: bit-exact
    return x.to(device, dtype=torch.float32)


class LatentEncoder:
    """Encodes batches of processed images into the arrays an encode job stores.

    Args:
        model: any ``LatentModel`` (continuous or discrete).
        store: what to store.
        dtype: compute dtype, ``fp32``, ``bf16`` or ``fp16`` (autocast; models whose config
            sets ``force_upcast`` run in fp32; rows that turn non-finite at low precision are
            recomputed in fp32 before being reported).
        device: where to run.
        channels_last: run convnets in channels-last memory format (faster on CPU and GPU): 4-D
            models and inputs as ``channels_last``; video clips (B, 3, T, H, W) as ``channels_last_3d``
            (the input only: measured 1.4-2.4x faster conv3d encodes on this CPU, equal within 1e-6).
        text_encoders: resident :class:`~latentflow.encode.text.TextEncoder` s, loaded once beside the
            model; the encode path (:func:`~latentflow.encode.shard.encode_processed`) runs each shard's
            captions through them after its latents.
        tracks: ``{column: LatentEncoder}`` of a second model (a video clip's audio track), resident beside
            this one; the encode path encodes each row's span with it (:func:`~latentflow.encode.shard.encode_tracks`).
    """

    def __init__(self, model: torch.nn.Module, store: StoreConfig | None = None, dtype: str = "fp32", device: str | torch.device = "cpu",
                 channels_last: bool = True, text_encoders: list | tuple = (), tracks: dict[str, "LatentEncoder"] | None = None):
        check_choice("LatentEncoder", "dtype", dtype, tuple(COMPUTE_DTYPES))
        self.store = store or StoreConfig()
        self.kind = getattr(model, "latent_kind", "continuous")
        if getattr(model.config, "force_upcast", False) and dtype == "fp16":
            dtype = "fp32"
        self.dtype = dtype
        self.device = torch.device(device)
        _warn_if_slow_bf16(dtype, self.device)
        self.channels_last = channels_last
        self.model = model.to(self.device).eval()
        if channels_last and getattr(model, "input_rank", 4) == 4:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.index_dtype = numpy_index_dtype_for(codebook_size_of(model)) if self.kind == "discrete" else None
        self.float_dtype = np.dtype(self.store.dtype)
        self.text_encoders = tuple(text_encoders)
        self.tracks = dict(tracks or {})

    # ---- public -----------------------------------------------------------------
    def encode_batch(self, pixel_values: torch.Tensor | np.ndarray, keys: list[str]) -> dict[str, Any]:
        """Encode one batch (all images of one bucket shape).

        Args:
            pixel_values: (B, 3, H, W) float in [-1, 1], or uint8 codes ``c`` of the values
                ``c / 127.5 - 1`` (the processor's normalization, done here on the device in
                float32: 4x fewer bytes to copy to a GPU and no float pass on the host).
            keys: the B sample keys (seed ``"sample"`` noise; name dropped rows).

        Returns:
            dict with ``row`` (int64 positions in the batch of the rows kept), ``key`` and the
            stored arrays: ``latent`` (B', C, h, w) (continuous: mean or sample; discrete:
            quantized vectors, only when asked), ``logvar``, ``indices`` (discrete) and the
            ``flip_*`` variants; ``errors``: a dict (key, stage, error_type, message) per dropped row.
        """
        x = torch.as_tensor(pixel_values)
        if x.shape[0] != len(keys):
            raise ValueError(f"pixel_values has {x.shape[0]} rows but {len(keys)} keys were given")
        arrays, bad = self._encode_views(x, keys, self.dtype)
        if bad.any() and self.dtype != "fp32":  # low precision overflowed: upcast those rows
            redo = torch.nonzero(bad).flatten()
            fixed, still_bad = self._encode_views(x[redo], [keys[i] for i in redo.tolist()], "fp32")
            with torch.inference_mode():  # the arrays are inference tensors
                for name, value in fixed.items():
                    arrays[name][redo.to(value.device)] = value.to(arrays[name].dtype)
            bad[redo] = still_bad
        return self._to_numpy(arrays, bad, keys)

    # ---- internals ----------------------------------------------------------------
    def _encode_views(self, x: torch.Tensor, keys: list[str], dtype: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        arrays = self._encode(x, keys, dtype)
        if self.store.flip:
            flipped = self._encode(torch.flip(x, dims=[-1]), keys, dtype)
            arrays.update({f"flip_{k}": v for k, v in flipped.items()})
        bad = torch.zeros(x.shape[0], dtype=torch.bool)
        for value in arrays.values():
            if value.is_floating_point():
                bad |= ~torch.isfinite(value.reshape(value.shape[0], -1)).all(dim=1).cpu()
        return arrays, bad

    def _encode(self, x: torch.Tensor, keys: list[str], dtype: str) -> dict[str, torch.Tensor]:
        x = to_pixels(x, self.device)
        if self.channels_last and x.ndim in (4, 5):
            x = x.contiguous(memory_format=torch.channels_last if x.ndim == 4 else torch.channels_last_3d)
        with torch.inference_mode(), self._autocast(dtype):
            out = self.model.encode(x)
            if self.kind == "discrete":
                return self._discrete(x, out)
            return self._continuous(out, keys)

    def _autocast(self, dtype: str):
        return autocast(dtype, self.device)

    def _continuous(self, out, keys: list[str]) -> dict[str, torch.Tensor]:
        dist = getattr(out, "latent_dist", None)
        if dist is None and (self.store.logvar or self.store.latent == "sample"):
            raise ConfigError(
                f"{type(self.model).__name__} returns no posterior; store.logvar and store.latent='sample' need one"
            )
        mean = (dist.mean if dist is not None else out.latents).float()  # (B, C, h, w)
        result = {"latent": mean}
        if self.store.latent == "sample":
            noise = torch.stack([self._noise(k, mean.shape[1:]) for k in keys]).to(mean.device)
            result["latent"] = mean + torch.exp(0.5 * dist.logvar.float()) * noise
        if self.store.logvar:
            result["logvar"] = dist.logvar.float()
        return result

    def _noise(self, key: str, shape: torch.Size) -> torch.Tensor:
        gen = torch.Generator().manual_seed(key_seed(self.store.seed, key))
        return torch.randn(tuple(shape), generator=gen)

    def _discrete(self, x: torch.Tensor, out) -> dict[str, torch.Tensor]:
        indices = getattr(out, "indices", None)
        if indices is None:
            indices = self.model.tokenize(x)
        result = {"indices": indices}
        if self.store.quantized:
            result["latent"] = out.latents.float()
        return result

    def _to_numpy(self, arrays: dict[str, torch.Tensor], bad: torch.Tensor, keys: list[str]) -> dict[str, Any]:
        keep = torch.nonzero(~bad).flatten()
        result: dict[str, Any] = {"row": keep.numpy().astype(np.int64), "key": np.array([keys[i] for i in keep.tolist()], dtype=object)}
        for name, value in arrays.items():
            value = value[keep.to(value.device)].cpu().contiguous()
            dtype = self.index_dtype if name.endswith("indices") else self.float_dtype
            result[name] = value.numpy().astype(dtype, copy=False)
        result["errors"] = [
            {**SampleError("encode", "non_finite", f"latents of {keys[i]!r} are not finite").to_row(keys[i], "")}
            for i in torch.nonzero(bad).flatten().tolist()
        ]
        return result
