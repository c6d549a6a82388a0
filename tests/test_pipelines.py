"""``latentflow.pipeline`` (issue #22 item 1): every task on the shipped models and real media, no mocks.

reconstruct / encode / decode with kl-f8 on a held-out photo, tokenize / detokenize with fsq-f8, video through
video-vae-tiny on the Big Buck Bunny clip, audio through audio-vae-tiny on a real WAV, and generate from a tiny
flow prior trained for two steps on a cache (the prior-stage tests' fixtures).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import latentflow as lf
from latentflow.errors import ConfigError, InputError, NotSupportedError
from tests.training.test_prior_stage import flow_cfg, tiny_vae, write_latents  # noqa: F401  (fixture)

DATA = Path(__file__).resolve().parents[1] / "data"
PHOTO = "china_000_128.png"  # a 128x128 crop of scikit-learn's china.jpg (data/heldout: never trained on)


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("heldout")
    with tarfile.open(DATA / "heldout" / "heldout-000000.tar") as tar:
        tar.extract(PHOTO, root, filter="data")
    return str(root / PHOTO)


@pytest.fixture(scope="module")
def photo(photo_path) -> Image.Image:
    return Image.open(photo_path).convert("RGB")


@pytest.fixture(scope="module")
def kl():
    return {task: lf.pipeline(task, model="kl-f8") for task in ("reconstruct", "encode", "decode")}


def test_pipeline_is_the_function_and_lists_its_tasks():
    assert callable(lf.pipeline) and lf.pipeline.__module__ == "latentflow.pipelines.base"
    with pytest.raises(ConfigError, match="unknown task 'reconstruction'; tasks: decode, detokenize, encode, generate, "
                                          "reconstruct, tokenize"):
        lf.pipeline("reconstruction", model="kl-f8")
    with pytest.raises(ConfigError, match="needs model="):
        lf.pipeline("encode")


def test_reconstruct_a_heldout_photo_keeps_its_size_and_reaches_15_db(kl, photo_path, photo):
    out = kl["reconstruct"](photo_path)  # a path, read through fsspec
    assert isinstance(out, Image.Image) and out.size == photo.size
    assert psnr_db(np.asarray(photo), np.asarray(out)) >= 15.0
    same = kl["reconstruct"](photo, output_type="np")  # a PIL image
    assert same.shape == (128, 128, 3) and np.array_equal(same, np.asarray(out))
    assert np.array_equal(kl["reconstruct"](np.asarray(photo), output_type="np"), same)  # uint8 HWC array
    odd = kl["reconstruct"](np.asarray(photo)[:100, :90])  # padded to multiples of 8, cropped back
    assert odd.size == (90, 100)
    assert kl["reconstruct"](photo, return_dict=True)["image"].size == photo.size


def test_encode_then_decode_equals_reconstruct(kl, photo):
    z = kl["encode"](photo)
    assert z.shape == (4, 16, 16) and z.dtype == torch.float32
    info = kl["encode"](photo, return_dict=True)
    assert info["normalization"]["rule"] == "shift_scale" and info["input_size"] == (128, 128)
    raw = lf.AutoModel.from_pretrained("kl-f8").encode(torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None] / 127.5 - 1)
    assert torch.allclose(z, lf.AutoModel.from_pretrained("kl-f8").normalize_latents(raw.latent_dist.mean)[0], atol=1e-5)
    decoded = kl["decode"](z, output_type="pt")
    assert torch.allclose(decoded, kl["reconstruct"](photo, output_type="pt"), atol=1e-4)
    assert kl["decode"](z).size == photo.size


def test_batching_gives_the_results_of_one_by_one(kl, photo):
    pixels = np.asarray(photo)
    inputs = [photo, pixels[:, ::-1].copy(), pixels[:96, :64], photo.rotate(90)]  # two shapes
    batched = kl["reconstruct"](inputs, batch_size=3, output_type="pt")
    assert [tuple(b.shape) for b in batched] == [(3, 128, 128), (3, 128, 128), (3, 96, 64), (3, 128, 128)]
    for x, b in zip(inputs, batched):
        assert torch.allclose(kl["reconstruct"](x, output_type="pt"), b, atol=1e-4)
    latents = kl["encode"](inputs[:2], batch_size=2)
    assert all(torch.allclose(kl["encode"](x), z, atol=1e-5) for x, z in zip(inputs[:2], latents))
    as_batch = kl["decode"](torch.stack(latents), output_type="pt")  # a (B, C, h, w) tensor is B inputs
    assert len(as_batch) == 2 and all(torch.allclose(a, b, atol=1e-4) for a, b in zip(as_batch, batched[:2]))


def test_tokenize_detokenize_round_trip_with_fsq(photo):
    tokenize, detokenize = lf.pipeline("tokenize", model="fsq-f8"), lf.pipeline("detokenize", model="fsq-f8")
    ids = tokenize(photo)
    assert ids.shape == (16, 16) and not ids.is_floating_point() and 0 <= int(ids.min()) and int(ids.max()) < 1000
    assert tokenize(photo, return_dict=True)["codebook_size"] == 1000
    image = detokenize(ids)
    assert isinstance(image, Image.Image) and image.size == photo.size
    assert psnr_db(np.asarray(photo), np.asarray(image)) >= 13.0
    rec = lf.pipeline("reconstruct", model="fsq-f8")(photo, output_type="pt")
    assert torch.allclose(detokenize(ids, output_type="pt"), rec, atol=1e-4)
    assert [tuple(x.shape) for x in detokenize(torch.stack([ids, ids]), output_type="pt")] == [(3, 128, 128)] * 2
    with pytest.raises(InputError, match="integer indices"):
        detokenize(ids.float())


def test_clear_errors_for_a_continuous_model_and_a_wrong_input(kl):
    with pytest.raises(NotSupportedError, match="task 'tokenize' needs a quantized model .* AutoencoderKLModel has continuous"):
        lf.pipeline("tokenize", model="kl-f8")
    with pytest.raises(InputError, match="task 'reconstruct' takes a PIL image, a path or URL, bytes, a numpy array"):
        kl["reconstruct"](3.5)
    with pytest.raises(InputError, match="not found"):
        kl["reconstruct"]("no/such/photo.png")
    with pytest.raises(InputError, match="takes latents as a torch tensor or numpy array"):
        kl["decode"]("latents.npy")
    with pytest.raises(ConfigError, match="takes no argument"):
        kl["encode"](np.zeros((8, 8, 3), np.uint8), colour="red")


def test_video_through_video_vae_tiny(tmp_path):
    from latentflow.media.config import VideoProcessorConfig

    rec = lf.pipeline("reconstruct", model="video-vae-tiny",
                      processor=VideoProcessorConfig(resolution=32, num_frames=5))  # the encode job's clip processor
    clip = rec(str(DATA / "videos" / "bigbuckbunny.mp4"))  # a real 1280x720 clip: its first 5 frames, 32 px
    assert clip.shape == (5, 32, 32, 3) and clip.dtype == np.uint8
    native = lf.pipeline("reconstruct", model="video-vae-tiny")
    frames = np.ascontiguousarray(np.repeat(np.repeat(clip[:, 2:30, 4:30], 2, axis=1), 2, axis=2))[:4]  # (4, 56, 52, 3)
    again = native(frames)  # padded to 1 + 4k frames and multiples of 8, cropped back
    assert again.shape == frames.shape and psnr_db(frames, again) > 12.0
    path = native(frames, output_type="mp4", output_dir=str(tmp_path))
    assert path.endswith(".mp4") and Path(path).stat().st_size > 0
    z = lf.pipeline("encode", model="video-vae-tiny")(frames)
    assert z.shape == (16, 2, 7, 7)
    assert native(frames[0]).size == (52, 56)  # an image is a one-frame clip


def test_audio_through_audio_vae_tiny():
    from latentflow.media.audio import decode_audio

    wav = DATA / "audio" / "coin2.wav"
    rec = lf.pipeline("reconstruct", model="audio-vae-tiny")
    out = rec(str(wav), return_dict=True)
    source = decode_audio(wav.read_bytes(), sample_rate=22050, channels="mono").samples
    assert out["sampling_rate"] == 22050 and out["audio"].shape == source.shape and out["audio"].dtype == np.float32
    snr = 10 * np.log10(np.mean(source**2) / np.mean((source - out["audio"]) ** 2))
    assert snr > 1.0
    z = lf.pipeline("encode", model="audio-vae-tiny")(source)
    assert z.shape == (8, -(-source.shape[1] // 32))
    resampled = rec({"array": source[0], "sampling_rate": 44100})  # datasets' audio dict, resampled to 22050
    assert resampled.shape == (1, round(source.shape[1] / 2))


def test_generate_from_a_prior_trained_two_steps(tiny_vae, tmp_path):  # noqa: F811
    from latentflow.training.prior_stage import train_prior

    cache = write_latents(tiny_vae, tmp_path, sizes=(6, 6))
    cfg = flow_cfg(str(tmp_path / "run"), cache)
    cfg = cfg.replace(train=cfg.train.replace(max_steps=2))
    final = train_prior(cfg)["final_prior"]
    gen = lf.pipeline("generate", model=final, codec=cache)
    images = gen(num_samples=2, steps=2, seed=3)
    assert len(images) == 2 and all(isinstance(i, Image.Image) and i.size == (32, 32) for i in images)
    again = gen(num_samples=2, steps=2, seed=3, output_type="np")
    assert np.array_equal(np.stack([np.asarray(i) for i in images]), np.stack(again))
    assert isinstance(gen(steps=1), Image.Image)
    with pytest.raises(InputError, match="not text-conditioned"):
        gen("a red bicycle")
    with pytest.raises(ConfigError, match="needs model=<prior checkpoint"):
        lf.pipeline("generate", model=final)
