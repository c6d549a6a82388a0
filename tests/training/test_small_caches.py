"""Shipped configs fit shipped data (issue #19 item 2): a small or unevenly bucketed cache trains with
partial last batches per bucket (disjoint rows per worker, every worker one batch per step, exact resume);
the default bucket step gives latent grids the shipped flow priors' patch divides; a grid that does not fit
is refused before training in one line naming processor.bucket_step. Progress lines (item 5) say done/total,
rate and ETA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentflow.errors import ConfigError
from latentflow.read.batches import BatchPlan, GroupRows
from tests.training.test_prior_stage import flow_cfg, tiny_vae, write_latents  # noqa: F401  (fixture)


def plan_rows(plan: BatchPlan) -> list[tuple[str, set[tuple[int, int]]]]:
    """Each batch of a plan as (bucket, the (group, row) pairs it holds)."""
    out = []
    for bucket, window, rows in plan.batches():
        flat = [(b.group, r) for b in plan.window_blocks(bucket, window) for r in range(b.start, b.stop)]
        out.append((bucket, {flat[i] for i in rows}))
    return out


@pytest.mark.parametrize("world", [1, 2])
def test_six_rows_and_batch_eight_give_every_worker_one_partial_batch(world):
    # Quick start's output: 8 photos, 2 held out, one 256x256 bucket, data.batch_size 8
    groups = [GroupRows("256x256", 1, 4), GroupRows("256x256", 1, 4)]
    plans = [BatchPlan(groups, 8, seed=0, epoch=0, rank=r, world=world) for r in range(world)]
    batches = [plan_rows(p) for p in plans]
    assert [len(b) for b in batches] == [1] * world  # one batch per worker and epoch
    rows = [r for b in batches for _, r in b]
    assert sorted(len(r) for r in rows) == [6 // world] * world and set.union(*rows) == {(g, i) for g in (0, 1) for i in (1, 2, 3)}


def test_uneven_buckets_over_two_workers_are_disjoint_complete_and_every_worker_has_a_batch():
    # one row of a rare bucket: one worker has none of it, and still takes a batch every step
    groups = [GroupRows("a", 0, 1), GroupRows("b", 0, 13), GroupRows("c", 0, 5)]
    for epoch in range(6):
        plans = [BatchPlan(groups, 4, seed=3, epoch=epoch, rank=r, world=2) for r in range(2)]
        batches = [plan_rows(p) for p in plans]
        assert all(batches)  # >= 1 batch per worker per epoch
        assert sum("a" in p.rows for p in plans) == 1
        seen = [(bucket, row) for b in batches for bucket, rows in b for row in rows]
        assert len(seen) == len(set(seen)) == 19  # disjoint, and no row dropped
        for p, b in zip(plans, batches):
            assert len(p) == sum(-(-n // 4) for n in p.rows.values()) == len(b)  # ceil(rows / 4) per bucket
            partial = [len(rows) for _, rows in b if len(rows) < 4]
            assert len(partial) == sum(1 for n in p.rows.values() if n % 4)  # only each bucket's last batch is partial


@pytest.fixture
def uneven_cache(tiny_vae, tmp_path):  # noqa: F811
    return write_latents(tiny_vae, tmp_path, sizes=(5, 2, 4), buckets=True)  # 11 rows: 7 wide, 4 tall


def test_two_workers_stream_the_same_number_of_steps_across_epochs_and_resume_exactly(uneven_cache):
    from latentflow.read.dataset import LatentDataset
    from latentflow.training.data import LatentCacheStream

    ds = LatentDataset(uneven_cache, fields=("latent", "caption"))
    streams = [LatentCacheStream(ds, 4, seed=1, rank=r, world=2) for r in range(2)]
    steps = [[s.next_batch() for _ in range(12)] for s in streams]  # every call returns a batch: no worker waits
    assert all(1 <= len(b["latents"]) <= 4 for w in steps for b in w)
    assert all(s.position()["epoch"] >= 2 for s in streams)  # several epochs of 11 rows went by
    first = [set(c for b in w[:len(s._plan(0))] for c in b["captions"]) for w, s in zip(steps, streams)]
    assert not first[0] & first[1] and len(first[0] | first[1]) == 11  # epoch 0: disjoint and complete
    s = LatentCacheStream(ds, 4, seed=1, rank=1, world=2)
    for _ in range(5):
        s.next_batch()
    pos, want = s.position(), [s.next_batch() for _ in range(6)]
    t = LatentCacheStream(ds, 4, seed=1, rank=1, world=2)
    t.set_position(pos)
    for w in want:
        got = t.next_batch()
        assert got["captions"] == w["captions"] and torch.equal(got["latents"], w["latents"])


def test_fewer_rows_than_workers_is_refused_on_every_worker(uneven_cache):
    from latentflow.read.dataset import LatentDataset
    from latentflow.training.data import LatentCacheStream

    train, _ = LatentDataset(uneven_cache).split(10)  # 10 held out
    assert len(train) == 1
    for rank in range(2):
        with pytest.raises(ConfigError, match="1 training rows cannot give each of 2 workers"):
            LatentCacheStream(train, 4, rank=rank, world=2)


def test_train_prior_on_a_cache_smaller_than_one_batch_says_so_in_one_line(tiny_vae, tmp_path, capsys):  # noqa: F811
    path = write_latents(tiny_vae, tmp_path, sizes=(4, 4))  # 8 rows, 2 held out: 6 < batch_size 8
    summary = train_prior(flow_cfg(str(tmp_path / "run"), path, batch_size=8, val_fraction=0.25))
    assert summary["steps"] == 6 and all(np.isfinite(r["loss"]) for r in summary["history"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("data:")]
    assert lines == ["data: 6 training rows in 1 bucket shape(s), batch_size 8, 1 worker(s): 1 batches per epoch; 1 of them "
                     "partial (each bucket's last batch per worker and epoch holds the rest: smallest 6 rows, bucket 32x32)"]
    assert (tmp_path / "run" / "samples.png").exists()


def train_prior(cfg):
    from latentflow.training.prior_stage import train_prior as run

    return run(cfg)


# ---- latent grids ------------------------------------------------------------------------


def write_odd_grid_cache(model, root) -> str:
    """A bucketed output (bucket_step=null, the old default) with a 13x19 latent bucket beside a 16x16 one."""
    from latentflow.encode.codec_builder import build_codec
    from latentflow.format.codec import StoreConfig
    from latentflow.media.config import ImageProcessorConfig
    from latentflow.store.writer import ShardWriter, finalize, prepare_output

    out = str(root / "odd")
    codec = build_codec(model, ImageProcessorConfig(resolution=32, buckets=True, bucket_step=None), StoreConfig(), "x.tar")
    prepare_output(out, codec, overwrite=True)
    writer = ShardWriter(out, codec)
    shapes = [(4, 16, 16)] * 6 + [(4, 13, 19)] * 4
    writer.write_shard("s0", {"key": [f"k{i}" for i in range(10)],
                              "latent": [np.zeros(s, np.float32) for s in shapes]}, [])
    finalize(out, codec)
    return out


def test_a_patch_that_does_not_divide_a_bucket_is_refused_before_training_naming_the_bucket_step(tiny_vae, tmp_path):  # noqa: F811
    path = write_odd_grid_cache(tiny_vae, tmp_path)
    with pytest.raises(ConfigError) as err:
        train_prior(flow_cfg(str(tmp_path / "run"), path, val_fraction=0.0))
    message = str(err.value)
    assert "\n" not in message and "26x38 -> 13x19" in message and "32x32" not in message.split("Fix:")[0]
    assert f"processor.bucket_step={2 * tiny_vae.downsample_factor}" in message and "data.bucket=32x32" in message
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


@pytest.mark.parametrize("resolution", [64, 128, 200, 256, 512, 1024])
def test_the_default_bucket_step_gives_even_latent_grids(resolution):
    from latentflow.media.config import ImageProcessorConfig
    from latentflow.media.image import ImageProcessor

    buckets = ImageProcessor(ImageProcessorConfig(resolution=resolution, buckets=True), 8).buckets
    assert buckets and all(h % 16 == 0 and w % 16 == 0 for h, w in buckets)  # latents (h/8, w/8) even: patch 2 divides
    legacy = ImageProcessor(ImageProcessorConfig(resolution=resolution, buckets=True, bucket_step=None), 8).buckets
    assert all(h % 8 == 0 and w % 8 == 0 for h, w in legacy) and len(legacy) >= len(buckets)


def test_unbucketed_codecs_keep_their_fingerprint_and_bucketed_ones_record_auto(tiny_vae):  # noqa: F811
    from latentflow.encode.codec_builder import build_codec
    from latentflow.format.codec import Codec, StoreConfig
    from latentflow.media.config import ImageProcessorConfig

    square = build_codec(tiny_vae, ImageProcessorConfig(resolution=32), StoreConfig(), "x.tar")
    assert square.to_dict()["processor"]["bucket_step"] is None  # as written before "auto": same fingerprint
    legacy = Codec.from_dict({**square.to_dict(), "fingerprint": ""})
    assert legacy.fingerprint == square.fingerprint
    bucketed = build_codec(tiny_vae, ImageProcessorConfig(resolution=32, buckets=True), StoreConfig(), "x.tar")
    old = build_codec(tiny_vae, ImageProcessorConfig(resolution=32, buckets=True, bucket_step=None), StoreConfig(), "x.tar")
    assert bucketed.to_dict()["processor"]["bucket_step"] == "auto" and bucketed.fingerprint != old.fingerprint
    assert Codec.from_dict(old.to_dict()).processor.resolved_bucket_step(8) == 8  # an old codec keeps its meaning


# ---- progress ----------------------------------------------------------------------------


def test_progress_lines_say_done_total_rate_and_eta(monkeypatch):
    from latentflow.progress import Progress

    lines: list[str] = []
    clock = iter(np.arange(0.0, 100.0, 1.0))
    monkeypatch.setattr("latentflow.progress.time.monotonic", lambda: float(next(clock)))
    progress = Progress(10, "train", unit="step", mode="log", interval=2.0, emit=lines.append)
    for _ in range(10):
        progress.update(1, samples=8, loss=0.5)
    progress.close()
    assert lines[0].startswith("train: 2/10 steps (20%), 16 samples, ") and "ETA 0:00:" in lines[0] and "loss=0.5" in lines[0]
    assert lines[-1].startswith("train: 10/10 steps (100%), 80 samples") and len(lines) == len(set(lines))
    quiet: list[str] = []
    with Progress(3, "sample", mode="log", interval=1e6, emit=quiet.append) as fast:
        fast.update(3)
    assert quiet == []  # a loop shorter than one interval writes nothing


def test_gpt_sampling_reports_tokens(monkeypatch, capsys, caplog):
    import logging

    from latentflow.priors import build_prior

    caplog.set_level(logging.INFO, logger="latentflow.progress")

    monkeypatch.setenv("LATENTFLOW_PROGRESS", "log")
    monkeypatch.setenv("LATENTFLOW_PROGRESS_INTERVAL", "1e-9")  # a line per token
    prior = build_prior("gpt", {"latent_shape": [2, 3], "vocab_size": 16, "hidden_size": 16, "num_layers": 1, "num_heads": 2})
    prior.sample(2, generator=torch.Generator().manual_seed(0))
    emitted = [r.getMessage() for r in caplog.records] + capsys.readouterr().err.splitlines()  # logger, or stderr
    lines = [line for line in emitted if line.startswith("sample 2 x gpt")]
    assert lines[0].startswith("sample 2 x gpt: 1/6 tokens (17%)") and lines[-1].startswith("sample 2 x gpt: 6/6 tokens (100%)")
