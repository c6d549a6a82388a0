"""TextEncoder: parity with a direct transformers forward, batching, dtypes, fingerprints, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import (
    AutoTokenizer,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5EncoderModel,
)

from latentflow.encode.text import (
    TextEmbedding,
    TextEncoder,
    TextEncoderConfig,
    TextEncoderInfo,
    caption_key,
    dedup_captions,
    from_storage,
    storage_bytes,
    to_storage,
)
from latentflow.errors import ConfigError, InputError
from tests.encode.tiny_text import CAPTIONS

TOL = 1e-5


def encoder(folder, **kw) -> TextEncoder:
    return TextEncoder(TextEncoderConfig(name=kw.pop("name", "t5"), model=str(folder), **kw))


def direct(model_cls, folder, caption: str, **forward):
    """The reference: the caption's own tokens (tokenizer defaults), one caption per forward."""
    tok = AutoTokenizer.from_pretrained(folder)
    model = model_cls.from_pretrained(folder).eval()
    ids = tok(caption, return_tensors="pt")
    with torch.no_grad():
        return model(**ids, **forward), ids


@pytest.fixture(scope="module")
def t5_fp32(text_folders):
    return encoder(text_folders["t5"], dtype="fp32", batch_size=3)


def test_plain_entry_equals_direct_t5_forward_on_own_tokens(text_folders, t5_fp32):
    embs = t5_fp32.encode(CAPTIONS)
    assert len(embs) == len(CAPTIONS)
    for caption, emb in zip(CAPTIONS, embs):
        out, ids = direct(T5EncoderModel, text_folders["t5"], caption)
        ref = out.last_hidden_state[0]  # (L, D)
        assert emb.length == ids.input_ids.shape[1] and emb.hidden.shape == tuple(ref.shape)
        assert ids.input_ids[0, -1] == AutoTokenizer.from_pretrained(text_folders["t5"]).eos_token_id  # specials in
        assert not emb.truncated and emb.pooled is None
        np.testing.assert_allclose(emb.hidden, ref.numpy(), atol=TOL, rtol=0)


def test_length_batching_equals_unbatched_and_keeps_order(text_folders, t5_fp32):
    one = encoder(text_folders["t5"], dtype="fp32", batch_size=1).encode(CAPTIONS)
    many = t5_fp32.encode(CAPTIONS)  # batch_size=3: sorted by length, padded, restored
    for a, b in zip(one, many):
        assert a.length == b.length
        np.testing.assert_allclose(a.hidden, b.hidden, atol=TOL, rtol=0)
    assert np.array_equal(many[1].hidden, many[5].hidden)  # the duplicate caption, same place as given


def test_hidden_state_layer_k_and_final_layer_norm(text_folders):
    for k in (-2, 1):
        [emb] = encoder(text_folders["t5"], dtype="fp32", output="hidden_state", layer=k).encode([CAPTIONS[0]])
        out, _ = direct(T5EncoderModel, text_folders["t5"], CAPTIONS[0], output_hidden_states=True)
        np.testing.assert_allclose(emb.hidden, out.hidden_states[k][0].numpy(), atol=TOL, rtol=0)
    [both] = encoder(text_folders["t5"], dtype="fp32", output="hidden_state", layer=(0, -1)).encode([CAPTIONS[0]])
    np.testing.assert_allclose(both.hidden, torch.cat([out.hidden_states[0], out.hidden_states[-1]], -1)[0].numpy(),
                               atol=TOL, rtol=0)
    [normed] = encoder(text_folders["clip"], name="clip", dtype="fp32", output="hidden_state", layer=-2,
                       final_layer_norm=True).encode([CAPTIONS[0]])
    model = CLIPTextModel.from_pretrained(text_folders["clip"]).eval()
    out, _ = direct(CLIPTextModel, text_folders["clip"], CAPTIONS[0], output_hidden_states=True)
    with torch.no_grad():
        ref = model.final_layer_norm(out.hidden_states[-2])[0]  # transformers 5: no .text_model on CLIPTextModel
    np.testing.assert_allclose(normed.hidden, ref.numpy(), atol=TOL, rtol=0)


