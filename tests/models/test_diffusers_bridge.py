"""The diffusers bridge: every supported class loads through AutoModel, encodes and decodes exactly as
diffusers does, and normalizes exactly as its own pipeline does (each reference cites the pipeline)."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from latentflow.auto import AutoModel
from latentflow.errors import ConfigError, InputError, NotSupportedError
from latentflow.models.diffusers_bridge import FAMILIES, DiffusersAutoencoder
from latentflow.outputs import QuantizedEncoderOutput, VariationalEncoderOutput
from tests.models.bridge_fixtures import (
    AUDIO,
    DECODE_ONLY,
    TINY,
    VIDEO,
    build,
    diffusers_or_skip,
    images,
    reference_decode,
    reference_encode,
    reference_latents,
    sample_input,
    save,
)

ALL = sorted(TINY)
ENCODERS = [name for name in ALL if name not in DECODE_ONLY]
ATOL = 1e-5  # the same module on the same input: differences are float32 rounding only


def test_every_family_has_a_tiny_config():
    assert sorted(FAMILIES) == ALL


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """class name -> (folder saved by diffusers, the diffusers module); built once per class."""
    cache = {}

    def get(name: str):
        if name not in cache:
            folder = tmp_path_factory.mktemp(name)
            cache[name] = (folder, save(name, folder))
        return cache[name]

    return get


def _clip(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(2)  # (B, 3, H, W) -> (B, 3, 1, H, W): how Qwen-Image encodes an image


# ---- load, encode, decode ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENCODERS)
def test_autoload_encode_decode_equal_diffusers(name, saved):
    folder, ref = saved(name)
    model = AutoModel.from_pretrained(str(folder))
    assert isinstance(model, DiffusersAutoencoder) and model.config.class_name == name
    x = sample_input(name)
    with torch.no_grad():
        out = model.encode(x)
        expected = reference_encode(name, ref, x)
        if FAMILIES[name].discrete:
            assert isinstance(out, QuantizedEncoderOutput)
            torch.testing.assert_close(out.pre_quant, expected, atol=ATOL, rtol=0)
            quant = ref.quantize(expected)[0]
            torch.testing.assert_close(out.latents, quant, atol=ATOL, rtol=0)
            assert out.indices.shape == (2, *quant.shape[-2:]) and out.indices.dtype == torch.int64
        else:
            assert isinstance(out, VariationalEncoderOutput)
            torch.testing.assert_close(out.latents, expected, atol=ATOL, rtol=0)
        clip = model.layout == "CTHW" and x.ndim == 5
        if clip:  # (C, T', h, w): T' from latent_frames, (h, w) as for one frame
            assert out.latents.shape[2] == model.latent_frames(x.shape[2])
            assert tuple(out.latents.shape[3:]) == model.latent_shape(*x.shape[-2:])[2:]
        else:
            assert tuple(out.latents.shape[1:]) == model.latent_shape(*x.shape[2:])
        torch.manual_seed(0)  # ConsistencyDecoderVAE's decoder draws noise from the global generator
        decoded = model.decode(out.latents).sample
        torch.manual_seed(0)
        torch.testing.assert_close(decoded, reference_decode(name, ref, out.latents), atol=ATOL, rtol=0)
    if FAMILIES[name].decodes_to is None and name not in ("AutoencoderVidTok",):
        assert decoded.shape == x.shape  # images come back as images (also from video VAEs), clips as clips, audio as audio


CLIPS = [n for n in VIDEO if n not in DECODE_ONLY
         and n not in ("AutoencoderKLAllegro", "AutoencoderKLMiniMaxH3", "AutoencoderVidTok", "AutoencoderKLQwenImage21")]


@pytest.mark.parametrize("name", CLIPS)
def test_video_classes_encode_clips_like_diffusers(name, saved):
    folder, ref = saved(name)
    model = AutoModel.from_pretrained(str(folder))
    clip = torch.rand(1, 3, 9, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        z = model.encode(clip).latents
        torch.testing.assert_close(z, reference_encode(name, ref, clip), atol=ATOL, rtol=0)
        assert z.shape[2] == model.latent_frames(9)
        assert model.decode(z).sample.ndim == 5
    assert model.temporal_downsample_factor >= 1 and model.input_rank == 5


def _decode_only_case(name: str, saved, tmp_path):
    if name in DECODE_ONLY:
        return saved(name)
    torch.manual_seed(0)
    vae = type(build(name))(**TINY[name], encoder_enabled=False).eval()  # a checkpoint without encoder weights
    vae.save_pretrained(str(tmp_path))
    return tmp_path, vae


@pytest.mark.parametrize("name", [*DECODE_ONLY, "Cosmos3AVAEAudioTokenizer"])
def test_decode_only_says_so_and_decodes_like_diffusers(name, saved, tmp_path):
    folder, ref = _decode_only_case(name, saved, tmp_path)
    model = AutoModel.from_pretrained(str(folder))
    with pytest.raises(NotSupportedError, match=f"{name} cannot encode: .*; it decodes latents only"):
        model.encode(sample_input(name) if name in AUDIO else images())
    shape = (1, model.latent_channels, 2, 3, 3) if name in DECODE_ONLY else (2, model.latent_channels, 4)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.manual_seed(0)  # LTX-2's diffusion decoder draws its noise from the global generator
        decoded = model.decode(z).sample
        torch.manual_seed(0)
        torch.testing.assert_close(decoded, reference_decode(name, ref, z), atol=ATOL, rtol=0)
    if name in DECODE_ONLY:
        assert decoded.shape == (1, 3, model.temporal_downsample_factor + 1, 3 * model.downsample_factor, 3 * model.downsample_factor)


@pytest.mark.parametrize("name", ["AutoencoderTiny", "AutoencoderKLWan"])
def test_posterior_and_geometry(name, saved):
    folder, ref = saved(name)
    model = AutoModel.from_pretrained(str(folder))
    out = model.encode(images())
    if FAMILIES[name].moments:
        dist = ref.encode(_clip(images())).latent_dist
        torch.testing.assert_close(out.latent_dist.logvar, torch.clamp(dist.logvar, -30.0, 20.0), atol=ATOL, rtol=0)
    else:
        assert out.latent_dist is None  # deterministic encoder: no posterior to store
    assert model.downsample_factor == 16 // out.latents.shape[-1]


def test_vq_tokenize_detokenize_equal_diffusers_decode(saved):
    folder, ref = saved("VQModel")
    model = AutoModel.from_pretrained(str(folder))
    assert model.latent_kind == "discrete" and model.codebook_size == 16
    with torch.no_grad():
        out = model.encode(images())
        torch.testing.assert_close(model.detokenize(out.indices), ref.decode(out.latents).sample, atol=ATOL, rtol=0)
        assert torch.equal(model.tokenize(images()), out.indices)


# ---- normalization: what each pipeline feeds its denoiser ------------------------------------------
SCALE = ("AutoencoderTiny", "AutoencoderDC", "AutoencoderKLHunyuanVideo", "AutoencoderKLCogVideoX", "VQModel", "AsymmetricAutoencoderKL",
         "AutoencoderKLHunyuanImage", "ConsistencyDecoderVAE", "AutoencoderKLAllegro", "AutoencoderKLHunyuanImageRefiner",
         "AutoencoderKLHunyuanVideo15", "AutoencoderKLMagvit", "AutoencoderKLTemporalDecoder", "Kandinsky6SRVAE", "MMAudioVAE")
AS_ENCODED = ("AutoencoderKLKVAE", "AutoencoderRAE", "AutoencoderKLKVAEVideo", "AutoencoderVidTok", "AutoencoderKLKVAEAudio",
              "AutoencoderSAME", "Cosmos3AVAEAudioTokenizer", "LongCatAudioDiTVae")
CONFIG_STATS = ("AutoencoderKLQwenImage", "AutoencoderKLWan", "AutoencoderKLQwenImage21", "AutoencoderKLMiniMaxH3",
                "AutoencoderKLMiniMaxH3Audio")


def _pipeline_reference(name: str, vae, z: torch.Tensor) -> torch.Tensor:
    """Each family's pipeline lines, reimplemented on ``z`` (or the pipeline's static helper called)."""
    c = vae.config
    if name in SCALE:
        # StableDiffusionImg2ImgPipeline / HunyuanVideoImageToVideoPipeline / CogVideoXVideoToVideoPipeline /
        # KandinskyV22Img2ImgPipeline / StableDiffusionInpaintPipeline / HunyuanImageRefinerPipeline / HunyuanVideo15
        # ImageToVideoPipeline / EasyAnimateInpaintPipeline / Kandinsky6SRPipeline: scaling_factor * latents;
        # SanaPipeline / AllegroPipeline / StableVideoDiffusionPipeline / Kandinsky6TI2VAPipeline divide by it to decode
        return c.scaling_factor * z
    if name in AS_ENCODED:  # no diffusers pipeline scales these (or the class normalizes inside encode)
        return z
    if name == "AutoencoderKLFlux2":  # Flux2Pipeline._encode_vae_image: _patchify_latents, then the BatchNorm statistics
        b, ch, h, w = z.shape
        p = z.view(b, ch, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, ch * 4, h // 2, w // 2)
        mean = vae.bn.running_mean.view(1, -1, 1, 1)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + c.batch_norm_eps)
        p = (p - mean) / std
        # Flux2Pipeline._unpatchify_latents: ours keeps the unpatchified (B, C, h, w) layout
        return p.reshape(b, ch, 2, 2, h // 2, w // 2).permute(0, 1, 4, 2, 5, 3).reshape(b, ch, h, w)
    if name in CONFIG_STATS:
        # QwenImageImg2ImgPipeline / QwenImage21Pipeline._encode_vae_image, WanImageToVideoPipeline.prepare_latents;
        # MiniMax-H3's documented (latent - latents_mean) / latents_std
        shape = (1, -1) + (1,) * (z.ndim - 2)
        return (z - torch.tensor(c.latents_mean).view(shape)) * (1.0 / torch.tensor(c.latents_std).view(shape))
    if name == "AutoencoderKLMochi":  # MochiPipeline.__call__ inverts: z * std / scaling_factor + mean
        mean = torch.tensor(c.latents_mean).view(1, -1, 1, 1, 1)
        std = torch.tensor(c.latents_std).view(1, -1, 1, 1, 1)
        return (z - mean) * c.scaling_factor / std
    if name == "AutoencoderKLLTXVideo":  # LTXImageToVideoPipeline._normalize_latents(z, vae.latents_mean, vae.latents_std)
        mean, std = vae.latents_mean.view(1, -1, 1, 1, 1), vae.latents_std.view(1, -1, 1, 1, 1)
        return (z - mean) * c.scaling_factor / std
    if name in ("AutoencoderKLLTX2Video", "LTX2VideoDiffusionDecoderModel"):  # the pipeline's own static helper
        from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline

        return LTX2Pipeline._normalize_latents(z, vae.latents_mean, vae.latents_std, c.scaling_factor)
    if name == "AutoencoderKLLTX2Audio":  # LTX2Pipeline.prepare_audio_latents: pack (B, L, C*M), normalize, and back
        from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline

        packed = LTX2Pipeline._normalize_audio_latents(LTX2Pipeline._pack_audio_latents(z), vae.latents_mean, vae.latents_std)
        return LTX2Pipeline._unpack_audio_latents(packed, z.shape[2], z.shape[3])
    if name == "AutoencoderKLCosmos":  # CosmosVideoToWorldPipeline.prepare_latents, sigma_data 0.5 (EDMEulerScheduler)
        t = z.shape[2]
        mean = torch.tensor(c.latents_mean).view(1, c.latent_channels, -1, 1, 1)[:, :, :t]
        std = torch.tensor(c.latents_std).view(1, c.latent_channels, -1, 1, 1)[:, :, :t]
        return (z - mean) * 0.5 / std
    raise AssertionError(f"no pipeline reference for {name}")


def _latents_for_rule(name: str, model) -> torch.Tensor:
    """Random raw latents of the class's layout; video ones with two latent frames (per-frame statistics differ)."""
    if name in AUDIO:
        shape = (2, *model.latent_shape(*sample_input(name).shape[2:]))
    else:
        shape = (2, *model.latent_shape(16, 16))
        if model.layout == "CTHW":
            shape = (2, shape[1], 2, *shape[3:])
    return torch.randn(shape, generator=torch.Generator().manual_seed(5)) * 2 + 0.3


