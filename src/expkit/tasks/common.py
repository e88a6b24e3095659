"""What the tasks (train, eval, predict) share: the Hydra job they run in, and running it safely.

Hydra owns the run directory; it is never part of the job config (DVC composes that config
without Hydra's runtime), so it is handed to the task, which gives it to the components
(``expkit.build``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from expkit.errors import ExpkitError, full_error
from expkit.tracking import wandb as wandb_tracking

log = logging.getLogger("expkit")


def resolved(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def hydra_job() -> tuple[Path, str | None, list[str]]:
    """The job's run directory, the sweep's name in a multirun (the W&B group), and the overrides."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    group = Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None
    return Path(hc.runtime.output_dir), group, list(hc.overrides.task)


def process_rank() -> int:
    """This process's global rank, from the variables DDP launchers set (0 when not distributed)."""
    import os

    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


class MaskHydraFiles(Callback):
    """Hydra callback (``hydra.callbacks.mask_secrets`` in conf/hydra/default.yaml) masking the
    files Hydra wrote for each job (``expkit.secrets.mask_hydra_files``: ``.hydra/*.yaml`` and
    ``multirun.yaml``) as the job starts, in the process that runs it (this one, a worker, a SLURM
    task). Hydra writes them before any callback or task runs, so every job's files pass here,
    whether the job then trains, is skipped, cancelled or refused; ``multirun.yaml`` is masked
    again when the sweep ends (a sweeper may rewrite it)."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from expkit.secrets import mask_hydra_files

        mask_hydra_files(config.hydra)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from expkit.secrets import mask_yaml_file

        mask_yaml_file(Path(config.hydra.sweep.dir) / "multirun.yaml")


def log_to_file(level: int, message: str) -> None:
    """Write ``message`` to the run's log file (``<run dir>/<task>.log``) only, not the console."""
    logger = logging.getLogger("expkit")
    record = logger.makeRecord(logger.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def discard_unstarted(run_dir: Path) -> None:
    """Remove a run directory that holds only what Hydra wrote before the job (``.hydra/``, the log
    file): a run refused before it started leaves nothing behind. Anything else is kept."""
    import shutil

    run_dir = Path(run_dir)
    if not run_dir.is_dir() or any(p.name != ".hydra" and p.suffix != ".log" for p in run_dir.iterdir()):
        return
    for handler in logging.getLogger().handlers:  # the log file is about to go
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run_dir.resolve():
            logging.getLogger().removeHandler(handler)
            handler.close()
    shutil.rmtree(run_dir, ignore_errors=True)


# A job stopped from outside (a signal, SLURM requeue, Ctrl-C) is interrupted, not failed: resume
# continues it. expkit's own Interrupted by name; SystemExit (Lightning's SIGTERMException, when its
# SIGTERM handler runs before expkit's) and KeyboardInterrupt by type.
INTERRUPTIONS = ("Interrupted",)


def run_job(task: Callable[[DictConfig, Path, Any], Any], cfg: DictConfig, check: Callable[[DictConfig, Path], Any]) -> Any:
    """Run ``task`` in Hydra's run directory with its run record (``run.json``); finish W&B whatever
    happens; expected errors exit with their code and a one-line message (``HYDRA_FULL_ERROR=1``
    shows the traceback).

    ``check(cfg, run_dir)`` is the task's pre-launch check. It runs before the record starts, so a
    run it refuses (exit 2 or 3) leaves no run directory behind, and a directory that already held
    a run (a fixed ``hydra.run.dir``) keeps that run's record and files. What it returns is handed
    on: ``task(cfg, run_dir, checked)``."""
    from hydra.core.hydra_config import HydraConfig

    from expkit.callbacks import STOP_SIGNALS
    from expkit.config.app import check_choices
    from expkit.config.compose import check_resolvable
    from expkit.secrets import mask_hydra_files, mask_text, mask_warnings, recordable
    from expkit.tracking.composition import composition
    from expkit.tracking.record import RunRecord

    # Also where the config lacks expkit's hydra settings (their callback and logging filter).
    mask_hydra_files(HydraConfig.get())
    mask_warnings()
    run_dir, group, overrides = hydra_job()
    exit_code, error, result, record, stopped, pruned = 1, None, None, None, False, False
    STOP_SIGNALS.install()  # a SIGTERM or Ctrl-C, even during start-up, stops the run cleanly (SaveOnSignal)
    try:
        check_choices(overrides)  # an option Hydra ignores (optional groups) is refused
        check_resolvable(cfg)
        if group is not None:  # a multirun job: refuse in-process DDP, honour fail_fast, skip done jobs
            from expkit.launching.sweep import before_job
            from expkit.startup import started

            started()  # a sweep's process lives as long as the sweep: it collects as usual

            earlier = before_job(cfg)
            if earlier is not None:
                exit_code = 0
                return earlier
        checked = check(cfg, run_dir)  # refused here: nothing recorded, nothing of an earlier run replaced
        # Only rank zero keeps the record; DDP ranks share the directory.
        if process_rank() == 0:
            record = RunRecord.start(run_dir, recordable(cfg), overrides, task=cfg.task_name, composition=composition())
        wandb_tracking.configure_run(
            run_name=run_dir.name if group is None else f"{group}/{run_dir.name}",
            group=group,
            resume_id=record.wandb_id if record else None,
        )
        result = task(cfg, run_dir, checked)
        exit_code = 0
        return result
    except ExpkitError as exc:
        exit_code, error = exc.exit_code, f"{type(exc).__name__}: {exc}"
        if record is None and process_rank() == 0:
            discard_unstarted(run_dir)  # refused before it started: nothing that looks like a run stays
        else:
            log_to_file(logging.ERROR, error)  # the console gets the one line below
        if full_error() or group is not None:
            raise  # in a multirun the sweep records the failure and goes on (never exit)
        print(f"error: {mask_text(str(exc))}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        stopped = isinstance(exc, SystemExit | KeyboardInterrupt)
        pruned = type(exc).__name__ == "TrialPruned"  # optuna's (not imported here): stopped early, not failed
        raise
    finally:
        STOP_SIGNALS.restore()
        if record is not None:
            record.note_wandb()
            interrupted = stopped or bool(error and error.startswith(INTERRUPTIONS))
            status = ("completed" if exit_code == 0 else "interrupted" if interrupted else "pruned" if pruned
                      else "failed")
            record.finish(status, metrics=result, error=error)
            record.attach_to_wandb()
        wandb_tracking.finish_run(exit_code)
