"""Latent normalization rules: each inverts exactly, round-trips through JSON, and refuses latents it cannot apply to."""

from __future__ import annotations

import json

import pytest
import torch

from latentflow.errors import ConfigError, InputError
from latentflow.normalization import RULES, Normalization

C, T, F = 3, 5, 4
RULE_EXAMPLES = {
    "none": (Normalization("none"), (2, C, 6, 6)),
    "scale": (Normalization("scale", 0.18215), (2, C, 6, 6)),
    "shift_scale": (Normalization("shift_scale", 0.3611, 0.1159), (2, C, 6, 6)),
    "per_channel": (Normalization("per_channel", 1.5, 0.0, [0.1, -0.2, 0.3], [1.5, 0.5, 2.0]), (2, C, 2, 6, 6)),
    "per_channel_per_frame": (Normalization("per_channel_per_frame", 0.5, 0.0, [[0.1 * t for t in range(3)]] * C,
                                            [[1.0 + t for t in range(3)]] * C),
                              (2, C, 2, 6, 6)),
    "per_channel_per_bin": (Normalization("per_channel_per_bin", mean=[[0.1 * c + 0.01 * f for f in range(F)] for c in range(C)],
                                          std=[[0.5 + 0.1 * c + 0.2 * f for f in range(F)] for c in range(C)]), (2, C, T, F)),
    "batchnorm": (Normalization("batchnorm", mean=[0.1] * (C * 4), std=[1.5] * (C * 4), eps=1e-4, patch_size=2), (2, C, 6, 6)),
}


def test_every_rule_has_an_example():
    assert sorted(RULE_EXAMPLES) == sorted(RULES)


@pytest.mark.parametrize("rule", RULES)
def test_rule_inverts_and_round_trips_json(rule):
    norm, shape = RULE_EXAMPLES[rule]
    z = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 2 + 0.5
    torch.testing.assert_close(norm.denormalize(norm.normalize(z)), z, atol=1e-5, rtol=1e-5)
    again = Normalization.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert again == norm and again.rule == rule


def test_per_channel_per_bin_is_one_statistic_per_channel_and_bin():
    norm, shape = RULE_EXAMPLES["per_channel_per_bin"]
    z = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    mean, std = torch.tensor(norm.mean), torch.tensor(norm.std)  # (C, F)
    want = torch.stack([torch.stack([(z[:, c, :, f] - mean[c, f]) / std[c, f] for f in range(F)], -1) for c in range(C)], 1)
    torch.testing.assert_close(norm.normalize(z), want)


def test_per_channel_per_bin_refuses_other_latents():
    norm, _ = RULE_EXAMPLES["per_channel_per_bin"]
    with pytest.raises(InputError, match=r"per-bin statistics of shape \(3, 4\) need latents \(B, C, T, 4\)"):
        norm.normalize(torch.zeros(2, C, T, F + 1))
    with pytest.raises(InputError, match="per-bin statistics"):
        norm.normalize(torch.zeros(2, C, T))
    with pytest.raises(ConfigError, match="needs mean and std"):
        Normalization("per_channel_per_bin")