@pytest.mark.parametrize("name", ALL)
def test_normalization_equals_the_pipeline(name, saved):
    folder, ref = saved(name)
    model = AutoModel.from_pretrained(str(folder))
    z = _latents_for_rule(name, model)
    norm = model.normalize_latents(z)
    torch.testing.assert_close(norm, _pipeline_reference(name, ref, z), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(model.denormalize_latents(norm), z, atol=1e-5, rtol=1e-5)
    rule = model.normalization
    assert type(rule).from_dict(json.loads(json.dumps(rule.to_dict()))) == rule  # typed and JSON-serialisable


EXPECTED_RULES = {**{n: "scale" for n in SCALE}, **{n: "none" for n in AS_ENCODED}, **{n: "per_channel" for n in CONFIG_STATS},
                  "AutoencoderTiny": "none", "AutoencoderKLFlux2": "batchnorm", "AutoencoderKLMochi": "per_channel",
                  "AutoencoderKLLTXVideo": "per_channel", "AutoencoderKLLTX2Video": "per_channel",
                  "LTX2VideoDiffusionDecoderModel": "per_channel",
                  "AutoencoderKLLTX2Audio": "per_channel_per_bin", "AutoencoderKLCosmos": "per_channel_per_frame"}
FROM_BUFFERS = ("AutoencoderKLFlux2", "AutoencoderKLLTXVideo", "AutoencoderKLLTX2Video", "AutoencoderKLLTX2Audio",
                "LTX2VideoDiffusionDecoderModel")


@pytest.mark.parametrize("name", ALL)
def test_rule_per_family(name, saved):
    model = AutoModel.from_pretrained(str(saved(name)[0]))
    assert model.normalization.rule == EXPECTED_RULES[name]
    source = "buffers" if name in FROM_BUFFERS else "pipeline" if name == "AutoencoderKLCosmos" else "config"
    assert model.normalization.source == source
    assert model.modality == FAMILIES[name].modality and model.layout == FAMILIES[name].layout


def test_cosmos_reads_sigma_data_from_the_pipeline_root(tmp_path):
    save("AutoencoderKLCosmos", tmp_path / "vae")
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "EDMEulerScheduler", "sigma_data": 0.7}))
    model = AutoModel.from_pretrained(str(tmp_path), subfolder="vae")
    assert model.normalization.scaling_factor == 0.7


