"""The data layer: raw shards -> records -> processor -> encoder -> sinks -> readers.

Modules follow the data path: :mod:`~latentflow.data.records` (shards, records, sample
errors), :mod:`~latentflow.data.sources` (listing and reading shards),
:mod:`~latentflow.data.processors` (bytes -> model inputs), :mod:`~latentflow.data.encoding`
(model inputs -> latent arrays), :mod:`~latentflow.data.codec` (what made the latents),
:mod:`~latentflow.data.sinks` (exactly-once Parquet + Zarr writers) and
:mod:`~latentflow.data.readers` (reading latents back).
"""
