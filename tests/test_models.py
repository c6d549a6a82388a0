"""The compact families against the model contract: shapes, determinism, losses, errors."""

from __future__ import annotations

import pytest
import torch

import latentflow as lf
from latentflow.models.mae import patchify, random_masking, unpatchify
from tests.model_tester import LatentModelTesterMixin

TINY = {"block_out_channels": [8, 16], "norm_num_groups": 4, "latent_channels": 4}
MLP = {"architecture": "mlp", "sample_size": 16, "hidden_dims": [32], "latent_dim": 8}


def build(kind: str, **overrides):
    configs = {
        "ae_conv": (lf.AutoencoderModel, lf.AutoencoderConfig, TINY),
        "ae_mlp": (lf.AutoencoderModel, lf.AutoencoderConfig, MLP),
        "vae": (lf.VariationalAutoencoderModel, lf.VariationalAutoencoderConfig, TINY),
        "vae_mlp": (lf.VariationalAutoencoderModel, lf.VariationalAutoencoderConfig, MLP),
        "beta_vae": (lf.BetaVAEModel, lf.BetaVAEConfig, TINY),
        "mae": (lf.MaskedAutoencoderModel, lf.MaskedAutoencoderConfig,
                {"image_size": 16, "patch_size": 4, "embed_dim": 16, "num_heads": 2, "decoder_embed_dim": 8, "decoder_num_heads": 2}),
    }
    model_cls, config_cls, base = configs[kind]
    torch.manual_seed(0)
    return model_cls(config_cls.from_dict({**base, **overrides})).eval()


# ---- every family through the shared contract (tests/model_tester.py) ----------------------------
class TestAutoencoderConv(LatentModelTesterMixin):
    model_class = lf.AutoencoderModel
    other_sizes = ((32, 16),)
    expected_latent_shape = (4, 8, 8)

    def get_init_dict(self):
        return dict(TINY)


class TestAutoencoderMLP(LatentModelTesterMixin):
    model_class = lf.AutoencoderModel
    expected_latent_shape = (8,)

    def get_init_dict(self):
        return dict(MLP)

    def test_bad_input_is_a_clear_error(self):
        super().test_bad_input_is_a_clear_error()
        with pytest.raises(lf.InputError, match="16x16 inputs"):
            self.build().encode(torch.rand(1, 3, 32, 32))


class TestVAE(LatentModelTesterMixin):
    model_class = lf.VariationalAutoencoderModel
    encoder_output_class = lf.VariationalEncoderOutput
    other_sizes = ((32, 16),)
    expected_latent_shape = (4, 8, 8)
    loss_terms = {"rec", "kl", "elbo_nats"}

    def get_init_dict(self):
        return dict(TINY)

    def forward_kwargs(self):
        return {"generator": torch.Generator().manual_seed(1)}

    def expected_loss(self, model, x, out):
        return out.losses["rec"] + out.losses["kl"] / x[0].numel()  # kl_weight None: the ELBO's balance


class TestVAEMLP(TestVAE):
    other_sizes = ()
    expected_latent_shape = (8,)

    def get_init_dict(self):
        return dict(MLP)


class TestBetaVAE(TestVAE):
    model_class = lf.BetaVAEModel

    def expected_loss(self, model, x, out):
        return out.losses["rec"] + 4.0 * out.losses["kl"] / x[0].numel()  # beta (default 4) times the ELBO's balance


class TestMAE(LatentModelTesterMixin):
    model_class = lf.MaskedAutoencoderModel
    encoder_output_class = lf.MaskedEncoderOutput
    expected_latent_shape = (17, 16)

    def get_init_dict(self):
        return {"image_size": 16, "patch_size": 4, "embed_dim": 16, "num_heads": 2, "decoder_embed_dim": 8, "decoder_num_heads": 2}

    def forward_kwargs(self):
        return {"noise": torch.rand(self.input_shape[0], 16, generator=torch.Generator().manual_seed(1))}

    def expected_rec(self, model, x, out):  # mean over the elements of the masked patches only
        per_patch = (out.pred - patchify(x, 4)).pow(2).mean(-1)
        return (per_patch * out.mask).sum() / out.mask.sum()


