"""FSQ interop with vector-quantize-pytorch: with ``bound="vector_quantize_pytorch"`` codes and indices
equal the library's on the same inputs, for odd and even level sets; the reference bound differs from it on about 1% of indices."""

from __future__ import annotations

import pytest
import torch

from latentflow.errors import ConfigError
from latentflow.quantizers.fsq import FiniteScalarQuantizer, FSQConfig

vqp = pytest.importorskip("vector_quantize_pytorch", reason="pip install vector-quantize-pytorch (the test extra)")

LEVEL_SETS = {"odd": [7, 5, 5, 5], "even": [8, 6, 4, 4], "mixed": [8, 5, 5, 5]}


def _inputs(d: int) -> torch.Tensor:
    return torch.randn(2, d, 32, 32, generator=torch.Generator().manual_seed(0)) * 1.5  # (B, d, H, W), held out


@pytest.mark.parametrize("name", sorted(LEVEL_SETS))
def test_codes_and_indices_equal_vector_quantize_pytorch(name):
    levels = LEVEL_SETS[name]
    z = _inputs(len(levels))
    theirs = vqp.FSQ(levels).eval()
    ours = FiniteScalarQuantizer(FSQConfig(levels=levels, bound="vector_quantize_pytorch")).eval()
    with torch.no_grad():
        their_codes, their_indices = theirs(z)
        out = ours(z)
    assert torch.equal(out.indices, their_indices.long())
    torch.testing.assert_close(out.quantized, their_codes, atol=0, rtol=0)
    # and back: our indices decode to their codebook's codes
    flat = out.indices.reshape(-1)
    torch.testing.assert_close(ours.decode_flat(flat), theirs.implicit_codebook[flat], atol=0, rtol=0)


@pytest.mark.parametrize("name", sorted(LEVEL_SETS))
def test_reference_bound_differs_from_the_library(name):
    levels = LEVEL_SETS[name]
    z = _inputs(len(levels))
    with torch.no_grad():
        theirs = vqp.FSQ(levels)(z)[1].long()
        reference = FiniteScalarQuantizer(FSQConfig(levels=levels)).eval()(z).indices
    mismatch = (reference != theirs).float().mean().item()
    assert 0.002 < mismatch < 0.1  # ~0.9% here (1 - eps vs 1 + eps scales every level set): why the option exists


def test_unknown_bound_is_refused():
    with pytest.raises(ConfigError, match=r"FSQConfig.bound must be one of \['reference', 'vector_quantize_pytorch'\], got: 'tanh'"):
        FSQConfig(bound="tanh")
    assert FSQConfig.from_dict(FSQConfig(bound="vector_quantize_pytorch").to_dict()).bound == "vector_quantize_pytorch"
