"""Text encoders in the encode job (issue #20): the user's command on a captioned folder, through
``datasets.load_dataset`` and ``LatentDataset``, checked against a direct T5 forward on each caption's tokens.

The folder holds the data users have: ``<stem>.txt`` sidecars, a repeated caption, a blank one, one longer
than ``max_length`` and one whose bytes are not UTF-8.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from latentflow.errors import CodecMismatchError, ConfigError
from latentflow.format.codec import Codec
from latentflow.format.text import TextColumn
from latentflow.jobs.config import EncodeJobConfig
from tests.samples import encode_jpeg, load_photos

ROOT = Path(__file__).resolve().parents[2]
LONG = "an old man walking his small dog through the park on a rainy day with a blue umbrella"
CAPTIONS = {"astronaut": "a photo of a dog", "chelsea": "a cat sitting on a red mat", "coffee": "a photo of a dog",
            "rocket": "", "cat": LONG, "retina": "red car"}
BAD = b"a photo \xff\xfe of a dog"  # not UTF-8: an error row


def write_captioned_folder(root: Path) -> Path:
    photos = load_photos(tuple(CAPTIONS) + ("motorcycle",))
    root.mkdir(parents=True)
    for name, pixels in photos.items():
        (root / f"{name}.jpg").write_bytes(encode_jpeg(pixels[:64, :64]))
        (root / f"{name}.txt").write_bytes(CAPTIONS[name].encode() if name in CAPTIONS else BAD)
    return root


def run_job(args: list[str], env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "RAY_ADDRESS"}  # never someone's cluster
    return subprocess.run([sys.executable, "jobs/encode_dataset.py", *args], cwd=str(ROOT), capture_output=True,
                          text=True, timeout=timeout, env=env)


def direct_t5(folder: Path, caption: str) -> torch.Tensor:
    """The last hidden state of the caption's own tokens: the tokenizer's defaults, one caption, no pads."""
    from transformers import AutoTokenizer, T5EncoderModel

    tok, model = AutoTokenizer.from_pretrained(str(folder)), T5EncoderModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        return model(**tok(caption, return_tensors="pt")).last_hidden_state[0]  # (L, D) fp32


@pytest.fixture(scope="module")
def encoded(ray_local, text_folders, tmp_path_factory):
    """The encode job (its config from the shipped YAML and the user's overrides) with
    ``text_encoders=[{name: t5, model: <folder>, max_length: 8}]``, on the session's local Ray.
    (tests/journey/test_text_journey.py runs the same command as a subprocess.)"""
    from latentflow.jobs.runner import run_encode_job

    tmp = tmp_path_factory.mktemp("text_job")
    folder, out = write_captioned_folder(tmp / "folder"), tmp / "out"
    config = EncodeJobConfig.from_yaml(str(ROOT / "configs/encode/default.yaml"), [
        f"output={out}", "processor.resolution=32", "batch_size=4", "num_actors=1", "max_error_rate=0.2",
        "source.format=folder", f"source.urls={folder}", f"text_encoders=[{{name: t5, model: {text_folders['t5']}, max_length: 8}}]"])
    summary = run_encode_job(config, progress=False)
    assert summary.rows == len(CAPTIONS) and summary.errors == 1
    assert (summary.text["t5"]["rows"], summary.text["t5"]["truncated"]) == (6, 1)  # what the job prints
    return out, tmp


def test_job_rows_hold_each_captions_t5_outputs_read_through_load_dataset(encoded, text_folders):
    import datasets

    out, tmp = encoded
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp / "hf"))
    assert ds.num_rows == len(CAPTIONS)  # the non-UTF-8 caption is an error row, below
    assert type(ds.features["t5"]).__name__ == "Array2D" and ds.features["t5"].shape == (None, 32)
    for row in ds:
        want = direct_t5(text_folders["t5"], row["caption"] or "")
        truncated = row["caption"] == LONG
        if truncated:  # cut to max_length=8 by the tokenizer (closing </s> kept): the forward of those tokens
            from transformers import AutoTokenizer, T5EncoderModel

            tok = AutoTokenizer.from_pretrained(str(text_folders["t5"]))
            ids = tok(LONG, truncation=True, max_length=8, return_tensors="pt")
            with torch.no_grad():
                want = T5EncoderModel.from_pretrained(str(text_folders["t5"])).eval()(**ids).last_hidden_state[0]
        got = torch.from_numpy(np.asarray(row["t5"], dtype=np.uint16)).view(torch.bfloat16)  # bf16 stored as uint16
        assert got.shape == want.shape and row["t5_length"] == want.shape[0] and row["t5_truncated"] == truncated
        assert torch.equal(got, want.to(torch.bfloat16)), row["caption"]


def test_errors_summary_dedup_and_codec(encoded):
    out, _ = encoded
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    assert [(e["key"], e["stage"]) for e in errors] == [("motorcycle", "text")] and "not UTF-8" in errors[0]["message"]
    info = json.loads((out / "latentflow.json").read_text())
    text = info["text"]["t5"]
    assert (text["rows"], text["unique"], text["truncated"]) == (6, 5, 1)  # "a photo of a dog" twice: stored once
    assert text["dedup_ratio"] == 1.2 and text["padded_fp32_bytes"] == 8 * 32 * 4  # max_length tokens x D x fp32
    assert text["tokens"] == 6 + 8 + 1 + 8 + 3 and text["bytes_per_caption"] == round(text["tokens"] * 32 * 2 / 6, 1)
    assert info["counts"]["samples"] == info["counts"]["rows"] + info["counts"]["sample_errors"] == 7
    from latentflow.read.inspect import format_inspect, inspect

    shown = inspect(str(out))["text"]["t5"]
    assert (shown["rows"], shown["unique"], shown["dedup_ratio"], shown["width"]) == (6, 5, 1.2, 32)
    assert "text t5:" in format_inspect(inspect(str(out))) and "dedup ratio 1.2" in format_inspect(inspect(str(out)))
    codec = Codec.from_dict(info["codec"])
    [col] = codec.text
    assert col.name == "t5" and col.info["max_length"] == 8 and col.info["dtype"] == "bf16" and col.columns == (
        "t5", "t5_length", "t5_truncated")


def test_latent_dataset_pads_per_batch_and_masks(encoded):
    import latentflow

    out, _ = encoded
    ds = latentflow.LatentDataset(str(out))
    batch = next(ds.iter_batches(6, shuffle=False))
    lengths = {c: n for c, n in zip(batch["caption"], batch["t5_mask"].sum(1).tolist())}
    assert batch["t5"].shape == (6, 8, 32) and batch["latent"].shape[0] == 6
    assert lengths["a photo of a dog"] == 6 and lengths[None] == 1 and lengths[LONG] == 8
    assert (batch["t5"][~batch["t5_mask"]] == 0).all()  # pads are zeros, masked out
    import datasets

    rows = {r["key"]: r for r in datasets.load_dataset(str(out), split="train", cache_dir=str(out.parent / "hf"))}
    for i, key in enumerate(batch["key"]):  # Zarr (deduplicated) and Parquet (per row) hold the same values
        stored = torch.from_numpy(np.asarray(rows[key]["t5"], dtype=np.uint16)).view(torch.bfloat16).float()
        assert torch.equal(batch["t5"][i, : len(stored)], stored)


def test_missing_tokenizer_is_one_line_before_ray(text_folders, tmp_path):
    model_only = tmp_path / "t5_no_tokenizer"
    model_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        (model_only / name).write_bytes((text_folders["t5"] / name).read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "jobs/encode_dataset.py", "--config", "configs/encode/default.yaml",
                           f"output={tmp_path / 'out'}", f"text_encoders=[{{name: t5, model: {model_only}}}]"],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=120, env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("error: ") and "no tokenizer in" in lines[0] and "tokenizer.json" in lines[0]


# ---- config and codec ---------------------------------------------------------------------------


def test_text_encoders_list_from_yaml_and_overrides(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("model: kl-f8\nsource: {urls: [a.tar]}\ntext_encoders:\n  - {name: t5, model: /m/t5, dtype: fp16}\n")
    cfg = EncodeJobConfig.from_yaml(str(path), ["text_encoders=[{name: clip, model: /m/clip, pooled: true}, {name: t5, model: /m/t5}]"])
    assert [(t.name, t.pooled) for t in cfg.text_encoders] == [("clip", True), ("t5", False)]
    assert EncodeJobConfig.from_dict(cfg.to_dict()).text_encoders == cfg.text_encoders  # sections write back as mappings
    with pytest.raises(ConfigError, match="unknown key 'layers'"):
        EncodeJobConfig.from_yaml(str(path), ["text_encoders=[{name: t5, model: /m, layers: 3}]"])
    with pytest.raises(ConfigError, match=r"text_encoders\[0\] must be a mapping"):
        EncodeJobConfig.from_yaml(str(path), ["text_encoders=[t5]"])
    with pytest.raises(ConfigError, match="must be unique"):
        EncodeJobConfig.from_yaml(str(path), ["text_encoders=[{name: t5, model: /a}, {name: t5, model: /b}]"])


def test_codec_records_text_columns_and_refuses_another_encoder(encoded, text_folders):
    from latentflow.encode.codec_builder import text_column
    from latentflow.encode.text import TextEncoder, TextEncoderConfig
    from latentflow.format.codec import check_compatible
    from latentflow.format.state import read_output_codec

    out, _ = encoded
    codec = read_output_codec(str(out))
    assert Codec.from_dict(codec.to_dict()) == codec and codec.to_dict()["text_encoders"][0]["info"]["weights_sha256"]
    bare = Codec.from_dict({k: v for k, v in codec.to_dict().items() if k not in ("text_encoders", "fingerprint")})
    assert "text" not in bare._identity() and bare.fingerprint != codec.fingerprint  # no text: the identity of old outputs
    other = TextEncoder(TextEncoderConfig(name="t5", model=str(text_folders["t5_other"]), max_length=8))
    swapped = Codec.from_dict({**codec.to_dict(), "text_encoders": [text_column(other).to_dict()], "fingerprint": ""})
    with pytest.raises(CodecMismatchError, match="text"):
        check_compatible(codec, swapped)
    assert TextColumn.from_dict(codec.text[0].to_dict()) == codec.text[0]


# ---- the journey's last leg: a text-conditioned prior trained from the cache ------------------------


def test_text_conditioned_prior_trains_from_the_cache_and_samples_each_prompt(encoded, tmp_path):
    """``python jobs/train_prior.py --config configs/train/flow_prior_text.yaml data.path=<out>``: streamed from the
    cache, conditioned on the t5 column; one decoded PNG per prompt, embedded by the encoder the codec records."""
    from PIL import Image

    out, _ = encoded
    run = tmp_path / "prior"
    done = subprocess.run([sys.executable, "jobs/train_prior.py", "--config", "configs/train/flow_prior_text.yaml",
                           f"data.path={out}", f"train.output_dir={run}", "train.max_steps=3", "train.checkpoint_every=3",
                           "train.eval_every=3", "data.batch_size=2", "sample.steps=2", "prior.config.hidden_size=32",
                           "prior.config.num_layers=1", "prior.config.num_heads=2"],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.split("result: ", 1)[1])
    assert result["steps"] == 3 and "flow_loss" in result["metrics"]
    prompts = json.loads((run / "samples" / "prompts.json").read_text())
    assert prompts == {"prompts": ["a photo of a dog", "a cat sitting on a red mat"], "guidance_scale": 3.0}
    for i in range(2):
        image = np.asarray(Image.open(run / "samples" / f"prompt_{i:03d}.png"))
        assert image.shape[0] >= 32 and image.shape[2] in (3, 4) and image.std() > 0
    config = json.loads((run / "final" / "config.json").read_text())
    assert (config["text_dim"] == 32
            and config["codec_fingerprint"] == json.loads((out / "latentflow.json").read_text())["codec"]["fingerprint"])


# ---- text-only mode: evaluation prompts without media ------------------------------------------------


def test_encode_prompts_caches_a_prompt_file_that_the_prior_reads_back(text_folders, tmp_path):
    from latentflow.encode.prompts import encode_prompts, encoder_from_column, prompt_embeddings
    from latentflow.encode.text import TextEncoder, TextEncoderConfig

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a dog\n\nred car\na cat sitting on a red mat\n")
    cfg = TextEncoderConfig(name="t5", model=str(text_folders["t5"]))
    [column] = encode_prompts(str(prompts), [cfg], str(tmp_path / "cache"))
    text, mask, read = prompt_embeddings(column, cache=str(tmp_path / "cache"))
    assert read == ["a photo of a dog", "red car", "a cat sitting on a red mat"]
    direct = TextEncoder(cfg).encode(read)
    assert text.shape == (3, max(e.length for e in direct), 32) and mask.sum(1).tolist() == [e.length for e in direct]
    for i, e in enumerate(direct):
        assert torch.equal(text[i, : e.length], e.hidden_tensor().float()) and (text[i, e.length:] == 0).all()
    computed, computed_mask, _ = prompt_embeddings(column, prompts=str(prompts))  # encoded at start instead
    assert torch.equal(computed, text) and torch.equal(computed_mask, mask)
    assert encoder_from_column(column).fingerprint() == column.fingerprint
    other = TextColumn("t5", "0" * 64, column.info)
    with pytest.raises(CodecMismatchError, match="another 't5' text encoder"):
        prompt_embeddings(other, cache=str(tmp_path / "cache"))


def test_pooled_fp16_column_in_process(text_folders, tmp_path):
    """``encode_locally`` (the same encode path, no Ray) with a CLIP encoder storing fp16 states and the pooled
    projection: both read back through ``load_dataset`` and ``LatentDataset`` equal to the component's own output."""
    import datasets

    import latentflow
    from latentflow.auto import AutoModel
    from latentflow.encode.local import encode_locally
    from latentflow.encode.text import TextEncoder, TextEncoderConfig
    from latentflow.media.config import ImageProcessorConfig
    from latentflow.sources.shards import SourceConfig

    folder = write_captioned_folder(tmp_path / "folder")
    (folder / "motorcycle.txt").write_text("red car")  # every caption UTF-8 here
    cfg = TextEncoderConfig(name="clip", model=str(text_folders["clip_proj"]), pooled=True, dtype="fp16")
    out = tmp_path / "out"
    codec = encode_locally(AutoModel.from_pretrained("kl-f8"), SourceConfig(format="folder", urls=[str(folder)]), str(out),
                           ImageProcessorConfig(resolution=32), text_encoders=[cfg])
    assert codec.text[0].columns == ("clip", "clip_length", "clip_truncated", "clip_pooled")
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    direct = dict(zip(ds["caption"], TextEncoder(cfg).encode(ds["caption"])))
    for row in ds:
        want = direct[row["caption"]]
        assert np.array_equal(np.asarray(row["clip"], dtype=np.float16), want.hidden)
        assert np.array_equal(np.asarray(row["clip_pooled"], dtype=np.float16), want.pooled)
    batch = next(latentflow.LatentDataset(str(out)).iter_batches(len(ds), shuffle=False))
    for i, caption in enumerate(batch["caption"]):
        want = direct[caption if caption is not None else ""]  # LatentDataset gives a blank caption as None
        assert torch.equal(batch["clip_pooled"][i], torch.from_numpy(want.pooled).float())
        assert torch.equal(batch["clip"][i, : want.length], torch.from_numpy(want.hidden).float())


def test_encode_captions_rules_and_dedup(text_folders):
    """The encode path's text stage: blank captions under ``empty_caption='error'`` and U+FFFD (non-UTF-8 bytes)
    drop their rows as ``text`` errors; identical captions reach the encoder once."""
    from latentflow.encode.shard import ProcessedSample, encode_captions
    from latentflow.encode.text import TextEncoder, TextEncoderConfig

    encoder = TextEncoder(TextEncoderConfig(name="t5", model=str(text_folders["t5"]), empty_caption="error"))
    seen: list[list[str]] = []
    encode = encoder.encode
    encoder.encode = lambda captions: seen.append(list(captions)) or encode(captions)  # record what is encoded
    captions = ["red car", "   ", None, "red car", "a photo \ufffd of a dog", "cat"]
    samples = [ProcessedSample(f"k{i}", np.zeros((3, 1, 1), np.uint8), (1, 1), (0, 0, 1, 1), i, c) for i, c in enumerate(captions)]
    arrays = [{} for _ in samples]
    errors = encode_captions(samples, arrays, encoder, "s0")
    assert [(e["key"], e["stage"], e["error_type"]) for e in errors] == [("k1", "text", "bad_caption"),
                                                                          ("k2", "text", "bad_caption"),
                                                                          ("k4", "text", "bad_caption")]
    assert "empty_caption='error'" in errors[0]["message"] and "U+FFFD" in errors[2]["message"]
    assert seen == [["red car", "cat"]] and [a is None for a in arrays] == [False, True, True, False, True, False]
    assert np.array_equal(arrays[0]["t5"], arrays[3]["t5"]) and int(arrays[5]["t5_length"]) == 2


def test_refresh_captions_recomputes_only_the_edited_captions(text_folders, tmp_path):
    """Captions edited after the encode: a rerun with refresh_captions=true rewrites only those rows' text columns
    (a caption edited to another row's text reuses its embedding, a new one is encoded), keeps every latent bit for
    bit, and Parquet and Zarr agree. The first encode runs in-process (``encode_locally``, the job's commit
    protocol); the job's rerun starts no Ray: every shard is committed."""
    from latentflow import LatentDataset
    from latentflow.auto import AutoModel
    from latentflow.encode.local import encode_locally
    from latentflow.encode.refresh import stored_columns
    from latentflow.format.state import committed_shards
    from latentflow.jobs.runner import run_encode_job

    folder, out = write_captioned_folder(tmp_path / "folder"), tmp_path / "out"
    config = EncodeJobConfig.from_yaml(str(ROOT / "configs/encode/default.yaml"), [
        f"output={out}", "processor.resolution=32", "max_error_rate=0.2", "source.format=folder", f"source.urls={folder}",
        f"text_encoders=[{{name: t5, model: {text_folders['t5']}, max_length: 8}}]", "refresh_captions=true"])
    encode_locally(AutoModel.from_pretrained(str(ROOT / "models/kl-f8")), config.source, str(out), config.processor,
                   config.store, text_encoders=config.text_encoders)

    def rows() -> dict[str, dict]:
        [marker] = committed_shards(str(out)).values()
        columns = stored_columns(list(marker.files), Codec.from_dict(json.loads((out / "latentflow.json").read_text())["codec"]))
        return {k: {n: v[i] for n, v in columns.items()} for i, k in enumerate(columns["key"])}

    before = rows()
    (folder / "chelsea.txt").write_text("a photo of a dog")  # another row's caption: its embedding is reused
    (folder / "retina.txt").write_text("a blue bicycle")  # new: encoded
    summary = run_encode_job(config, progress=False)
    assert summary.shards_committed == 0 and summary.captions == {
        "shards_checked": 1, "shards_rewritten": 1, "rows_changed": 2, "captions_encoded": 1, "captions_reused": 1, "rows_dropped": 0}

    after = rows()
    assert sorted(after) == sorted(before)
    for key, row in after.items():
        assert np.array_equal(row["latent"], before[key]["latent"])  # latents kept bit for bit
        want = {"chelsea": "a photo of a dog", "retina": "a blue bicycle"}.get(key, before[key]["caption"])
        assert row["caption"] == want
        if key in ("chelsea", "retina"):
            got = torch.from_numpy(np.asarray(row["t5"], dtype=np.uint16)).view(torch.bfloat16)
            assert torch.equal(got, direct_t5(text_folders["t5"], want).to(torch.bfloat16)), key
            assert row["t5_length"] == got.shape[0]
        else:
            assert np.array_equal(row["t5"], before[key]["t5"]) and row["t5_length"] == before[key]["t5_length"]
    zarr = {item["key"]: item for item in LatentDataset(str(out))}
    assert zarr["chelsea"]["caption"] == "a photo of a dog" and zarr["chelsea"]["t5_mask"].sum() == after["chelsea"]["t5_length"]
    assert run_encode_job(config, progress=False).captions["rows_changed"] == 0  # nothing edited since: nothing rewritten


def test_a_text_pool_of_its_own_writes_the_same_columns(encoded, text_folders, tmp_path):
    """``text_pool={num_actors: 1}``: the captions leave the encoder actors for a text-encoder actor of their own
    (which alone loads the text encoder); the output's text columns equal the shared-actor output's bit for bit."""
    from latentflow.encode.refresh import stored_columns
    from latentflow.format.state import committed_shards
    from latentflow.jobs.placement import PoolRequest, pool_shape
    from latentflow.jobs.plan import build_plan
    from latentflow.jobs.runner import actor_options, encoder_nodes, run_encode_job, text_pool_options

    shared, tmp = encoded
    out = tmp_path / "out"
    config = EncodeJobConfig.from_yaml(str(ROOT / "configs/encode/default.yaml"), [
        f"output={out}", "processor.resolution=32", "batch_size=4", "num_actors=1", "max_error_rate=0.2",
        "source.format=folder", f"source.urls={tmp / 'folder'}", "text_pool={num_actors: 1}",
        f"text_encoders=[{{name: t5, model: {text_folders['t5']}, max_length: 8}}]"])
    summary = run_encode_job(config, progress=False)
    assert summary.rows == len(CAPTIONS) and summary.errors == 1 and summary.text["t5"]["truncated"] == 1
    plan = build_plan(config)  # the encoder actors get no text encoder; the text pool's actors get it
    shape = pool_shape(PoolRequest.of(config), encoder_nodes(config, [{"CPU": 2.0}]), 1)
    assert actor_options(config, plan, shape)["fn_constructor_kwargs"]["text_encoders"] == []
    pool = text_pool_options(config, plan)
    assert [t["name"] for t in pool["fn_constructor_kwargs"]["text_encoders"]] == ["t5"] and pool["num_cpus"] == 0.5

    def rows(path: Path) -> dict[str, dict]:
        [marker] = committed_shards(str(path)).values()
        codec = Codec.from_dict(json.loads((path / "latentflow.json").read_text())["codec"])
        columns = stored_columns(list(marker.files), codec)
        return {k: {n: v[i] for n, v in columns.items()} for i, k in enumerate(columns["key"])}

    mine, theirs = rows(out), rows(shared)
    assert sorted(mine) == sorted(theirs)
    for key, row in mine.items():  # the encoder actor's threads differ (the pool reserves a CPU share): float rounding
        np.testing.assert_allclose(row["latent"], theirs[key]["latent"], rtol=1e-5, atol=1e-5)
        for name in ("t5", "t5_length", "t5_truncated", "caption"):
            assert np.array_equal(row[name], theirs[key][name]), (key, name)
    assert pq.read_table(out / "errors.parquet").column("error_type").to_pylist() == ["bad_caption"]
