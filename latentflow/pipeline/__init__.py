"""The Ray side of latent caching: shards -> preprocess tasks -> encoder actors -> per-shard commits.

Modules follow the data path:

- :mod:`~latentflow.pipeline.config`: ``EncodeJobConfig``, the typed YAML job config;
- :mod:`~latentflow.pipeline.datasource`: a Ray ``Datasource`` with one ReadTask per pending shard;
- :mod:`~latentflow.pipeline.stages`: the preprocess function (CPU tasks) and ``EncoderActor`` (actor pool);
- :mod:`~latentflow.pipeline.datasink`: a Ray ``Datasink`` that commits each shard exactly once;
- :mod:`~latentflow.pipeline.runner`: ``run_encode_job(config) -> EncodeSummary``.
"""
