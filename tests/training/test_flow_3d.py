"""The flow prior over video latents (C, T', h, w): 3D patches, 3D sin-cos positions, training, sampling,
checkpoints; and the image path it must leave unchanged."""

from __future__ import annotations

import pytest
import torch

from latentflow.errors import ConfigError, InputError
from latentflow.priors import build_prior, load_prior
from latentflow.priors.flow import FlowConfig, FlowPrior, patchify, sincos_3d, unpatchify

VIDEO = {"latent_shape": [4, 3, 8, 8], "patch_size": [1, 2, 2], "hidden_size": 32, "num_layers": 2, "num_heads": 2}


def tiny_video_prior(**overrides) -> FlowPrior:
    torch.manual_seed(0)
    return build_prior("flow", {**VIDEO, **overrides})


@pytest.mark.parametrize("shape,patch", [((2, 4, 3, 8, 8), (1, 2, 2)), ((2, 4, 4, 8, 6), (2, 4, 3)),
                                         ((3, 2, 8, 12), (2, 4)), ((1, 5, 1, 4, 4), (1, 1, 1))])
def test_patchify_round_trips_exactly(shape, patch):
    x = torch.randn(shape)
    tokens = patchify(x, patch)
    grid = tuple(s // p for s, p in zip(shape[2:], patch))
    assert tokens.shape == (shape[0], torch.Size(grid).numel(), shape[1] * torch.Size(patch).numel())
    assert torch.equal(unpatchify(tokens, grid, patch, shape[1]), x)


def test_patch_tokens_are_what_the_strided_conv_embeds():
    """The DiT embeds with a strided conv: it must equal a linear map of exactly these patch tokens
    (raster order (t, h, w), features (pt, ph, pw, C)), or unpatchify would put velocities elsewhere."""
    net = tiny_video_prior().net
    x = torch.randn(2, 4, 3, 8, 8)
    weight = net.embed.weight.permute(0, 2, 3, 4, 1).reshape(net.embed.out_channels, -1)  # (d, pt*ph*pw*C)
    expected = patchify(x, (1, 2, 2)) @ weight.T + net.embed.bias
    torch.testing.assert_close(net.embed(x).flatten(2).transpose(1, 2), expected, atol=1e-5, rtol=1e-5)


def test_image_unpatchify_is_the_former_2d_layout():
    """Image checkpoints keep their meaning: the 2D path's token layout is the one the DiT always had."""
    b, c, gh, gw, p = 2, 4, 3, 5, 2
    tokens = torch.randn(b, gh * gw, p * p * c)
    former = tokens.view(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, gh * p, gw * p)
    assert torch.equal(unpatchify(tokens, (gh, gw), (p, p), c), former)


def test_3d_sincos_equals_cogvideox_embedding():
    from diffusers.models.embeddings import get_3d_sincos_pos_embed

    ref = get_3d_sincos_pos_embed(64, (5, 3), 2)  # diffusers takes spatial (W, H): (T, H*W, D)
    torch.testing.assert_close(sincos_3d(64, 2, 3, 5), ref.reshape(-1, 64).float(), atol=1e-6, rtol=0)


def test_video_positions_follow_the_grid_and_add_no_parameters():
    prior = tiny_video_prior()
    image = build_prior("flow", {**VIDEO, "latent_shape": [4, 8, 8], "patch_size": 2})
    assert not any("pos" in k for k in prior.state_dict()) and "net.pos" in image.state_dict()
    pos = prior.net.position(2, 4, 4)
    assert pos.shape == (1, 32, 32) and len({tuple(r.tolist()) for r in pos[0]}) == 32  # every token its own position


def test_int_patch_size_means_one_frame_per_token_for_video():
    assert FlowConfig(latent_shape=(4, 3, 8, 8), patch_size=2, hidden_size=32).patch == (1, 2, 2)
    assert FlowConfig(latent_shape=(4, 8, 8), patch_size=2).patch == (2, 2)
    cfg = FlowConfig.from_dict({**VIDEO, "patch_size": [1, 2, 2]})
    assert cfg.patch == (1, 2, 2) and FlowConfig.from_dict(cfg.to_dict()) == cfg


def test_a_video_prior_trains_on_a_repeated_batch():
    """The same latents, noise and times every step: a plain regression, whose loss must fall."""
    prior = tiny_video_prior()
    x = torch.randn(4, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(prior.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        torch.manual_seed(0)  # the same x0 and t in prior.loss
        loss, _ = prior.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.85 * losses[0] and losses[10] < losses[0], losses


def test_video_sample_shapes_and_other_buckets():
    prior = tiny_video_prior().eval()
    z = prior.sample(3, generator=torch.Generator().manual_seed(0), steps=2)
    assert z.shape == (3, 4, 3, 8, 8) and z.dtype == torch.float32 and torch.isfinite(z).all()
    other = prior.sample(2, steps=2, latent_size=(5, 4, 6))  # another (T', h, w) bucket
    assert other.shape == (2, 4, 5, 4, 6)
    assert prior.validation(torch.randn(2, 4, 2, 6, 4))["flow_loss"] > 0


def test_video_save_load_gives_equal_outputs(tmp_path):
    prior = tiny_video_prior(num_classes=2)
    with torch.no_grad():  # zero-initialised output layers (adaLN-Zero) would make any two flows agree
        for p in prior.parameters():
            p.add_(0.05 * torch.randn_like(p))
    prior.eval().save_pretrained(str(tmp_path))
    loaded = load_prior(str(tmp_path))
    assert type(loaded) is FlowPrior and loaded.config == prior.config and loaded.config.patch == (1, 2, 2)
    x = torch.randn(2, 4, 3, 8, 8)
    assert loaded.validation(x, seed=3) == prior.validation(x, seed=3)
    a = prior.sample(2, labels=torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0), steps=3)
    b = loaded.sample(2, labels=torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0), steps=3)
    assert torch.equal(a, b) and a.abs().sum() > 0


@pytest.mark.parametrize("config,match", [
    ({"patch_size": [2, 2]}, "patch_size must be an int or 3 positive sizes"),
    ({"patch_size": [2, 2, 2]}, r"patch_size \(2, 2, 2\) must divide the latent size 3x8x8"),
    ({"hidden_size": 40}, "must be divisible by 16, got: 40"),
    ({"network": "unet"}, "network='unet' takes image latents"),
    ({"latent_shape": [4, 1, 3, 8, 8]}, "must be \\(C, h, w\\), \\(C, T', h, w\\) or \\(C, t\\)"),
])
def test_bad_video_configs_name_the_rule(config, match):
    with pytest.raises(ConfigError, match=match):
        build_prior("flow", {**VIDEO, **config})


def test_wrong_latents_are_refused_with_the_expected_shape():
    prior = tiny_video_prior()
    with pytest.raises(InputError, match=r"\(B, 4, T', h, w\).*got \(2, 4, 8, 8\)"):
        prior.loss(torch.randn(2, 4, 8, 8))
    with pytest.raises(InputError, match="divisible by"):
        prior.loss(torch.randn(2, 4, 3, 7, 8))