@pytest.mark.parametrize("preset,rule", [(dict(scaling_factor=0.13025), "scale"),
                                         (dict(scaling_factor=0.3611, shift_factor=0.1159), "shift_scale")])
def test_native_autoencoder_kl_rules_equal_sdxl_and_flux(preset, rule, tmp_path):
    diffusers = diffusers_or_skip()
    torch.manual_seed(0)
    diffusers.AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4, **preset).save_pretrained(str(tmp_path))
    model = AutoModel.from_pretrained(str(tmp_path))
    z = torch.randn(2, 4, 8, 8)
    # StableDiffusionXLImg2ImgPipeline.prepare_latents: scaling_factor * latents;
    # FluxImg2ImgPipeline._encode_vae_image: (latents - shift_factor) * scaling_factor
    want = (z - preset.get("shift_factor", 0.0)) * preset["scaling_factor"]
    assert model.normalization.rule == rule
    torch.testing.assert_close(model.normalize_latents(z), want, atol=1e-6, rtol=1e-6)


# ---- identity, files, errors ---------------------------------------------------------------------
def test_fingerprint_covers_class_config_and_weight_files(saved, tmp_path):
    folder, _ = saved("AutoencoderTiny")
    a, b = AutoModel.from_pretrained(str(folder)), AutoModel.from_pretrained(str(folder))
    assert a.weights_hash() == b.weights_hash() and set(a.weight_files) == {"diffusion_pytorch_model.safetensors"}
    save("AutoencoderTiny", tmp_path / "other", seed=1)
    assert AutoModel.from_pretrained(str(tmp_path / "other")).weights_hash() != a.weights_hash()
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps({**config, "scaling_factor": 2.0}))
    (tmp_path / "cfg" / "diffusion_pytorch_model.safetensors").write_bytes((folder / "diffusion_pytorch_model.safetensors").read_bytes())
    assert AutoModel.from_pretrained(str(tmp_path / "cfg")).weights_hash() != a.weights_hash()