def test_pooled_clip(text_folders):
    for kind, cls, key in (("clip_proj", CLIPTextModelWithProjection, "text_embeds"),
                           ("clip", CLIPTextModel, "pooler_output")):
        enc = encoder(text_folders[kind], name="clip", dtype="fp32", pooled=True)
        only = encoder(text_folders[kind], name="clip", dtype="fp32", output="pooled")
        [emb], [emb_only] = enc.encode([CAPTIONS[1]]), only.encode([CAPTIONS[1]])
        out, _ = direct(cls, text_folders[kind], CAPTIONS[1])
        np.testing.assert_allclose(emb.pooled, getattr(out, key)[0].numpy(), atol=TOL, rtol=0)
        assert emb_only.hidden is None and np.array_equal(emb_only.pooled, emb.pooled)
    with pytest.raises(ConfigError, match="pooled"):
        encoder(text_folders["t5"], pooled=True).encode(["a cat"])


def test_padding_max_length_and_mask(text_folders):
    enc = encoder(text_folders["t5"], dtype="fp32", padding="max_length", max_length=24)
    trim = encoder(text_folders["t5"], dtype="fp32")
    embs, trimmed = enc.encode(CAPTIONS[:3]), trim.encode(CAPTIONS[:3])
    for e, t in zip(embs, trimmed):
        assert e.hidden.shape == (24, 32) and e.attention_mask().sum() == e.length == t.length
        np.testing.assert_allclose(e.hidden[: e.length], t.hidden, atol=TOL, rtol=0)  # masked: pads change nothing


def test_bf16_bit_pattern_round_trip(text_folders, t5_fp32):
    x = torch.randn(5, 7)
    stored = to_storage(x, "bf16")
    assert stored.dtype == np.uint16
    assert torch.equal(from_storage(stored, "bf16"), x.to(torch.bfloat16))
    assert torch.equal(from_storage(to_storage(x, "fp16"), "fp16"), x.half())
    [bf] = encoder(text_folders["t5"], dtype="bf16").encode([CAPTIONS[0]])
    [fp] = t5_fp32.encode([CAPTIONS[0]])
    assert bf.hidden.dtype == np.uint16 and bf.hidden_tensor().dtype == torch.bfloat16
    assert torch.equal(bf.hidden_tensor(), torch.from_numpy(fp.hidden).to(torch.bfloat16))
    with pytest.raises(InputError, match="uint16"):
        from_storage(np.zeros(3, np.float32), "bf16")


def test_fingerprint_follows_weights_and_tokenizer_not_location(text_folders, tmp_path, t5_fp32):
    info = t5_fp32.info
    assert TextEncoderInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    copy = shutil.copytree(text_folders["t5"], tmp_path / "copy")
    assert encoder(copy, dtype="fp32").fingerprint() == info.fingerprint()
    assert encoder(text_folders["t5_other"], dtype="fp32").fingerprint() != info.fingerprint()  # other weights
    tok_cfg = copy / "tokenizer_config.json"
    tok_cfg.write_text(tok_cfg.read_text().replace('"<unk>"', '"<pad>"', 1))  # another tokenizer, same weights
    changed = encoder(copy, dtype="fp32")
    assert changed.info.weights_sha256 == info.weights_sha256
    assert changed.info.tokenizer_sha256 != info.tokenizer_sha256 and changed.fingerprint() != info.fingerprint()
    assert encoder(text_folders["t5"], dtype="bf16").fingerprint() != info.fingerprint()
    assert encoder(text_folders["t5"], dtype="fp32", batch_size=7).fingerprint() == info.fingerprint()
    with pytest.raises(ConfigError, match="unknown keys"):
        TextEncoderInfo.from_dict({**info.to_dict(), "extra": 1})


def test_caption_key_and_dedup():
    captions = ["b", "a", "b", "", "a", "c"]
    unique, index = dedup_captions(captions)
    assert unique == ["b", "a", "", "c"] and [unique[i] for i in index] == captions
    assert dedup_captions([]) == ([], [])
    k = caption_key("f" * 64, "a cat")
    assert k == caption_key("f" * 64, "a cat") and len(k) == 64
    assert k != caption_key("e" * 64, "a cat") and k != caption_key("f" * 64, "a cat ")


def test_storage_bytes_trimmed_16bit_vs_padded_fp32(t5_fp32, text_folders):
    embs = encoder(text_folders["t5"], dtype="bf16").encode(CAPTIONS[:3])
    report = storage_bytes(embs, max_length=512)
    lengths = [e.length for e in embs]
    assert report["stored"] == pytest.approx(np.mean(lengths) * 32 * 2)
    assert report["padded_fp32"] == 512 * 32 * 4
    assert report["ratio"] == pytest.approx(512 * 4 / (2 * np.mean(lengths)))


