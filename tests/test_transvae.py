"""TransVAE: shapes across resolutions, save/load, RoPE relative property, DC path, errors."""

from __future__ import annotations

import pytest
import torch

from latentflow import VariationalEncoderOutput
from latentflow.errors import ConfigError, InputError
from latentflow.models.layers import apply_rope, rope_2d_angles
from latentflow.models.transvae import (
    TransVAEConfig,
    TransVAEModel,
    channel_to_space,
    space_to_channel,
    transvae_config,
    transvae_tiny,
)
from tests.model_tester import LatentModelTesterMixin

TINY = {"block_out_channels": [8, 16], "transformer_dim": 32, "transformer_depths": [1, 1], "num_heads": 2,
        "latent_channels": 4, "norm_num_groups": 4}


@pytest.fixture(scope="module", params=["rope", "absolute", "learned"])
def model(request):
    torch.manual_seed(0)
    return TransVAEModel(TransVAEConfig.from_dict({**TINY, "pos_embedding": request.param})).eval()


@pytest.mark.parametrize("hw", [(32, 32), (64, 64), (16, 48)])
def test_shapes_at_several_resolutions(model, hw):
    x = torch.rand(2, 3, *hw) * 2 - 1
    with torch.no_grad():
        enc = model.encode(x)
        assert enc.latents.shape == (2, *model.latent_shape(*hw)) == (2, 4, hw[0] // 8, hw[1] // 8)
        assert enc.latent_dist.logvar.shape == enc.latents.shape
        assert model.decode(enc.latents).sample.shape == x.shape


class TestTransVAE(LatentModelTesterMixin):
    """The shared contract (tests/model_tester.py), at the training size and two others."""

    model_class = TransVAEModel
    encoder_output_class = VariationalEncoderOutput
    input_shape = (2, 3, 32, 32)
    other_sizes = ((64, 32), (16, 48))
    expected_latent_shape = (4, 4, 4)
    loss_terms = {"rec", "kl"}
    pos_embedding = "rope"

    def get_init_dict(self):
        return {**TINY, "pos_embedding": self.pos_embedding}

    def forward_kwargs(self):
        return {"generator": torch.Generator().manual_seed(0)}

    def expected_loss(self, model, x, out):
        return out.losses["rec"] + 1e-6 * out.losses["kl"]  # default kl_weight, against the per-element mean


class TestTransVAEAbsolute(TestTransVAE):
    pos_embedding = "absolute"  # a table resized to other grids: save/load is compared at three sizes


class TestTransVAELearned(TestTransVAE):
    pos_embedding = "learned"


def test_rope_depends_only_on_offset():
    torch.manual_seed(0)
    dh, h, w = 16, 6, 7
    angles = rope_2d_angles(h, w, dh, base=100.0)
    q, k = torch.randn(dh), torch.randn(dh)
    rq = apply_rope(q.expand(h * w, dh), angles)  # q placed at every position
    rk = apply_rope(k.expand(h * w, dh), angles)
    dots = rq @ rk.T  # (N, N): q at position i, k at position j
    pos = [(i // w, i % w) for i in range(h * w)]
    by_offset: dict = {}
    for i, (yi, xi) in enumerate(pos):
        for j, (yj, xj) in enumerate(pos):
            by_offset.setdefault((yi - yj, xi - xj), []).append(dots[i, j])
    for values in by_offset.values():
        assert torch.allclose(torch.stack(values), values[0], atol=1e-5)
    assert not torch.allclose(dots[0, 1], dots[0, w])  # row and column offsets differ
    assert torch.allclose(rq.norm(dim=1), q.norm().expand(h * w), atol=1e-5)  # a rotation


def test_dc_path_is_invertible_and_shaped():
    x = torch.randn(2, 3, 8, 6)
    down = space_to_channel(x, 12)  # 3 * 4 channels: a bijection
    assert down.shape == (2, 12, 4, 3)
    assert torch.equal(channel_to_space(down, 3), x)
    avg = space_to_channel(x, 6)  # averages channel pairs
    assert avg.shape == (2, 6, 4, 3)
    assert torch.allclose(avg.mean(), x.mean(), atol=1e-6)
    up = channel_to_space(torch.randn(2, 8, 4, 4), 4)  # duplicates to 16 channels then shuffles
    assert up.shape == (2, 4, 8, 8)


def test_variants_and_compression():
    cfg = transvae_config("tiny")
    assert cfg.downsample_factor == 8 and cfg.compression_ratio == 12.0
    assert transvae_config("base").downsample_factor == 16
    assert transvae_tiny(latent_channels=8).config.latent_channels == 8
    with pytest.raises(ConfigError, match="unknown TransVAE variant"):
        transvae_config("huge")


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"transformer_dim": 30}, "multiple of 4"),
        ({"latent_channels": 0}, "latent_channels must be > 0"),
        ({"latent_channels": 5}, "divisible by latent_channels"),
        ({"pos_embedding": "alibi"}, "pos_embedding"),
        ({"sample_size": 20}, "multiple of the downsample factor"),
        ({"depth": 3}, "unknown key 'depth'"),
    ],
)
def test_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        TransVAEConfig.from_dict({**TINY, **bad})


def test_input_errors(model):
    with pytest.raises(InputError, match="multiple of 8"):
        model.encode(torch.zeros(1, 3, 30, 32))
