"""An output written before the restructure (latentflow at commit 395e603: codec format 2, commit markers without
a version, the folder layout of then) reads and resumes with this code: its committed shard is skipped, a new
shard is appended under the same codec fingerprint, and every reader sees both.

The fixture was written by the code at 395e603 from tests/fixtures/written_at_395e603 (cwd) with
``encode_locally(model, SourceConfig(urls=["shard-0.tar"]), "output", ImageProcessorConfig(resolution=16),
StoreConfig(), model_ref="model")``. Its JSON records absolute paths of that folder (``ORIGIN``), as every
output does: the test moves the folder and rewrites them, as if it still stood where it was written."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import numpy as np
import torch

import latentflow as lf
from latentflow.encode.local import encode_locally
from latentflow.format.codec import StoreConfig
from latentflow.format.state import committed_shards
from latentflow.media.config import ImageProcessorConfig
from latentflow.read.dataset import LatentDataset
from latentflow.read.latents import load_latents, read_codec
from latentflow.sources.shards import SourceConfig

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "written_at_395e603"


def _placed(tmp_path: Path) -> Path:
    root = tmp_path / "old"
    shutil.copytree(FIXTURE, root)
    origin = (FIXTURE / "ORIGIN").read_text().strip()
    for path in root.rglob("*.json"):
        path.write_text(path.read_text().replace(origin, str(root)))
    return root


def test_an_output_of_the_previous_layout_reads_and_resumes(tmp_path, monkeypatch):
    root = _placed(tmp_path)
    monkeypatch.chdir(root)  # the source and model paths are the relative ones it was written with
    before = read_codec("output")
    old_rows = {r["key"]: np.asarray(r["latent"]) for r in load_latents("output")}
    assert sorted(old_rows) == ["s0-0", "s0-1"] and before.model.ref.location == str(root / "model")

    old_shard = (root / "output" / "parquet" / "shard-0-57f0709d97.parquet").read_bytes()
    model = lf.AutoModel.from_pretrained("model")
    codec = encode_locally(model, SourceConfig(format="webdataset", urls=["shard-0.tar", "shard-1.tar"]), "output",
                           ImageProcessorConfig(resolution=16), StoreConfig(), model_ref="model")
    assert codec.fingerprint == before.fingerprint  # the same encoder setup: appended, not refused
    markers = committed_shards("output")
    assert len(markers) == 2 and all(m.rows == 2 for m in markers.values())
    rows = {r["key"]: np.asarray(r["latent"]) for r in load_latents("output")}
    assert sorted(rows) == ["s0-0", "s0-1", "s1-0", "s1-1"]
    # the old shard was skipped, not re-encoded (its file untouched, its rows the old ones)
    assert (root / "output" / "parquet" / "shard-0-57f0709d97.parquet").read_bytes() == old_shard
    for key, latent in old_rows.items():
        np.testing.assert_array_equal(rows[key], latent)
    assert len(datasets.load_dataset(str(root / "output"), split="train")) == 4
    assert len(LatentDataset("output")) == 4
    decoded = lf.decode_latents(torch.as_tensor(rows["s1-0"])[None], "output")
    assert decoded.shape == (1, 3, 16, 16)
