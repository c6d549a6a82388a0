"""Family presets: the text encoders each diffusers pipeline uses, cached per encoder, combined exactly.

A preset is a function ``preset(model, ...) -> list[TextEncoderConfig]`` (one config, one column per
encoder) and a ``combine_*`` function that turns the cached columns of a batch into what the
pipeline's ``encode_prompt`` returns (same shapes, same values within fp32 tolerance):

======================  =============================================  ==============================================
preset                  columns                                        follows (diffusers 0.42.1)
======================  =============================================  ==============================================
``sd15``                ``clip`` (77, D) padded                        ``StableDiffusionPipeline.encode_prompt``
``sdxl``                ``clip_l`` (77, D1), ``clip_g`` (77, D2)+pool  ``StableDiffusionXLPipeline.encode_prompt``
``sd3``                 ``clip_l``+pool, ``clip_g``+pool, ``t5`` (256)  ``StableDiffusion3Pipeline.encode_prompt``
``flux``                ``clip`` pooled, ``t5`` (512, D) no mask       ``FluxPipeline.encode_prompt``
``wan``                 ``umt5`` (L, D) masked, trimmed                ``WanPipeline._get_t5_prompt_embeds``
``qwen_image``          ``qwen`` (L, D) template, 34 tokens dropped    ``QwenImagePipeline._get_qwen_prompt_embeds``
``z_image``             ``qwen3`` (L, D) chat template, layer -2       ``ZImagePipeline._encode_prompt``
``flux2_klein``         ``qwen3`` (512, 3D) layers 9, 18, 27           ``Flux2KleinPipeline._get_qwen3_prompt_embeds``
``ltx2``                ``gemma`` (L, N*D) every layer, trimmed        ``LTX2Pipeline._get_gemma_prompt_embeds``
======================  =============================================  ==============================================

Example::

    configs = flux("black-forest-labs/FLUX.1-dev")           # [clip, t5]
    encoders = {c.name: TextEncoder(c) for c in configs}
    cols = {name: enc.encode(captions) for name, enc in encoders.items()}
    prompt_embeds, pooled, text_ids = combine_flux(cols["clip"], cols["t5"])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from latentflow.encode.text import TextEmbedding, TextEncoderConfig
from latentflow.errors import ConfigError

QWEN_IMAGE_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
QWEN_IMAGE_DROP = 34  # QwenImagePipeline.prompt_template_encode_start_idx: the template's prefix tokens
QWEN_IMAGE_MAX = 1024  # QwenImagePipeline.tokenizer_max_length


def _clip(name: str, model: str, n: int, **kw) -> TextEncoderConfig:
    """A CLIP as SD/SDXL/SD3/FLUX run it: padded to the tokenizer's 77, no attention mask (CLIP is causal:
    the caption's tokens never see the pads, and the pipeline consumes the pad positions too)."""
    return TextEncoderConfig(name=name, model=model, subfolder=f"text_encoder{n}", tokenizer_subfolder=f"tokenizer{n}",
                             padding="max_length", attention_mask=False, **kw)


# ---- presets: one function per family -------------------------------------------------------------
def sd15(model: str, clip_skip: int | None = None, dtype: str = "bf16") -> list[TextEncoderConfig]:
    """SD 1.x/2.x: CLIP last hidden state; with ``clip_skip`` k, ``hidden_states[-(k+1)]`` through the final
    layer norm. (diffusers 0.42.1 reads ``text_encoder.text_model.final_layer_norm``, which transformers 5's
    flattened ``CLIPTextModel`` no longer has; latentflow applies the same norm.)"""
    if clip_skip is None:
        return [_clip("clip", model, "", dtype=dtype)]
    return [_clip("clip", model, "", output="hidden_state", layer=-(clip_skip + 1), final_layer_norm=True, dtype=dtype)]


def sdxl(model: str, dtype: str = "bf16") -> list[TextEncoderConfig]:
    """SDXL: both CLIPs' penultimate hidden states (no final norm), the pooled ``text_embeds`` of CLIP-G."""
    return [_clip("clip_l", model, "", output="hidden_state", layer=-2, dtype=dtype),
            _clip("clip_g", model, "_2", output="hidden_state", layer=-2, pooled=True, dtype=dtype)]


