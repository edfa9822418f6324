"""The model zoo: models and guides, registered by name (see :mod:`pyro_srnn.models.base`)."""
from .base import (
    GUIDES, MODELS, EmptyGuide, GuideMismatch, SequenceGuide, SequenceModel, build_guide, build_model,
    guide_names, model_from_config, model_names, register_guide, register_model,
)

__all__ = [
    "GUIDES", "MODELS", "EmptyGuide", "GuideMismatch", "SequenceGuide", "SequenceModel", "build_guide",
    "build_model", "guide_names", "model_from_config", "model_names", "register_guide", "register_model",
]