def test_vae_default_loss_is_the_negative_elbo_per_element():
    """kl_weight None keeps the summed ELBO's balance: loss * (C*H*W) == elbo_nats (error summed + KL)."""
    model = build("vae")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    out = model(x, generator=torch.Generator().manual_seed(1))
    summed = (out.reconstruction - x).pow(2).flatten(1).sum(1).mean()
    torch.testing.assert_close(out.losses["elbo_nats"], summed + out.losses["kl"])
    torch.testing.assert_close(out.loss * x[0].numel(), out.losses["elbo_nats"])
    fixed = build("vae", kl_weight=0.01)(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fixed.loss, fixed.losses["rec"] + 0.01 * fixed.losses["kl"])
    with pytest.raises(lf.ConfigError, match="kl_weight must be >= 0 or None"):
        lf.VariationalAutoencoderConfig(kl_weight=-1.0)


@pytest.mark.parametrize("kind", ["vae", "vae_mlp", "beta_vae"])
def test_same_seed_same_sample(kind):
    model = build(kind)
    a = model.sample(3, generator=torch.Generator().manual_seed(7))
    b = model.sample(3, generator=torch.Generator().manual_seed(7))
    c = model.sample(3, generator=torch.Generator().manual_seed(8))
    assert a.shape == (3, 3, 16 if "mlp" in kind else 32, 16 if "mlp" in kind else 32)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_posterior_sample_reproducible_and_kl_matches_closed_form():
    model = build("vae")
    post = model.encode(torch.rand(2, 3, 16, 16)).latent_dist
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(post.sample(g()), post.sample(g()))
    expected = 0.5 * (post.mean**2 + post.var - 1 - post.logvar).flatten(1).sum(1)
    torch.testing.assert_close(post.kl(), expected)
    assert torch.allclose(post.kl(post), torch.zeros(2), atol=1e-5)


@pytest.mark.parametrize("kind", ["ae_conv", "mae"])
def test_no_prior_means_clear_error(kind):
    with pytest.raises(lf.NotSupportedError, match="no prior"):
        build(kind).sample(2)
    with pytest.raises(lf.NotSupportedError, match="quantized"):
        build(kind).tokenize(torch.rand(1, 3, 16, 16))


def test_beta_one_equals_vae_loss():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    vae = build("vae")
    beta = build("beta_vae", beta=1.0)
    beta.load_state_dict(vae.state_dict(), strict=False)
    a = vae(x, generator=torch.Generator().manual_seed(1))
    b = beta(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.loss, b.loss)
    beta4 = build("beta_vae", beta=4.0)
    beta4.load_state_dict(vae.state_dict(), strict=False)
    c = beta4(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(c.loss, a.losses["rec"] + 4.0 * a.losses["kl"] / x[0].numel())


def test_beta_vae_capacity_anneals_with_steps():
    model = build("beta_vae", capacity_max=10.0, capacity_steps=4, gamma=2.0).train()
    x = torch.rand(2, 3, 16, 16)
    caps = [model(x).losses["capacity"].item() for _ in range(6)]
    assert caps == [0.0, 2.5, 5.0, 7.5, 10.0, 10.0]
    out = model(x)
    torch.testing.assert_close(out.loss, out.losses["rec"] + 2.0 * (out.losses["kl"] - 10.0).abs() / x[0].numel())


def test_mae_patchify_roundtrip_and_masking():
    x = torch.randn(2, 3, 16, 16)
    p = patchify(x, 4)
    assert p.shape == (2, 16, 48)
    assert torch.equal(unpatchify(p, 4, 3), x)
    tokens = torch.arange(2 * 16, dtype=torch.float32).view(2, 16, 1)
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(0))
    kept, mask, ids_restore = random_masking(tokens, 0.75, noise)
    assert kept.shape == (2, 4, 1) and mask.sum(1).tolist() == [12.0, 12.0]
    # ids_restore undoes the shuffle: put kept tokens back, fill the rest, gather -> original order
    ids_shuffle = torch.argsort(noise, dim=1)
    shuffled = torch.gather(tokens, 1, ids_shuffle.unsqueeze(-1))
    assert torch.equal(torch.gather(shuffled, 1, ids_restore.unsqueeze(-1)), tokens)
    # the mask marks exactly the tokens not kept
    kept_ids = ids_shuffle[:, :4]
    assert torch.equal(mask.gather(1, kept_ids), torch.zeros(2, 4))


