"""Task pipelines in transformers' shape: ``latentflow.pipeline("reconstruct", model="kl-f8")(image)``.

Tasks: ``reconstruct``, ``encode``, ``decode``, ``tokenize``, ``detokenize`` (:mod:`latentflow.pipelines.codec`) and
``generate`` (:mod:`latentflow.pipelines.generate`); the base class, the registry and :func:`pipeline` live in
:mod:`latentflow.pipelines.base`, media in and out in :mod:`latentflow.pipelines.media`.
"""

from latentflow.pipelines.base import (
    SUPPORTED_TASKS,
    Pipeline,
    Unit,
    pipeline,
    pipeline_class,
    register_pipeline,
    tasks,
)

__all__ = ["SUPPORTED_TASKS", "Pipeline", "Unit", "pipeline", "pipeline_class", "register_pipeline", "tasks"]
