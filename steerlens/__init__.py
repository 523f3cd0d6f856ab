"""steerlens: mechanistic steering-vector analysis of trait transfer."""

from __future__ import annotations

__version__ = "0.1.0"

from steerlens.activations import Activations, record_activations
from steerlens.extract import extract_vector, logistic_probe, mean_diff, pca_diff
from steerlens.intervene import ablate, steer
from steerlens.models import LoadedModel, ModelLoadError, load_model, wrap
from steerlens.prompts import ChatPrompt
from steerlens.sites import site_name
from steerlens.vectors import SteeringVector, cosine

__all__ = [
    "Activations",
    "ChatPrompt",
    "LoadedModel",
    "ModelLoadError",
    "SteeringVector",
    "__version__",
    "ablate",
    "cosine",
    "extract_vector",
    "load_model",
    "logistic_probe",
    "mean_diff",
    "pca_diff",
    "record_activations",
    "site_name",
    "steer",
    "wrap",
]
