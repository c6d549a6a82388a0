"""AudioAutoencoderOobleckModel: parity with diffusers' AutoencoderOobleck both ways, the audio contract.

Every model is tiny (widths 4-16, 2-3 levels) and random; weights are perturbed away from their
init (Snake parameters start at 0, weight_g at ||weight_v||) so every parameter matters in the parity checks.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import latentflow as lf
from latentflow.errors import ConfigError, InputError
from latentflow.models.audio_vae import AudioAutoencoderOobleckConfig, AudioAutoencoderOobleckModel, stable_audio_open
from latentflow.outputs import VariationalEncoderOutput
from tests.model_tester import LatentModelTesterMixin

ATOL = 1e-4

# (name, diffusers kwargs): mono and stereo, 2-3 levels, strides 2-8, a decoder wider than the encoder.
CONFIGS = {
    "stereo_two_levels": dict(encoder_hidden_size=8, downsampling_ratios=[2, 4], channel_multiples=[1, 2],
                              decoder_channels=8, decoder_input_channels=4, audio_channels=2, sampling_rate=16000),
    "mono_three_levels": dict(encoder_hidden_size=12, downsampling_ratios=[2, 4, 8], channel_multiples=[1, 2, 2],
                              decoder_channels=16, decoder_input_channels=6, audio_channels=1, sampling_rate=22050),
}


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def make_diffusers(seed: int = 0, **kwargs):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(seed)
    return perturb(diffusers.AutoencoderOobleck(**kwargs), seed)


def make_ours(seed: int = 0, **kwargs) -> AudioAutoencoderOobleckModel:
    torch.manual_seed(seed)
    return perturb(AudioAutoencoderOobleckModel(AudioAutoencoderOobleckConfig.from_dict(kwargs)), seed)


def waves(model, latent_frames: int = 6, batch: int = 2, seed: int = 1) -> torch.Tensor:
    """(batch, C, latent_frames * hop): a sum of sines plus noise, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(latent_frames * model.hop_length) / model.sampling_rate
    freqs = 200 + 2000 * torch.rand(batch, model.in_channels, 1, generator=g)
    x = 0.6 * torch.sin(2 * torch.pi * freqs * t) + 0.2 * torch.randn(batch, model.in_channels, t.numel(), generator=g)
    return x.clamp(-1, 1)


def assert_parity(ours: AudioAutoencoderOobleckModel, ref, x: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        post = ref.encode(x).latent_dist
        out = ours.encode(x)
        torch.testing.assert_close(out.latents, post.mean, atol=ATOL, rtol=0)
        torch.testing.assert_close(out.latent_dist.std, post.std, atol=ATOL, rtol=0)
        z = torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(3))
        expected, got = ref.decode(z).sample, ours.decode(z).sample
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
        return {"latents": (out.latents - post.mean).abs().max().item(), "audio": (got - expected).abs().max().item()}


