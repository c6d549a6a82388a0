"""`latentflow verify`: a small output encoded in-process (encode_locally, real tiny models, the repo's photo tars) is
re-encoded through the job's path and compared; tampered rows, changed weights, moved or missing sources and
paths that are not outputs each give the exit status and the lines a user acts on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from latentflow.cli import main
from latentflow.encode.local import encode_locally
from latentflow.encode.verify import compare, default_tolerance, sample_positions
from latentflow.format.codec import ModelRef, StoreConfig
from latentflow.format.marker import CommitMarker
from latentflow.format.state import committed_shards
from latentflow.media.config import ImageProcessorConfig
from latentflow.read.latents import read_codec
from latentflow.sources.shards import SourceConfig

ROOT = Path(__file__).resolve().parents[2]
TARS = [str(ROOT / "data" / "photos" / f"photos-00000{i}.tar") for i in (0, 1)]
BIN = Path(sys.executable).parent


def _encode(model, root: Path, name: str, store: StoreConfig | None = None) -> str:
    model.eval().save_pretrained(str(root / f"{name}-model"))
    out = str(root / f"{name}-out")
    encode_locally(model, SourceConfig(urls=TARS), out, ImageProcessorConfig(resolution=32), store,
                   model_ref=ModelRef(str(root / f"{name}-model")), batch_size=4)
    return out


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> str:
    """A tiny VAE's latents of the two photo tars (8 rows, Parquet + Zarr), never modified by a test."""
    from latentflow.models.vae import VariationalAutoencoderConfig, VariationalAutoencoderModel

    torch.manual_seed(0)
    model = VariationalAutoencoderModel(VariationalAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4))
    return _encode(model, tmp_path_factory.mktemp("verify"), "vae")


@pytest.fixture
def output(pristine, tmp_path) -> str:
    """A copy of the pristine output (moved: its markers name the old place) with its own copy of the weights."""
    root = Path(pristine).parent
    shutil.copytree(root / "vae-model", tmp_path / "vae-model")
    shutil.copytree(pristine, tmp_path / "out")
    codec_path = tmp_path / "out" / "latentflow.json"
    info = json.loads(codec_path.read_text())  # the copy's codec points at the copy's weights
    info["codec"]["model"]["ref"]["location"] = str(tmp_path / "vae-model")
    codec_path.write_text(json.dumps(info))
    return str(tmp_path / "out")