def sd3(model: str, max_sequence_length: int = 256, dtype: str = "bf16") -> list[TextEncoderConfig]:
    """SD3: CLIP-L and CLIP-G penultimate hidden states and pooled ``text_embeds``; T5 last hidden state padded
    to ``max_sequence_length``, no mask."""
    return [_clip("clip_l", model, "", output="hidden_state", layer=-2, pooled=True, dtype=dtype),
            _clip("clip_g", model, "_2", output="hidden_state", layer=-2, pooled=True, dtype=dtype),
            TextEncoderConfig(name="t5", model=model, subfolder="text_encoder_3", tokenizer_subfolder="tokenizer_3",
                              max_length=max_sequence_length, padding="max_length", attention_mask=False, dtype=dtype)]


def flux(model: str, max_sequence_length: int = 512, dtype: str = "bf16") -> list[TextEncoderConfig]:
    """FLUX.1: CLIP ``pooler_output`` only; T5 last hidden state padded to 512, no mask."""
    return [_clip("clip", model, "", output="pooled", dtype=dtype),
            TextEncoderConfig(name="t5", model=model, subfolder="text_encoder_2", tokenizer_subfolder="tokenizer_2",
                              max_length=max_sequence_length, padding="max_length", attention_mask=False, dtype=dtype)]


def wan(model: str, max_sequence_length: int = 226, dtype: str = "bf16") -> list[TextEncoderConfig]:
    """Wan 2.x: ``prompt_clean``, UMT5 with the mask, the caption's own tokens (zero-padded by the combine)."""
    return [TextEncoderConfig(name="umt5", model=model, subfolder="text_encoder", tokenizer_subfolder="tokenizer",
                              max_length=max_sequence_length, clean="wan", dtype=dtype)]


def qwen_image(model: str, dtype: str = "bf16") -> list[TextEncoderConfig]:
    """Qwen-Image: the caption in the system/user template through Qwen2.5-VL (``hidden_states[-1]``, masked),
    the template's 34 prefix tokens dropped, the rest kept (``max_length`` counts the template)."""
    return [TextEncoderConfig(name="qwen", model=model, subfolder="text_encoder", tokenizer_subfolder="tokenizer",
                              output="hidden_state", layer=-1, prompt_template=QWEN_IMAGE_TEMPLATE,
                              drop_prefix_tokens=QWEN_IMAGE_DROP, max_length=QWEN_IMAGE_MAX + QWEN_IMAGE_DROP,
                              dtype=dtype)]


def z_image(model: str, max_sequence_length: int = 512, dtype: str = "bf16") -> list[TextEncoderConfig]:
    """Z-Image: Qwen3 chat template (``enable_thinking=True``), ``hidden_states[-2]`` of the masked tokens."""
    return [TextEncoderConfig(name="qwen3", model=model, subfolder="text_encoder", tokenizer_subfolder="tokenizer",
                              output="hidden_state", layer=-2, chat_template=True, enable_thinking=True,
                              max_length=max_sequence_length, dtype=dtype)]


def flux2_klein(model: str, layers: tuple[int, ...] = (9, 18, 27), max_sequence_length: int = 512,
                dtype: str = "bf16") -> list[TextEncoderConfig]:
    """FLUX.2 [klein]: Qwen3 chat template (``enable_thinking=False``), padded to 512 with the mask, hidden
    states of ``layers`` concatenated per token (the transformer consumes the pad positions too)."""
    return [TextEncoderConfig(name="qwen3", model=model, subfolder="text_encoder", tokenizer_subfolder="tokenizer",
                              output="hidden_state", layer=tuple(layers), chat_template=True, enable_thinking=False,
                              padding="max_length", max_length=max_sequence_length, dtype=dtype)]