def test_mae_same_noise_same_mask_and_loss_on_masked_only():
    model = build("mae")
    x = torch.rand(2, 3, 16, 16)
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(0))
    a, b = model(x, noise=noise), model(x, noise=noise)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.loss, b.loss)
    assert a.pred.shape == (2, 16, 48) and a.ids_restore.shape == (2, 16)
    manual = ((a.pred - patchify(x, 4)) ** 2).mean(-1)
    torch.testing.assert_close(a.loss, (manual * a.mask).sum() / a.mask.sum())
    norm = build("mae", norm_pix_loss=True)(x, noise=noise)
    assert not torch.allclose(norm.loss, a.loss)


def test_normalize_roundtrip_scale_shift_and_per_channel():
    model = build("vae", scaling_factor=0.5, shift_factor=0.25)
    z = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(model.normalize_latents(z), (z - 0.25) * 0.5)
    torch.testing.assert_close(model.denormalize_latents(model.normalize_latents(z)), z)
    model = build("vae", latents_mean=[0.1, 0.2, 0.3, 0.4], latents_std=[1.0, 2.0, 3.0, 4.0], scaling_factor=2.0)
    n = model.normalize_latents(z)
    torch.testing.assert_close(n[:, 1], (z[:, 1] - 0.2) / 2.0 * 2.0)
    torch.testing.assert_close(model.denormalize_latents(n), z)


# ---- bad input: clear errors that say what was expected and what was got (channels, rank: the mixin) ----
def test_size_not_multiple_of_downsampling():
    with pytest.raises(lf.InputError, match="multiple of 2, got: \\(15, 16\\)"):
        build("vae").encode(torch.rand(1, 3, 15, 16))
    with pytest.raises(lf.InputError, match="16x16"):
        build("mae").encode(torch.rand(1, 3, 32, 32))


def test_non_finite_input_with_check_finite():
    x = torch.rand(1, 3, 16, 16)
    x[0, 0, 0, 0] = float("nan")
    build("vae").encode(x)  # off by default: no error
    with pytest.raises(lf.InputError, match="must be finite, got 1 NaN/Inf"):
        build("vae", check_finite=True).encode(x)


def test_config_unknown_key_and_wrong_type():
    with pytest.raises(lf.ConfigError, match="unknown key 'latent_chanels'"):
        lf.VariationalAutoencoderConfig.from_dict({"latent_chanels": 4})
    with pytest.raises(lf.ConfigError, match="latent_channels must be int, got: '4'"):
        lf.VariationalAutoencoderConfig.from_dict({"latent_channels": "4"})
    with pytest.raises(lf.ConfigError, match="latent_channels must be > 0, got: -3"):
        lf.VariationalAutoencoderConfig(latent_channels=-3)
    with pytest.raises(lf.ConfigError, match="architecture"):
        lf.AutoencoderConfig.from_dict({"architecture": "transformer"})
    with pytest.raises(lf.ConfigError, match="expects model_type 'vae', got: 'mae'"):
        lf.VariationalAutoencoderConfig.from_dict({"model_type": "mae"})


def test_config_dict_roundtrip_and_metadata_keys_ignored():
    cfg = lf.BetaVAEConfig(beta=2.0, block_out_channels=(8, 16), latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    d = cfg.to_dict()
    assert d["model_type"] == "beta_vae" and d["block_out_channels"] == [8, 16]
    assert lf.AutoConfig.from_dict({**d, "_class_name": "x", "_latentflow_version": "0"}) == cfg


def test_mae_checkpoints_of_the_old_block_names_still_load(tmp_path):
    """MAE checkpoints written before the shared TransformerBlock (``blocks.N.mlp``) load into ``ffn``."""
    from safetensors.torch import save_file

    model = build("mae")
    model.save_pretrained(tmp_path)
    old = {k.replace(".ffn.", ".mlp."): v for k, v in model.state_dict().items()}
    assert "blocks.0.mlp.0.weight" in old
    save_file(old, str(tmp_path / "model.safetensors"))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(lf.AutoModel.from_pretrained(str(tmp_path)).reconstruct(x), model.reconstruct(x))