def test_variant_subfolder_and_dtype(tmp_path):
    ref = save("AutoencoderKLQwenImage", tmp_path / "vae", variant="fp16")
    model = AutoModel.from_pretrained(str(tmp_path), subfolder="vae", variant="fp16", torch_dtype=torch.float64)
    assert set(model.weight_files) == {"diffusion_pytorch_model.fp16.safetensors"} and model.dtype == torch.float64
    torch.testing.assert_close(model.encode(images().double()).latents.float(), reference_latents(ref, _clip(images())), atol=ATOL, rtol=0)


def test_save_pretrained_writes_a_folder_diffusers_loads(saved, tmp_path):
    folder, ref = saved("AutoencoderDC")
    AutoModel.from_pretrained(str(folder)).save_pretrained(str(tmp_path))
    again = type(ref).from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(reference_latents(again, images()), reference_latents(ref, images()), atol=0, rtol=0)


def test_unsupported_class_lists_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderFromTheFuture", "_diffusers_version": "9.0.0"}))
    with pytest.raises(ConfigError) as err:
        AutoModel.from_pretrained(str(tmp_path))
    assert "'AutoencoderFromTheFuture' is not an autoencoder latentflow supports" in str(err.value)
    assert all(name in str(err.value) for name in ["AutoencoderKL", "AutoencoderOobleck", *ALL])


