"""A Hydra callback (conf/hydra/default.yaml) that validates every job of a multirun before the
first one starts, whatever the launcher (local, SLURM): one bad combination stops the launch."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("expkit")


def sweep_overrides(config: DictConfig) -> list[str]:
    """The sweep's overrides as Hydra's basic sweeper reads them: ``hydra.sweeper.params`` from the
    config (resolved, as Hydra instantiates the sweeper), then the command line's as written."""
    from expkit.config.compose import written_overrides

    params = config.hydra.sweeper.get("params") or {}
    return [f"{key}={value}" for key, value in params.items()] + written_overrides(config.hydra)


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


def check_sweeper_can_run(config: DictConfig) -> None:
    """Hydra's basic sweeper runs discrete sweeps only: a continuous one (``interval(...)``) needs a
    sweeper that samples it. Raises :class:`ConfigError` naming the override and the fix."""
    from expkit.config.compose import parse_overrides
    from expkit.errors import ConfigError

    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return
    for override in parse_overrides(sweep_overrides(config)):
        if override.is_sweep_override() and not override.is_discrete_sweep():
            raise ConfigError(f"{override.input_line}: Hydra's basic sweeper runs lists, range() and choice() only; sample "
                              "an interval with a sweeper that can (hydra/sweeper=expkit_optuna, or hparams_search=...).")


def _launcher_help(config: DictConfig, jobs: int) -> dict[str, Any]:
    """What the sweep's launcher lends its pre-launch check (``validate_sweep``'s ``workers`` and
    ``composed``): under ``launcher=parallel``, its forked workers to validate the jobs after the
    first, and the place where it takes the composed job configs from (``validation_workers``,
    ``composed_jobs``); nothing from other launchers."""
    from expkit.config.validate import PARALLEL_LAUNCHER

    launcher = config.hydra.get("launcher") or {}
    if launcher.get("_target_") != PARALLEL_LAUNCHER:
        return {}
    from hydra_plugins.expkit_launchers.parallel_launcher import composed_jobs, validation_workers

    return {"workers": lambda: validation_workers(launcher, jobs), "composed": composed_jobs()}


class ValidateSweep(Callback):
    """``on_multirun_start``: check the options of the sweep's overrides, then compose and validate
    each job's overrides (``validate_sweep``), with the sweep's own config loader (its search path);
    an invalid job exits with its error's code and names the job, before any job or directory exists.
    Each job is composed as its launcher will compose it; under ``launcher=parallel`` the
    launcher's forked workers validate the jobs after the first, side by side, and the launcher
    runs the configs composed here (``_launcher_help``). ``on_run_start`` (a single run): the
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
        from expkit.launching.signals import SWEEP_SIGNALS, SweepInterrupted, pending_signal

        check_location(config)
        try:
            with SWEEP_SIGNALS.deferred():  # a signal stops the check between jobs, never inside an import
                check_choices(sweep_overrides(config), config)  # every option of every job, as the user wrote it
                check_sweeper_can_run(config)
                jobs = expand_sweep(sweep_overrides(config))
                sizes = validate_sweep(jobs, config_name=config.hydra.job.config_name, master=config,
                                       options_checked=True, **_launcher_help(config, len(jobs)))
        except SweepInterrupted:
            raise
        except Exception as exc:  # noqa: BLE001 - Hydra turns a callback's error into a warning and runs the sweep
            from expkit.errors import ConfigError

            if (signum := pending_signal()) is not None:  # cut short by the signal, not a config error
                raise SweepInterrupted(signum) from None
            if not isinstance(exc, ExpkitError):
                exc = ConfigError(f"the sweep could not be validated ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).")
            exit_with(exc)
        if (signum := pending_signal()) is not None:  # a signal whose exception the check swallowed
            raise SweepInterrupted(signum)
        log.info("Validated the %d job(s) of the sweep", len(jobs))
        if self.only:
            data = sorted({describe_sizes(s) for s in sizes if s})
            print(f"ok: {len(jobs)} job(s) of {config.hydra.job.config_name} are valid" + (f" ({'; '.join(data)})" if data else "") + ".")
            sys.exit(0)
