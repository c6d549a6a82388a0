"""CausalVideoAutoencoderKLModel: parity with diffusers' AutoencoderKLWan both ways, causality, chunking, the contract.

Every model is tiny (widths 8-16, 16-32 px, 5-13 frames) and random; weights are perturbed
away from their init (RMS gains 1) so that every parameter matters in the parity checks.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import latentflow as lf
from latentflow.errors import ConfigError, InputError
from latentflow.models.causal_video_vae import (
    CausalVideoAutoencoderKLConfig,
    CausalVideoAutoencoderKLModel,
    TilingConfig,
    wan21,
)
from latentflow.outputs import VariationalEncoderOutput
from tests.model_tester import LatentModelTesterMixin

ATOL = 1e-4

# (name, diffusers kwargs): 2-4 levels, temporal downsampling at different levels (2x and 4x in time),
# 1-2 res blocks, a decoder narrower than the encoder. diffusers reads clips in chunks of 4 frames whatever
# the temporal factor (and drops the frames past the last 1 + 4k), so clips here have 1 + 4k frames.
CONFIGS = {
    "two_levels_time2x": dict(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[True]),
    "three_levels_time4x": dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, True]),
    "four_levels_wan_shape": dict(base_dim=8, decoder_base_dim=4, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=2,
                                  temperal_downsample=[False, True, True]),
}


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def make_diffusers(seed: int = 0, **kwargs):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(seed)
    z = kwargs["z_dim"]
    return perturb(diffusers.AutoencoderKLWan(latents_mean=[0.0] * z, latents_std=[1.0] * z, **kwargs), seed)


def make_ours(seed: int = 0, **kwargs) -> CausalVideoAutoencoderKLModel:
    torch.manual_seed(seed)
    return perturb(CausalVideoAutoencoderKLModel(CausalVideoAutoencoderKLConfig.from_dict(kwargs)), seed)


def clips(model, latent_frames: int = 3, size: int = 16, batch: int = 1, seed: int = 1) -> torch.Tensor:
    """(batch, 3, 1 + (latent_frames - 1) * s, size, size) in [-1, 1]."""
    t = 1 + (latent_frames - 1) * model.temporal_downsample_factor
    return torch.rand(batch, 3, t, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def assert_parity(ours: CausalVideoAutoencoderKLModel, ref, x: torch.Tensor) -> None:
    with torch.no_grad():
        post = ref.encode(x).latent_dist
        out = ours.encode(x)
        torch.testing.assert_close(out.latent_dist.mean, post.mean, atol=ATOL, rtol=0)
        torch.testing.assert_close(out.latent_dist.logvar, post.logvar, atol=ATOL, rtol=0)
        torch.testing.assert_close(out.latents, post.mean, atol=ATOL, rtol=0)
        z = torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(3))
        expected = ref.decode(z).sample
        got = ours.decode(z).sample
        assert got.shape == (expected.shape if z.shape[2] > 1 else expected.squeeze(2).shape)
        torch.testing.assert_close(got.reshape(expected.shape), expected, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------
# parity with diffusers, both directions
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_diffusers_weights_load_key_for_key_and_match(name):
    ref = make_diffusers(**CONFIGS[name])
    ours = CausalVideoAutoencoderKLModel(CausalVideoAutoencoderKLConfig.from_dict(dict(ref.config))).eval()
    assert list(ours.state_dict()) == list(ref.state_dict())  # key for key, same order
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert (ours.downsample_factor, ours.temporal_downsample_factor) == (
        2 ** (len(ref.config.dim_mult) - 1), 2 ** sum(ref.config.temperal_downsample))
    assert_parity(ours, ref, clips(ours, latent_frames=3, batch=2))
    assert_parity(ours, ref, clips(ours, latent_frames=1))  # a one-frame clip


@pytest.mark.parametrize("name", ["three_levels_time4x", "four_levels_wan_shape"])
def test_our_saved_weights_load_into_diffusers_and_match(name, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    ours = make_ours(seed=4, **CONFIGS[name])
    ours.save_pretrained(tmp_path)
    kwargs = {k: v for k, v in ours.config.to_diffusers_dict().items() if not k.startswith("_")}
    ref = diffusers.AutoencoderKLWan(**kwargs).eval()
    ref.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
    assert_parity(ours, ref, clips(ours, latent_frames=4, batch=2, seed=2))


def test_wan21_preset_is_diffusers_default_architecture():
    diffusers = pytest.importorskip("diffusers")
    config = wan21()
    with torch.device("meta"):
        ours = CausalVideoAutoencoderKLModel(config)
        ref = diffusers.AutoencoderKLWan()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert (ours.downsample_factor, ours.temporal_downsample_factor) == (8, 4)
    assert ours.latent_shape(480, 832, frames=81) == (16, 21, 60, 104)
    assert list(config.latents_mean) == list(ref.config.latents_mean)
    assert ours.normalization.rule == "per_channel" and ours.normalization.std == tuple(ref.config.latents_std)


# ---------------------------------------------------------------------------
# the video contract
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model() -> CausalVideoAutoencoderKLModel:
    return make_ours(**CONFIGS["three_levels_time4x"])


def test_images_are_one_frame_clips(model):
    x = clips(model, latent_frames=1, batch=2)[:, :, 0]  # (B, 3, H, W)
    with torch.no_grad():
        z = model.encode(x).latents
        assert z.shape == (2, 4, 1, 4, 4) == (2, *model.latent_shape(16, 16))
        assert torch.equal(z, model.encode(x.unsqueeze(2)).latents)
        assert model.decode(z).sample.shape == x.shape and model.decode(z[:, :, 0]).sample.shape == x.shape
        assert model.reconstruct(x).shape == x.shape


def test_clip_shapes_and_latent_shape(model):
    x = clips(model, latent_frames=3, size=24)  # (1, 3, 9, 24, 24)
    with torch.no_grad():
        z = model.encode(x).latents
        assert z.shape[1:] == model.latent_shape(24, 24, frames=9) == (4, 3, 6, 6)
        assert model.decode(z).sample.shape == x.shape
        assert model.decode(z).sample.abs().max() <= 1.0  # clamped, as diffusers
    assert model.input_rank == 5 and model.temporal_downsample_factor == 4 and model.latent_channels == 4


def test_encoder_is_causal(model):
    """Changing frame t changes no latent frame before t's own; t's latent frame does change."""
    x = clips(model, latent_frames=4)  # 13 frames; latent frame of pixel frame t: 0 if t == 0 else (t - 1) // 4 + 1
    with torch.no_grad():
        base = model.encode(x).latents
        for t in (0, 1, 4, 5, 9, 12):
            y = x.clone()
            y[:, :, t] = -y[:, :, t]
            z = model.encode(y).latents
            j = 0 if t == 0 else (t - 1) // 4 + 1
            assert torch.equal(z[:, :, :j], base[:, :, :j]), t
            assert not torch.allclose(z[:, :, j], base[:, :, j]), t


def test_decoder_is_causal(model):
    """Changing latent frame j changes no output frame before its first, 1 + (j - 1) * 4."""
    z = torch.randn(1, 4, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = model.decode(z).sample
        for j in (1, 2, 3):
            w = z.clone()
            w[:, :, j] += 1.0
            out = model.decode(w).sample
            first = 1 + (j - 1) * 4
            assert torch.equal(out[:, :, :first], base[:, :, :first]), j
            assert not torch.allclose(out[:, :, first:first + 4], base[:, :, first:first + 4]), j


@pytest.mark.parametrize("chunk", [2, 3, None])
def test_chunked_equals_one_chunk(model, chunk):
    """Chunks of 1 latent frame (Wan's) give what larger chunks and the whole clip give."""
    other = CausalVideoAutoencoderKLModel.from_state_dict(model.config.replace(chunk_latent_frames=chunk), model.state_dict())
    x = clips(model, latent_frames=5)  # 17 frames
    with torch.no_grad():
        a, b = model.encode(x), other.encode(x)
        torch.testing.assert_close(b.latents, a.latents, atol=1e-5, rtol=0)
        torch.testing.assert_close(b.latent_dist.logvar, a.latent_dist.logvar, atol=1e-5, rtol=0)
        torch.testing.assert_close(other.decode(a.latents).sample, model.decode(a.latents).sample, atol=1e-5, rtol=0)


def test_spatial_tiling_is_close_to_the_whole_frame(model):
    x = clips(model, latent_frames=2, size=32)
    tiled = CausalVideoAutoencoderKLModel.from_state_dict(
        model.config.replace(tiling=TilingConfig(tile_size=24, tile_stride=16)), model.state_dict())  # 2 x 2 tiles
    with torch.no_grad():
        full_z = model.encode(x).latents
        full_x = model.decode(full_z).sample
        tiled_z, tiled_x = tiled.encode(x).latents, tiled.decode(full_z).sample
        tiled.enable_tiling(TilingConfig(tile_size=16, tile_stride=8, min_size=32))  # at the threshold: untiled
        assert torch.equal(tiled.encode(x).latents, full_z)
    assert tiled_z.shape == full_z.shape and tiled_x.shape == full_x.shape
    assert not torch.equal(tiled_z, full_z)  # the tiled path really ran
    # Tiles see less context: close, not equal. Measured with these random weights: latents 0.13 std,
    # pixels 0.36 std (the trained models/video-vae-tiny: see its model card for PSNR tiled vs whole).
    assert (tiled_z - full_z).abs().mean() < 0.2 * full_z.std()
    assert (tiled_x - full_x).abs().mean() < 0.5 * full_x.std()
    with pytest.raises(ConfigError, match="multiples of the downsample factor 4, got: 18, 16"):
        tiled.enable_tiling(TilingConfig(tile_size=18, tile_stride=16))


def test_save_load_round_trip_on_clips(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = lf.AutoModel.from_pretrained(str(tmp_path))
    assert type(loaded) is CausalVideoAutoencoderKLModel and loaded.config == model.config
    x = clips(model, latent_frames=3)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x).latents, model.encode(x).latents)
        assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))