def test_a_class_left_out_says_why(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "MMAudioVocoder", "_diffusers_version": "0.42.1"}))
    with pytest.raises(ConfigError, match=r"MMAudioVocoder is not bridged: it is a vocoder"):
        AutoModel.from_pretrained(str(tmp_path))


def test_without_diffusers_names_the_extra(saved, monkeypatch):
    folder, _ = saved("AutoencoderTiny")
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    with pytest.raises(ConfigError, match=r"needs diffusers: pip install 'latentflow\[diffusers\]'"):
        AutoModel.from_pretrained(str(folder))


def test_class_missing_from_installed_diffusers_names_the_version(saved, monkeypatch):
    folder, _ = saved("AutoencoderTiny")
    monkeypatch.setitem(sys.modules, "diffusers", types.SimpleNamespace(__version__="0.19.0"))  # an old diffusers
    with pytest.raises(ConfigError, match=r"AutoencoderTiny needs diffusers >= 0\.20\.0"):
        AutoModel.from_pretrained(str(folder))


def test_bad_input_is_refused(saved):
    model = AutoModel.from_pretrained(str(saved("AutoencoderTiny")[0]))
    with pytest.raises(InputError, match="multiples of 2"):
        model.encode(torch.zeros(1, 3, 15, 16))
    with pytest.raises(InputError, match=r"expects \(B, 3, H, W\) images"):
        model.encode(torch.zeros(1, 3, 1, 16, 16))


@pytest.mark.parametrize("name,shape,match", [
    ("AutoencoderKLAllegro", (1, 3, 16, 16), r"AutoencoderKLAllegro encodes only through its tiles .* T = 24 \+ 16k"),
    ("AutoencoderVidTok", (1, 3, 16, 16), r"AutoencoderVidTok encodes clips \(B, 3, T, H, W\) of T >= 4 frames"),
    ("AutoencoderRAE", (1, 3, 32, 32), r"AutoencoderRAE reconstructs 16x16 images \(its image_size\)"),
    ("AutoencoderSAME", (1, 2, 100), r"encodes 16 samples per latent frame: the length must be a multiple of 16, got: 100"),
    ("AutoencoderKLKVAEAudio", (1, 2, 36), r"expects \(B, 1, N\) waveforms: 1 input channels, got: 2"),
    ("AutoencoderKLLTX2Audio", (1, 2, 17, 15), r"downsamples mel bins by 4: the bin count must be a multiple of 4, got: 15"),
    ("MMAudioVAE", (1, 1, 16, 16), r"MMAudioVAE expects \(B, 1, N\) waveforms, got: shape \(1, 1, 16, 16\)"),
])
def test_input_the_class_cannot_take_is_refused(name, shape, match, saved):
    model = AutoModel.from_pretrained(str(saved(name)[0]))
    with pytest.raises(InputError, match=match):
        model.encode(torch.zeros(shape))


def test_bridged_model_rebuilds_from_its_recorded_config(saved):
    model = AutoModel.from_pretrained(str(saved("AutoencoderKLCogVideoX")[0]))
    again = AutoModel.from_config(model.config.to_dict())
    assert isinstance(again, DiffusersAutoencoder) and again.latent_shape(16, 16) == model.latent_shape(16, 16)
    assert build("AutoencoderKLCogVideoX") is not None
