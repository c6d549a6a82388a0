"""Codebooks under torch.distributed: a real 2-process gloo group on CPU (loopback).

Each rank sees half of every batch; after the same steps its codebook must equal
that of a single process trained on the concatenated batches (k-means++ seeding,
Lloyd iterations, EMA statistics and dead-code reset are all all-reduced), and the
two ranks must hold identical state.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from latentflow.quantizers import quantizer_from_config

VQ = {"codebook_size": 16, "use_ema": True, "kmeans_init": True, "kmeans_iters": 5, "dead_code_threshold": 1.5, "decay": 0.8}
CONFIGS = {
    "vq": {"name": "vq", "configuration": {"dim": 4, **VQ}},
    # levels dropped at random must be the same on every rank, or the all-reduces would hang
    "rvq": {"name": "residual_vq", "configuration": {"dim": 4, "num_quantizers": 3, "quantizer_dropout": 0.7, "vq": VQ}},
}
STEPS, WORLD = 4, 2


def batches() -> list[torch.Tensor]:
    """Per step: (2 * WORLD, 4, 3, 3) feature maps; rank r takes rows [2r, 2r + 2)."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2 * WORLD, 4, 3, 3, generator=g) * (1 + step) for step in range(STEPS)]


def train(quantizer, parts: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Train on ``parts``; the state dict, plus ``resets``: how many dead codes were replaced."""
    quantizer.train()
    resets = sum(int(quantizer(x).dead_codes) for x in parts)
    state = {k: v.detach().clone().contiguous() for k, v in quantizer.state_dict().items()}
    return {**state, "resets": torch.tensor(resets)}


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        parts = [x[2 * rank : 2 * rank + 2] for x in batches()]
        for name, config in CONFIGS.items():
            state = train(quantizer_from_config(config), parts)
            save_file(state, os.path.join(out_dir, f"{name}-rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_rank_codebooks_equal_single_process_on_concatenated_batches(tmp_path):
    # fork: the workers inherit the imported modules instead of paying for them again
    mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True, start_method="fork")
    for name, config in CONFIGS.items():
        ranks = [load_file(str(tmp_path / f"{name}-rank{r}.safetensors")) for r in range(WORLD)]
        single = train(quantizer_from_config(config), batches())
        assert int(single["resets"]) > 0, "the dead-code reset path must be exercised"
        assert all(bool(v) for k, v in single.items() if k.endswith("initted")), "k-means init must have run"
        for key, value in single.items():
            assert torch.equal(ranks[0][key], ranks[1][key]), f"{name}: ranks disagree on {key}"
            assert torch.allclose(ranks[0][key].float(), value.float(), atol=1e-5), f"{name}: {key} differs from one process"
