"""What the train and eval tasks share: building components from config and running a job safely.

Hydra owns the run directory; it is never part of the job config (DVC composes that config
without Hydra's runtime), so it is handed to the components here: every logger's ``save_dir``,
the checkpoint ``dirpath`` and the trainer's ``default_root_dir``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from expkit.errors import ExpkitError
from expkit.tracking import wandb as wandb_tracking
from expkit.tracking.files import CHECKPOINT_DIR

log = logging.getLogger("expkit")

# Arguments the code passes when it builds a component, by config key (``*``: every entry of that
# group): a config leaves them unset. ``expkit validate`` reads this to bind targets' signatures.
INJECTED_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "model": ("input_shape", "num_classes"),  # the tasks, from the data's spec
    "model.net": ("input_shape", "num_classes"),  # Classifier.__init__
    "model.optimizer": ("params",),  # Classifier.configure_optimizers
    "model.scheduler": ("optimizer",),  # Classifier.configure_optimizers
    "trainer": ("default_root_dir", "logger", "callbacks"),  # build_trainer
    "logger.*": ("save_dir",),  # build_loggers
    "callbacks.*": ("dirpath",),  # build_callbacks (checkpoints)
}


def build_loggers(logger_cfg: Mapping | None, run_dir: Path) -> list:
    """One Lightning logger per entry of the ``logger`` group, all writing under the run directory."""
    from hydra.utils import instantiate
    from pytorch_lightning.loggers import WandbLogger

    wandb_tracking.wait_for_service()  # started in the background by the task, if it logs to W&B
    loggers = [instantiate(cfg, save_dir=str(run_dir)) for cfg in (logger_cfg or {}).values() if cfg]
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        wandb_tracking.skip_launch_import_when_nothing_staged()
    return loggers


def logs_to_wandb(logger_cfg: Mapping | None) -> bool:
    """Whether the ``logger`` group has a W&B logger (``WandbLogger`` or a subclass)."""
    from hydra.utils import get_class
    from pytorch_lightning.loggers import WandbLogger

    targets = [cfg.get("_target_") for cfg in (logger_cfg or {}).values() if cfg]
    return any(target and issubclass(get_class(target), WandbLogger) for target in targets)


def build_callbacks(callbacks_cfg: Mapping | None, run_dir: Path) -> list:
    """Lightning callbacks; checkpoints go to ``<run_dir>/checkpoints`` unless a dirpath is set."""
    from hydra.utils import get_class, instantiate
    from pytorch_lightning.callbacks import ModelCheckpoint

    callbacks = []
    for cfg in (callbacks_cfg or {}).values():
        if not cfg:
            continue
        extra = {}
        if issubclass(get_class(cfg["_target_"]), ModelCheckpoint) and not cfg.get("dirpath"):
            extra["dirpath"] = str(run_dir / CHECKPOINT_DIR)
        callbacks.append(instantiate(cfg, **extra))
    return callbacks


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: list | None = None):
    from hydra.utils import instantiate

    from expkit.callbacks import skip_unimplemented_hooks

    skip_unimplemented_hooks()
    loggers = build_loggers(cfg.get("logger"), run_dir)
    return instantiate(
        cfg.trainer, default_root_dir=str(run_dir), logger=loggers or False, callbacks=callbacks or []
    )


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


# A job stopped from outside (SLURM requeue, Ctrl-C) is interrupted, not failed: resume continues it.
INTERRUPTIONS = ("SystemExit", "KeyboardInterrupt")


def run_job(task: Callable[[DictConfig, Path], Any], cfg: DictConfig) -> Any:
    """Run ``task`` in Hydra's run directory with its run record (``run.json``); finish W&B whatever
    happens; expected errors exit with their code and a one-line message (``HYDRA_FULL_ERROR=1``
    shows the traceback)."""
    import os

    from expkit.tracking.record import RunRecord

    run_dir, group, overrides = hydra_job()
    if group is not None:  # a multirun job: refuse in-process DDP, honour fail_fast, skip done jobs
        from expkit.launching.sweep import before_job

        earlier = before_job(cfg)
        if earlier is not None:
            return earlier
    # Only rank zero keeps the record; DDP ranks share the directory.
    record = RunRecord.start(run_dir, resolved(cfg), overrides, task=cfg.task_name) if process_rank() == 0 else None
    wandb_tracking.configure_run(
        run_name=run_dir.name if group is None else f"{group}/{run_dir.name}",
        group=group,
        resume_id=record.wandb_id if record else None,
    )
    exit_code, error, result = 1, None, None
    try:
        result = task(cfg, run_dir)
        exit_code = 0
        return result
    except ExpkitError as exc:
        exit_code, error = exc.exit_code, f"{type(exc).__name__}: {exc}"
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or group is not None:
            raise  # in a multirun the sweep records the failure and goes on (never exit)
        log.error("%s", error)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if record is not None:
            record.note_wandb()
            status = "completed" if exit_code == 0 else "interrupted" if error and error.startswith(INTERRUPTIONS) else "failed"
            record.finish(status, metrics=result, error=error)
            record.attach_to_wandb()
        wandb_tracking.finish_run(exit_code)
