"""MAGVIT-2: the shared model contract on images, causal clips, LFQ tokens up to 2^18 codes, config errors."""

from __future__ import annotations

import pytest
import torch

import latentflow as lf
from latentflow.errors import ConfigError, InputError
from latentflow.models.magvit2 import (
    MagvitV2Config,
    MagvitV2Model,
    depth_to_space,
    latent_frame_of,
)
from latentflow.quantizers.base import index_dtype_for
from tests.model_tester import LatentModelTesterMixin

TINY = {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4, "codebook_size": 2**6,
        "temporal_compression": 2}


def tiny(**overrides) -> MagvitV2Model:
    torch.manual_seed(0)
    return MagvitV2Model(MagvitV2Config.from_dict({**TINY, **overrides})).eval()


def clips(n: int = 2, frames: int = 5, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, frames, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- the shared contract (tests/model_tester.py), on images ----------------------------------------------
class TestMagvitV2(LatentModelTesterMixin):
    model_class = MagvitV2Model
    encoder_output_class = lf.QuantizedEncoderOutput
    expected_latent_shape = (6, 8, 8)  # log2(64) bits at H/2 x W/2
    other_sizes = ((8, 24),)
    loss_terms = {"rec", "commitment", "entropy"}

    def get_init_dict(self):
        return dict(TINY)

    def expected_loss(self, model, x, out):  # the LFQ terms enter as reported (already weighted)
        return out.losses["rec"] + out.losses["commitment"] + out.losses["entropy"]

    def expected_rec(self, model, x, out):
        return torch.nn.functional.l1_loss(out.reconstruction, x)


# ---- images and clips --------------------------------------------------------------------------------------
@pytest.mark.parametrize("frames, s, levels, latent_frames", [(1, 2, 2, 1), (3, 2, 2, 2), (5, 2, 2, 3), (9, 4, 3, 3)])
def test_clip_shapes_follow_the_temporal_compression(frames, s, levels, latent_frames):
    model = tiny(temporal_compression=s, block_out_channels=[8, 16, 16][:levels])
    x = clips(frames=frames)
    f = 2 ** (levels - 1)
    with torch.no_grad():
        tokens = model.tokenize(x)
        assert tokens.shape == (2, latent_frames, 16 // f, 16 // f) and latent_frames == (frames - 1) // s + 1
        assert model.encode(x).latents.shape == (2, *model.latent_shape(16, 16, frames=frames))
        assert model.detokenize(tokens).shape == x.shape  # decode returns the input's shape
        assert model.reconstruct(x).shape == x.shape


def test_tokens_round_trip_on_images_and_clips():
    model = tiny()
    model.train()(clips(seed=1))
    model.eval()
    for x in (clips()[:, :, 0], clips()):  # an image batch, then clips
        with torch.no_grad():
            enc = model.encode(x)
            tokens = model.tokenize(x)
            assert tokens.dtype == torch.uint8 == index_dtype_for(64) and torch.equal(tokens.long(), enc.indices)
            assert torch.equal(model.quantizer.indices_to_codes(tokens), enc.latents)  # exact inverse
            assert set(enc.latents.unique().tolist()) <= {-1.0, 1.0}  # LFQ: one sign per bit
            assert torch.equal(model.detokenize(tokens), model.reconstruct(x))


def test_the_first_frame_is_encoded_alone_and_encoding_is_causal():
    model = tiny()
    x = clips(frames=5)
    with torch.no_grad():
        whole = model.encode(x).pre_quant  # (B, bits, 3, h, w)
        alone = model.encode(x[:, :, 0]).pre_quant  # the first frame as an image
        prefix = model.encode(x[:, :, :3]).pre_quant
        later = x.clone()
        later[:, :, 3:] = torch.rand_like(later[:, :, 3:])  # change frames 3 and 4 only
        changed = model.encode(later).pre_quant
    torch.testing.assert_close(alone, whole[:, :, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(prefix, whole[:, :, :2], atol=1e-5, rtol=0)
    torch.testing.assert_close(changed[:, :, :2], whole[:, :, :2], atol=1e-5, rtol=0)  # frames 0..2 feed latents 0, 1
    assert not torch.allclose(changed[:, :, 2], whole[:, :, 2])


def test_decoding_is_causal():
    model = tiny()
    with torch.no_grad():
        z = model.encode(clips(frames=5)).latents  # (B, bits, 3, h, w)
        whole = model.decode(z).sample  # 5 frames
        first_two = model.decode(z[:, :, :2]).sample  # 3 frames
        image = model.decode(z[:, :, 0]).sample
    torch.testing.assert_close(first_two, whole[:, :, :3], atol=1e-5, rtol=0)
    torch.testing.assert_close(image, whole[:, :, 0], atol=1e-5, rtol=0)


def test_every_parameter_learns_from_clips():
    model = tiny().train()
    out = model(clips())
    assert out.reconstruction.shape == (2, 3, 5, 16, 16)
    out.loss.backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]


def test_2_pow_18_codes_use_int32_indices_and_invert_exactly():
    model = tiny(codebook_size=2**18)
    assert model.config.num_bits == 18 and model.quantizer.codebook_size == 2**18
    x = clips(frames=3)
    with torch.no_grad():
        enc = model.encode(x)
        tokens = model.tokenize(x)
    assert tokens.dtype == torch.int32 == index_dtype_for(2**18) and tokens.shape == (2, 2, 8, 8)
    assert 0 <= int(tokens.min()) and int(tokens.max()) < 2**18 and int(tokens.max()) >= 2**15  # needs more than int16
    assert torch.equal(model.quantizer.indices_to_codes(tokens), enc.latents)
    out = model.train()(x)
    assert set(out.losses) == {"rec", "commitment", "entropy"} and torch.isfinite(out.loss)


def test_helpers_map_frames_causally():
    assert latent_frame_of(3, 5, torch.device("cpu")).tolist() == [0, 1, 1, 2, 2]
    assert latent_frame_of(3, 9, torch.device("cpu")).tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert latent_frame_of(1, 1, torch.device("cpu")).tolist() == [0]
    x = torch.arange(2 * 8 * 2 * 1 * 1, dtype=torch.float32).view(2, 8, 2, 1, 1)
    y = depth_to_space(x, temporal=True)  # 1 + 1 frames -> 1 + 2, 1x1 -> 2x2
    assert y.shape == (2, 1, 3, 2, 2)
    assert torch.equal(y[0, 0, 0].flatten(), x[0, 4:8, 0, 0, 0])  # frame 0 keeps only its second phase


# ---- errors and the registry -------------------------------------------------------------------------------
def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"codebook_size must be a power of two >= 2 .*got: 1000; e.g. 512 or 1024"):
        MagvitV2Config.from_dict({**TINY, "codebook_size": 1000})
    with pytest.raises(ConfigError, match=r"temporal_compression must be a power of two up to .* = 2, got: 4"):
        MagvitV2Config.from_dict({**TINY, "temporal_compression": 4})
    with pytest.raises(ConfigError, match="temporal_compression must be a power of two"):
        MagvitV2Config.from_dict({**TINY, "temporal_compression": 3})
    with pytest.raises(ConfigError, match="unknown key 'n_embed'"):
        MagvitV2Config.from_dict({**TINY, "n_embed": 1024})


def test_bad_clips_are_a_clear_error():
    model = tiny()
    with pytest.raises(InputError, match=r"clips of 1 \+ k \* 2 frames .*got: 4 frames; trim to 3"):
        model.encode(clips(frames=4))
    with pytest.raises(InputError, match="spatial size must be a multiple of 2"):
        model.encode(clips(size=15))
    with pytest.raises(InputError, match=r"decode expects latents \(B, 6, h, w\)"):
        model.decode(torch.rand(1, 5, 4, 4))


def test_auto_config_builds_magvit2_with_an_lfq_of_log2_bits():
    cfg = lf.AutoConfig.for_model("magvit2", **TINY)
    assert type(cfg) is MagvitV2Config and cfg.quantizer["name"] == "lfq"
    assert cfg.quantizer["configuration"]["dim"] == 6 and cfg.quantizer["configuration"]["beta"] == 0.25
    assert type(lf.AutoModel.from_config(cfg)) is MagvitV2Model
