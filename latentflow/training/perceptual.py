"""LPIPS-style perceptual distance over a VGG-like feature network loaded from local safetensors.

Features are taken after each stage, unit-normalized over channels, squared
differences are weighted per channel (the learned ``lin`` layers of LPIPS),
averaged over space and summed over stages. The weights file holds both the
feature network (``features.*``) and the per-stage linear heads (``lin.*``); it
is never downloaded: a missing file is a clear error naming the path.

Example::

    lpips = PerceptualLoss("models/lpips_vgg16.safetensors")
    d = lpips(x, x_hat)          # (B,) distances, images in [-1, 1]
"""

from __future__ import annotations

import os

import fsspec
import torch
from torch import nn

from latentflow.errors import CheckpointError

# VGG16 stages (conv widths per stage), the network LPIPS uses.
VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# ImageNet normalization expressed in the [-1, 1] pixel scale (as LPIPS does).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class FeatureNet(nn.Module):
    """VGG-style conv stages; returns the activation after each stage."""

    def __init__(self, stages: tuple[tuple[int, ...], ...] = VGG16_STAGES, in_channels: int = 3):
        super().__init__()
        self.stages = nn.ModuleList()
        width = in_channels
        for i, widths in enumerate(stages):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if i > 0 else []
            for w in widths:
                layers += [nn.Conv2d(width, w, 3, padding=1), nn.ReLU()]
                width = w
            self.stages.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class PerceptualLoss(nn.Module):
    """Frozen LPIPS-style distance.

    Args:
        weights: local path / fsspec URL of a safetensors file with ``features.*`` and ``lin.*``.
        stages: conv widths per stage (must match the weights).
    """

    def __init__(self, weights: str, stages: tuple[tuple[int, ...], ...] = VGG16_STAGES,
                 storage_options: dict | None = None):
        super().__init__()
        self.features = FeatureNet(stages)
        self.lin = nn.ModuleList(nn.Conv2d(s[-1], 1, 1, bias=False) for s in stages)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self._load(weights, storage_options)
        self.requires_grad_(False).eval()

    def _load(self, weights: str, storage_options: dict | None) -> None:
        from latentflow import hub

        fs, path = fsspec.url_to_fs(os.fspath(weights), **(storage_options or {}))
        if not fs.exists(path):
            raise CheckpointError(
                f"perceptual loss weights not found at {weights!r}: the LPIPS-style loss needs its feature network "
                "(features.*) and linear heads (lin.*) as a local safetensors file; put it there or set "
                "loss.perceptual_weight=0. latentflow never downloads weights.")
        state, _ = hub.read_safetensors(fs, path)
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise CheckpointError(f"{weights!r} lacks perceptual-network keys: {missing[:6]}")
        self.load_state_dict({k: state[k] for k in own})

    def state_for_saving(self) -> dict[str, torch.Tensor]:
        return {k: v.contiguous() for k, v in self.state_dict().items()}

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance per sample (B,) between images in [-1, 1]."""
        fx = self.features((x - self.shift) / self.scale)
        fy = self.features((y - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0])
        for a, b, lin in zip(fx, fy, self.lin):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            total = total + lin((a - b).pow(2)).mean(dim=(1, 2, 3))
        return total


def save_perceptual_weights(path: str, stages: tuple[tuple[int, ...], ...] = VGG16_STAGES, seed: int = 0) -> None:
    """Write a (randomly initialized) weights file in the expected layout, e.g. for tests or conversion targets."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    features = FeatureNet(stages)
    lin = nn.ModuleList(nn.Conv2d(s[-1], 1, 1, bias=False) for s in stages)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state.update({f"lin.{k}": v.abs() for k, v in lin.state_dict().items()})  # LPIPS heads are non-negative
    save_file({k: v.contiguous() for k, v in state.items()}, path)
