"""Each family preset against the diffusers pipeline's own ``encode_prompt``.

Every pipeline is the real diffusers class, assembled from tiny random text encoders and tokenizers
(saved in the pipeline's folder layout) with its other components left ``None``; the captions run
through latentflow's ``TextEncoder`` (length-sorted batches of 3) and the preset's combine step.
"""

from __future__ import annotations

import diffusers
import pytest
import torch

from latentflow.encode import text_presets as tp
from latentflow.encode.text import TextEncoder
from tests.encode import tiny_text as tt
from tests.encode.tiny_text import CAPTIONS

TOL = 1e-5
ERRORS: dict[str, float] = {}


def cached(name: str, root, **kwargs) -> dict[str, list]:
    """The preset's columns for CAPTIONS, as the encode job would store them (fp32 for the parity check)."""
    out = {}
    for c in tp.preset(name, str(root), dtype="fp32", **kwargs):
        enc = TextEncoder(c.replace(batch_size=3))
        out[c.name] = enc.encode(CAPTIONS)
        for e in out[c.name]:  # the widths recorded for a reader's schema are the stored ones
            assert (e.hidden is None and enc.info.hidden_width is None) or e.hidden.shape[1] == enc.info.hidden_width
            assert (e.pooled is None and enc.info.pooled_width is None) or e.pooled.shape == (enc.info.pooled_width,)
    return out


def check(name: str, got: torch.Tensor, ref: torch.Tensor) -> None:
    assert got.shape == ref.shape, (got.shape, ref.shape)
    err = (got - ref.float()).abs().max().item()
    ERRORS[name] = max(ERRORS.get(name, 0.0), err)
    print(f"PARITY {name}: max abs error {err:.2e}, shape {tuple(ref.shape)}")
    assert err < TOL


def pipe(cls, root, parts: dict[str, tuple[str, str]], **none):
    kwargs = dict(none)
    for enc_key, (enc, tok) in parts.items():
        model, tokenizer = tt.load_part(root, enc, tok)
        kwargs[enc_key] = model
        kwargs[enc_key.replace("text_encoder", "tokenizer")] = tokenizer
    return cls(**kwargs)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("pipelines")
    return base


