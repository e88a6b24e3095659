"""Launching many jobs: sweep records and summaries, the Optuna pruning callback.

The Hydra plugins themselves (the parallel launcher, the Optuna sweeper) live in the
``hydra_plugins`` namespace package, where Hydra requires them to be.
"""
