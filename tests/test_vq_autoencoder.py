"""Quantized autoencoders: shapes, tokens <-> images, save -> load -> identical outputs, VQ-VAE-2 levels."""

from __future__ import annotations

import pytest
import torch

import latentflow as lf
from latentflow.errors import ConfigError, InputError
from latentflow.models.vq_autoencoder import (
    VectorQuantizedAutoencoderModel,
    VQAutoencoderConfig,
    VQVAE2Config,
    VQVAE2EncoderOutput,
    VQVAE2Model,
    VQVAE2Tokens,
)
from tests.model_tester import LatentModelTesterMixin

QUANTIZERS = {
    "vq_ema": {"name": "vq", "configuration": {"codebook_size": 32, "use_ema": True, "kmeans_init": True, "dead_code_threshold": 1.0}},
    "fsq": {"name": "fsq", "configuration": {"levels": [5, 4, 4, 3]}},
    "lfq": {"name": "lfq", "configuration": {"codebook_size": 16}},
    "residual": {"name": "residual_vq", "configuration": {"num_quantizers": 2, "vq": {"codebook_size": 16}}},
}


def tiny(quantizer: dict, **kw) -> VectorQuantizedAutoencoderModel:
    torch.manual_seed(0)
    cfg = VQAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4, quantizer=quantizer, **kw)
    return VectorQuantizedAutoencoderModel(cfg)


def images(n: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- the shared contract (tests/model_tester.py), with a VQ and an FSQ quantizer -------------------
class TestVQAutoencoderVQ(LatentModelTesterMixin):
    model_class = VectorQuantizedAutoencoderModel
    encoder_output_class = lf.QuantizedEncoderOutput
    other_sizes = ((32, 16),)
    expected_latent_shape = (4, 8, 8)
    loss_terms = {"rec", "commitment", "codebook"}

    def get_init_dict(self):
        return {"block_out_channels": [8, 16], "latent_channels": 4, "norm_num_groups": 4,
                "quantizer": {"name": "vq", "configuration": {"codebook_size": 32, "kmeans_init": True}}}

    def expected_loss(self, model, x, out):  # quantizer terms enter as reported (already times beta)
        return out.losses["rec"] + out.losses["commitment"] + out.losses["codebook"]


class TestVQAutoencoderEMA(TestVQAutoencoderVQ):
    """EMA codebook: state that only training moves must survive save -> load."""

    loss_terms = {"rec", "commitment"}

    def get_init_dict(self):
        return {**super().get_init_dict(), "quantizer": QUANTIZERS["vq_ema"]}

    def expected_loss(self, model, x, out):
        return out.losses["rec"] + out.losses["commitment"]


class TestVQAutoencoderFSQ(TestVQAutoencoderVQ):
    loss_terms = {"rec"}  # FSQ has no loss terms

    def get_init_dict(self):
        return {**super().get_init_dict(), "quantizer": QUANTIZERS["fsq"], "reconstruction_loss": "l1"}

    def expected_loss(self, model, x, out):
        return out.losses["rec"]


class TestVQVAE2(LatentModelTesterMixin):
    model_class = VQVAE2Model
    encoder_output_class = VQVAE2EncoderOutput
    other_sizes = ((32, 16),)
    expected_latent_shape = (8, 8, 8)
    loss_terms = {"rec", "bottom_commitment"}  # FSQ (top) has no loss terms

    def get_init_dict(self):
        return {"block_out_channels": [8, 16], "top_block_out_channels": [16, 16], "latent_channels": 4,
                "norm_num_groups": 4, "quantizer": {"name": "vq", "configuration": {"codebook_size": 32, "use_ema": True}},
                "top_quantizer": {"name": "fsq", "configuration": {"levels": [4, 4, 4, 4]}}}

    def expected_loss(self, model, x, out):
        return out.losses["rec"] + out.losses["bottom_commitment"]


@pytest.mark.parametrize("kind", list(QUANTIZERS))
def test_shapes_losses_and_token_round_trip(kind):
    model = tiny(QUANTIZERS[kind])
    x = images()
    out = model.train()(x)  # one training step moves EMA/k-means state
    assert out.reconstruction.shape == x.shape
    assert "rec" in out.losses and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0, "gradients must reach the encoder through the quantizer"
    model.eval()
    enc = model.encode(x)
    assert enc.latents.shape == (2, *model.latent_shape(16, 16)) == (2, 4, 8, 8)
    assert enc.pre_quant.shape == enc.latents.shape
    levels = (2,) if kind == "residual" else ()
    tokens = model.tokenize(x)
    # the index dtype rule, as every quantized family
    assert tokens.shape == (2, 8, 8, *levels) and tokens.dtype == model.quantizer.index_dtype
    assert torch.equal(tokens.to(model.quantizer.index_dtype).long(), tokens)
    assert torch.equal(model.detokenize(tokens), model.reconstruct(x))
    assert model.latent_kind == "discrete"


def test_vqgan_architecture_reuses_the_ldm_blocks():
    from latentflow.models.ldm_blocks import Decoder, Encoder

    model = tiny(QUANTIZERS["fsq"], architecture="vqgan").eval()
    assert isinstance(model.encoder, Encoder) and isinstance(model.decoder, Decoder)
    x = images()
    assert torch.equal(model.detokenize(model.tokenize(x)), model.reconstruct(x))


def test_vqvae2_two_levels_of_tokens():
    torch.manual_seed(0)
    cfg = VQVAE2Config(block_out_channels=(8, 16), top_block_out_channels=(16, 16), latent_channels=4,
                       quantizer={"name": "vq", "configuration": {"codebook_size": 32, "use_ema": True}},
                       top_quantizer={"name": "fsq", "configuration": {"levels": [4, 4, 4, 4]}})
    model = VQVAE2Model(cfg)
    x = images(size=16)
    out = model.train()(x)
    assert {"rec", "bottom_commitment"} <= set(out.losses)  # FSQ (top) has no loss terms
    model.eval()
    tokens = model.tokenize(x)
    assert isinstance(tokens, VQVAE2Tokens)
    assert tokens.top.shape == (2, 4, 4) and tokens.bottom.shape == (2, 8, 8)
    assert model.encode(x).latents.shape == (2, *model.latent_shape(16, 16)) == (2, 8, 8, 8)
    assert torch.equal(model.detokenize(tokens), model.reconstruct(x))
    assert torch.equal(model.detokenize({"top": tokens.top, "bottom": tokens.bottom}), model.reconstruct(x))
    # the top codes condition the bottom grid: other top tokens change the bottom quantizer's input
    other_top = model.top_quantizer.indices_to_codes((tokens.top + 1) % model.top_quantizer.codebook_size)
    h = model.encoder(x)
    changed = model.bottom_quant_conv(torch.cat([h, model.top_decoder(other_top)], dim=1))
    assert not torch.allclose(changed, model.encode(x).pre_quant)
    with pytest.raises(InputError, match="multiple of 4"):
        model.encode(images(size=10))


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"quantizer dim \(8\) must equal latent_channels \(4\)"):
        VQAutoencoderConfig(latent_channels=4, quantizer={"name": "vq", "configuration": {"dim": 8}})
    with pytest.raises(ConfigError, match="codebook_size must be > 0"):
        VQAutoencoderConfig(quantizer={"name": "vq", "configuration": {"codebook_size": 0}})
    with pytest.raises(ConfigError, match="unknown quantizer"):
        VQAutoencoderConfig(quantizer={"name": "nope"})
