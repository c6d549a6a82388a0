"""Generative priors over cached latents: GPT (AR tokens), MaskGIT (masked tokens), rectified flow (continuous)."""

from latentflow.priors.base import PriorConfig, PriorModel, build_prior, load_prior

__all__ = ["PriorConfig", "PriorModel", "build_prior", "load_prior"]