def test_missing_tokenizer_fails_fast_naming_folder(text_folders, tmp_path):
    folder = tmp_path / "no_tok"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(text_folders["t5"] / name, folder / name)
    with pytest.raises(ConfigError, match=r"no tokenizer in .*no_tok.*tokenizer\.json"):
        encoder(folder)
    with pytest.raises(ConfigError, match="does not exist"):
        encoder(tmp_path / "absent")


def test_long_caption_truncated_and_flagged(text_folders):
    long = CAPTIONS[4]
    [emb] = encoder(text_folders["t5"], dtype="fp32", max_length=6).encode([long])
    tok = AutoTokenizer.from_pretrained(text_folders["t5"])
    assert emb.truncated and emb.length == 6 and emb.hidden.shape[0] == 6
    assert tok(long, truncation=True, max_length=6).input_ids[-1] == tok.eos_token_id  # closing token kept
    with pytest.raises(InputError, match="over max_length=6"):
        encoder(text_folders["t5"], max_length=6, truncation=False).encode(["cat", long])


def test_bad_captions(text_folders, t5_fp32):
    with pytest.raises(InputError, match="caption 1 is not valid UTF-8"):
        t5_fp32.encode(["a cat", b"\xff\xfe caption"])
    with pytest.raises(InputError, match="not valid UTF-8"):
        t5_fp32.encode([b"\xffcat".decode("utf-8", "surrogateescape")])
    [from_bytes] = t5_fp32.encode([b"a cat"])
    assert np.array_equal(from_bytes.hidden, t5_fp32.encode(["a cat"])[0].hidden)
    empty, blank, missing = t5_fp32.encode(["", "   ", None])
    assert empty.length == blank.length == missing.length == 1  # "" is just </s>
    np.testing.assert_allclose(blank.hidden, empty.hidden, atol=TOL, rtol=0)
    np.testing.assert_allclose(missing.hidden, empty.hidden, atol=TOL, rtol=0)
    with pytest.raises(InputError, match="caption 1 is empty"):
        encoder(text_folders["t5"], empty_caption="error").encode(["a cat", " "])


@pytest.mark.parametrize("bad, match", [
    ({"layer": -2}, "layer is set with output='hidden_state'"),
    ({"output": "hidden_state"}, "layer is set"),
    ({"attention_mask": False}, "padding='max_length'"),
    ({"dtype": "fp8"}, "dtype must be one of"),
    ({"max_length": 0}, "max_length must be > 0"),
    ({"colour": 1}, "unknown key 'colour'"),
    ({"name": "bad name"}, "column name"),
    ({"prompt_template": "no slot"}, "exactly one"),
])
def test_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        TextEncoderConfig.from_dict({"name": "t5", "model": "x", **bad})


def test_config_round_trip():
    cfg = TextEncoderConfig(name="clip_g", model="m", subfolder="text_encoder_2", output="hidden_state", layer=(9, 18))
    assert TextEncoderConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_fsspec_url_and_hub_id_offline(text_folders, tmp_path, monkeypatch):
    import fsspec

    mem = fsspec.filesystem("memory")
    for p in text_folders["t5"].iterdir():
        mem.pipe(f"/tiny-t5/{p.name}", p.read_bytes())
    ref = encoder(text_folders["t5"], dtype="fp32")
    url = encoder("memory://tiny-t5", dtype="fp32")
    assert url.fingerprint() == ref.fingerprint() and url.info.commit is None

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--tiny-t5"
    shutil.copytree(text_folders["t5"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = encoder("org/tiny-t5", dtype="fp32")
    assert hub.info.commit == commit and hub.fingerprint() == ref.fingerprint()
    assert np.array_equal(hub.encode(["red car"])[0].hidden, ref.encode(["red car"])[0].hidden)
    with pytest.raises(Exception, match="org/absent"):
        encoder("org/absent")


def test_text_embedding_mask_sides():
    e = TextEmbedding(hidden=np.zeros((5, 2), np.float32), pooled=None, length=3, truncated=False, dtype="fp32")
    assert e.attention_mask().tolist() == [1, 1, 1, 0, 0]
    left = TextEmbedding(hidden=np.zeros((5, 2), np.float32), pooled=None, length=3, truncated=False, dtype="fp32",
                         left_padded=True)
    assert left.attention_mask().tolist() == [0, 0, 1, 1, 1]
