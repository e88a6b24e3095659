"""expkit's example LightningModules, one per task family, and the networks they wrap (``nets``).

Any ``LightningModule`` works with expkit; these are examples, not the interface.
"""

from expkit.models.classifier import Classifier
from expkit.models.language_model import CharLanguageModel
from expkit.models.regressor import Regressor

__all__ = ["CharLanguageModel", "Classifier", "Regressor"]
