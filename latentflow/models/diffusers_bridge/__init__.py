"""The diffusers bridge: every diffusers autoencoder other than ``AutoencoderKL`` as a ``LatentModel``.

``AutoModel.from_pretrained`` sends any folder whose ``config.json`` names a diffusers
``_class_name`` here (``AutoencoderKL`` stays native: :mod:`latentflow.models.autoencoder_kl`).
One adapter, :class:`DiffusersAutoencoder` (:mod:`.adapter`), wraps the diffusers module and
presents the contract; what differs per class is one :class:`Family` row in a table per input
kind: :mod:`.image` (``CHW``), :mod:`.video` (``CTHW``), :mod:`.audio` (``CT``, ``CTF``), joined
in :mod:`.table` with the classes that are not bridged and why. Each row's normalization rule
cites the diffusers pipeline function it reproduces.

A ``CTHW`` class given images (B, 3, H, W) encodes each as a one-frame clip (B, 3, 1, H, W), as
Qwen-Image does, and returns latents (B, C, 1, h, w); decoding a one-frame clip gives images back.
Audio classes take waveforms (B, channels, N) and give latents (B, C, N / hop).

Example::

    vae = AutoModel.from_pretrained("Qwen/Qwen-Image", subfolder="vae")   # or a local folder
    z = vae.encode(images).latents                 # images (B, 3, H, W) in [-1, 1] -> (B, 16, 1, H/8, W/8)
    z_unit = vae.normalize_latents(z)              # what QwenImagePipeline feeds its transformer
    x_hat = vae.decode(vae.denormalize_latents(z_unit)).sample
"""

from latentflow.models.diffusers_bridge.adapter import DiffusersAutoencoder, DiffusersAutoencoderConfig
from latentflow.models.diffusers_bridge.family import INSTALL_HINT, Family
from latentflow.models.diffusers_bridge.table import FAMILIES, NATIVE, NOT_BRIDGED, diffusers_class, supported_classes

__all__ = ["DiffusersAutoencoder", "DiffusersAutoencoderConfig", "FAMILIES", "Family", "INSTALL_HINT", "NATIVE",
           "NOT_BRIDGED", "diffusers_class", "supported_classes"]