def test_forward_on_clips_follows_the_loss_convention():
    model = make_ours(**CONFIGS["two_levels_time2x"]).train()
    x = clips(model, latent_frames=3)  # frames beyond the first reach the temporal convs
    out = model(x, generator=torch.Generator().manual_seed(0))
    assert out.reconstruction.shape == x.shape and set(out.losses) == {"rec", "kl"}
    torch.testing.assert_close(out.losses["rec"], (out.reconstruction - x).abs().mean())
    torch.testing.assert_close(out.loss, out.losses["rec"] + model.config.kl_weight * out.losses["kl"])
    out.loss.backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]


def test_normalization_is_per_channel_from_the_config():
    model = make_ours(**CONFIGS["two_levels_time2x"], latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[2.0, 1.0, 0.5, 1.0])
    norm = model.normalization
    assert norm.rule == "per_channel" and norm.mean == (0.1, -0.2, 0.3, 0.0)
    z = torch.randn(2, 4, 3, 4, 4)
    torch.testing.assert_close(norm.normalize(z)[:, 0], (z[:, 0] - 0.1) / 2.0)
    torch.testing.assert_close(model.denormalize_latents(model.normalize_latents(z)), z)
    assert make_ours(**CONFIGS["two_levels_time2x"]).normalization.rule == "none"


