"""Tiny random text encoders and locally built tokenizers, saved with ``save_pretrained`` as a
user's local folders would be (no weights are downloaded). Shared by the text-encoder tests."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

QWEN_IMAGE_TEMPLATE = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, "
                       "text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}"
                       "<|im_end|>\n<|im_start|>assistant\n")
CAPTIONS = [
    "a cat sitting on a red mat",
    "a photo of a dog",
    "red car",
    "",
    "an old man walking his small dog through the park on a rainy day with a blue umbrella",
    "a photo of a dog",
    "cat",
]
# Qwen3-style chat template (enable_thinking=False adds an empty think block)
CHAT_TEMPLATE = ("{%- for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{%- endfor %}"
                 "{%- if add_generation_prompt %}<|im_start|>assistant\n"
                 "{%- if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{%- endif %}"
                 "{%- endif %}")


def words() -> list[str]:
    text = " ".join(CAPTIONS) + " " + QWEN_IMAGE_TEMPLATE.replace("{}", "") + " user assistant system"
    pieces = pre_tokenizer().pre_tokenize_str(text.replace("<|im_start|>", " ").replace("<|im_end|>", " "))
    return sorted({p for p, _ in pieces}) + ["\n\n"]


def pre_tokenizer():
    # words and punctuation apart, newlines kept as tokens (so Qwen-Image's template prefix is 34 tokens, as with Qwen)
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"\n+"), behavior="isolated"),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])


def build_tokenizer(folder: Path, specials: list[str], bos: str | None, eos: str | None, pad: str, unk: str,
                    model_max_length: int, chat_template: str | None = None, extra: list[str] = ()) -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer over the test vocabulary; ``bos``/``eos`` are added around every text when set."""
    vocab = {t: i for i, t in enumerate(dict.fromkeys(specials + list(extra) + words()))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tk.pre_tokenizer = pre_tokenizer()
    tk.add_special_tokens(specials)
    single = " ".join(([bos] if bos else []) + ["$A"] + ([eos] if eos else []))
    pair = " ".join(([bos] if bos else []) + ["$A", "$B"] + ([eos] if eos else []))
    tk.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(t, vocab[t]) for t in (bos, eos) if t])
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk,
                                   model_max_length=model_max_length)
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(folder)
    return fast


def vocab_size() -> int:
    return len(words()) + 16


def t5_folder(folder: Path, umt5: bool = False, seed: int = 0, d_model: int = 32) -> Path:
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    tok = build_tokenizer(folder, ["<pad>", "</s>", "<unk>"], None, "</s>", "<pad>", "<unk>", 512)
    torch.manual_seed(seed)
    cfg_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    cfg = cfg_cls(vocab_size=vocab_size(), d_model=d_model, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                  relative_attention_num_buckets=8, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                  decoder_start_token_id=tok.pad_token_id)
    model_cls(cfg).eval().save_pretrained(folder)
    return folder


def clip_folder(folder: Path, projection: bool, hidden: int = 32, pad: str = "<|endoftext|>", seed: int = 0) -> Path:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    specials = ["<|startoftext|>", "<|endoftext|>", "!"]
    tok = build_tokenizer(folder, specials, "<|startoftext|>", "<|endoftext|>", pad, "<|endoftext|>", 77)
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=vocab_size(), hidden_size=hidden, intermediate_size=37, num_hidden_layers=3,
                         num_attention_heads=4, projection_dim=hidden + 8, max_position_embeddings=77,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         hidden_act="gelu")
    (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval().save_pretrained(folder)
    return folder


def qwen3_folder(folder: Path, seed: int = 0, layers: int = 4) -> Path:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    tok = build_tokenizer(folder, specials, None, None, "<|endoftext|>", "<|endoftext|>", 131072, CHAT_TEMPLATE)
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab_size(), hidden_size=16, intermediate_size=24, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, pad_token_id=tok.pad_token_id,
                      bos_token_id=None, eos_token_id=tok.pad_token_id, max_position_embeddings=1024)
    Qwen3ForCausalLM(cfg).eval().save_pretrained(folder)
    return folder


def qwen25vl_folder(folder: Path, seed: int = 0) -> Path:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
    tok = build_tokenizer(folder, specials, None, None, "<|endoftext|>", "<|endoftext|>", 131072)
    torch.manual_seed(seed)
    ids = tok.convert_tokens_to_ids
    cfg = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "vocab_size": vocab_size(), "rope_theta": 1000000.0,
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}},
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|image_pad|>"), vocab_size=vocab_size(),
        bos_token_id=None, eos_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id)
    Qwen2_5_VLForConditionalGeneration(cfg).eval().save_pretrained(folder)
    return folder


def gemma3_folder(folder: Path, seed: int = 0) -> Path:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tok = build_tokenizer(folder, specials, "<bos>", None, "<pad>", "<unk>", 1024)
    torch.manual_seed(seed)
    ids = tok.convert_tokens_to_ids
    cfg = Gemma3Config(
        text_config={"vocab_size": vocab_size(), "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 3,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "sliding_window": 8,
                     "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
                     "eos_token_id": ids("<eos>"), "max_position_embeddings": 1024},
        vision_config={"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 28, "patch_size": 14},
        mm_tokens_per_image=4, boi_token_index=ids("<start_of_image>"), eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"))
    Gemma3ForConditionalGeneration(cfg).eval().save_pretrained(folder)
    return folder


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def pipeline_part(root: Path, encoder: str, tokenizer: str, build, **kwargs) -> None:
    """``build`` a tiny encoder into ``root/encoder`` and move its tokenizer files to ``root/tokenizer``,
    as diffusers pipelines lay them out."""
    build(root / encoder, **kwargs)
    (root / tokenizer).mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (root / encoder / name).exists():
            (root / encoder / name).rename(root / tokenizer / name)


def load_part(root: Path, encoder: str, tokenizer: str):
    """``(model, tokenizer)`` as a user loads them into a pipeline."""
    import json

    import transformers

    arch = json.loads((root / encoder / "config.json").read_text())["architectures"][0]
    model = getattr(transformers, arch).from_pretrained(root / encoder).eval()
    return model, transformers.AutoTokenizer.from_pretrained(root / tokenizer)
