"""The config of one text encoder and the column it writes (pure dataclass: no torch, no transformers).

The job configs import it to validate ``text_encoders`` before anything heavy loads; the encoder itself is
:class:`latentflow.encode.text.TextEncoder`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from latentflow.configuration import Config
from latentflow.errors import ConfigError

StorageDType = Literal["fp16", "bf16", "fp32"]
_COLUMN = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass
class TextEncoderConfig(Config):
    """One text encoder and the one column it writes.

    Args:
        name: the column written (``t5``, ``clip_l``...).
        model: a transformers folder (model + tokenizer together, or in ``subfolder``/
            ``tokenizer_subfolder``), an fsspec URL of one, or a hub id read from the local HF cache.
        revision: a hub revision (hub ids only); the commit it resolves to is recorded.
        output: ``last_hidden_state``; ``hidden_state`` (``hidden_states[layer]``, or several layers
            concatenated on features, or ``"all"``); ``pooled`` only (CLIP ``text_embeds``/``pooler_output``).
        layer: with ``hidden_state``: ``k`` (negative counts from the end: -2 = penultimate), a tuple, or ``"all"``.
        final_layer_norm: apply the model's ``final_layer_norm`` to ``hidden_state`` (SD 1.x ``clip_skip``).
        pooled: also store the pooled vector ``(D,)``.
        attention_mask: pass the mask over the caption's tokens to the model (no mask needs
            ``padding="max_length"``: pads are then attended and must be the same for every batch).
        padding: ``trim`` stores the caption's own tokens ``(length, D)``; ``max_length`` stores
            ``(max_length, D)`` as the family's pipeline consumes it.
        padding_side: ``left``/``right``, or ``None`` for the tokenizer's own.
        max_length: token limit; ``None`` = the tokenizer's ``model_max_length``.
        truncation: cut longer captions (flagged ``truncated``); ``False`` raises on them.
        dtype: storage dtype; compute_dtype: the model's dtype for the forward.
        empty_caption: ``empty_string`` encodes blank/missing captions as ``""``; ``error`` raises.
        clean: caption clean-up before templating: ``none``, ``strip``, ``wan``.
        chat_template: wrap as ``[{"role": "user", "content": caption}]`` through the tokenizer's chat
            template with the generation prompt; enable_thinking is passed to it when not ``None``.
        prompt_template: a ``str.format`` template with one ``{}`` (Qwen-Image).
        drop_prefix_tokens: tokens dropped from the front after the forward (the template's prefix).
        batch_size: captions per forward (not part of the fingerprint).
    """

    name: str = ""
    model: str = ""
    subfolder: str | None = None
    tokenizer_subfolder: str | None = None
    revision: str | None = None
    output: Literal["last_hidden_state", "hidden_state", "pooled"] = "last_hidden_state"
    layer: int | tuple[int, ...] | Literal["all"] | None = None
    final_layer_norm: bool = False
    pooled: bool = False
    attention_mask: bool = True
    padding: Literal["trim", "max_length"] = "trim"
    padding_side: Literal["left", "right"] | None = None
    max_length: int | None = None
    truncation: bool = True
    dtype: StorageDType = "bf16"
    compute_dtype: StorageDType = "fp32"
    empty_caption: Literal["empty_string", "error"] = "empty_string"
    clean: Literal["none", "strip", "wan"] = "none"
    chat_template: bool = False
    enable_thinking: bool | None = None
    prompt_template: str | None = None
    drop_prefix_tokens: int = 0
    batch_size: int = 16

    def validate(self) -> None:
        super().validate()
        if not _COLUMN.match(self.name or ""):
            raise ConfigError(f"text encoder name must be a column name ([A-Za-z0-9_.-]+), got: {self.name!r}")
        if not self.model:
            raise ConfigError(f"text encoder {self.name!r}: model must be a folder, URL or hub id, got: {self.model!r}")
        if (self.output == "hidden_state") != (self.layer is not None):
            raise ConfigError(f"text encoder {self.name!r}: layer is set with output='hidden_state' and only then, "
                              f"got: output={self.output!r}, layer={self.layer!r}")
        if self.final_layer_norm and self.output != "hidden_state":
            raise ConfigError(f"text encoder {self.name!r}: final_layer_norm applies to output='hidden_state' only")
        if not self.attention_mask and self.padding != "max_length":
            raise ConfigError(f"text encoder {self.name!r}: attention_mask=False attends to the pads, so the result "
                              "would depend on the batch; set padding='max_length' (as the family does) or keep the mask")
        for key in ("max_length", "batch_size"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"text encoder {self.name!r}: {key} must be > 0, got: {value}")
        if self.drop_prefix_tokens < 0:
            raise ConfigError(f"drop_prefix_tokens must be >= 0, got: {self.drop_prefix_tokens}")
        if self.drop_prefix_tokens and self.padding != "trim":
            raise ConfigError(f"text encoder {self.name!r}: drop_prefix_tokens needs padding='trim'")
        if self.prompt_template is not None and self.prompt_template.count("{}") != 1:
            raise ConfigError(f"prompt_template must hold exactly one '{{}}', got: {self.prompt_template!r}")
        if self.prompt_template is not None and self.chat_template:
            raise ConfigError(f"text encoder {self.name!r}: set prompt_template or chat_template, not both")
