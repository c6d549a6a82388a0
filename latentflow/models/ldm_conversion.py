"""Key conversion between checkpoint layouts of the LDM autoencoder.

Three layouts hold the same weights:

- **diffusers** (ours too): ``encoder.down_blocks.{i}.resnets.{j}``, ``mid_block.attentions.0.to_q``
  (a linear weight), ``conv_shortcut``, ``conv_norm_out``.
- **legacy diffusers** (before 0.14): attention named ``query/key/value/proj_attn``.
- **original LDM / CompVis** (``first_stage_model.`` inside an SD checkpoint, or a bare VAE file):
  ``encoder.down.{i}.block.{j}``, ``nin_shortcut``, ``norm_out``, ``mid.block_1``, ``mid.attn_1.q``
  as a 1x1 conv weight (C, C, 1, 1), and ``decoder.up.{i}`` indexed from the *lowest*
  resolution, so its index runs opposite to ``decoder.up_blocks``.

Example::

    state = ldm_to_diffusers(read_safetensors(...))        # original layout -> ours
    config = infer_config(state)                            # block_out_channels, ...
"""

from __future__ import annotations

import re
from typing import Any

import torch

LDM_PREFIX = "first_stage_model."
# training-only parts of an LDM autoencoder checkpoint (LPIPS + discriminator); never needed to encode/decode
_TRAINING_ONLY = ("loss.",)

_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LEGACY_RE = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")

_LDM_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def rename_legacy_attention(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``...attentions.0.query.weight`` -> ``...attentions.0.to_q.weight`` (and key/value/proj_attn)."""
    out = {}
    for key, value in state.items():
        m = _LEGACY_RE.match(key)
        out[f"{m[1]}.{_LEGACY_ATTENTION[m[2]]}.{m[3]}" if m else key] = value
    return out


def strip_ldm_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the autoencoder of a full SD checkpoint (``first_stage_model.*``), or the file as is."""
    if any(k.startswith(LDM_PREFIX) for k in state):
        return {k[len(LDM_PREFIX):]: v for k, v in state.items() if k.startswith(LDM_PREFIX)}
    return dict(state)


def _num_up_levels(state: dict[str, torch.Tensor]) -> int:
    levels = {int(m[1]) for k in state if (m := re.match(r"decoder\.up\.(\d+)\.", k))}
    return max(levels) + 1 if levels else 0


def _convert_key(key: str, num_up: int) -> str:
    key = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", key)
    key = re.sub(r"\.down\.(\d+)\.block\.", r".down_blocks.\1.resnets.", key)
    key = re.sub(r"\.down\.(\d+)\.downsample\.", r".down_blocks.\1.downsamplers.0.", key)
    key = re.sub(r"\.up\.(\d+)\.block\.", lambda m: f".up_blocks.{num_up - 1 - int(m[1])}.resnets.", key)
    key = re.sub(r"\.up\.(\d+)\.upsample\.", lambda m: f".up_blocks.{num_up - 1 - int(m[1])}.upsamplers.0.", key)
    key = re.sub(r"\.mid\.block_(\d)\.", lambda m: f".mid_block.resnets.{int(m[1]) - 1}.", key)
    key = re.sub(r"\.mid\.attn_1\.(norm|q|k|v|proj_out)\.", lambda m: f".mid_block.attentions.0.{_LDM_ATTENTION[m[1]]}.", key)
    return key.replace(".nin_shortcut.", ".conv_shortcut.")


def ldm_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert an original LDM/CompVis autoencoder state dict to the diffusers layout.

    Args:
        state: the checkpoint's tensors, with or without the ``first_stage_model.`` prefix.
            Training-only ``loss.*`` tensors are dropped; anything else unknown is kept
            so that a strict load names it.

    Returns:
        A new state dict in diffusers' layout; attention 1x1 conv weights become linear weights.
    """
    state = {k: v for k, v in strip_ldm_prefix(state).items() if not k.startswith(_TRAINING_ONLY)}
    num_up = _num_up_levels(state)
    out = {}
    for key, value in state.items():
        new = _convert_key(key, num_up)
        if ".attentions.0.to_" in new and new.endswith(".weight") and value.ndim > 2:
            value = value.reshape(value.shape[0], value.shape[1])  # (C, C, 1, 1) conv -> (C, C) linear
        out[new] = value
    return rename_legacy_attention(out)


def infer_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Read the architecture off a diffusers-layout state dict.

    ``norm_num_groups`` cannot be read from weights; every released LDM autoencoder uses 32,
    which is the config default, so it is not returned.

    Returns:
        ``in_channels``, ``out_channels``, ``block_out_channels``, ``layers_per_block``,
        ``latent_channels``, ``use_quant_conv``, ``use_post_quant_conv``, ``mid_block_add_attention``.
    """
    levels = sorted({int(m[1]) for k in state if (m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.0\.conv1\.weight", k))})
    resnets = {int(m[1]) for k in state if (m := re.match(r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", k))}
    needed = ("encoder.conv_in.weight", "decoder.conv_in.weight", "decoder.conv_out.weight")
    missing = [k for k in needed if k not in state]
    if not levels or not resnets or missing:
        raise KeyError(f"not an LDM autoencoder state dict: missing {missing or ['encoder.down_blocks.*']}")
    return {
        "in_channels": int(state["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(state["decoder.conv_out.weight"].shape[0]),
        "block_out_channels": [int(state[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in levels],
        "layers_per_block": len(resnets),
        "latent_channels": int(state["decoder.conv_in.weight"].shape[1]),
        "use_quant_conv": "quant_conv.weight" in state,
        "use_post_quant_conv": "post_quant_conv.weight" in state,
        "mid_block_add_attention": "encoder.mid_block.attentions.0.to_q.weight" in state,
    }


__all__ = ["ldm_to_diffusers", "rename_legacy_attention", "strip_ldm_prefix", "infer_config", "LDM_PREFIX"]
