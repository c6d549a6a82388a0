"""Metrics on hand-built cases: known PSNR, SSIM parity with scikit-image, exact codebook stats."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentflow.errors import InputError
from latentflow.metrics import (
    PSNR_CAP_DB,
    ChannelStats,
    CodeHistogram,
    codebook_stats,
    psnr,
    size_reduction_factor,
    ssim,
)


def test_psnr_identical_is_capped_or_inf():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert psnr(x, x).mean == PSNR_CAP_DB
    assert torch.isinf(psnr(x, x, max_db=None).per_sample).all()


def test_psnr_known_noise_level():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 3, 64, 64)
    sigma = 0.1
    y = x + sigma * torch.randn(x.shape, generator=g)
    expected = 10 * math.log10(2.0**2 / sigma**2)  # 26.02 dB
    assert psnr(y, x).mean == pytest.approx(expected, abs=0.1)
    # constant offset: exact
    assert psnr(x + 0.5, x, data_range=1.0).mean == pytest.approx(10 * math.log10(1 / 0.25), abs=1e-9)


def test_psnr_per_sample_and_errors():
    x = torch.zeros(2, 1, 4, 4)
    y = torch.stack([torch.full((1, 4, 4), 0.2), torch.full((1, 4, 4), 0.02)])
    r = psnr(y, x)
    assert r.per_sample.shape == (2,)
    assert r.per_sample[1] - r.per_sample[0] == pytest.approx(20.0)
    with pytest.raises(InputError, match="one shape"):
        psnr(x, torch.zeros(2, 1, 4, 5))


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_matches_skimage(photos, seed):
    from skimage.metrics import structural_similarity

    img = photos["chelsea"][:48, :40].astype(np.float64) / 127.5 - 1  # (H, W, 3) in [-1, 1]
    rng = np.random.default_rng(seed)
    noisy = np.clip(img + rng.normal(0, 0.2, img.shape), -1, 1)
    ref = structural_similarity(
        img, noisy, data_range=2.0, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]  # noqa: E731  (1, 3, H, W)
    ours = ssim(to_t(img), to_t(noisy)).mean
    assert ours == pytest.approx(ref, abs=1e-6)
    assert ssim(to_t(img), to_t(img)).mean == pytest.approx(1.0, abs=1e-9)


def test_ssim_rejects_small_images():
    with pytest.raises(InputError, match="win_size"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_codebook_stats_exact():
    s = codebook_stats(torch.tensor([5, 5, 0, 0]))
    assert (s.used, s.dead_codes, s.usage, s.total) == (2, 2, 0.5, 10)
    assert s.perplexity == pytest.approx(2.0)
    assert s.entropy_bits == pytest.approx(1.0)
    uniform = codebook_stats(torch.ones(8))
    assert uniform.perplexity == pytest.approx(8.0) and uniform.dead_codes == 0
    one = codebook_stats(torch.tensor([0, 7, 0]))
    assert one.perplexity == pytest.approx(1.0) and one.used == 1


def test_code_histogram_streams_and_merges():
    a, b = CodeHistogram(4), CodeHistogram(4)
    a.update(torch.tensor([[0, 1], [1, 1]]))
    b.update(torch.tensor([3]))
    assert a.merge(b).counts.tolist() == [1, 3, 0, 1]
    assert a.stats().dead_codes == 1
    with pytest.raises(InputError, match=r"\[0, 4\)"):
        a.update(torch.tensor([4]))


def test_channel_stats_streaming_equals_batch():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(10, 3, 5, 5, generator=g) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1) + torch.tensor(
        [0.0, 3.0, -1.0]
    ).view(1, 3, 1, 1)
    whole, parts, other = ChannelStats(), ChannelStats(), ChannelStats()
    whole.update(z)
    parts.update(z[:3])
    other.update(z[3:])
    parts.merge(other)
    ref = z.double().transpose(0, 1).reshape(3, -1)
    for s in (whole, parts):
        assert torch.allclose(s.channel_mean(), ref.mean(1), atol=1e-12)
        assert torch.allclose(s.channel_std(), ref.std(1, unbiased=False), atol=1e-12)
        assert s.global_std() == pytest.approx(float(z.double().std(unbiased=False)), abs=1e-12)
        assert s.shift_factor() == pytest.approx(float(z.double().mean()), abs=1e-12)
        assert s.scaling_factor() == pytest.approx(1 / float(z.double().std(unbiased=False)))
    d = whole.to_dict()
    assert len(d["channel_std"]) == 3 and d["count_per_channel"] == 250


def test_size_reduction_factor():
    assert size_reduction_factor((3, 256, 256), (4, 32, 32)) == 48.0
    assert size_reduction_factor((3, 16, 16), (16, 16)) == 3.0


def test_channel_stats_state_round_trip():
    s = ChannelStats()
    s.update(torch.randn(3, 2, 4, 4))
    back = ChannelStats.from_state(s.to_state())
    assert back.to_dict() == s.to_dict()
