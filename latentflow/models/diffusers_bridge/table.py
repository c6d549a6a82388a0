"""Every diffusers autoencoder class, and what the bridge does with it: one :class:`Family` per bridged class
(:data:`FAMILIES`, joined from the per-modality tables), :data:`NATIVE` for the class latentflow implements itself,
:data:`NOT_BRIDGED` for the exported classes that are no autoencoder of media, each with the reason.

``tests/models/test_diffusers_bridge_coverage.py`` lists what the installed diffusers exports and fails when a class
is in none of the three, so "every class loads" stays true across diffusers upgrades.
"""

from __future__ import annotations

from latentflow.auto import _CLASS_NAME_ALIASES
from latentflow.models.diffusers_bridge.audio import AUDIO
from latentflow.models.diffusers_bridge.family import Family
from latentflow.models.diffusers_bridge.family import diffusers_class as _diffusers_class
from latentflow.models.diffusers_bridge.family import supported as _supported
from latentflow.models.diffusers_bridge.image import IMAGE
from latentflow.models.diffusers_bridge.video import VIDEO

FAMILIES: dict[str, Family] = {**IMAGE, **VIDEO, **AUDIO}
NATIVE = tuple(_CLASS_NAME_ALIASES)  # classes latentflow implements (AutoencoderKL, AutoencoderOobleck): not bridged
NOT_BRIDGED: dict[str, str] = {
    "MMAudioVocoder": "a vocoder (mel spectrogram -> waveform), with no encoder and no latent space: it follows "
                      "MMAudioVAE, which the bridge loads",
    "MiniMaxMusic3Vocoder": "a waveform decoder for latents no diffusers encoder produces (MiniMax Music 3's "
                            "flow-matched latents), so there is nothing to encode or to compare a round trip against",
    "RFD4ProteinaAutoencoder": "an autoencoder of protein structures (atom coordinates, residue types), not of images, "
                               "video or audio",
}


def supported_classes() -> list[str]:
    return _supported(FAMILIES, NATIVE)


def diffusers_class(class_name: str) -> type:
    """The diffusers class named ``class_name``, or an error that says why latentflow does not load it."""
    from latentflow.errors import ConfigError

    if class_name in NOT_BRIDGED:
        raise ConfigError(f"diffusers {class_name} is not bridged: it is {NOT_BRIDGED[class_name]}")
    return _diffusers_class(class_name, FAMILIES, NATIVE)
