"""TiTok: the shared model contract, tokens (B, K) <-> images, the index dtype rule, config errors, presets."""

from __future__ import annotations

import pytest
import torch

import latentflow as lf
from latentflow.errors import ConfigError, InputError
from latentflow.models.titok import PRESETS, TiTokConfig, TiTokModel, titok_s_128
from latentflow.quantizers.base import index_dtype_for
from tests.model_tester import LatentModelTesterMixin

TINY = {"image_size": 16, "patch_size": 4, "num_latent_tokens": 6, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
        "codebook_size": 64, "codebook_dim": 8}


def tiny(**overrides) -> TiTokModel:
    torch.manual_seed(0)
    return TiTokModel(TiTokConfig.from_dict({**TINY, **overrides})).eval()


def images(n: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- the shared contract (tests/model_tester.py) -----------------------------------------------
class TestTiTok(LatentModelTesterMixin):
    model_class = TiTokModel
    encoder_output_class = lf.QuantizedEncoderOutput
    expected_latent_shape = (6, 8)  # (K, codebook_dim): 1D tokens
    loss_terms = {"rec", "commitment", "codebook"}

    def get_init_dict(self):
        return dict(TINY)

    def expected_loss(self, model, x, out):  # quantizer terms enter as reported (already times beta)
        return out.losses["rec"] + out.losses["commitment"] + out.losses["codebook"]


class TestTiTokDecoderWidthAndLFQ(TestTiTok):
    """A decoder of its own width and depth, and a lookup-free bottleneck (entropy terms), L1 reconstruction."""

    loss_terms = {"rec", "commitment", "entropy"}

    def get_init_dict(self):
        return {**TINY, "decoder_hidden_size": 16, "decoder_num_layers": 2, "decoder_num_heads": 4,
                "quantizer": {"name": "lfq", "configuration": {"entropy_weight": 0.05}}, "reconstruction_loss": "l1"}

    def expected_loss(self, model, x, out):
        return out.losses["rec"] + out.losses["commitment"] + out.losses["entropy"]


# ---- tokens ---------------------------------------------------------------------------------------
def test_tokens_are_one_dimensional_and_round_trip():
    model = tiny()
    model.train()(images(seed=1))  # state that training moves (nothing for plain VQ) must not matter in eval
    model.eval()
    x = images()
    with torch.no_grad():
        enc = model.encode(x)
        tokens = model.tokenize(x)
    assert tokens.shape == (2, 6) and tokens.dtype == torch.uint8 == index_dtype_for(64)
    assert torch.equal(tokens.long(), enc.indices)
    assert enc.latents.shape == enc.pre_quant.shape == (2, 6, 8)
    # indices_to_codes is the exact inverse: the codes are the quantized tokens, bit for bit
    assert torch.equal(model.quantizer.indices_to_codes(tokens), enc.latents)
    with torch.no_grad():
        images_back = model.detokenize(tokens)
    assert images_back.shape == x.shape
    assert torch.equal(images_back, model.reconstruct(x))
    assert torch.equal(model.detokenize(tokens.long()), images_back)  # any integer dtype decodes


def test_index_dtype_follows_the_codebook_size():
    model = tiny(codebook_size=1000, quantizer={"name": "vq", "configuration": {"cosine": False}})
    assert model.tokenize(images()).dtype == torch.int16 == index_dtype_for(1000)
    model = tiny(codebook_size=2**16, quantizer={"name": "lfq"}, codebook_dim=16)
    tokens = model.tokenize(images())
    assert tokens.dtype == torch.int32 and int(tokens.max()) < 2**16
    assert torch.equal(model.quantizer.indices_to_codes(tokens), model.encode(images()).latents)


def test_the_decoder_reads_every_token():
    """Each of the K tokens carries information: changing one changes the image."""
    model = tiny()
    tokens = model.tokenize(images()).long()
    base = model.detokenize(tokens)
    for k in range(tokens.shape[1]):
        changed = tokens.clone()
        changed[:, k] = (changed[:, k] + 1) % model.codebook_size
        assert not torch.allclose(model.detokenize(changed), base), k


def test_latent_tokens_are_learned_queries_that_see_the_image():
    model = tiny()
    a, b = model.encode(images(seed=0)).pre_quant, model.encode(images(seed=3)).pre_quant
    assert not torch.allclose(a, b)
    assert model.encoder.latent_tokens.shape == (1, 6, 32)


def test_gradients_reach_the_encoder_through_the_quantizer():
    model = tiny().train()
    model(images()).loss.backward()
    assert model.encoder.patch_embed.weight.grad.abs().sum() > 0
    assert model.encoder.latent_tokens.grad.abs().sum() > 0


# ---- errors -------------------------------------------------------------------------------------------
def test_inputs_of_another_size_are_a_clear_error():
    model = tiny()
    with pytest.raises(InputError, match=r"position embeddings for 16x16 inputs.*got: \(32, 32\)"):
        model.encode(images(size=32))
    with pytest.raises(InputError, match=r"tokens of shape \(B, 6, 8\)"):
        model.decode(torch.rand(2, 5, 8))
    with pytest.raises(InputError, match=r"indices of shape \(B, 6\)"):
        model.detokenize(torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(InputError, match=r"indices must lie in \[0, 64\)"):
        model.detokenize(torch.full((2, 6), 64))


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="image_size must be a multiple of patch_size, got: 30 and 4"):
        TiTokConfig.from_dict({**TINY, "image_size": 30})
    with pytest.raises(ConfigError, match=r"quantizer codebook_size \(32\) must equal codebook_size \(64\)"):
        TiTokConfig.from_dict({**TINY, "quantizer": {"name": "vq", "configuration": {"codebook_size": 32}}})
    with pytest.raises(ConfigError, match=r"quantizer dim \(4\) must equal codebook_dim \(8\)"):
        TiTokConfig.from_dict({**TINY, "quantizer": {"name": "vq", "configuration": {"dim": 4}}})
    with pytest.raises(ConfigError, match="'fsq' has no codebook_size setting"):
        TiTokConfig.from_dict({**TINY, "quantizer": {"name": "fsq", "configuration": {"levels": [8, 8]}}})
    with pytest.raises(ConfigError, match="codebook_size must be a power of two"):
        TiTokConfig.from_dict({**TINY, "codebook_size": 100, "quantizer": {"name": "lfq"}})
    with pytest.raises(ConfigError, match="unknown key 'vit_enc_model_size'"):
        TiTokConfig.from_dict({**TINY, "vit_enc_model_size": "large"})


def test_auto_config_builds_titok_and_the_default_is_the_reference_vq():
    cfg = lf.AutoConfig.for_model("titok", **TINY)
    assert type(cfg) is TiTokConfig
    assert cfg.resolved_quantizer == {"name": "vq", "configuration": {"cosine": True, "dim": 8, "codebook_size": 64}}
    model = lf.AutoModel.from_config(cfg)
    assert type(model) is TiTokModel and model.quantizer.config.cosine and model.quantizer.config.beta == 0.25


@pytest.mark.parametrize("name, shape", [
    ("titok_s_128", (512, 8, 8, 128)), ("titok_b_64", (768, 12, 12, 64)), ("titok_l_32", (1024, 24, 16, 32)),
])
def test_presets_have_the_reference_shapes(name, shape):
    c = TiTokConfig.from_dict(PRESETS[name])
    assert (c.hidden_size, c.num_layers, c.num_heads, c.num_latent_tokens) == shape
    assert (c.image_size, c.patch_size, c.codebook_size, c.codebook_dim) == (256, 16, 4096, 12)


def test_smallest_preset_builds_and_tokenizes_to_128_tokens():
    torch.manual_seed(0)
    model = titok_s_128(num_layers=1, decoder_num_layers=1).eval()  # the S shape, one block each: a fast check
    assert model.latent_shape(256, 256) == (128, 12)
    with torch.no_grad():
        tokens = model.tokenize(torch.rand(1, 3, 256, 256) * 2 - 1)
    assert tokens.shape == (1, 128) and tokens.dtype == torch.int16  # 4096 codes
