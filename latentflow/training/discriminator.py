"""PatchGAN discriminator and the hinge GAN losses of the latent-diffusion autoencoder recipe.

The discriminator scores overlapping patches (B, 1, h, w); the generator's
adversarial term is weighted adaptively, ``||grad rec|| / ||grad gan||`` at the
decoder's last layer, so neither term swamps the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """A small PatchGAN: strided 4x4 convs, GroupNorm, LeakyReLU, a 1-channel patch map.

    Args:
        in_channels: image channels.
        channels: width of the first layer, doubled per layer (capped at 8x).
        num_layers: strided layers after the first.
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for i in range(1, num_layers + 1):
            nxt = channels * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(width, nxt, 4, stride, 1, bias=False), nn.GroupNorm(min(32, nxt // 4) or 1, nxt),
                       nn.LeakyReLU(0.2)]
            width = nxt
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 1, h, w) patch logits


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: ``mean(relu(1 - real)) + mean(relu(1 + fake))``, halved."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN: ``-mean(D(x_hat))``."""
    return -logits_fake.mean()


def last_decoder_layer(model: nn.Module) -> torch.nn.Parameter:
    """The weight of the decoder's last layer (where the adaptive GAN weight is measured).

    Uses ``model.get_last_layer()`` when the model defines it, else the last
    parameter with rank >= 2 under ``model.decoder`` (or the whole model).
    """
    if hasattr(model, "get_last_layer"):
        return model.get_last_layer()
    scope = getattr(model, "decoder", model)
    weights = [p for p in scope.parameters() if p.ndim >= 2 and p.requires_grad]
    if not weights:
        raise ValueError(f"{type(model).__name__} has no decoder weight to measure the adaptive GAN weight at")
    return weights[-1]


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """LDM adaptive weight ``||d rec / d layer|| / (||d gan / d layer|| + 1e-4)``, clamped, detached."""
    rec_grad = torch.autograd.grad(rec_loss, layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (gan_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()
