"""Evaluation of autoencoders: reconstruction metrics, latent statistics, codebook usage, plots.

``run_evaluation(EvalJobConfig)`` is the entry point (``jobs/evaluate.py`` wraps it).
"""

from latentflow.evaluation.config import EvalJobConfig
from latentflow.evaluation.runner import run_evaluation

__all__ = ["EvalJobConfig", "run_evaluation"]
