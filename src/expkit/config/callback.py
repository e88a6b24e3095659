"""A Hydra callback (conf/hydra/default.yaml) that validates every job of a multirun before the
first one starts, whatever the launcher (local, SLURM): one bad combination stops the launch."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("expkit")


def sweep_overrides(config: DictConfig) -> list[str]:
    """The sweep's overrides: ``hydra.sweeper.params`` from the config, then the command line's."""
    params = config.hydra.sweeper.get("params") or {}
    return [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)


def check_location(config: DictConfig) -> None:
    """Before Hydra creates the run (or sweep) directory: ``task_name``, which names a folder in its
    path, cannot lead it out of ``paths.log_dir`` (``task_name=../..``); exit 2 otherwise."""
    from expkit.errors import ExpkitError, exit_with
    from expkit.paths import check_name

    if "task_name" in config:
        try:
            check_name("task_name", config.task_name)
        except ExpkitError as exc:
            exit_with(exc)


class ValidateSweep(Callback):
    """``on_multirun_start``: compose and validate each job's overrides (``validate_sweep``), with
    the sweep's own config loader (its search path); an invalid job exits with its error's code
    and names the job, before any job or directory exists. ``on_run_start`` (a single run): the
    run directory's location only (the task validates the rest).

    Args:
        only: stop after validating (``expkit validate -m``): no job runs.
    """

    def __init__(self, only: bool = False) -> None:
        self.only = only

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_location(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import sys

        from expkit.config.app import check_choices
        from expkit.config.compose import expand_sweep
        from expkit.config.validate import describe_sizes, validate_sweep
        from expkit.errors import ExpkitError, exit_with

        check_location(config)
        try:
            check_choices(sweep_overrides(config))
            jobs = expand_sweep(sweep_overrides(config))
            sizes = validate_sweep(jobs, config_name=config.hydra.job.config_name)
        except ExpkitError as exc:
            exit_with(exc)
        log.info("Validated the %d job(s) of the sweep", len(jobs))
        if self.only:
            data = sorted({describe_sizes(s) for s in sizes if s})
            print(f"ok: {len(jobs)} job(s) of {config.hydra.job.config_name} are valid" + (f" ({'; '.join(data)})" if data else "") + ".")
            sys.exit(0)
