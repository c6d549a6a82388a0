"""Evaluation of autoencoders: reconstruction metrics, latent statistics, codebook usage, plots.

``run_evaluation(EvalJobConfig)`` is the entry point (``jobs/evaluate.py`` wraps it).
"""

from latentflow.evaluation.config import EvalJobConfig

__all__ = ["EvalJobConfig", "run_evaluation"]


def __getattr__(name: str):
    if name == "run_evaluation":  # torch and Ray: loaded when an evaluation runs, not to validate its config
        from latentflow.evaluation.runner import run_evaluation

        return run_evaluation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