def test_sample_decodes_prior_draws(model):
    a = model.sample(2, generator=torch.Generator().manual_seed(0), height=16, width=16, frames=5)
    b = model.sample(2, generator=torch.Generator().manual_seed(0), height=16, width=16, frames=5)
    assert a.shape == (2, 3, 5, 16, 16) and torch.equal(a, b)


# ---------------------------------------------------------------------------
# config and input errors
# ---------------------------------------------------------------------------
def test_config_reads_diffusers_keys_and_rejects_other_layouts():
    ref = make_diffusers(**CONFIGS["two_levels_time2x"])
    base = {**dict(ref.config), "_class_name": "AutoencoderKLWan", "_diffusers_version": "0.42.1"}
    config = CausalVideoAutoencoderKLConfig.from_dict(base)
    assert config.dim_mult == (1, 2) and config.temperal_downsample == (True,) and config.z_dim == 4
    assert CausalVideoAutoencoderKLConfig.from_dict(config.to_diffusers_dict()) == config
    with pytest.raises(ConfigError, match="is_residual must be false"):
        CausalVideoAutoencoderKLConfig.from_dict({**base, "is_residual": True})
    with pytest.raises(ConfigError, match="patch_size must be null"):
        CausalVideoAutoencoderKLConfig.from_dict({**base, "patch_size": 2})
    with pytest.raises(ConfigError, match="_class_name: 'AutoencoderKL'"):
        CausalVideoAutoencoderKLConfig.from_dict({**base, "_class_name": "AutoencoderKL"})
    with pytest.raises(ConfigError, match=r"temperal_downsample needs one flag per downsampling level, len\(dim_mult\) - 1 = 1"):
        CausalVideoAutoencoderKLConfig.from_dict({**base, "temperal_downsample": [True, True]})
    with pytest.raises(ConfigError, match="attn_scales must be empty"):
        CausalVideoAutoencoderKLConfig.from_dict({**base, "attn_scales": [1.0]})
    with pytest.raises(ConfigError, match="latents_mean needs z_dim=4 values, got: 16"):
        CausalVideoAutoencoderKLConfig.from_dict({**base, "latents_mean": [0.0] * 16, "latents_std": [1.0] * 16})


