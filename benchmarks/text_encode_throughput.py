"""python benchmarks/text_encode_throughput.py [--captions 512] [--per-shard 256] [--threads 1] [--d-model 256]

Caption embeddings through the encode job's text path against the bare text encoder, side by side in one run
(issue #20 item 9), on CPU, with a random 6-layer T5 encoder (d_model 256, 4 heads by default; t5-small is
``--d-model 512``; no download) and a word-level tokenizer over the captions' words:

1. bare: tokenize and run ``T5EncoderModel`` on every caption, in batches of the same size sorted by token
   length (the component's own batching), the same threads and compute dtype, keeping the trimmed fp32 states;
2. job: the encode path's text stage per shard (:func:`latentflow.encode.shard.encode_captions`: caption checks,
   per-shard dedup, length batching, bf16 storage form) plus the shard's text columns as the writer builds them
   (Parquet ``Array2D`` column and the deduplicated Zarr arrays, in memory).

The captions are generated (seeded) from templates, 4 to 60 words, ~20% repeated as real caption sets are
(the same alt text, tags); the job's rows/s counts every row, including those served by dedup. Also printed:
bytes per caption as stored (bf16, trimmed, deduplicated per shard) against a 512-token padded fp32 row, and
the peak RSS of the job path over 1x and 10x the captions (10x the shards, each its own process).

Rates are captions per CPU-second of this single-threaded process (best of ``--repeats`` interleaved runs), so
they hold on a shared machine. The job sorts captions by length within a shard (``--per-shard``), the bare
forward over all of them: with small shards the job pads more (64-caption shards measured ~0.8x here).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ADJ = ["red", "small", "old", "bright", "wet", "wooden", "blue", "quiet", "busy", "snowy", "golden", "dark"]
NOUN = ["cat", "dog", "car", "house", "tree", "river", "bridge", "woman", "man", "bicycle", "boat", "mountain"]
PLACE = ["park", "street", "beach", "forest", "kitchen", "city", "harbor", "field", "market", "station"]
EXTRA = ["with", "a", "the", "on", "in", "near", "at", "of", "and", "photo", "under", "during", "sunset", "rain",
         "light", "shot", "from", "above", "closeup", "background", "blurry", "people", "walking", "sitting"]


def make_captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if out and rng.random() < 0.2:  # a repeated caption
            out.append(out[int(rng.integers(len(out)))])
            continue
        words = ["a", "photo", "of", "a", str(rng.choice(ADJ)), str(rng.choice(NOUN)), "in", "the", str(rng.choice(PLACE))]
        words += [str(rng.choice(ADJ + NOUN + PLACE + EXTRA)) for _ in range(int(rng.integers(0, 52)))]
        out.append(" ".join(words))
    return out


def build_encoder(folder: Path, d_model: int) -> Path:
    from transformers import T5Config, T5EncoderModel

    from tests.encode import tiny_text

    tok = tiny_text.build_tokenizer(folder, ["<pad>", "</s>", "<unk>"], None, "</s>", "<pad>", "<unk>", 512,
                                    extra=sorted(set(ADJ + NOUN + PLACE + EXTRA)))
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(tok), d_model=d_model, d_ff=4 * d_model, d_kv=64, num_layers=6, num_heads=d_model // 64,
                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)
    T5EncoderModel(cfg).eval().save_pretrained(folder)
    return folder


def load_bare(folder: Path):
    from transformers import AutoTokenizer, T5EncoderModel

    return AutoTokenizer.from_pretrained(str(folder)), T5EncoderModel.from_pretrained(str(folder)).eval()


def load_job(folder: Path, batch_size: int):
    from latentflow.encode.text import TextEncoder, TextEncoderConfig

    return TextEncoder(TextEncoderConfig(name="t5", model=str(folder), batch_size=batch_size))


@torch.inference_mode()
def bare(loaded, captions: list[str], batch_size: int) -> list[torch.Tensor]:
    """Tokenizer + forward, batches sorted by token length, trimmed fp32 states (model resident)."""
    tok, model = loaded
    ids = tok(captions)["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [None] * len(ids)
    for s in range(0, len(order), batch_size):
        chunk = order[s:s + batch_size]
        batch = tok.pad({"input_ids": [ids[i] for i in chunk]}, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        for b, i in enumerate(chunk):
            out[i] = hidden[b][batch["attention_mask"][b].bool()].clone()
    return out


def job_shards(encoder, captions: list[str], per_shard: int) -> dict[str, float]:
    """The encode path's text stage and the writer's text columns, shard by shard (encoder resident, as in an
    actor); returns counts and bytes."""
    import zarr

    from latentflow.encode.codec_builder import text_column
    from latentflow.encode.shard import ProcessedSample, encode_captions
    from latentflow.format.tables import text_parquet_columns
    from latentflow.store.columns import write_text

    col = text_column(encoder)
    pixels = np.zeros((3, 1, 1), np.uint8)
    stored = rows = 0
    for s in range(0, len(captions), per_shard):
        part = captions[s:s + per_shard]
        samples = [ProcessedSample(f"k{s + i}", pixels, (1, 1), (0, 0, 1, 1), i, c) for i, c in enumerate(part)]
        arrays = [{} for _ in samples]
        errors = encode_captions(samples, arrays, encoder, f"shard{s}")
        assert not errors
        columns = {name: [a[name] for a in arrays] for name in col.columns}
        text_parquet_columns(columns, col)
        store: dict = {}
        group = zarr.open_group(zarr.storage.MemoryStore(store_dict=store), mode="w")
        write_text(group, col, columns, list(range(len(part))))
        stored += sum(v.nbytes for k, v in group.arrays() if k in ("t5",))
        rows += len(part)
    return {"rows": rows, "stored_bytes": stored}


def rss_run(folder: Path, n: int, per_shard: int, batch_size: int) -> float:
    """Peak RSS (MiB) of one process running the job path over ``n`` captions."""
    code = (f"import sys, json, resource; sys.path.insert(0, {str(ROOT)!r}); import torch; torch.set_num_threads(1)\n"
            f"from benchmarks.text_encode_throughput import job_shards, load_job, make_captions\n"
            f"job_shards(load_job(__import__('pathlib').Path({str(folder)!r}), {batch_size}), make_captions({n}), {per_shard})\n"
            "print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    ap.add_argument("--captions", type=int, default=512)
    ap.add_argument("--per-shard", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = build_encoder(Path(tempfile.mkdtemp()) / "t5", args.d_model)
    captions = make_captions(args.captions)
    uniq = list(dict.fromkeys(captions))  # no repeats: the forward and the job's own work alone
    loaded, encoder = load_bare(folder), load_job(folder, args.batch_size)
    runs = {"bare": lambda c: bare(loaded, c, args.batch_size), "job": lambda c: job_shards(encoder, c, args.per_shard)}
    for fn in runs.values():  # warm-up (allocator, kernels)
        fn(captions[:32])
    # CPU seconds of this (single-threaded) process, best of --repeats interleaved runs: what the work costs,
    # whatever the neighbours on a shared machine do to wall-clock time
    cpu = {(name, which): float("inf") for name in runs for which in ("all", "unique")}
    for _ in range(args.repeats):
        for which, caps in (("all", captions), ("unique", uniq)):
            for name, fn in runs.items():
                t = time.process_time()
                fn(caps)
                cpu[name, which] = min(cpu[name, which], time.process_time() - t)
    reference = bare(loaded, captions, args.batch_size)
    job = job_shards(encoder, captions, args.per_shard)
    unique = len(uniq)
    padded = 512 * args.d_model * 4
    per_caption = job["stored_bytes"] / job["rows"]
    tokens = np.mean([len(r) for r in reference])
    rss1 = rss_run(folder, args.captions, args.per_shard, args.batch_size)
    rss10 = rss_run(folder, 10 * args.captions, args.per_shard, args.batch_size)
    result = {
        "captions": len(captions), "unique": unique, "mean_tokens": round(float(tokens), 1), "threads": args.threads,
        "bare_rows_per_cpu_s": round(len(captions) / cpu["bare", "all"], 1),
        "job_rows_per_cpu_s": round(len(captions) / cpu["job", "all"], 1),
        "job_over_bare": round(cpu["bare", "all"] / cpu["job", "all"], 3),
        "job_over_bare_unique_captions": round(cpu["bare", "unique"] / cpu["job", "unique"], 3),
        "bytes_per_caption": round(per_caption, 1), "padded_fp32_bytes": padded, "smaller_than_padded_fp32": round(padded / per_caption, 1),
        "peak_rss_mib_1x": round(rss1, 1), "peak_rss_mib_10x": round(rss10, 1), "rss_10x_over_1x": round(rss10 / rss1, 3),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
