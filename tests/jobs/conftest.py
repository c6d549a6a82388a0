"""Fixtures of the pipeline tests: a tiny saved VAE, real-photo tar shards with bad samples, job configs."""

from __future__ import annotations

import pytest
from pipeline_helpers import tiny_vae


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny VAE saved with save_pretrained (f2, 4 latent channels)."""
    path = tmp_path_factory.mktemp("models") / "tiny-vae"
    tiny_vae(0).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory) -> str:
    """Same architecture, different weights."""
    path = tmp_path_factory.mktemp("models") / "tiny-vae-other"
    tiny_vae(1).save_pretrained(str(path))
    return str(path)


