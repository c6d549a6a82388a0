"""Stage-1 loss terms: LPIPS-style perceptual, PatchGAN + LDM adaptive weight, EQ-VAE, VF alignment; EMA; schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from training_helpers import tiny_vae_config

from latentflow.errors import CheckpointError
from latentflow.outputs import DecoderOutput
from latentflow.training.config import TrainAutoencoderConfig
from latentflow.training.discriminator import PatchDiscriminator, adaptive_weight, hinge_d_loss, last_decoder_layer
from latentflow.training.ema import EMA
from latentflow.training.entrypoints import train_autoencoder
from latentflow.training.losses import VFAlignment, equivariance_loss, feature_grid, load_feature_model
from latentflow.training.perceptual import PerceptualLoss, save_perceptual_weights
from latentflow.training.schedule import warmup_cosine

SMALL = ((8,), (16,), (16,))


def test_perceptual_loss_needs_local_weights_and_is_a_distance(tmp_path):
    missing = tmp_path / "lpips.safetensors"
    with pytest.raises(CheckpointError, match=str(missing)):
        PerceptualLoss(str(missing), stages=SMALL)
    save_perceptual_weights(str(missing), stages=SMALL)
    lpips = PerceptualLoss(str(missing), stages=SMALL)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_(True)
    assert torch.allclose(lpips(x, x), torch.zeros(2), atol=1e-7)
    d = lpips(x, y)
    assert d.shape == (2,) and (d > 0).all()
    d.sum().backward()
    assert y.grad.abs().sum() > 0 and all(p.grad is None for p in lpips.parameters())  # frozen network


class NearestDecoder(nn.Module):
    """decode = nearest-neighbour x2 upsampling: exactly equivariant to quarter turns."""

    downsample_factor = 2

    def decode(self, z):
        return DecoderOutput(sample=z.repeat_interleave(2, -2).repeat_interleave(2, -1))


def test_equivariance_loss_is_zero_for_an_equivariant_decoder_and_positive_otherwise():
    model = NearestDecoder()
    z = torch.randn(2, 3, 4, 4)
    x = model.decode(z).sample
    for turns in (1, 2, 3):
        assert float(equivariance_loss(model, x, z, 1.0, turns, "l1")) == 0.0
    assert float(equivariance_loss(model, torch.randn_like(x), z, 1.0, 1, "l1")) > 0
    assert float(equivariance_loss(model, x, z, 0.5, 0, "l2")) >= 0  # scaled latents decode at the scaled size


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    layer = nn.Conv2d(4, 3, 3, padding=1)
    h = torch.randn(2, 4, 16, 16)
    out = layer(h)
    rec = out.abs().sum()
    disc = PatchDiscriminator(3, channels=8, num_layers=2)
    gan = -disc(out).mean()
    w = adaptive_weight(rec, gan, layer.weight)
    g_rec = torch.autograd.grad(rec, layer.weight, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan, layer.weight, retain_graph=True)[0]
    assert torch.isclose(w, g_rec.norm() / (g_gan.norm() + 1e-4))
    assert not w.requires_grad
    assert float(hinge_d_loss(torch.full((1,), 2.0), torch.full((1,), -2.0))) == 0.0  # confident and right: no loss


def test_gan_switches_on_at_disc_start_and_eq_vae_runs_in_training(photo_shards, tmp_path):
    raw = tiny_vae_config(photo_shards, str(tmp_path / "gan"), max_steps=4, checkpoint_every=4)
    raw["loss"].update(disc_weight=0.5, disc_start=2, disc_channels=8, eq_weight=0.5, eq_prob=1.0)
    cfg = TrainAutoencoderConfig.from_dict(raw)
    history = train_autoencoder(cfg)["history"]
    assert ["gan_g" in r for r in history] == [False, False, True, True]  # steps 1, 2 before disc_start
    assert ["gan_d" in r for r in history] == [False, False, True, True]  # D trains from disc_start too
    assert all(r["gan_adaptive_weight"] > 0 for r in history[2:])
    assert all("eq" in r and math.isfinite(r["eq"]) for r in history)
    from latentflow.auto import AutoModel

    assert last_decoder_layer(AutoModel.from_pretrained(str(tmp_path / "gan" / "final"))).ndim == 4


def test_vf_alignment_against_a_frozen_feature_model(tmp_path):
    from latentflow.models.mae import MaskedAutoencoderConfig, MaskedAutoencoderModel

    with pytest.raises(CheckpointError, match="vf_model"):
        load_feature_model(str(tmp_path / "absent"))
    MaskedAutoencoderModel(MaskedAutoencoderConfig(image_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2,
                                                   decoder_embed_dim=16, decoder_num_heads=2)).save_pretrained(str(tmp_path / "mae"))
    vf = VFAlignment(load_feature_model(str(tmp_path / "mae")), latent_channels=4)
    z = torch.randn(2, 4, 8, 8, requires_grad=True)
    loss = vf(z, torch.rand(2, 3, 16, 16) * 2 - 1)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert z.grad.abs().sum() > 0 and vf.proj.weight.grad is not None
    assert [n for n, _ in vf.named_parameters()] == ["proj.weight", "proj.bias"]  # the feature model stays frozen, unsaved
    assert feature_grid(torch.randn(2, 1 + 16, 5)).shape == (2, 5, 4, 4)  # cls token dropped


def test_ema_tracks_weights_and_schedule_warms_up_then_decays():
    model = nn.Linear(2, 2)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # warm-up decay min(0.5, 1/10) = 0.1
    expected = 0.1 * (model.weight - 1.0) + 0.9 * model.weight
    assert torch.allclose(ema.shadow["weight"], expected)
    lrs = [warmup_cosine(s, 1.0, 4, 20, 0.1) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0] and lrs[4] == 1.0
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] > 0.1 - 1e-9
    assert F.mse_loss(torch.tensor(lrs[-1]), torch.tensor(0.1)) < 1e-2