def _verify(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["verify", *args, "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _shard_and_key(out: str, which: int = 1) -> tuple[CommitMarker, str]:
    marker = sorted(committed_shards(out).values(), key=lambda m: m.shard_id)[which]
    keys = pq.read_table(f"{out}/parquet/{marker.shard_id}.parquet", columns=["key"]).column("key").to_pylist()
    return marker, sorted(keys)[1]


def _tamper(out: str, marker: CommitMarker, key: str, name: str, change) -> None:
    """Rewrite one stored row of ``name`` in the shard's Parquet file and Zarr group."""
    import zarr

    path = f"{out}/parquet/{marker.shard_id}.parquet"
    table = pq.read_table(path)
    i = table.column("key").to_pylist().index(key)
    col = table.column(name)
    values = col.to_pylist()
    values[i] = change(np.asarray(values[i])).tolist()
    storage = col.type.storage_type if isinstance(col.type, pa.ExtensionType) else col.type
    index = table.schema.get_field_index(name)
    table = table.set_column(index, table.schema.field(index).with_type(storage), pa.array(values, type=storage))
    pq.write_table(table, path)
    (bucket,) = marker.buckets
    group = zarr.open_group(f"{out}/zarr/{bucket}/{marker.shard_id}", mode="r+")
    j = [str(k) for k in group["keys"][:]].index(key)
    group[name][j] = change(np.asarray(group[name][j]))


def test_an_untouched_cache_verifies_clean_through_the_console_script(output):
    done = subprocess.run([str(BIN / "latentflow"), "verify", output, "--samples", "5", "--seed", "3", "--device", "cpu",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["rows_checked"] == 5 and report["committed_rows"] == 8
    assert sum(s["rows_checked"] for s in report["shards"]) == 5
    assert all(s["formats"] == ["parquet", "zarr"] and s["rows_mismatched"] == 0 for s in report["shards"])


def test_one_tampered_row_is_caught_and_named(output, capsys):
    marker, key = _shard_and_key(output)
    _tamper(output, marker, key, "latent", lambda v: v + np.float32(0.5) * (np.abs(v).max() + 1))
    code, out, err = _verify(capsys, output, "--samples", "100")
    assert code == 1, out + err
    assert f"{key} [parquet latent]" in out and f"{key} [zarr latent]" in out
    assert f"{marker.shard_id} [parquet+zarr]: rows checked 4, mismatched 1" in out
    other, _ = _shard_and_key(output, 0)
    assert f"{other.shard_id} [parquet+zarr]: rows checked 4, mismatched 0" in out
    assert out.splitlines()[-1].startswith(f"MISMATCH: 1 of 8 rows in 1 shard ({marker.shard_id}: {key})")
    # --shards restricts the check: the untouched shard alone verifies clean
    code, out, _ = _verify(capsys, output, "--shards", other.shard_id)
    assert code == 0 and marker.shard_id not in out


def test_changed_model_weights_are_caught(output, capsys):
    from latentflow.auto import AutoModel

    location = read_codec(output).model.ref.location
    model = AutoModel.from_pretrained(location)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if n.startswith("encoder")).mul_(1.5)
    model.save_pretrained(location)
    code, out, err = _verify(capsys, output, "--samples", "4")
    assert code == 1, out + err
    assert "WEIGHTS CHANGED" in out and location in out
    assert "mismatched 0" not in out.split("\n", 2)[2]  # the re-encoded rows drift too, per shard


def test_tokens_must_match_exactly(tmp_path, capsys):
    from latentflow.models.vq_autoencoder import VectorQuantizedAutoencoderModel, VQAutoencoderConfig

    torch.manual_seed(0)
    model = VectorQuantizedAutoencoderModel(VQAutoencoderConfig(
        block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4,
        quantizer={"name": "vq", "configuration": {"codebook_size": 32}}))
    out = _encode(model, tmp_path, "vq")
    assert read_codec(out).arrays == ("indices",)
    code, text, err = _verify(capsys, out)
    assert code == 0, text + err
    assert "tokens differing 0/" in text
    marker, key = _shard_and_key(out)
    _tamper(out, marker, key, "indices", lambda v: np.where(np.arange(v.size).reshape(v.shape) == 0, (v + 1) % 32, v).astype(v.dtype))
    code, text, _ = _verify(capsys, out)
    assert code == 1 and f"{key} [parquet indices]: 1 of" in text and f"{key} [zarr indices]: 1 of" in text


def test_a_path_that_is_not_an_output_is_one_line_and_exit_2(tmp_path, capsys):
    code, out, err = _verify(capsys, str(tmp_path))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "is not a latentflow output" in err and "pass the output directory" in err


def test_a_source_no_longer_reachable_is_exit_2_and_moved_sources_verify(output, tmp_path, capsys):
    code, out, err = _verify(capsys, output, "--source", f"urls={tmp_path}/gone/photos-000000.tar")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "is not reachable" in err and "--source urls=" in err
    moved = tmp_path / "moved"
    moved.mkdir()
    for tar in TARS:
        shutil.copy(tar, moved)
    code, out, err = _verify(capsys, output, "--source", f"urls={moved}/photos-{{000000..000001}}.tar")
    assert code == 0, out + err  # shard ids hash the old paths: matched by their stems


def test_unknown_shard_is_exit_2(output, capsys):
    code, _, err = _verify(capsys, output, "--shards", "nope-0123456789")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'nope-0123456789' is not committed" in err


def test_sampling_and_tolerances():
    markers = {s: CommitMarker(s, rows=n) for s, n in (("a", 3), ("b", 0), ("c", 5))}
    picks = sample_positions(markers, 4, seed=1)
    assert picks == sample_positions(markers, 4, seed=1) and sum(map(len, picks.values())) == 4 and "b" not in picks
    assert all(0 <= p < markers[s].rows for s, ps in picks.items() for p in ps)
    assert sample_positions(markers, 100, seed=0) == {"a": [0, 1, 2], "c": [0, 1, 2, 3, 4]}
    codec = type("Codec", (), {"dtype": "float16", "compute_dtype": "bf16"})()
    assert default_tolerance(codec) == 8 * 2.0**-7
    codec.compute_dtype = "fp32"
    assert default_tolerance(codec) == 8 * 2.0**-10
    ref = np.linspace(-2, 2, 64, dtype=np.float32)
    assert compare(ref + np.float32(1e-3), ref, 8 * 2.0**-10, exact=False)[3]
    assert not compare(ref + np.float32(0.1), ref, 8 * 2.0**-10, exact=False)[3]
    assert not compare(ref[:32], ref, 1.0, exact=False)[3]  # another shape never verifies


def test_an_s3_output_verifies_with_the_storage_options_of_inspect(s3, tmp_path, capsys):
    from tests.jobs.pipeline_helpers import tiny_vae

    bucket, options = s3
    model = tiny_vae()
    model.save_pretrained(str(tmp_path / "vae"))
    out = f"{bucket}/latents"
    encode_locally(model, SourceConfig(urls=TARS[:1]), out, ImageProcessorConfig(resolution=32), storage_options=options,
                   model_ref=ModelRef(str(tmp_path / "vae")), batch_size=4)
    code, text, err = _verify(capsys, out, "--storage-options", json.dumps(options))
    assert code == 0, text + err
    assert "rows checked 4, mismatched 0" in text and "[parquet+zarr]" in text
