"""Tiny text-encoder folders, built once per test session (see tiny_text.py)."""

from __future__ import annotations

import pytest

from tests.encode import tiny_text


@pytest.fixture(scope="session")
def text_folders(tmp_path_factory):
    """``{kind: folder}`` for tiny random text encoders saved with their tokenizers."""
    root = tmp_path_factory.mktemp("text_encoders")
    return {
        "t5": tiny_text.t5_folder(root / "t5"),
        "t5_other": tiny_text.t5_folder(root / "t5_other", seed=1),
        "clip": tiny_text.clip_folder(root / "clip", projection=False),
        "clip_proj": tiny_text.clip_folder(root / "clip_proj", projection=True),
    }


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The tiny models are latency-bound: on the shared 2-core machines two spinning threads made each
    tiny matmul ~30x slower than one thread. Restored after the session."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