def ltx2(model: str, max_sequence_length: int = 1024, dtype: str = "bf16") -> list[TextEncoderConfig]:
    """LTX-2: stripped caption, Gemma 3 left-padded with the mask, every hidden state (embeddings + each layer).

    Stored trimmed to the caption's own tokens: the pipeline's connectors replace every pad position
    with learned registers and normalise over the masked tokens only, so the pads' values never reach
    the transformer (see :func:`combine_ltx2`). Gemma's RoPE is relative, so the tokens' values equal
    the left-padded forward's within fp32 tolerance.
    """
    return [TextEncoderConfig(name="gemma", model=model, subfolder="text_encoder", tokenizer_subfolder="tokenizer",
                              output="hidden_state", layer="all", clean="strip", padding_side="left",
                              max_length=max_sequence_length, dtype=dtype)]


# ---- combine: cached columns of a batch -> what the pipeline's encode_prompt returns ---------------
def _stack(embs: list[TextEmbedding], what: str = "hidden", dtype=torch.float32) -> torch.Tensor:
    if not embs:
        raise ConfigError("combine needs at least one caption")
    return torch.stack([(e.hidden_tensor() if what == "hidden" else e.pooled_tensor()).to(dtype) for e in embs])


def _pad_rows(embs: list[TextEmbedding], length: int, left: bool = False, dtype=torch.float32):
    """Zero-pad each caption's ``(L, D)`` to ``(length, D)``; returns ``(B, length, D)`` and the ``(B, length)`` mask."""
    rows, masks = [], []
    for e in embs:
        h = e.hidden_tensor().to(dtype)[:length]
        pad = h.new_zeros(length - h.shape[0], h.shape[1])
        rows.append(torch.cat([pad, h] if left else [h, pad]))
        ones, zeros = torch.ones(h.shape[0], dtype=torch.long), torch.zeros(pad.shape[0], dtype=torch.long)
        masks.append(torch.cat([zeros, ones] if left else [ones, zeros]))
    return torch.stack(rows), torch.stack(masks)


def combine_sd15(clip: list[TextEmbedding], dtype=torch.float32) -> torch.Tensor:
    """``prompt_embeds`` (B, 77, D)."""
    return _stack(clip, dtype=dtype)


def combine_sdxl(clip_l: list[TextEmbedding], clip_g: list[TextEmbedding], dtype=torch.float32):
    """``(prompt_embeds (B, 77, D1 + D2), pooled_prompt_embeds (B, D2))``: the two CLIPs side by side per token."""
    return torch.cat([_stack(clip_l, dtype=dtype), _stack(clip_g, dtype=dtype)], dim=-1), _stack(clip_g, "pooled", dtype)


def combine_sd3(clip_l: list[TextEmbedding], clip_g: list[TextEmbedding], t5: list[TextEmbedding], dtype=torch.float32):
    """``(prompt_embeds (B, 77 + T, D_t5), pooled_prompt_embeds (B, D1 + D2))``: CLIP-L|G per token, zero-padded on
    features to T5's width, then the T5 tokens after them on the sequence axis."""
    clip = torch.cat([_stack(clip_l, dtype=dtype), _stack(clip_g, dtype=dtype)], dim=-1)  # (B, 77, D1 + D2)
    t5_embeds = _stack(t5, dtype=dtype)  # (B, T, D_t5)
    clip = torch.nn.functional.pad(clip, (0, t5_embeds.shape[-1] - clip.shape[-1]))
    pooled = torch.cat([_stack(clip_l, "pooled", dtype), _stack(clip_g, "pooled", dtype)], dim=-1)
    return torch.cat([clip, t5_embeds], dim=-2), pooled


def combine_flux(clip: list[TextEmbedding], t5: list[TextEmbedding], dtype=torch.float32):
    """``(prompt_embeds (B, 512, D), pooled_prompt_embeds (B, D_clip), text_ids (512, 3) zeros)``."""
    prompt_embeds = _stack(t5, dtype=dtype)
    return prompt_embeds, _stack(clip, "pooled", dtype), torch.zeros(prompt_embeds.shape[1], 3, dtype=dtype)


