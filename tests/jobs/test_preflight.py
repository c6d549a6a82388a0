"""The encode job refuses bad setups before Ray starts: exit status 2, ONE line on stderr that
names the fix, and nothing written. Each case runs ``python jobs/encode_dataset.py`` as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import good_samples, write_tar

from latentflow.errors import ConfigError
from latentflow.jobs.config import EncodeJobConfig, apply_overrides
from tests.ray_head import wait_for

ROOT = Path(__file__).resolve().parents[2]
JOB = str(ROOT / "jobs" / "encode_dataset.py")


def _run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {})}
    env.pop("RAY_ADDRESS", None)  # never a cluster: these refusals come before Ray starts
    return subprocess.run([sys.executable, JOB, *args], cwd=str(cwd), env=env, capture_output=True, text=True, timeout=120)


def _refused(done: subprocess.CompletedProcess, fix: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("error: ") and fix in lines[0], lines[0]
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def shard(tmp_path_factory, photos) -> str:
    return write_tar(str(tmp_path_factory.mktemp("src") / "p-000000.tar"), good_samples(photos, "p", 2))


def _args(model: str, shard: str, out, *more: str) -> list[str]:
    return ["--config", str(ROOT / "configs/encode/default.yaml"), f"model={model}", f"source.urls=[{shard}]",
            f"output={out}", "processor.resolution=32", "--no-progress", *more]


@pytest.mark.parametrize("override, fix", [
    ("source.urls=/nowhere/shard-{000000..000099}.tar", "/nowhere/shard-000000.tar"),  # braces: no YAML traceback
    ("source.urls={000000..000001}.tar", "matched no files: ['000000.tar', '000001.tar']"),  # not YAML: the string
    ("processor.flip=true", "store.flip=true"),
    ("model=no-such-model", "pass model=<directory, s3:// URL or Hugging Face hub id>"),
    ("batch_size=0", "batch_size must be > 0, got: 0"),
])
def test_bad_config_values_are_one_line(tiny_model_dir, shard, tmp_path, override, fix):
    out = tmp_path / "out"
    _refused(_run([*_args(tiny_model_dir, shard, out), override], tmp_path), fix)
    assert not out.exists()


def test_a_model_that_names_nothing_is_refused_before_torch_loads(tmp_path):
    code = ("import sys\n"
            "from latentflow.errors import CheckpointError\n"
            "from latentflow.jobs.config import EncodeJobConfig\n"
            "from latentflow.jobs.preflight import check_models\n"
            "try:\n"
            "    check_models(EncodeJobConfig.from_dict({'model': 'kl-f88', 'source': {'urls': ['x.tar']}}))\n"
            "except CheckpointError as err:\n"
            "    print('refused', 'kl-f8' in str(err), 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["refused", "True", "False"], done.stdout + done.stderr[-2000:]


def test_missing_config_file_and_bad_yaml(tmp_path):
    _refused(_run(["--config", "nope.yaml"], tmp_path), "give a YAML job file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    _refused(_run(["--config", str(bad)], tmp_path), "not valid YAML")


def test_unwritable_output_is_refused_and_left_absent(tiny_model_dir, shard, tmp_path):
    # /sys refuses new entries even to root (tests run as root here, where chmod does not bind)
    _refused(_run(_args(tiny_model_dir, shard, "/sys/latentflow-test-out"), tmp_path), "give an output you can write")
    assert not Path("/sys/latentflow-test-out").exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    _refused(_run(_args(tiny_model_dir, shard, blocker / "out"), tmp_path), "is not writable")
    assert blocker.read_text() == "x"


def test_probe_leaves_an_existing_output_untouched(tiny_model_dir, shard, tmp_path):
    out = tmp_path / "deep" / "er" / "out"
    # refused later (a bad model), after the writability probe: no folder made by the probe remains
    _refused(_run(_args("no-such-model", shard, out), tmp_path), "not found")
    assert not (tmp_path / "deep").exists()
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    _refused(_run(_args("no-such-model", shard, out), tmp_path), "not found")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_relative_output_under_ray_job_working_dir_is_refused(tiny_model_dir, shard, tmp_path):
    # what `ray job submit --working-dir .` hands the driver (see ray's job_supervisor._get_driver_env_vars)
    env = {"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}, "metadata": {}})}
    _refused(_run(_args(tiny_model_dir, shard, "outputs/rel"), tmp_path, env), "give output as an absolute path or s3:// URL")
    assert not (tmp_path / "outputs").exists()


def test_config_error_inside_a_source_is_one_line(tiny_model_dir, tmp_path):
    table = pa.table({"img": [b"not an image"], "key": ["a"]})
    pq.write_table(table, tmp_path / "part-0.parquet")
    out = tmp_path / "out"
    args = _args(tiny_model_dir, str(tmp_path / "part-0.parquet"), out, "source.format=parquet", "source.image_column=pixels")
    _refused(_run(args, tmp_path), "pixels")
    assert not out.exists()


def test_brace_overrides_take_the_raw_string():
    data = {"source": {"urls": ["x"]}, "model": "m"}
    out = apply_overrides(data, ["source.urls=/d/shard-{000000..000099}.tar", "model={a..b}", "formats=zarr"])
    assert out["source"]["urls"] == "/d/shard-{000000..000099}.tar" and out["model"] == "{a..b}" and out["formats"] == ["zarr"]
    assert apply_overrides(data, ["source.urls={000..009}.tar"])["source"]["urls"] == "{000..009}.tar"
    assert EncodeJobConfig.from_dict(out).source.urls in ("/d/shard-{000000..000099}.tar", ["/d/shard-{000000..000099}.tar"])
    assert apply_overrides(data, ["source.hf_load_args={path: x}"])["source"]["hf_load_args"] == {"path": "x"}  # a dict field keeps YAML


def test_processor_flip_is_refused_in_the_encode_job():
    with pytest.raises(ConfigError, match="store.flip=true"):
        EncodeJobConfig.from_dict({"model": "m", "source": {"urls": ["a.tar"]}, "processor": {"flip": True}})
    assert EncodeJobConfig.from_dict({"model": "m", "source": {"urls": ["a.tar"]}, "store": {"flip": True}}).store.flip


@pytest.mark.slow
def test_no_arguments_runs_the_embedded_default(ray_local, tmp_path, monkeypatch, capsys):
    """``python jobs/encode_dataset.py`` from any folder: the shipped photos through models/kl-f8 (the job's own
    ``main`` with no arguments, in this process on the session's Ray: the script's start-up is what the other
    tests of this file run). The session's Ray workers run in another directory than this test's: the relative
    output lands where the user ran the job (it once went to the workers' directory, the markers apart from
    ``latentflow.json``)."""
    sys.path.insert(0, str(ROOT / "jobs"))
    import encode_dataset

    monkeypatch.chdir(tmp_path)
    assert encode_dataset.main([]) == 0
    stdout = capsys.readouterr().out
    assert "this run: encoded" in stdout and "the output holds:" in stdout
    info = json.loads((tmp_path / "outputs" / "default" / "latentflow.json").read_text())
    assert info["counts"]["shards"] == 2 and info["counts"]["rows"] > 0


# ---- the pool fits per node (pure: no Ray) ----------------------------------------------------


def _cfg(**overrides) -> EncodeJobConfig:
    return EncodeJobConfig.from_dict({"model": "m", "source": {"urls": ["a.tar"]}, **overrides})


def test_pool_shape_per_node():
    from latentflow.jobs.placement import PoolRequest, pool_shape

    one_cpu = pool_shape(PoolRequest.of(_cfg()), [{"CPU": 1}, {"CPU": 1}])
    assert (one_cpu.actors, one_cpu.num_cpus, one_cpu.read_num_cpus, one_cpu.write_num_cpus) == (2, 0.499, 0.5, 0.5)
    two_cpu = pool_shape(PoolRequest.of(_cfg()), [{"CPU": 2}, {"CPU": 2}])
    assert (two_cpu.actors, two_cpu.num_cpus, two_cpu.read_num_cpus) == (4, 0.5, 1.0)
    assert pool_shape(PoolRequest.of(_cfg(preprocess_num_cpus=1.0)), [{"CPU": 1}, {"CPU": 1}]).actors == 1  # the other node reads
    with pytest.raises(ConfigError, match=r"no encoder pool of 2 actor\(s\) fits the Ray cluster \(2 nodes: 1 CPU, 1 CPU\)"):
        pool_shape(PoolRequest.of(_cfg(num_actors=2, preprocess_num_cpus=1.0)), [{"CPU": 1}, {"CPU": 1}])
    gpu = pool_shape(PoolRequest.of(_cfg()), [{"CPU": 4, "GPU": 1}, {"CPU": 1}])  # actors only on the GPU node; reads anywhere
    assert (gpu.actors, gpu.num_gpus) == (2, 0.5)


def _placements(actors: int, caps: list[int]):
    """Every way to put ``actors`` on nodes holding at most ``caps[i]`` each."""
    if not caps:
        yield () if actors == 0 else None
        return
    for here in range(min(actors, caps[0]) + 1):
        for rest in _placements(actors - here, caps[1:]):
            if rest is not None:
                yield (here, *rest)


@pytest.mark.parametrize("cpus", [[1, 1], [2, 2], [1, 2], [3], [1, 1, 1], [2, 1, 1], [4, 1], [8, 8], [2]])
@pytest.mark.parametrize("overrides", [{}, {"preprocess_num_cpus": 1.0}, {"torch_threads": 2}, {"num_actors": 3}])
def test_every_placement_of_the_pool_leaves_a_node_room_for_a_read(cpus, overrides):
    """However Ray spreads the actors (all placements enumerated), some node keeps a read's CPUs free."""
    from latentflow.jobs.placement import PoolRequest, pool_shape

    nodes = [{"CPU": float(c)} for c in cpus]
    try:
        shape = pool_shape(PoolRequest.of(_cfg(**overrides)), nodes)
    except ConfigError as err:
        assert "no encoder pool" in str(err) and "num_actors" in overrides
        return
    caps = [int(c / shape.num_cpus + 1e-9) for c in cpus]
    placements = [p for p in _placements(shape.actors, caps) if p is not None]
    assert placements, "the actors must fit at all"
    for p in placements:
        assert any(c - n * shape.num_cpus >= shape.read_num_cpus - 1e-9 for c, n in zip(cpus, p)), (cpus, p, shape)


