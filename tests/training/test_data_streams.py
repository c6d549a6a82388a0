"""Resumable streams: deterministic order, exact positions, disjoint equal shares per worker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentflow.errors import CodecMismatchError, ConfigError
from latentflow.training.data import ImageStream, LatentStream, LatentTable


class Rec:
    def __init__(self, key):
        self.key, self.image, self.label = key, b"", None


def stream(rank=0, world=1, seed=0):
    shards = [f"s{i}" for i in range(4)]
    read = lambda s: [Rec(f"{s}/{j}") for j in range(3 + int(s[1:]))]  # uneven shard sizes
    return ImageStream(shards, read, lambda r: np.zeros((3, 2, 2), np.float32), batch_size=2, seed=seed,
                       rank=rank, world=world)


def keys(s, n):
    return [k for _ in range(n) for k in s.next_batch()["keys"]]


def test_image_stream_position_restores_the_exact_continuation():
    a = stream()
    keys(a, 5)
    pos = a.position()
    expected = keys(a, 7)  # crosses shard and epoch boundaries
    b = stream()
    b.set_position(pos)
    assert keys(b, 7) == expected
    assert keys(stream(seed=0), 6) != keys(stream(seed=1), 6)  # the seed shuffles


def test_image_stream_workers_read_disjoint_shards():
    seen = [{k.split("/")[0] for k in keys(stream(r, 2), 8)} for r in range(2)]
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    with pytest.raises(ConfigError, match="at least 5 shards"):
        stream(0, 5)


def test_latent_stream_workers_get_disjoint_equal_rows_and_exact_resume():
    table = LatentTable(torch.arange(22).view(22, 1, 1, 1).float())
    rows = []
    for r in range(2):
        s = LatentStream(table, batch_size=2, seed=3, normalize=False, resample=False, rank=r, world=2)
        rows.append([int(v) for _ in range(5) for v in s.next_batch()["latents"].flatten()])  # one epoch: 5 batches
    assert len(rows[0]) == len(rows[1]) == 10 and not set(rows[0]) & set(rows[1])
    s = LatentStream(table, 4, seed=0)
    s.next_batch()
    pos, nxt = s.position(), s.next_batch()["latents"]
    t = LatentStream(table, 4, seed=0)
    t.set_position(pos)
    assert torch.equal(t.next_batch()["latents"], nxt)


def test_latent_table_fingerprints_are_checked():
    z = torch.randn(2, 4, 3, 3)
    table = LatentTable(z, fingerprint="abc")
    table.check_fingerprint("abc")
    with pytest.raises(CodecMismatchError, match="abc"):
        table.check_fingerprint("xyz")


def test_random_crops_change_per_epoch_and_resume_exactly(photo_shards):
    from latentflow.training.data import build_image_stream

    def make():
        return build_image_stream({"format": "webdataset", "urls": photo_shards[:1]},
                                  {"resolution": 16, "crop": "random", "flip": True}, 1, batch_size=1, seed=0, shuffle=False)

    s = make()
    n = sum(1 for r in s._load_shard() if r.key[-6:].isdigit())  # good samples (the fixture adds two bad ones): one epoch
    s.reset()
    first = [s.next_batch() for _ in range(n)]
    pos = s.position()
    second = [s.next_batch() for _ in range(n)]
    assert [b["keys"] for b in first] == [b["keys"] for b in second]
    changed = [not torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(first, second)]
    assert sum(changed) >= n / 2  # fresh crops/mirrors each epoch (a crop may repeat by chance; a fixed crop never changes)
    resumed = make()
    resumed.set_position(pos)
    assert all(torch.equal(resumed.next_batch()["pixel_values"], b["pixel_values"]) for b in second)


# ---- stage 2: the cache streamed through LatentDataset.iter_batches --------------------------------
@pytest.fixture
def cache(tmp_path):
    from latentflow.models.vae import VariationalAutoencoderConfig, VariationalAutoencoderModel
    from tests.training.test_prior_stage import write_latents

    torch.manual_seed(0)
    model = VariationalAutoencoderModel(VariationalAutoencoderConfig(block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4))
    return write_latents(model.eval(), tmp_path, sizes=(12, 9, 15), buckets=True)


def captions(stream, n):
    return [c for _ in range(n) for c in stream.next_batch()["captions"]]


def test_latent_cache_stream_workers_read_disjoint_rows_and_resume_exactly(cache):
    from latentflow.read.dataset import LatentDataset
    from latentflow.training.data import LatentCacheStream

    ds = LatentDataset(cache, fields=("latent", "caption"))
    streams = [LatentCacheStream(ds, 3, seed=1, rank=r, world=2) for r in range(2)]
    per_epoch = [len(s._plan(0)) for s in streams]
    seen = [captions(s, n) for s, n in zip(streams, per_epoch)]
    assert seen[0] and seen[1] and not set(seen[0]) & set(seen[1])  # disjoint rows per worker
    assert len(set(seen[0]) | set(seen[1])) == len(seen[0]) + len(seen[1]) == 36  # partial last batches: no row dropped
    s = LatentCacheStream(ds, 4, seed=0)
    for _ in range(7):
        s.next_batch()
    pos = s.position()
    expected = [s.next_batch() for _ in range(8)]  # crosses an epoch boundary (9 batches per epoch)
    assert any(b["bucket"] == "40x24" for b in expected) and any(b["bucket"] == "24x40" for b in expected)
    t = LatentCacheStream(ds, 4, seed=0)
    t.set_position(pos)
    for want in expected:
        got = t.next_batch()
        assert got["captions"] == want["captions"] and torch.equal(got["latents"], want["latents"])
        assert got["labels"] is None and got["latents"].shape[1:] == ((4, 12, 20) if got["bucket"] == "24x40" else (4, 20, 12))
    assert t.position()["epoch"] == 1


def test_latent_cache_stream_takes_partial_batches_when_the_batch_exceeds_a_bucket(cache):
    from latentflow.read.dataset import LatentDataset
    from latentflow.training.data import LatentCacheStream

    stream = LatentCacheStream(LatentDataset(cache), 40)  # 36 rows: 24 wide + 12 tall, one partial batch each
    assert sorted(len(stream.next_batch()["latents"]) for _ in range(2)) == [12, 24] and stream.position()["epoch"] == 0
    assert "2 of them partial" in stream.describe() and "smallest 12 rows, bucket 40x24" in stream.describe()


def test_load_latent_table_reads_one_bucket(cache):
    from latentflow.training.data import load_latent_table

    with pytest.raises(ConfigError, match="several bucket shapes"):
        load_latent_table(cache)
    table = load_latent_table(cache, bucket="40x24")
    assert table.latents.shape == (12, 4, 20, 12) and table.labels is None and table.fingerprint