# ---------------------------------------------------------------------------
# parity with diffusers, both directions
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_diffusers_weights_load_key_for_key_and_match(name, tmp_path):
    ref = make_diffusers(**CONFIGS[name])
    ref.save_pretrained(tmp_path)  # a diffusers folder: config.json + diffusion_pytorch_model.safetensors
    ours = lf.AutoModel.from_pretrained(str(tmp_path))
    assert type(ours) is AudioAutoencoderOobleckModel
    assert list(ours.state_dict()) == list(ref.state_dict())  # key for key, same order
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.hop_length == ref.hop_length and ours.sampling_rate == ref.sampling_rate
    assert_parity(ours, ref, waves(ours))
    assert_parity(ours, ref, waves(ours, latent_frames=1, batch=1))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_our_saved_weights_load_into_diffusers_and_match(name, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    ours = make_ours(seed=4, **CONFIGS[name])
    ours.save_pretrained(tmp_path / "ours", format="diffusers")
    ref = diffusers.AutoencoderOobleck.from_pretrained(str(tmp_path / "ours")).eval()
    assert_parity(ours, ref, waves(ours, latent_frames=5, seed=2))
    kwargs = {k: v for k, v in ours.config.to_diffusers_dict().items() if not k.startswith("_")}
    strict = diffusers.AutoencoderOobleck(**kwargs).eval()
    strict.load_state_dict(load_file(str(tmp_path / "ours" / "diffusion_pytorch_model.safetensors")), strict=True)
    assert_parity(ours, strict, waves(ours, latent_frames=3, seed=5))


def test_posterior_sampling_matches_diffusers():
    ref = make_diffusers(**CONFIGS["stereo_two_levels"])
    ours = AudioAutoencoderOobleckModel(AudioAutoencoderOobleckConfig.from_dict(dict(ref.config))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = waves(ours)
    with torch.no_grad():
        a = ours.encode(x).latent_dist.sample(torch.Generator().manual_seed(7))
        b = ref.encode(x).latent_dist.sample(torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_stable_audio_open_preset_is_diffusers_default_architecture():
    diffusers = pytest.importorskip("diffusers")
    config = stable_audio_open()
    with torch.device("meta"):
        ours = AudioAutoencoderOobleckModel(config)
        ref = diffusers.AutoencoderOobleck()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert (ours.hop_length, ours.latent_channels, ours.sampling_rate, ours.in_channels) == (2048, 64, 44100, 2)
    assert ours.latent_shape(2097152) == (64, 1024)
    assert ours.normalization.rule == "none"  # Stable Audio uses raw latents


# ---------------------------------------------------------------------------
# the audio contract
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model() -> AudioAutoencoderOobleckModel:
    return make_ours(**CONFIGS["mono_three_levels"])


def test_shapes_and_latent_shape(model):
    x = waves(model, latent_frames=7, batch=3)  # (3, 1, 448)
    with torch.no_grad():
        out = model.encode(x)
        assert out.latents.shape == (3, *model.latent_shape(448)) == (3, 6, 7)
        assert model.decode(out.latents).sample.shape == x.shape
    assert model.input_rank == 3 and model.downsample_factor == 64


def test_forward_losses_follow_the_convention(model):
    m = make_ours(**CONFIGS["stereo_two_levels"], kl_weight=0.01, stft_weight=0.5, stft_fft_sizes=[64, 32, 16]).train()
    x = waves(m, latent_frames=16)
    out = m(x, generator=torch.Generator().manual_seed(0))
    from latentflow.training.losses import multi_resolution_stft_loss

    torch.testing.assert_close(out.losses["stft"], multi_resolution_stft_loss(out.reconstruction, x, (64, 32, 16)))
    torch.testing.assert_close(out.loss, out.losses["rec"] + 0.5 * out.losses["stft"] + 0.01 * out.losses["kl"])
    enc = out.encoder_output.latent_dist
    kl = 0.5 * (enc.mean.pow(2) + enc.std.pow(2) - 1 - 2 * enc.std.log()).sum(dim=(1, 2)).mean()
    torch.testing.assert_close(out.losses["kl"], kl)


def test_sample_decodes_prior_draws(model):
    a = model.sample(2, generator=torch.Generator().manual_seed(0), length=128)
    b = model.sample(2, generator=torch.Generator().manual_seed(0), length=128)
    assert a.shape == (2, 1, 128) and torch.equal(a, b)


def test_config_reads_diffusers_keys_and_checks_values():
    ref = make_diffusers(**CONFIGS["stereo_two_levels"])
    base = {**dict(ref.config), "_class_name": "AutoencoderOobleck", "_diffusers_version": "0.42.1"}
    config = AudioAutoencoderOobleckConfig.from_dict(base)
    assert config.downsampling_ratios == (2, 4) and config.hop_length == 8
    assert AudioAutoencoderOobleckConfig.from_dict(config.to_diffusers_dict()) == config
    with pytest.raises(ConfigError, match="_class_name: 'AutoencoderKL'"):
        AudioAutoencoderOobleckConfig.from_dict({**base, "_class_name": "AutoencoderKL"})
    with pytest.raises(ConfigError, match=r"downsampling_ratios must be even numbers >= 2 .* got: \[2, 3\]"):
        AudioAutoencoderOobleckConfig.from_dict({**base, "downsampling_ratios": [2, 3]})
    with pytest.raises(ConfigError, match="channel_multiples needs one value > 0 per downsampling ratio"):
        AudioAutoencoderOobleckConfig.from_dict({**base, "channel_multiples": [1]})
    with pytest.raises(ConfigError, match=r"encoder_hidden_size must be 2 \* decoder_input_channels .*, got: 8 and 5"):
        AudioAutoencoderOobleckConfig.from_dict({**base, "decoder_input_channels": 5})


def test_bad_waveforms_are_clear_errors(model):
    with pytest.raises(InputError, match=r"T must be a positive multiple of 64, got: 100; pad to 128"):
        model.encode(torch.zeros(1, 1, 100))
    with pytest.raises(InputError, match="expects 1 input channels, got: 2"):
        model.encode(torch.zeros(1, 2, 128))
    with pytest.raises(InputError, match=r"decode expects latents of shape \(B, 6, t\)"):
        model.decode(torch.zeros(1, 5, 2))


# ---------------------------------------------------------------------------
# the shared LatentModel contract, on waveforms
# ---------------------------------------------------------------------------
class TestAudioVAEContract(LatentModelTesterMixin):
    model_class = AudioAutoencoderOobleckModel
    encoder_output_class = VariationalEncoderOutput
    input_shape = (2, 2, 256)  # (B, C, T)
    other_sizes = ((64,), (8,))
    expected_latent_shape = (4, 32)
    loss_terms = {"rec", "stft", "kl"}

    def get_init_dict(self):
        return {**CONFIGS["stereo_two_levels"], "stft_fft_sizes": [64, 16], "sample_size": 256}

    def inputs(self, size=None, seed=0):
        b, c, t = self.input_shape
        (t,) = size or (t,)
        return torch.rand(b, c, t, generator=torch.Generator().manual_seed(seed)) * 2 - 1

    def sizes(self):
        return [tuple(self.input_shape[2:]), *self.other_sizes]

    def forward_kwargs(self):
        return {"generator": torch.Generator().manual_seed(0)}

    def expected_loss(self, model, x, out):
        c = model.config
        return out.losses["rec"] + c.stft_weight * out.losses["stft"] + c.kl_weight * out.losses["kl"]

    def test_bad_input_is_a_clear_error(self):
        model = self.build()
        b, c, t = self.input_shape
        with pytest.raises(lf.InputError, match=f"expects {c} input channels, got: {c + 1}"):
            model.encode(torch.rand(b, c + 1, t))
        with pytest.raises(lf.InputError, match="rank-3 input.*got rank 4"):
            model.encode(torch.rand(b, c, t, 1))
