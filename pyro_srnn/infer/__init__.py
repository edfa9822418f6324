"""Inference: ELBO estimators, the IWAE bound and KL annealing schedules."""
from .annealing import SCHEDULES, ConstantScale, LinearAnnealing, SigmoidAnnealing, make_schedule
from .estimators import (
    ESTIMATORS, RecordingTrace_ELBO, RecordingTraceMeanField_ELBO, iwae_log_likelihood, log_weights,
    make_elbo,
)

__all__ = [
    "SCHEDULES", "ConstantScale", "LinearAnnealing", "SigmoidAnnealing", "make_schedule", "ESTIMATORS",
    "RecordingTrace_ELBO", "RecordingTraceMeanField_ELBO", "iwae_log_likelihood", "log_weights", "make_elbo",
]
