"""Audio loss and metrics: the multi-resolution STFT loss, SI-SDR and waveform PSNR, by their defining properties."""

from __future__ import annotations

import math

import pytest
import torch

from latentflow.errors import InputError
from latentflow.metrics import si_sdr, waveform_psnr
from latentflow.training.losses import multi_resolution_stft_loss, stft_loss


def noise(shape=(2, 2, 4096), seed=0) -> torch.Tensor:
    return 0.3 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_stft_loss_of_identical_signals_is_zero():
    x = noise()
    assert multi_resolution_stft_loss(x, x).item() == 0.0
    assert stft_loss(x, x, 256).item() == 0.0


@pytest.mark.parametrize("gain", [0.5, 0.9, 1.5, 3.0])
def test_stft_loss_of_a_scaled_signal_is_known_whatever_the_signal(gain):
    """x_hat = a x: spectral convergence |1 - a| and log magnitude |log a|, at every resolution."""
    want = abs(1 - gain) + abs(math.log(gain))
    for seed in (0, 1):
        x = noise(seed=seed)
        for n in (1024, 256, 32):
            assert stft_loss(gain * x, x, n).item() == pytest.approx(want, rel=1e-5)
        assert multi_resolution_stft_loss(gain * x, x).item() == pytest.approx(want, rel=1e-5)


def test_stft_loss_grows_with_the_error_and_has_gradients_at_silence():
    x = noise()
    small = multi_resolution_stft_loss(x + 0.01 * noise(seed=2), x)
    large = multi_resolution_stft_loss(x + 0.1 * noise(seed=2), x)
    assert 0 < small < large
    y = torch.zeros(1, 1, 2048, requires_grad=True)
    loss = multi_resolution_stft_loss(y, torch.zeros(1, 1, 2048))  # eps floor: finite
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(y.grad).all()


def test_stft_loss_skips_resolutions_longer_than_the_signal_and_checks_shapes():
    x = noise((1, 1, 300))
    assert multi_resolution_stft_loss(2 * x, x).item() == pytest.approx(1 + math.log(2), rel=1e-6)  # 256, 128, 64, 32 only
    with pytest.raises(InputError, match="shorter than every FFT size"):
        multi_resolution_stft_loss(x[..., :16], x[..., :16])
    with pytest.raises(InputError, match=r"two \(B, C, T\) waveforms of one shape"):
        multi_resolution_stft_loss(x, x[..., :200])


def test_si_sdr_is_the_energy_ratio_to_an_orthogonal_error_and_ignores_gain():
    x = noise((3, 2, 8000))
    x = x - x.mean(-1, keepdim=True)
    n = noise((3, 2, 8000), seed=5)
    n = n - n.mean(-1, keepdim=True)
    n = n - (n * x).sum(-1, keepdim=True) / x.pow(2).sum(-1, keepdim=True) * x  # orthogonal to x
    for level in (0.1, 0.5):
        est = x + level * n
        want = (10 * torch.log10(x.pow(2).sum(-1) / (level * n).pow(2).sum(-1))).mean(1)  # (B,)
        got = si_sdr(est, x)
        torch.testing.assert_close(got.per_sample, want)
        torch.testing.assert_close(si_sdr(-2.5 * est, x).per_sample, want)  # any gain, any sign
        torch.testing.assert_close(si_sdr(est + 0.7, x).per_sample, want)  # and any offset (zero-mean first)
    assert si_sdr(x, x).mean > 100


def test_waveform_psnr_known_values():
    x = torch.zeros(2, 1, 100)
    y = torch.full((2, 1, 100), 0.1)
    assert waveform_psnr(y, x).mean == pytest.approx(10 * math.log10(4 / 0.01))
    assert waveform_psnr(x, x).mean == 100.0  # capped, as image PSNR
    with pytest.raises(InputError, match=r"expected \(B, C, T\) waveforms"):
        waveform_psnr(torch.zeros(1, 100), torch.zeros(1, 100))
    with pytest.raises(InputError, match="one shape"):
        si_sdr(torch.zeros(1, 1, 10), torch.zeros(1, 1, 11))
