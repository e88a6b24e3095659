"""LightningModules (``Classifier``) and the networks they wrap (``nets``)."""

from expkit.models.classifier import Classifier
from expkit.models.compat import build_model, check_model_fits_data

__all__ = ["Classifier", "build_model", "check_model_fits_data"]
