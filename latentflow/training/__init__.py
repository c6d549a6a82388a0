"""The trainer stage: stage-1 autoencoder training on raw shards, stage-2 priors on cached latents.

Modules: ``config`` (typed YAML job configs), ``data`` (resumable streams),
``losses`` / ``perceptual`` / ``discriminator`` (stage-1 loss terms), ``ema``,
``schedule``, ``checkpoint``, ``tasks``, ``trainer`` (the loop), ``distributed``
(Ray Train), ``visualize`` (PNG grids, loss curves), ``stages`` (job entry points).
"""