def combine_wan(umt5: list[TextEmbedding], max_sequence_length: int = 226, dtype=torch.float32) -> torch.Tensor:
    """``prompt_embeds`` (B, max_sequence_length, D): the caption's tokens, zeros after."""
    return _pad_rows(umt5, max_sequence_length, dtype=dtype)[0]


def combine_qwen_image(qwen: list[TextEmbedding], max_sequence_length: int = QWEN_IMAGE_MAX, dtype=torch.float32):
    """``(prompt_embeds (B, L, D), prompt_embeds_mask (B, L) or None)``: zero-padded to the batch's longest
    caption (at most ``max_sequence_length``); the mask is ``None`` when no caption is padded, as in the pipeline."""
    length = min(max(e.length for e in qwen), max_sequence_length)
    embeds, mask = _pad_rows(qwen, length, dtype=dtype)
    return embeds, (None if bool(mask.all()) else mask)


def combine_z_image(qwen3: list[TextEmbedding], dtype=torch.float32) -> list[torch.Tensor]:
    """``prompt_embeds``: a list of (L_i, D), one per caption, as the pipeline returns them."""
    return [e.hidden_tensor().to(dtype) for e in qwen3]


def combine_flux2_klein(qwen3: list[TextEmbedding], dtype=torch.float32):
    """``(prompt_embeds (B, 512, 3D), text_ids (B, 512, 4))`` with text_ids ``(t=0, h=0, w=0, l)``."""
    embeds = _stack(qwen3, dtype=dtype)
    b, length, _ = embeds.shape
    pos = torch.arange(length)
    text_ids = torch.stack([torch.zeros_like(pos), torch.zeros_like(pos), torch.zeros_like(pos), pos], dim=-1)
    return embeds, text_ids.unsqueeze(0).expand(b, -1, -1)


def combine_ltx2(gemma: list[TextEmbedding], num_states: int, max_sequence_length: int = 1024, dtype=torch.float32):
    """``(prompt_embeds (B, S, D * N), prompt_attention_mask (B, S))`` as the connectors consume them: left-padded
    with zeros (their register replacement overwrites pad positions), features in the pipeline's
    ``stack(dim=-1).flatten(2, 3)`` order (feature-major, layer-minor); ``num_states`` = N hidden states stored."""
    embeds, mask = _pad_rows(gemma, max_sequence_length, left=True, dtype=dtype)  # (B, S, N * D), layer-major
    b, s, nd = embeds.shape
    embeds = embeds.view(b, s, num_states, nd // num_states).transpose(-1, -2).reshape(b, s, nd)
    return embeds, mask


@dataclass(frozen=True)
class TextPreset:
    """A family: its configs, its combine step and the pipeline function it reproduces."""

    configs: Callable[..., list[TextEncoderConfig]]
    combine: Callable
    follows: str


PRESETS: dict[str, TextPreset] = {
    "sd15": TextPreset(sd15, combine_sd15, "StableDiffusionPipeline.encode_prompt"),
    "sdxl": TextPreset(sdxl, combine_sdxl, "StableDiffusionXLPipeline.encode_prompt"),
    "sd3": TextPreset(sd3, combine_sd3, "StableDiffusion3Pipeline.encode_prompt"),
    "flux": TextPreset(flux, combine_flux, "FluxPipeline.encode_prompt"),
    "wan": TextPreset(wan, combine_wan, "WanPipeline.encode_prompt"),
    "qwen_image": TextPreset(qwen_image, combine_qwen_image, "QwenImagePipeline.encode_prompt"),
    "z_image": TextPreset(z_image, combine_z_image, "ZImagePipeline.encode_prompt"),
    "flux2_klein": TextPreset(flux2_klein, combine_flux2_klein, "Flux2KleinPipeline.encode_prompt"),
    "ltx2": TextPreset(ltx2, combine_ltx2, "LTX2Pipeline.encode_prompt"),
}


def preset(name: str, model: str, **kwargs) -> list[TextEncoderConfig]:
    """The configs of the family ``name`` for the pipeline folder or hub id ``model``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown text encoder preset {name!r}; expected one of: {sorted(PRESETS)}")
    return PRESETS[name].configs(model, **kwargs)
