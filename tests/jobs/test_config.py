"""EncodeJobConfig: YAML + overrides, strict keys at every depth, clear errors; the default config loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from latentflow.auto import load_model
from latentflow.errors import CheckpointError, ConfigError
from latentflow.jobs.config import EncodeJobConfig, apply_overrides

ROOT = Path(__file__).resolve().parents[2]


def test_default_config_loads_with_overrides():
    cfg = EncodeJobConfig.from_yaml(str(ROOT / "configs/encode/default.yaml"),
                                    ["batch_size=2", "processor.resolution=64", "source.urls=[a.tar, b.tar]"])
    assert cfg.batch_size == 2 and cfg.processor.resolution == 64 and cfg.source.urls == ["a.tar", "b.tar"]
    assert cfg.model == "kl-f8" and cfg.output == "./outputs/default" and cfg.formats == ("parquet", "zarr")
    again = EncodeJobConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_every_shipped_encode_config_loads():
    for path in sorted((ROOT / "configs/encode").glob("*.yaml")):
        assert EncodeJobConfig.from_yaml(str(path)).model


@pytest.mark.parametrize(
    "override, message",
    [
        ("batchsize=3", "unknown key 'batchsize'"),
        ("processor.resolutoin=3", "unknown key 'resolutoin'"),
        ("store.latent=median", "latent must be one of"),
        ("batch_size=0", "batch_size must be > 0, got: 0"),
        ("batch_size='8'", "batch_size must be int"),
        ("dtype=fp8", "dtype must be one of"),
        ("max_error_rate=2", "max_error_rate must be in [0, 1], got: 2"),
        ("formats=[csv]", "formats[] must be one of"),
        ("nonsense", "key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        EncodeJobConfig.from_yaml(str(ROOT / "configs/encode/default.yaml"), [override])
    assert message in str(err.value)


def test_overrides_reach_into_sections_without_mutating_input():
    data = {"source": {"urls": ["x"]}}
    out = apply_overrides(data, ["source.format=parquet", "output=s3://b/o"])
    assert out == {"source": {"urls": ["x"], "format": "parquet"}, "output": "s3://b/o"}
    assert data == {"source": {"urls": ["x"]}}


def test_public_dict_has_no_storage_options():
    cfg = EncodeJobConfig.from_dict({"model": "m", "storage_options": {"secret": "s3cr3t"},
                                     "source": {"urls": ["x.tar"], "storage_options": {"key": "k"}}})
    text = str(cfg.to_public_dict())
    assert "s3cr3t" not in text and "'key': 'k'" not in text
    assert cfg.resolved_storage_options() == {"secret": "s3cr3t"}


def test_missing_models_name_fails_clearly():
    with pytest.raises(CheckpointError, match="model 'no-such-model' not found: expected a checkpoint folder"):
        load_model("no-such-model")


def test_job_script_exits_2_with_a_clear_message_for_a_missing_model(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(ROOT / "jobs/encode_dataset.py"), "--config", str(ROOT / "configs/encode/default.yaml"),
         "model=no-such-model", f"output={tmp_path / 'out'}"],
        cwd=str(ROOT), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "CheckpointError: model 'no-such-model' not found" in done.stderr
    assert not (tmp_path / "out").exists()  # refused before touching the output


def _shape(cpus, gpus, **overrides):
    from latentflow.jobs.placement import PoolRequest, pool_shape

    cfg = EncodeJobConfig.from_dict({"model": "m", "source": {"urls": ["a.tar"]}, **overrides})
    s = pool_shape(PoolRequest.of(cfg), [{"CPU": cpus, "GPU": gpus}])
    return s.actors, s.threads, s.num_cpus, s.num_gpus


def test_pool_shape_cpu_defaults_leave_a_cpu_for_reads_and_writes():
    assert _shape(2, 0) == (2, 1, 0.5, 0)  # one single-threaded actor per core
    # capped at 8 actors, then more threads each (never a read's 1 CPU: Ray Data would fuse reads into the actors)
    assert _shape(16, 0) == (8, 2, 0.999, 0)
    assert _shape(64, 0)[:2] == (8, 8)
    assert _shape(1, 0) == (1, 1, 0.499, 0)  # a 1-CPU node: reads take the other half
    for cpus in (1, 2, 3, 4, 8, 16, 64):
        actors, _, num_cpus, _ = _shape(cpus, 0)
        assert actors * num_cpus + min(1.0, cpus / 2) <= cpus + 1e-9, cpus  # a read always fits beside the pool


def test_pool_shape_gpus_and_explicit_settings():
    assert _shape(16, 4)[::3] == (8, 0.5)  # two actors share each GPU
    assert _shape(16, 4, actors_per_gpu=1)[::3] == (4, 1.0)
    assert _shape(16, 1, num_actors=3)[::3] == (3, 0.3333)  # explicit pools: 1/k of a GPU each
    assert _shape(16, 2, num_actors=3)[::3] == (3, 0.5)  # k rounded up: 2 + 1 fit, 2/3 each would not
    assert _shape(16, 2, num_actors=1)[::3] == (1, 1.0)  # never more than one GPU per actor
    assert _shape(8, 8)[0] * _shape(8, 8)[2] <= 7  # still a CPU for reads
    assert _shape(16, 4, device="cpu")[3] == 0
    assert _shape(2, 0, num_actors=1)[:2] == (1, 2)
    assert _shape(8, 0, torch_threads=2)[:2] == (4, 2)
    assert _shape(8, 0, num_actors=3, torch_threads=1, actor_num_cpus=0.25) == (3, 1, 0.25, 0)


def test_write_and_preprocess_tasks_do_not_import_torch():
    """Ray runs reads, preprocessing and writes in fresh worker processes: importing torch
    there costs ~2 s of CPU each, taken from the encoder on small nodes."""
    import subprocess
    import sys

    code = ("import sys, latentflow.jobs.datasink, latentflow.jobs.stages, latentflow.jobs.datasource; "
            "print(sorted(m for m in ('torch', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("gpus", [0, 1])
def test_encode_plan_builds_for_cpu_and_gpu_pools(ray_local, tiny_model_dir, photos, tmp_path, gpus):
    """Ray Data checks map_batches arguments when the plan is built, not when it runs: building the
    GPU plan here catches, without a GPU, what only a GPU run showed before (map_batches refuses
    batch_size=None, a whole shard per call, once num_gpus is set)."""
    from dataclasses import replace

    from pipeline_helpers import good_samples, write_tar

    from latentflow.jobs.plan import build_plan
    from latentflow.jobs.runner import encode_dataset

    url = write_tar(str(tmp_path / "p-0.tar"), good_samples(photos, "p", 2))
    cfg = EncodeJobConfig.from_dict({"model": tiny_model_dir, "output": str(tmp_path / "out"), "source": {"urls": [url]}})
    plan = build_plan(cfg)
    plan = replace(plan, shards=plan.shards * 4)
    ds = encode_dataset(cfg, plan, resources={"CPU": 16, "GPU": gpus})
    assert "MapBatches(EncoderActor)" in str(ds)


def test_the_text_pool_is_set_aside_before_the_encoder_pool_is_sized():
    from latentflow.jobs.placement import PoolRequest, pool_shape, reserve

    assert reserve([{"CPU": 2.0}], 1, 0.5) == [{"CPU": 1.5}]
    # each GPU actor goes to the node with the most GPU (then CPU) left; the encoder pool sees what is left
    nodes = reserve([{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 2.0}], 2, 1.0, 1.0)
    assert nodes == [{"CPU": 7.0, "GPU": 0.0}, {"CPU": 7.0, "GPU": 1.0}]
    assert pool_shape(PoolRequest(), nodes, 16).num_gpus == 1.0 / 2  # two encoder actors share the GPU left
    with pytest.raises(ConfigError, match="text pool's 3 actor"):
        reserve([{"CPU": 2.0}], 3, 1.0)
    with pytest.raises(ConfigError, match="set text_encoders too"):
        EncodeJobConfig.from_dict({"model": "kl-f8", "source": {"urls": ["x.tar"]}, "text_pool": {"num_actors": 1}})
