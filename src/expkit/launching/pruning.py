"""Prune bad Optuna trials early: report the monitored metric after every validation.

Used by ``hparams_search`` configs (conf/hparams_search/digits_optuna.yaml):

    callbacks:
      optuna_pruning:
        _target_: expkit.launching.pruning.OptunaPruning
        monitor: ${monitor.metric}

The job finds its trial from its environment (set by the expkit_optuna sweeper) and the study from
its Hydra config (``hydra.sweeper``: storage, study_name, pruner). Outside an Optuna sweep the
callback does nothing, so a trial's config re-runs as a plain training run.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pytorch_lightning as pl

from expkit.launching.sweep import TRIAL_ID_ENV
from expkit.tracking.files import to_number

log = logging.getLogger("expkit")


def current_trial() -> Any | None:
    """The Optuna trial this job runs, or ``None`` outside an expkit_optuna sweep."""
    if not os.environ.get(TRIAL_ID_ENV):
        return None
    import optuna
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from hydra_plugins.expkit_optuna_sweeper.optuna_sweeper import make_storage, storage_url

    sweeper = HydraConfig.get().sweeper
    pruner = instantiate(sweeper.pruner) if sweeper.get("pruner") else optuna.pruners.NopPruner()
    url = storage_url(sweeper.get("storage"), HydraConfig.get().sweep.dir)
    study = optuna.load_study(study_name=sweeper.study_name, storage=make_storage(url), pruner=pruner)
    return optuna.trial.Trial(study, int(os.environ[TRIAL_ID_ENV]))


class OptunaPruning(pl.Callback):
    """After each validation, report ``monitor`` (by epoch) to the trial; raise ``TrialPruned``
    when the study's pruner says so (the sweeper then records the trial as pruned).

    Args:
        monitor: the metric to report, the one the study optimizes (``${monitor.metric}``).
    """

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self._trial: Any = None
        self._looked_up = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if not self._looked_up:
            self._trial, self._looked_up = current_trial(), True
        value = trainer.callback_metrics.get(self.monitor)
        if self._trial is None or value is None:
            return
        import optuna

        epoch = trainer.current_epoch
        self._trial.report(to_number(value), step=epoch)
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: {self.monitor}={to_number(value):.4g}")
