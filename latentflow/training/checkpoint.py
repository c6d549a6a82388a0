"""Trainer checkpoints: model folders in ``save_pretrained`` format, the rest in safetensors + JSON.

A checkpoint is a folder ``<output_dir>/checkpoints/step-0000100/``::

    model/                 config.json + model.safetensors (loadable with AutoModel)
    ema/                   the EMA weights, same format
    optimizer.safetensors  every optimizer's tensor state (``<name>/<param>/<key>``)
    modules.safetensors    extra trainable modules (discriminator, projections)
    rng.safetensors        torch CPU (and CUDA) RNG states
    trainer_state.json     step, optimizer param groups + scalars, python/numpy RNG, data position

``trainer_state.json`` is written last: a folder without it is incomplete and ignored.
Nothing is pickled.
"""

from __future__ import annotations

import json
import random
from typing import Any

import fsspec
import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from latentflow.errors import CheckpointError

STATE_NAME = "trainer_state.json"


def checkpoint_dir(output_dir: str, step: int) -> str:
    return f"{str(output_dir).rstrip('/')}/checkpoints/step-{step:07d}"


def latest_checkpoint(output_dir: str, storage_options: dict | None = None) -> str | None:
    """The newest complete checkpoint folder under ``output_dir``, or None."""
    fs, root = fsspec.url_to_fs(f"{str(output_dir).rstrip('/')}/checkpoints", **(storage_options or {}))
    if not fs.exists(root):
        return None
    steps = sorted(p for p in fs.ls(root, detail=False) if p.rsplit("/", 1)[-1].startswith("step-"))
    for path in reversed(steps):
        if fs.exists(f"{path}/{STATE_NAME}"):
            return fs.unstrip_protocol(path) if "://" in str(output_dir) else path
    return None


# ---- optimizer state: tensors to safetensors, the rest to JSON ----------------
def optimizer_to_tensors(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and a JSON-able rest."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{name}/{pid}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}/{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(name: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"{name}/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, sub = key[len(prefix):].split("/", 1)
            state.setdefault(int(pid), {})[sub] = value
    for key, value in meta["scalars"].items():
        pid, sub = key.split("/", 1)
        state.setdefault(int(pid), {})[sub] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# ---- RNG states ------------------------------------------------------------------
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state()
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))


# ---- files -------------------------------------------------------------------------
def write_tensors(fs, path: str, tensors: dict[str, torch.Tensor]) -> None:
    with fs.open(path, "wb") as f:
        f.write(st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def read_tensors(fs, path: str) -> dict[str, torch.Tensor]:
    if not fs.exists(path):
        raise CheckpointError(f"checkpoint file {path!r} is missing")
    with fs.open(path, "rb") as f:
        return st_load(f.read())


def write_json(fs, path: str, data: dict[str, Any]) -> None:
    with fs.open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)


def read_json(fs, path: str) -> dict[str, Any]:
    if not fs.exists(path):
        raise CheckpointError(f"checkpoint file {path!r} is missing (incomplete checkpoint?)")
    with fs.open(path, "r") as f:
        return json.load(f)
