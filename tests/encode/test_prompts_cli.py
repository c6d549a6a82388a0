"""``latentflow encode-prompts`` (issue #20's text-only mode from the shell): a prompt file's embeddings cached without
media, read back by ``prompt_embeddings`` equal to a direct encode; ``--from-output`` embeds them with exactly the
text encoder an encode output's codec records (the output is encoded in-process: ``encode_locally``, no Ray); user
mistakes are one ``error:`` line and exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentflow.cli import main
from latentflow.encode.prompts import prompt_embeddings
from latentflow.encode.text import TextEncoder, TextEncoderConfig
from latentflow.errors import CodecMismatchError
from latentflow.format.text import TextColumn
from tests.samples import encode_jpeg, load_photos

BIN = Path(sys.executable).parent
LONG = "an old man walking his small dog through the park on a rainy day with a blue umbrella"  # > 8 tokens
PROMPTS = ["a photo of a dog", "red car", LONG, "a photo of a dog"]


def prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text(f"{PROMPTS[0]}\n\n  {PROMPTS[1]}\n{PROMPTS[2]}\n{PROMPTS[3]}\n", encoding="utf-8")  # blank skipped
    return path


def t5(folder: Path, name: str = "t5") -> TextEncoderConfig:
    return TextEncoderConfig(name=name, model=str(folder), max_length=8)


def assert_direct(text: torch.Tensor, mask: torch.Tensor, prompts: list[str], cfg: TextEncoderConfig) -> None:
    """The cached (N, L, D) embeddings and mask equal the encoder's own output per prompt, zeros after its tokens."""
    direct = TextEncoder(cfg).encode(prompts)
    assert text.shape[:2] == (len(prompts), max(e.length for e in direct))
    assert mask.sum(1).tolist() == [e.length for e in direct]
    for i, e in enumerate(direct):
        assert torch.equal(text[i, : e.length], e.hidden_tensor().float()) and (text[i, e.length:] == 0).all()


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["encode-prompts", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def latents(text_folders, tmp_path_factory) -> Path:
    """A small encode output with a cached t5 column (three photos with .txt captions, 32 px, kl-f8)."""
    from latentflow.auto import AutoModel
    from latentflow.encode.local import encode_locally
    from latentflow.media.config import ImageProcessorConfig
    from latentflow.sources.shards import SourceConfig

    root = tmp_path_factory.mktemp("prompts_cli")
    folder = root / "folder"
    folder.mkdir()
    for (name, pixels), caption in zip(load_photos(("astronaut", "chelsea", "coffee")).items(), PROMPTS):
        (folder / f"{name}.jpg").write_bytes(encode_jpeg(pixels[:64, :64]))
        (folder / f"{name}.txt").write_text(caption)
    encode_locally(AutoModel.from_pretrained("kl-f8"), SourceConfig(format="folder", urls=[str(folder)]), str(root / "out"),
                   ImageProcessorConfig(resolution=32), text_encoders=[t5(text_folders["t5"])])
    return root / "out"


def test_the_command_caches_a_prompt_file_that_the_prior_reads_back(text_folders, tmp_path, capsys):
    """The command on a prompt file: one column per encoder, read back equal to a direct encode. (The console
    script's own start-up is the subprocess test below. A subprocess run of this one was SIGABRTed once in the full
    suite after the model loaded, "terminate called without an active exception"; 28 runs alone did not repeat it.)"""
    spec = f"{{name: t5, model: {text_folders['t5']}, max_length: 8}}"
    code, out, err = cli(capsys, str(prompt_file(tmp_path)), "--text-encoder", spec, "--output", str(tmp_path / "cache"))
    assert code == 0, err[-2000:]
    [column] = [TextColumn.from_dict(t) for t in json.loads((tmp_path / "cache/text_encoders.json").read_text())]
    text, mask, read = prompt_embeddings(column, cache=str(tmp_path / "cache"))
    assert read == PROMPTS
    cfg = t5(text_folders["t5"])
    assert_direct(text, mask, read, cfg)
    assert column.fingerprint == TextEncoder(cfg).fingerprint()
    lines = out.splitlines()
    assert lines[0] == f"prompts: 4 (3 distinct) from {tmp_path / 'prompts.txt'}"
    assert lines[1].startswith(f"text t5: {int(mask.sum())} tokens (") and "1 truncated to max_length" in lines[1]
    assert f"{tmp_path / 'cache'}/prompts.parquet" in lines[2] and lines[3].startswith("use it: sample.prompt_cache=")


def test_from_output_embeds_with_the_encoder_the_latents_were_cached_with(latents, text_folders, tmp_path, capsys):
    """--from-output takes the codec's text encoders: the cache is accepted by prompt_embeddings(codec.text[0], cache=...)
    and equals both a direct encode and the prompts embedded by the encoder the codec records."""
    from latentflow.read.latents import read_codec

    prompts, cache = prompt_file(tmp_path), tmp_path / "cache"
    code, out, err = cli(capsys, str(prompts), "--from-output", str(latents), "--output", str(cache), "--json")
    assert code == 0, err
    summary = json.loads(out)
    [column] = read_codec(str(latents)).text
    assert summary["text"]["t5"]["fingerprint"] == column.fingerprint and summary["prompts"] == 4
    text, mask, read = prompt_embeddings(column, cache=str(cache))
    assert read == PROMPTS
    assert_direct(text, mask, read, t5(text_folders["t5"]))
    computed, computed_mask, _ = prompt_embeddings(column, prompts=str(prompts))
    assert torch.equal(computed, text) and torch.equal(computed_mask, mask)
    assert summary["text"]["t5"]["tokens"] == int(mask.sum()) and summary["text"]["t5"]["truncated"] == 1

    code, out, _ = cli(capsys, str(prompts), "--from-output", str(latents), "--output", str(tmp_path / "text"))
    assert code == 0 and f"text t5 (the encoder {latents} records): " in out


def test_preset_gives_the_family_encoders(text_folders, tmp_path, capsys):
    """--preset '{name: wan, model: <pipeline>, ...}': the family's columns, equal to the preset's configs encoded."""
    from latentflow.encode.text_presets import wan

    pipeline = tmp_path / "pipeline"
    shutil.copytree(text_folders["t5"], pipeline / "text_encoder")
    shutil.copytree(text_folders["t5"], pipeline / "tokenizer")
    code, out, err = cli(capsys, str(prompt_file(tmp_path)), "--preset", f"{{name: wan, model: {pipeline}, max_sequence_length: 8}}",
                         "--output", str(tmp_path / "cache"))
    assert code == 0, err
    [cfg] = wan(str(pipeline), max_sequence_length=8)
    [column] = [TextColumn.from_dict(t) for t in json.loads((tmp_path / "cache/text_encoders.json").read_text())]
    assert column.name == "umt5" and column.fingerprint == TextEncoder(cfg).fingerprint()
    text, mask, read = prompt_embeddings(column, cache=str(tmp_path / "cache"))
    assert_direct(text, mask, read, cfg)


def test_a_changed_encoder_is_refused_and_nothing_is_written(latents, text_folders, tmp_path, capsys):
    """The codec records t5; its folder now holds other weights: refused before anything is written."""
    moved = tmp_path / "latents"
    moved.mkdir()
    data = json.loads((latents / "latentflow.json").read_text())
    data["codec"]["text_encoders"][0]["info"]["model"] = str(text_folders["t5_other"])  # same tokenizer, other weights
    (moved / "latentflow.json").write_text(json.dumps(data))
    code, out, err = cli(capsys, str(prompt_file(tmp_path)), "--from-output", str(moved), "--output", str(tmp_path / "cache"))
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and out == "" and len(lines) == 1 and "Traceback" not in err
    assert "is not the one the codec records" in lines[0] and not (tmp_path / "cache").exists()
    with pytest.raises(CodecMismatchError):  # the same check in Python
        from latentflow.encode.prompts import encode_prompts

        encode_prompts(PROMPTS, [TextColumn.from_dict(data["codec"]["text_encoders"][0])], str(tmp_path / "cache"))


def test_user_mistakes_are_one_error_line_and_exit_2(latents, text_folders, tmp_path, capsys):
    prompts, folder = str(prompt_file(tmp_path)), text_folders["t5"]
    (tmp_path / "empty.txt").write_text("\n \n")
    model_only = tmp_path / "t5_no_tokenizer"
    model_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, model_only / name)
    no_text = tmp_path / "no_text"
    no_text.mkdir()
    data = json.loads((latents / "latentflow.json").read_text())
    del data["codec"]["text_encoders"]
    (no_text / "latentflow.json").write_text(json.dumps(data))
    relative = tmp_path / "relative"  # an output whose job was given the encoder as a relative path, read from elsewhere
    relative.mkdir()
    data = json.loads((latents / "latentflow.json").read_text())
    data["codec"]["text_encoders"][0]["info"]["model"] = "data/encoders/t5"
    (relative / "latentflow.json").write_text(json.dumps(data))
    good = f"{{name: t5, model: {folder}}}"
    cases = {
        "prompt file": ([str(tmp_path / "missing.txt"), "--text-encoder", good], "not found"),
        "empty prompt file": ([str(tmp_path / "empty.txt"), "--text-encoder", good], "holds no prompt"),
        "no tokenizer": ([prompts, "--text-encoder", f"{{name: t5, model: {model_only}}}"], "no tokenizer in"),
        "not YAML": ([prompts, "--text-encoder", "{name: t5, model"], "is not YAML"),
        "not a mapping": ([prompts, "--text-encoder", "t5"], "must hold a YAML mapping"),
        "unknown key": ([prompts, "--text-encoder", f"{{name: t5, model: {folder}, layers: 2}}"], "unknown key 'layers'"),
        "bad value": ([prompts, "--text-encoder", f"{{name: t5, model: {folder}, dtype: int8}}"], "dtype"),
        "no model folder": ([prompts, "--text-encoder", f"{{name: t5, model: {tmp_path / 'nope'}}}"], "nope"),
        "same name twice": ([prompts, "--text-encoder", good, "--text-encoder", good], "must be unique"),
        "no encoder": ([prompts], "no text encoder"),
        "not an output": ([prompts, "--from-output", str(tmp_path)], "is not a latentflow output"),
        "output without text": ([prompts, "--from-output", str(no_text)], "caches no text encoder"),
        "relative encoder": ([prompts, "--from-output", str(relative)], "relative to the directory it ran in"),
        "unknown preset": ([prompts, "--preset", f"{{name: sd99, model: {folder}}}"], "unknown text encoder preset 'sd99'"),
        "preset key": ([prompts, "--preset", f"{{name: wan, model: {folder}, steps: 3}}"], "takes name, model and"),
        "preset model": ([prompts, "--preset", "{name: wan}"], "needs name"),
        "storage options": ([prompts, "--text-encoder", good, "--storage-options", "{anon"], "--storage-options is not JSON"),
    }
    for case, (args, expected) in cases.items():
        code, out, err = cli(capsys, *args, "--output", str(tmp_path / "cache"))
        lines = err.strip().splitlines()
        assert code == 2 and out == "" and len(lines) == 1, (case, err)
        assert lines[0].startswith("error: ") and expected in lines[0], (case, lines[0])
    assert not (tmp_path / "cache").exists()


def test_the_console_script_fails_fast_on_a_missing_prompt_file(tmp_path):
    """Before torch or transformers load: one line, exit 2."""
    done = subprocess.run([str(BIN / "latentflow"), "encode-prompts", str(tmp_path / "missing.txt"), "--text-encoder",
                           "{name: t5, model: /models/t5}", "--output", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.splitlines() == [
        f"error: prompt file {str(tmp_path / 'missing.txt')!r} not found; give a UTF-8 text file with one prompt per line"]
