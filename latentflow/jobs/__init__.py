"""The encode job on Ray: shards -> preprocess tasks -> encoder actors -> per-shard commits.

Modules follow the data path:

- :mod:`~latentflow.jobs.config`: ``EncodeJobConfig``, the typed YAML job config;
- :mod:`~latentflow.jobs.datasource`: a Ray ``Datasource`` with one ReadTask per pending shard;
- :mod:`~latentflow.jobs.stages`: the preprocess function (CPU tasks) and ``EncoderActor`` (actor pool);
- :mod:`~latentflow.jobs.datasink`: a Ray ``Datasink`` that commits each shard exactly once;
- :mod:`~latentflow.jobs.runner`: ``run_encode_job(config) -> EncodeSummary``.
"""
