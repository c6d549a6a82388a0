"""The text-conditioned flow prior (issue #20 item 7): cross-attention that ignores pads, conditioning dropout to
a learned null text, classifier-free guidance exactly as its formula, and save -> load -> equal velocities."""

from __future__ import annotations

import pytest
import torch

from latentflow.errors import ConfigError, InputError
from latentflow.priors.base import load_prior
from latentflow.priors.flow import FlowConfig, FlowPrior


def prior(**kw) -> FlowPrior:
    torch.manual_seed(0)
    p = FlowPrior(FlowConfig(latent_shape=(4, 4, 4), patch_size=2, hidden_size=32, num_layers=2, num_heads=4, text_dim=16, **kw))
    with torch.no_grad():  # zero-initialized outputs (adaLN-Zero) would hide every difference
        for param in p.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return p.eval()


def test_pads_change_nothing_and_the_text_does():
    p, x, t = prior(), torch.randn(2, 4, 4, 4), torch.rand(2)
    text = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    v = p.velocity(x, t, text=p._text(text, mask, 2))
    trimmed = p.velocity(x[:1], t[:1], text=p._text(text[:1, :3], mask[:1, :3], 1))
    garbage = text.clone()
    garbage[0, 3:] = 1e3  # pads hold anything: masked out of cross-attention and of the pooled vector
    assert torch.allclose(v[:1], trimmed, atol=1e-5)
    assert torch.allclose(v, p.velocity(x, t, text=p._text(garbage, mask, 2)), atol=1e-5)
    assert not torch.allclose(v, p.velocity(x, t, text=p._text(torch.randn(2, 5, 16), mask, 2)), atol=1e-3)


def test_dropout_uses_the_null_text_and_guidance_is_its_formula():
    p, x, t = prior(), torch.randn(3, 4, 4, 4), torch.rand(3)
    text, mask = torch.randn(3, 4, 16), torch.ones(3, 4, dtype=torch.bool)
    dropped = p.velocity(x, t, text=p._text(text, mask, 3, drop=torch.tensor([True, False, True])))
    null = p.velocity(x, t, text=p._text(None, None, 3))
    cond = p.velocity(x, t, text=p._text(text, mask, 3))
    assert torch.allclose(dropped[[0, 2]], null[[0, 2]], atol=1e-6) and torch.allclose(dropped[1], cond[1], atol=1e-6)
    assert torch.allclose(p._guided(x, t, None, text, mask, 3.0), null + 3.0 * (cond - null), atol=1e-5)
    one = p.sample(3, generator=torch.Generator().manual_seed(1), steps=2, text=text, text_mask=mask)
    again = p.sample(3, generator=torch.Generator().manual_seed(1), steps=2, text=text, text_mask=mask, guidance_scale=1.0)
    assert torch.equal(one, again) and one.shape == (3, 4, 4, 4)


def test_loss_trains_the_text_path_and_round_trips(tmp_path):
    p = prior(text_dropout=0.5).train()
    loss, _ = p.loss(torch.randn(4, 4, 4, 4), text=torch.randn(4, 6, 16), text_mask=torch.ones(4, 6, dtype=torch.bool))
    loss.backward()
    assert p.net.text_proj[1].weight.grad.abs().sum() > 0 and p.net.blocks[0].cross.q.weight.grad.abs().sum() > 0
    p.eval().save_pretrained(str(tmp_path / "p"))
    q = load_prior(str(tmp_path / "p")).eval()
    x, t, text = torch.randn(2, 4, 4, 4), torch.rand(2), torch.randn(2, 3, 16)
    assert torch.equal(p.velocity(x, t, text=p._text(text, None, 2)), q.velocity(x, t, text=q._text(text, None, 2)))


def test_clear_errors():
    with pytest.raises(ConfigError, match="needs network='dit'"):
        FlowConfig(latent_shape=(4, 4, 4), network="unet", text_dim=8)
    with pytest.raises(InputError, match=r"text must be \(B, L, 16\)"):
        prior().loss(torch.randn(2, 4, 4, 4), text=torch.randn(2, 3, 8))
    with pytest.raises(InputError, match="without text conditioning"):
        FlowPrior(FlowConfig(latent_shape=(4, 4, 4), patch_size=2, hidden_size=32)).loss(torch.randn(1, 4, 4, 4), text=torch.randn(1, 2, 8))
