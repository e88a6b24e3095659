"""Fail before launch: compose with did-you-mean errors, then validate the composed config.

    expkit validate model=cnn data=digits      # the command
    from expkit.config import validate         # the same check, in code
"""

from expkit.config.compose import checked_entry_point, compose, expand_sweep
from expkit.config.suggest import closest, did_you_mean
from expkit.config.validate import validate, validate_sweep

__all__ = ["checked_entry_point", "closest", "compose", "did_you_mean", "expand_sweep", "validate", "validate_sweep"]