def test_bad_clips_are_clear_errors(model):
    with pytest.raises(InputError, match=r"clips of 1 \+ k \* 4 frames \(1, 5, 9, ...\), got: 6 frames; trim to 5"):
        model.encode(torch.rand(1, 3, 6, 16, 16))
    with pytest.raises(InputError, match="multiple of 4"):
        model.encode(torch.rand(1, 3, 5, 18, 16))
    with pytest.raises(InputError, match=r"decode expects latents of shape \(B, 4, t, h, w\)"):
        model.decode(torch.rand(1, 3, 2, 4, 4))


# ---------------------------------------------------------------------------
# the shared LatentModel contract (on images: one-frame clips)
# ---------------------------------------------------------------------------
class TestCausalVideoVAEContract(LatentModelTesterMixin):
    model_class = CausalVideoAutoencoderKLModel
    encoder_output_class = VariationalEncoderOutput
    expected_latent_shape = (4, 1, 8, 8)
    other_sizes = ((8, 24),)
    loss_terms = {"rec", "kl"}

    def get_init_dict(self):
        return dict(CONFIGS["two_levels_time2x"])

    def forward_kwargs(self):
        return {"generator": torch.Generator().manual_seed(0)}

    def expected_loss(self, model, x, out):
        return out.losses["rec"] + model.config.kl_weight * out.losses["kl"]

    def test_forward_loss_follows_the_convention(self):
        """As the mixin's, but the temporal convs see no frame of a one-frame input: run on clips, where every
        parameter gets a gradient (test_forward_on_clips_follows_the_loss_convention); images here check the rest."""
        model = self.build().train()
        x = self.inputs()
        out = model(x, **self.forward_kwargs())
        assert out.reconstruction.shape == x.shape and set(out.losses) == self.loss_terms
        torch.testing.assert_close(out.losses["rec"], self.expected_rec(model, x, out))
        torch.testing.assert_close(out.loss, self.expected_loss(model, x, out))
        out.loss.backward()
        unused = {n for n, p in model.named_parameters() if p.grad is None}
        assert unused and all("time_conv" in n for n in unused), unused