def test_sd15(roots):
    root = roots / "sd15"
    tt.pipeline_part(root, "text_encoder", "tokenizer", tt.clip_folder, projection=False)
    p = pipe(diffusers.StableDiffusionPipeline, root, {"text_encoder": ("text_encoder", "tokenizer")}, vae=None,
             unet=None, scheduler=None, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    long = " ".join([CAPTIONS[4]] * 5)  # ~100 tokens: cut to 77 with the closing token kept, as the pipeline does
    with torch.no_grad():
        ref, _ = p.encode_prompt(list(CAPTIONS) + [long], "cpu", 1, False)
    [cfg] = tp.sd15(str(root), dtype="fp32")
    embs = TextEncoder(cfg.replace(batch_size=3)).encode(list(CAPTIONS) + [long])
    assert [e.truncated for e in embs] == [False] * len(CAPTIONS) + [True]
    check("sd15", tp.combine_sd15(embs), ref)


def test_sdxl(roots):
    root = roots / "sdxl"
    tt.pipeline_part(root, "text_encoder", "tokenizer", tt.clip_folder, projection=False)
    tt.pipeline_part(root, "text_encoder_2", "tokenizer_2", tt.clip_folder, projection=True, hidden=40, pad="!", seed=1)
    p = pipe(diffusers.StableDiffusionXLPipeline, root, {"text_encoder": ("text_encoder", "tokenizer"),
             "text_encoder_2": ("text_encoder_2", "tokenizer_2")}, vae=None, unet=None, scheduler=None)
    with torch.no_grad():
        ref, _, ref_pooled, _ = p.encode_prompt(list(CAPTIONS), device="cpu", do_classifier_free_guidance=False)
    cols = cached("sdxl", root)
    embeds, pooled = tp.combine_sdxl(cols["clip_l"], cols["clip_g"])
    check("sdxl", embeds, ref)
    check("sdxl.pooled", pooled, ref_pooled)


def test_sd3(roots):
    root = roots / "sd3"
    tt.pipeline_part(root, "text_encoder", "tokenizer", tt.clip_folder, projection=True)
    tt.pipeline_part(root, "text_encoder_2", "tokenizer_2", tt.clip_folder, projection=True, hidden=40, pad="!", seed=1)
    tt.pipeline_part(root, "text_encoder_3", "tokenizer_3", tt.t5_folder, d_model=80)
    p = pipe(diffusers.StableDiffusion3Pipeline, root, {"text_encoder": ("text_encoder", "tokenizer"),
             "text_encoder_2": ("text_encoder_2", "tokenizer_2"), "text_encoder_3": ("text_encoder_3", "tokenizer_3")},
             transformer=None, scheduler=None, vae=None)
    with torch.no_grad():
        ref, _, ref_pooled, _ = p.encode_prompt(list(CAPTIONS), None, None, device="cpu",
                                                do_classifier_free_guidance=False)
    cols = cached("sd3", root)
    embeds, pooled = tp.combine_sd3(cols["clip_l"], cols["clip_g"], cols["t5"])
    check("sd3", embeds, ref)  # (B, 77 + 256, 80)
    check("sd3.pooled", pooled, ref_pooled)


def test_flux(roots):
    root = roots / "flux"
    tt.pipeline_part(root, "text_encoder", "tokenizer", tt.clip_folder, projection=False)
    tt.pipeline_part(root, "text_encoder_2", "tokenizer_2", tt.t5_folder)
    p = pipe(diffusers.FluxPipeline, root, {"text_encoder": ("text_encoder", "tokenizer"),
             "text_encoder_2": ("text_encoder_2", "tokenizer_2")}, scheduler=None, vae=None, transformer=None)
    with torch.no_grad():
        ref, ref_pooled, ref_ids = p.encode_prompt(list(CAPTIONS), device="cpu")
    cols = cached("flux", root)
    embeds, pooled, text_ids = tp.combine_flux(cols["clip"], cols["t5"])
    check("flux", embeds, ref)  # (B, 512, 32): padded, no mask
    check("flux.pooled", pooled, ref_pooled)
    assert torch.equal(text_ids, ref_ids)


def test_wan(roots):
    root = roots / "wan"
    tt.pipeline_part(root, "text_encoder", "tokenizer", tt.t5_folder, umt5=True)
    p = pipe(diffusers.WanPipeline, root, {"text_encoder": ("text_encoder", "tokenizer")}, vae=None, scheduler=None,
             transformer=None)
    messy = [f"  {c}\t&amp;amp; \n" for c in CAPTIONS]  # prompt_clean: unescaped twice, whitespace collapsed
    with torch.no_grad():
        ref, _ = p.encode_prompt(messy, do_classifier_free_guidance=False, device="cpu")
    [cfg] = tp.wan(str(root), dtype="fp32")
    embs = TextEncoder(cfg.replace(batch_size=3)).encode(messy)
    check("wan", tp.combine_wan(embs), ref)  # (B, 226, 32), zeros after each caption


def test_qwen_image(roots):
    root = roots / "qwen_image"
    tt.pipeline_part(root, "text_encoder", "tokenizer", tt.qwen25vl_folder)
    p = pipe(diffusers.QwenImagePipeline, root, {"text_encoder": ("text_encoder", "tokenizer")}, scheduler=None,
             vae=None, transformer=None)
    assert (p.prompt_template_encode, p.prompt_template_encode_start_idx) == (tp.QWEN_IMAGE_TEMPLATE, tp.QWEN_IMAGE_DROP)
    with torch.no_grad():
        ref, ref_mask = p.encode_prompt(list(CAPTIONS), device="cpu")
    embeds, mask = tp.combine_qwen_image(cached("qwen_image", root)["qwen"])
    check("qwen_image", embeds, ref)
    assert torch.equal(mask, ref_mask)


def test_z_image(roots):
    root = roots / "z_image"
    tt.pipeline_part(root, "text_encoder", "tokenizer", tt.qwen3_folder)
    p = pipe(diffusers.ZImagePipeline, root, {"text_encoder": ("text_encoder", "tokenizer")}, scheduler=None,
             vae=None, transformer=None)
    with torch.no_grad():
        ref, _ = p.encode_prompt(list(CAPTIONS), device="cpu", do_classifier_free_guidance=False)
    got = tp.combine_z_image(cached("z_image", root)["qwen3"])
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        check("z_image", g, r)


def test_flux2_klein(roots):
    root = roots / "flux2_klein"
    tt.pipeline_part(root, "text_encoder", "tokenizer", tt.qwen3_folder, layers=28)
    p = pipe(diffusers.Flux2KleinPipeline, root, {"text_encoder": ("text_encoder", "tokenizer")}, scheduler=None,
             vae=None, transformer=None)
    with torch.no_grad():
        ref, ref_ids = p.encode_prompt(list(CAPTIONS), device="cpu")
    embeds, text_ids = tp.combine_flux2_klein(cached("flux2_klein", root)["qwen3"])
    check("flux2_klein", embeds, ref)  # (B, 512, 3 * 16): layers 9, 18, 27
    assert torch.equal(text_ids, ref_ids)


def test_ltx2_tokens_and_connectors(roots):
    """The caption's tokens equal the pipeline's; pads differ by design and the connectors never see them."""
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors

    root = roots / "ltx2"
    tt.pipeline_part(root, "text_encoder", "tokenizer", tt.gemma3_folder)
    p = pipe(diffusers.LTX2Pipeline, root, {"text_encoder": ("text_encoder", "tokenizer")}, scheduler=None,
             vae=None, audio_vae=None, connectors=None, transformer=None, vocoder=None)
    with torch.no_grad():
        ref, ref_mask, _, _ = p.encode_prompt(list(CAPTIONS), do_classifier_free_guidance=False,
                                              device="cpu")
    [cfg] = tp.ltx2(str(root), dtype="fp32")
    embs = TextEncoder(cfg.replace(batch_size=3)).encode(CAPTIONS)
    embeds, mask = tp.combine_ltx2(embs, num_states=4)  # (B, 1024, 16 * 4)
    assert torch.equal(mask, ref_mask)
    keep = mask.bool()
    check("ltx2.tokens", embeds[keep], ref[keep])
    torch.manual_seed(0)
    connectors = LTX2TextConnectors(caption_channels=16, text_proj_in_factor=4, video_connector_num_attention_heads=2,
                                    video_connector_attention_head_dim=8, video_connector_num_layers=1,
                                    video_connector_num_learnable_registers=16, audio_connector_num_attention_heads=2,
                                    audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
                                    audio_connector_num_learnable_registers=16).eval()
    with torch.no_grad():
        ours, theirs = connectors(embeds, mask, padding_side="left"), connectors(ref, ref_mask, padding_side="left")
    check("ltx2.connectors.video", ours[0], theirs[0])
    check("ltx2.connectors.audio", ours[1], theirs[1])


@pytest.mark.parametrize("name, fn", [
    ("sd3", diffusers.StableDiffusion3Pipeline.encode_prompt), ("flux", diffusers.FluxPipeline.encode_prompt),
    ("wan", diffusers.WanPipeline.encode_prompt), ("z_image", diffusers.ZImagePipeline.encode_prompt),
    ("flux2_klein", diffusers.Flux2KleinPipeline.encode_prompt), ("ltx2", diffusers.LTX2Pipeline.encode_prompt),
])
def test_preset_defaults_are_the_pipelines(name, fn):
    """The presets' defaults are the pipelines' own (the parity tests run them at those defaults)."""
    import inspect

    ours = inspect.signature(tp.PRESETS[name].configs).parameters
    theirs = inspect.signature(fn).parameters
    assert ours["max_sequence_length"].default == theirs["max_sequence_length"].default
    if name == "flux2_klein":
        assert ours["layers"].default == theirs["text_encoder_out_layers"].default


def test_preset_registry():
    assert set(tp.PRESETS) == {"sd15", "sdxl", "sd3", "flux", "wan", "qwen_image", "z_image", "flux2_klein", "ltx2"}
    assert [c.name for c in tp.preset("sd3", "m")] == ["clip_l", "clip_g", "t5"]
    assert tp.preset("sd15", "m", clip_skip=1)[0].layer == -2
    with pytest.raises(Exception, match="unknown text encoder preset"):
        tp.preset("sd4", "m")
