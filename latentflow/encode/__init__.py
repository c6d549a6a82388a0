"""The encode stage: the one encode path (records -> processed samples -> latents), the latent encoder, text encoders."""
