"""The encode job on real multi-node Ray clusters on this host (``ray.cluster_utils.Cluster``): the pool
fits per node, so two nodes of 1 CPU finish instead of hanging; a pool that cannot fit fails before
it starts, and tasks that stay unplaced fail after ``placement_timeout_s``, naming the cluster's shape."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_helpers import good_samples, read_rows, write_tar

from latentflow.format.state import committed_shards

ROOT = Path(__file__).resolve().parents[2]
JOB = str(ROOT / "jobs" / "encode_dataset.py")
NUM_SHARDS = 4
PER_SHARD = 2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory, photos) -> str:
    root = tmp_path_factory.mktemp("mn-src")
    for i in range(NUM_SHARDS):
        write_tar(str(root / f"part-{i:06d}.tar"), good_samples(photos, f"s{i}", PER_SHARD))
    return str(root)


def _cluster(cpus_per_node: list[int]):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": cpus_per_node[0], "object_store_memory": 150_000_000, "include_dashboard": True})
    for cpus in cpus_per_node[1:]:
        cluster.add_node(num_cpus=cpus, object_store_memory=150_000_000)
    cluster.wait_for_nodes()
    return cluster


def _job(cluster, model: str, src: str, out: Path, *overrides: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    args = [sys.executable, JOB, "--config", str(ROOT / "configs/encode/default.yaml"), "--no-progress",
            f"model={model}", f"source.urls=[{src}]", f"output={out}", "processor.resolution=32", "batch_size=2", *overrides]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def one_cpu_nodes():
    """Two nodes of 1 CPU, shared by the tests that use that shape (each job leaves nothing running behind it)."""
    cluster = _cluster([1, 1])
    yield cluster
    _shutdown(cluster)


def _actor_nodes(cluster) -> set[str]:
    """Nodes that ran an encoder actor (Ray Data's ``MapWorker(MapBatches(EncoderActor))``, alive or dead)."""
    from ray.util.state import list_actors

    actors = list_actors(address=cluster.address, limit=1000, detail=True, raise_on_missing_output=False)
    return {a.node_id for a in actors if "EncoderActor" in (a.class_name or "")}


def _shutdown(cluster) -> None:
    cluster.shutdown()


def test_two_nodes_of_two_cpus_spread_the_encoder(tiny_model_dir, shards, tmp_path):
    cluster = _cluster([2, 2])
    try:
        out = tmp_path / "out"
        done = _job(cluster, tiny_model_dir, shards, out, "shared_filesystem=true", "--verbose")  # the pool's log line
        assert done.returncode == 0, done.stderr[-3000:]
        assert len(committed_shards(str(out))) == NUM_SHARDS
        assert len(read_rows(str(out))) == NUM_SHARDS * PER_SHARD
        assert "encoder pool: 4 actor(s) x 1 thread(s), 0.5 CPU" in done.stderr  # 2 per node, a CPU left for reads
        assert len(_actor_nodes(cluster)) == 2  # actors on both nodes
    finally:
        _shutdown(cluster)


def test_two_nodes_of_one_cpu_finish_or_fail_fast(one_cpu_nodes, tiny_model_dir, shards, tmp_path):
    """Before: each node's 0.5-CPU actor left 0.5 CPU, a 1-CPU read never placed, and the job hung."""
    cluster = one_cpu_nodes
    out = tmp_path / "out"
    # local paths on two nodes are refused unless the config says every node sees them
    refused = _job(cluster, tiny_model_dir, shards, out)
    [line] = refused.stderr.strip().splitlines()  # one line, even after joining the cluster
    assert refused.returncode == 2 and line.startswith("error: ") and "set shared_filesystem=true" in line
    assert "2 nodes: 1 CPU, 1 CPU" in line and not out.exists()

    # a pool that cannot leave a node room for a 1-CPU read: refused before it starts
    no_fit = _job(cluster, tiny_model_dir, shards, out, "shared_filesystem=true", "num_actors=2", "preprocess_num_cpus=1")
    assert no_fit.returncode == 2, no_fit.stderr[-3000:]
    [line] = no_fit.stderr.strip().splitlines()
    assert "no encoder pool of 2 actor(s) fits the Ray cluster (2 nodes: 1 CPU, 1 CPU)" in line and "preprocess_num_cpus=0.5" in line
    assert not out.exists()

    # the automatic pool fits: reads and writes reserve half a CPU on 1-CPU nodes
    done = _job(cluster, tiny_model_dir, shards, out, "shared_filesystem=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(read_rows(str(out))) == NUM_SHARDS * PER_SHARD


def test_unplaceable_tasks_fail_after_the_placement_timeout(one_cpu_nodes, tiny_model_dir, shards, tmp_path):
    """Another job holds most of each node: the plan fits the nodes' totals, but the actors never place."""
    cluster = one_cpu_nodes
    code = ("import ray, time, sys\n"
            "ray.init(address=sys.argv[1], log_to_driver=False)\n"
            "@ray.remote(num_cpus=0.75)\nclass Hog:\n    def ping(self): return 1\n"
            "hogs = [Hog.options(scheduling_strategy='SPREAD').remote() for _ in range(2)]\n"
            "ray.get([h.ping.remote() for h in hogs]); print('ready', flush=True); time.sleep(600)\n")
    hog = subprocess.Popen([sys.executable, "-c", code, cluster.address], stdout=subprocess.PIPE, text=True)
    try:
        assert hog.stdout.readline().strip() == "ready"
        out = tmp_path / "out"
        done = _job(cluster, tiny_model_dir, shards, out, "shared_filesystem=true", "placement_timeout_s=8")
        assert done.returncode == 2, done.stderr[-3000:]
        last = done.stderr.strip().splitlines()[-1]
        assert "tasks waited 8 s for room on a node" in last and "2 nodes: 1 CPU, 1 CPU" in last, last
        assert not committed_shards(str(out))
    finally:
        hog.kill()
        hog.wait()
