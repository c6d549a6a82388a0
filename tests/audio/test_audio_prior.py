"""The flow prior over audio latents (C, t): 1D patches round-trip, the 1D sin-cos position fits any length,
and the padding mask keeps padded frames out of both attention and the loss."""

from __future__ import annotations

import pytest
import torch

from latentflow.errors import ConfigError, InputError
from latentflow.priors.flow import FlowConfig, FlowPrior, latent_grid, patchify, unpatchify


def prior(**kw) -> FlowPrior:
    torch.manual_seed(0)
    p = FlowPrior(FlowConfig(latent_shape=(4, 32), hidden_size=32, num_layers=2, num_heads=2, **kw))
    for module in p.modules():  # adaLN-Zero starts as the zero map: wake every layer so the test can see them
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.2)
    return p.eval()


def test_1d_patches_round_trip_and_grids():
    x = torch.randn(2, 4, 32)
    assert torch.equal(unpatchify(patchify(x, (4,)), (8,), (4,), 4), x)
    assert FlowConfig(latent_shape=(4, 32), patch_size=4).patch == (4,)
    assert latent_grid({"latent_shape": [4, 32], "patch_size": 4}) == (4,)
    with pytest.raises(ConfigError, match="must divide"):
        FlowConfig(latent_shape=(4, 30), patch_size=4)
    with pytest.raises(ConfigError, match="network='unet'"):
        FlowConfig(latent_shape=(4, 32), network="unet")


@pytest.mark.parametrize("patch", [1, 4])
def test_padding_changes_neither_the_loss_nor_the_velocity_of_real_frames(patch):
    p = prior(patch_size=patch)
    z = torch.randn(3, 4, 32)
    valid = torch.tensor([32, 20, 8])  # multiples of the patch: no token mixes real and padded frames
    mask = torch.arange(32)[None] < valid[:, None]
    noisy = z.clone()
    noisy[~mask[:, None].expand_as(z)] = 50.0  # garbage in the padding
    assert p.validation(z, mask=mask) == p.validation(noisy, mask=mask)
    t = torch.full((3,), 0.5)
    v, v_noisy = p.velocity(z, t, mask=mask), p.velocity(noisy, t, mask=mask)
    real = mask[:, None].expand_as(v)
    torch.testing.assert_close(v[real], v_noisy[real], atol=1e-5, rtol=1e-5)
    assert p.validation(z) != p.validation(noisy)  # without the mask the padding does count


def test_any_segment_length_samples_and_a_bad_mask_is_refused():
    p = prior(patch_size=4)
    assert p.sample(2, steps=2, latent_size=(48,)).shape == (2, 4, 48)
    loss, _ = p.loss(torch.randn(2, 4, 32), mask=torch.ones(2, 32, dtype=torch.bool))
    loss.backward()
    with pytest.raises(InputError, match=r"mask must be \(B, t\)"):
        p.loss(torch.randn(2, 4, 32), mask=torch.ones(2, 16, dtype=torch.bool))
