"""The checkpoints shipped in ``models/`` load by path and by short name, and still reach the
held-out PSNR recorded in their model cards (``models/<name>/eval.json``) within 0.5 dB.

The held-out crops (``data/heldout``, scikit-learn's china/flower photos) were never trained on.
Re-measuring uses the same function that wrote ``eval.json``
(``benchmarks/eval_shipped_models.py``); only the headline side (the first) is re-measured here.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

import latentflow as lf

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("kl-f8", "fsq-f8", "transvae-tiny")
TOLERANCE_DB = 0.5


def _eval_module():
    spec = importlib.util.spec_from_file_location("eval_shipped_models", ROOT / "benchmarks" / "eval_shipped_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shipped(name: str) -> Path:
    path = ROOT / "models" / name
    if not (path / "model.safetensors").exists():
        pytest.skip(f"models/{name} is not shipped in this checkout")
    return path


def _recorded(name: str) -> dict:
    return json.loads((_shipped(name) / "eval.json").read_text())


@pytest.mark.parametrize("name", SHIPPED)
def test_loads_by_path_and_short_name(name):
    by_path = lf.AutoModel.from_pretrained(str(_shipped(name)))
    by_name = lf.AutoModel.from_pretrained(name)
    assert by_path.weights_hash() == by_name.weights_hash() == _recorded(name)["weights_sha256"]
    assert (_shipped(name) / "model.safetensors").stat().st_size <= 20 * 2**20


@pytest.mark.parametrize("name", SHIPPED)
def test_reaches_recorded_psnr(name):
    torch.manual_seed(0)
    recorded = _recorded(name)
    side = recorded["sides"][0]
    model = lf.AutoModel.from_pretrained(name)
    report = _eval_module().measure(model, (side,))
    assert report["num_images"] == recorded["num_images"] == 12
    assert abs(report["psnr"][str(side)] - recorded["psnr"][str(side)]) <= TOLERANCE_DB, (report["psnr"], recorded["psnr"])


@pytest.mark.parametrize("name", SHIPPED)
def test_card_quotes_recorded_numbers(name):
    recorded = _recorded(name)
    card = (_shipped(name) / "README.md").read_text()
    for side, value in recorded["psnr"].items():
        assert f"{value:.2f}" in card, f"card of {name} does not quote PSNR {value:.2f} dB at {side} px"
    assert re.search(r"python jobs/train_autoencoder\.py --config configs/train/\S+\.yaml", card)


@pytest.mark.parametrize("name", ("kl-f8", "transvae-tiny"))
def test_config_carries_measured_scaling(name):
    """The encode job normalizes with config.scaling_factor/shift_factor: they must be the measured ones."""
    stats = _recorded(name)["latent_stats"]
    config = lf.AutoModel.from_pretrained(name).config
    assert config.scaling_factor == pytest.approx(stats["suggested_scaling_factor"], rel=1e-3)
    assert config.shift_factor == pytest.approx(stats["suggested_shift_factor"], abs=1e-3)
