"""Latent diagnostics: inequality measures on known distributions, KDE uniformity against a closed
form, the linear probe on separable vs random labels, codebook statistics, the evaluation wiring."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from latentflow.errors import InputError
from latentflow.evaluation import diagnostics as dg
from latentflow.metrics import codebook_stats


# ---- CV, entropy, Gini on known distributions ---------------------------------------------------------
def test_even_values_have_zero_cv_and_gini_and_full_entropy():
    v = np.full(100, 3.0)
    assert dg.coefficient_of_variation(v) == pytest.approx(0.0, abs=1e-12)
    assert dg.gini(v) == pytest.approx(0.0, abs=1e-12)
    assert dg.normalized_entropy(v) == pytest.approx(1.0)


def test_one_value_holding_everything_is_maximally_unequal():
    v = np.zeros(10)
    v[3] = 5.0
    assert dg.gini(v) == pytest.approx(9 / 10)  # (N - 1) / N
    assert dg.normalized_entropy(v) == pytest.approx(0.0, abs=1e-12)
    assert dg.coefficient_of_variation(v) == pytest.approx(3.0)  # sqrt(N - 1)


@pytest.mark.parametrize("name, draw, cv, gini, x_log_x", [
    # exponential: CV 1, Gini 1/2; E[x log x] / E[x] - log E[x] = 1 - gamma
    ("exponential", lambda g, n: g.exponential(1.0, n), 1.0, 0.5, 1 - 0.5772156649),
    # uniform(0, 1): CV 1/sqrt(3), Gini 1/3; E[x log x] = -1/4, E[x] = 1/2
    ("uniform", lambda g, n: g.uniform(0, 1, n), 1 / math.sqrt(3), 1 / 3, -0.5 + math.log(2)),
])
def test_known_distributions_give_their_closed_forms(name, draw, cv, gini, x_log_x):
    n = 200_000
    v = draw(np.random.default_rng(0), n)
    assert dg.coefficient_of_variation(v) == pytest.approx(cv, rel=0.01)
    assert dg.gini(v) == pytest.approx(gini, rel=0.01)
    # normalized entropy of p = x / sum x: 1 - (E[x log x] / E[x] - log E[x]) / log N
    assert dg.normalized_entropy(v) == pytest.approx(1 - x_log_x / math.log(n), abs=1e-3)


def test_inequality_measures_reject_bad_input():
    for bad in ([], [-1.0, 2.0], [0.0, 0.0], [1.0, float("nan")]):
        with pytest.raises(InputError, match="non-negative"):
            dg.gini(bad)


# ---- KDE uniformity ------------------------------------------------------------------------------------
def test_density_cv_of_a_gaussian_matches_the_closed_form():
    """X ~ N(0, I2): the KDE estimates the smoothed density N(0, s^2 I), s^2 = 1 + h^2, whose value at X
    has CV^2 = 1 / (s^2 (s^2 + 2))."""
    x = np.random.default_rng(0).standard_normal((3000, 2))
    stats = dg.latent_uniformity(x)
    s2 = 1 + stats.bandwidth**2
    assert stats.density_cv == pytest.approx(1 / math.sqrt(s2 * (s2 + 2)), rel=0.05)
    assert stats.num_points == 3000


def test_concentrated_latents_score_less_uniform_than_gaussian_ones():
    """A dense core (20 % of the points at sd 0.05) in a sparse halo (80 % at sd 1): densities at the points
    are about two-valued, high on 20 % and low on 80 %: CV -> sqrt(0.8 / 0.2) = 2 and Gini -> 0.8 as the ratio grows
    (the KDE's bandwidth, set by the overall spread, smooths the core, so the ratio is ~5 here).
    (A majority core would read as even: the measures weigh every point, and most points then share one density.)"""
    g = np.random.default_rng(1)
    n, c = 2000, 4
    gaussian = g.standard_normal((n, c))
    core_halo = g.standard_normal((n, c)) * np.where(g.uniform(size=(n, 1)) < 0.2, 0.05, 1.0)
    ga, ch = dg.latent_uniformity(gaussian), dg.latent_uniformity(core_halo)
    assert ga.density_cv + 0.4 < ch.density_cv < 2.0 and ga.gini + 0.15 < ch.gini < 0.8 and ga.entropy > ch.entropy + 0.03


def test_uniformity_subsamples_and_checks_shape():
    x = np.random.default_rng(0).standard_normal((500, 3))
    assert dg.latent_uniformity(x, max_points=100).num_points == 100
    with pytest.raises(InputError, match=r"\(N, C\)"):
        dg.latent_uniformity(np.zeros((2, 3)))


# ---- linear probe -------------------------------------------------------------------------------------
def class_latents(labels: np.ndarray, shift: float, seed: int = 0) -> torch.Tensor:
    """(N, 4, 8, 8) Gaussian latents whose channel ``label`` is shifted by ``shift`` (one direction per class)."""
    z = torch.randn(len(labels), 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    z[torch.arange(len(labels)), torch.as_tensor(labels)] += shift
    return z


def test_probe_separates_linearly_separable_latents():
    y = np.random.default_rng(0).integers(0, 3, 600)
    result = dg.linear_probe(dg.probe_features(class_latents(y, 2.0)), y)
    assert result.accuracy > 0.95 and result.chance < 0.5 and result.num_classes == 3
    assert result.num_test == 150 and result.num_train == 450


def test_probe_on_random_labels_is_at_chance():
    g = np.random.default_rng(2)
    y = g.integers(0, 4, 1200)
    z = torch.randn(1200, 4, 8, 8, generator=torch.Generator().manual_seed(5))  # independent of y
    result = dg.linear_probe(dg.probe_features(z), y)
    assert abs(result.accuracy - 0.25) < 0.07 and abs(result.chance - 0.25) < 0.07


def test_probe_features_pool_to_at_most_four_by_four():
    assert dg.probe_features(torch.zeros(2, 3, 16, 16)).shape == (2, 48)
    assert dg.probe_features(torch.zeros(2, 3, 2, 2)).shape == (2, 12)


# ---- everything at once ---------------------------------------------------------------------------------
def test_diagnose_latents_reports_channels_uniformity_probe_and_codebook():
    y = np.random.default_rng(0).integers(0, 2, 200)
    z = class_latents(y, 3.0)
    z[:, 3] = z[:, 3] * 2 + 5  # labels 0/1 shift channels 0/1 only
    idx = torch.randint(0, 10, (200, 8, 8), generator=torch.Generator().manual_seed(0))  # codes 10..15 dead
    diag = dg.diagnose_latents(z, labels=y, indices=idx, codebook_size=16)
    ch = diag.channels
    assert ch["channel_mean"][3] == pytest.approx(5.0, abs=0.05) and ch["channel_std"][3] == pytest.approx(2.0, rel=0.02)
    assert ch["channel_min"][3] < ch["channel_mean"][3] < ch["channel_max"][3]
    assert diag.probe.accuracy > 0.9
    assert diag.codebook == codebook_stats(torch.bincount(idx.flatten(), minlength=16))
    assert diag.codebook.dead_codes == 6 and diag.codebook.perplexity == pytest.approx(10, rel=0.01)
    assert 0 < diag.uniformity.density_cv and 0 < diag.uniformity.entropy <= 1 and 0 <= diag.uniformity.gini < 1
    json.dumps(diag.to_dict(), allow_nan=False)  # goes into report.json as is


def test_diagnostics_skip_what_the_data_cannot_give():
    from latentflow.metrics import ChannelStats

    stats = ChannelStats()
    stats.update(torch.randn(4, 2, 3, 3))
    diag = dg.latent_diagnostics(stats, tokens=None, features=np.zeros((4, 3)), labels=np.array([-1, -1, 0, 0]))
    assert diag.uniformity is None and diag.probe is None and diag.codebook is None  # unlabeled / one class


# ---- the evaluation report: two codecs side by side on the same images ---------------------------------------
def test_evaluation_rows_carry_diagnostics_for_two_codecs(photos, tmp_path):
    """ModelEvaluator rows (as the Ray job makes them) -> merge_rows -> diagnostics and their PNGs,
    for a continuous and a quantized shipped codec on the same labeled held-out crops."""
    from PIL import Image

    from latentflow.evaluation import plots
    from latentflow.evaluation.evaluator import ModelEvaluator
    from latentflow.evaluation.report import merge_rows
    from latentflow.evaluation.runner import diagnose

    crops = [np.asarray(Image.fromarray(img).resize((16, 16)), dtype=np.float32) for img in photos.values()]
    pixels = np.stack([c.transpose(2, 0, 1) / 127.5 - 1 for c in crops])  # (8, 3, 16, 16)
    labels = np.arange(8) % 2
    diags = {}
    for name in ("kl-f8", "fsq-f8"):
        ev = ModelEvaluator(name, histogram_samples=64)
        rows = [ev({"key": np.array([f"k{i}" for i in range(s, s + 4)], dtype=object), "pixel_values": pixels[s:s + 4],
                    "error": np.array([""] * 4, dtype=object), "label": labels[s:s + 4]}) for s in (0, 4)]
        rep = merge_rows([{k: v[0] for k, v in row.items()} for row in rows])  # one row per batch, as take_all gives
        diag = diagnose(rep)
        assert rep["_probe_features"].shape[0] == 8 and list(rep["_probe_labels"]) == list(labels)
        assert diag["channels"] == rep["latent_stats"]  # the same ChannelStats numbers
        assert diag["uniformity"]["num_points"] == rep["_latent_sample"].shape[1]
        assert diag["probe"]["num_train"] + diag["probe"]["num_test"] == 8
        assert (diag["codebook"] is not None) == (name == "fsq-f8")
        if diag["codebook"]:
            assert diag["codebook"] == rep["codebook"]  # metrics.codebook_stats, one definition
        json.dumps(diag, allow_nan=False)
        diags[name] = diag
        png = plots.channel_statistics(diag["channels"], str(tmp_path / f"ch_{name}.png"), title=name)
        assert Image.open(png).size[0] > 100
    png = plots.diagnostics_comparison(diags, str(tmp_path / "diagnostics_comparison.png"))
    assert Image.open(png).format == "PNG"
