"""Shared fixtures: a real S3 server on loopback (moto), a real local Ray, real photos.

Environment for every test: Hugging Face offline but datasets allowed to read
s3://. Ray runs with its defaults (token auth on, as `ray start` sets it up for users).
"""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["HF_DATASETS_OFFLINE"] = "0"
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


RAY_FIXTURES = ("ray_local", "ray_cluster")  # a test on the session's Ray runs real Ray jobs: the `slow` tier


def pytest_collection_modifyitems(session, config, items):
    """Two things, before ``-m`` selects:

    - Every test that runs on a real Ray (it uses ``ray_local`` or ``ray_cluster``) is marked ``slow``, beside the
      tests marked by hand (job scripts that start their own Ray, killed drivers, clusters). ``python -m pytest -q``
      leaves them out; ``python -m pytest -q -m slow`` runs them; ``.ci/run`` runs both.
    - The README's commands run first, while no other Ray runs on the machine, as on a user's: the session's
      shared clusters start at their first test, later. (Run behind them, the script took 731 s against 530 s
      alone on the 2-core VM, 2026-12-07: idle clusters poll.)
    """
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in RAY_FIXTURES):
            item.add_marker(pytest.mark.slow)
    first = [item for item in items if item.nodeid.startswith("tests/journey/test_readme_commands.py")]
    items[:] = first + [item for item in items if item not in first]


@pytest.fixture(autouse=True)
def _hf_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server):
    """A fresh bucket on the S3 server. Yields ``(bucket_url, storage_options)``."""
    import s3fs

    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": s3_server},
    }
    fs = s3fs.S3FileSystem(**options)
    bucket = f"lf-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    yield f"s3://{bucket}", options
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def ray_cluster():
    """One `ray start --head` cluster (4 logical CPUs, loopback, its own ports and temp dir) shared by every test
    that drives the README's cluster commands as subprocesses; yields (GCS address, dashboard URL, client env).
    `ray start` turns Ray's token auth on: clients joining it set RAY_AUTH_MODE=token, as the README tells users.
    Tests that kill drivers or build multi-node clusters start their own."""
    from tests.ray_head import ray_head

    with ray_head(num_cpus=4) as head:
        yield head


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray instance shared by the session (2 logical CPUs, small object store)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # a new instance even where a `ray start` cluster runs (Ray would join that one)
            num_cpus=2,
            object_store_memory=500_000_000,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def photos():
    """Real colour photographs shipped inside scikit-image / scikit-learn, as uint8 HWC arrays."""
    import numpy as np
    from skimage import data

    names = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "cat"]
    return {n: np.ascontiguousarray(getattr(data, n)()[..., :3]) for n in names}