def test_placement_watchdog_fires_on_a_stall_and_not_on_progress():
    import threading
    import time

    from latentflow.jobs.placement import PlacementWatchdog

    fired = threading.Event()
    stuck = PlacementWatchdog(0.3, lambda: [({"CPU": 1.0}, 1)], lambda: 0, on_stall=lambda m: fired.set(), explain="shape", interval_s=0.05)
    assert fired.wait(5) and "1 x {CPU: 1}" in stuck.message and stuck.message.endswith("shape")
    stuck.stop()

    shapes = iter([[({"CPU": 1.0}, 1)], [({"CPU": 1.0}, 2)], [({"CPU": 0.5}, 1), ({"CPU": 1.0}, 1)]] * 1000)
    fluctuating = PlacementWatchdog(0.3, lambda: next(shapes), lambda: 0, on_stall=lambda m: None, interval_s=0.05)
    assert wait_for(lambda: fluctuating.fired, timeout=5)  # what waits changes shape, nothing commits: a stall
    fluctuating.stop()

    commits = iter(range(10_000))
    moving = PlacementWatchdog(0.3, lambda: [({"CPU": 1.0}, 1)], lambda: next(commits), on_stall=lambda m: None, interval_s=0.05)
    idle = PlacementWatchdog(0.3, lambda: [], lambda: 0, on_stall=lambda m: None, interval_s=0.05)
    time.sleep(1.0)
    assert not moving.fired and not idle.fired  # commits keep coming / nothing pending
    moving.stop(), idle.stop()


@pytest.mark.slow
def test_relative_output_refused_under_a_real_ray_job_submit(ray_cluster, tiny_model_dir, tmp_path):
    """The driver of `ray job submit --working-dir` runs in a temporary copy: a relative output would vanish with it."""
    _, dashboard, env = ray_cluster
    submit = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", dashboard, "--working-dir", str(ROOT), "--",
              "python", "jobs/encode_dataset.py", "--no-progress", f"model={tiny_model_dir}", "output=outputs/relative"]
    done = subprocess.run(submit, env={**env, "RAY_AUTH_MODE": "token"}, cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "error: ConfigError: output 'outputs/relative' is relative" in done.stdout + done.stderr
    assert "give output as an absolute path or s3:// URL" in done.stdout + done.stderr
    assert not (ROOT / "outputs" / "relative").exists()
