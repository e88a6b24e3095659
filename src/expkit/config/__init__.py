"""Configs: Hydra apps with explained errors (``app``), composition and did-you-mean (``compose``,
``suggest``), and the pre-launch check of a composed config (``validate``).

    expkit validate model=cnn data=digits      # the command
    from expkit.config import validate         # the same check, in code
"""

from expkit.config.app import run_app
from expkit.config.compose import compose, expand_sweep
from expkit.config.suggest import closest, did_you_mean
from expkit.config.validate import validate, validate_sweep

__all__ = ["closest", "compose", "did_you_mean", "expand_sweep", "run_app", "validate", "validate_sweep"]
