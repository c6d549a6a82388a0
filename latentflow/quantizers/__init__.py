"""Quantizers behind one interface: VQ, Gumbel, residual, grouped, FSQ, LFQ, BSQ.

Every quantizer returns :class:`~latentflow.outputs.QuantizerOutput`, inverts
exactly with ``indices_to_codes`` and round-trips its JSON config::

    from latentflow.quantizers import quantizer_from_config
    q = quantizer_from_config({"name": "vq", "configuration": {"dim": 8, "codebook_size": 64}})
    same = quantizer_from_config(q.to_config())

Family modules are imported lazily on first use.
"""

from __future__ import annotations

import importlib

from latentflow.quantizers.base import (
    FlatQuantized,
    Quantizer,
    QuantizerConfig,
    all_reduce_sum,
    index_dtype_for,
    numpy_index_dtype_for,
    quantizer_class_for,
    quantizer_from_config,
    register_quantizer,
    usage_and_perplexity,
)

_LAZY = {
    "VQConfig": "vq", "VectorQuantizer": "vq",
    "GumbelConfig": "gumbel", "GumbelQuantizer": "gumbel",
    "ResidualVQConfig": "residual", "ResidualVectorQuantizer": "residual",
    "GroupedVQConfig": "grouped", "GroupedVectorQuantizer": "grouped",
    "FSQConfig": "fsq", "FiniteScalarQuantizer": "fsq",
    "LFQConfig": "lfq", "LookupFreeQuantizer": "lfq",
    "BSQConfig": "bsq", "BinarySphericalQuantizer": "bsq",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'latentflow.quantizers' has no attribute {name!r}")
    return getattr(importlib.import_module(f"latentflow.quantizers.{_LAZY[name]}"), name)


__all__ = [
    "FlatQuantized", "Quantizer", "QuantizerConfig", "all_reduce_sum", "index_dtype_for", "numpy_index_dtype_for",
    "quantizer_class_for", "quantizer_from_config", "register_quantizer", "usage_and_perplexity", *_LAZY,
]
