"""Train a model: ``python train.py model=cnn data=digits trainer.max_epochs=20``.

check the config -> seed -> build the datamodule and the model (sized from the data when both
opt in, ``expkit.build``) -> callbacks, loggers, trainer -> fit (resuming from the run directory's
last checkpoint if it has one) -> validate and test the best checkpoint -> metrics.json and the
learning curves. Any ``LightningModule`` and ``LightningDataModule`` named by ``_target_`` work.
Returns the monitored metric, so Hydra sweepers can optimize it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from expkit.config import run_app, validate
from expkit.tasks.common import log, process_rank, run_job


def check(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """The pre-launch check: every bad input refused in one clear error before anything is built
    or recorded (``expkit.config.validate``); returns the sizes the data declares. An interrupted
    run in ``run_dir`` must have epochs left to resume (``ckpt_path=`` is checked by validate)."""
    checked = validate(cfg, task="train")
    if run_dir is not None and not cfg.get("ckpt_path"):
        from expkit.checkpoints import load_checkpoint, nothing_left_to_train
        from expkit.tracking.files import resumable_checkpoint

        trust = bool(cfg.get("trust_checkpoint", False))
        resumed = resumable_checkpoint(run_dir, trust=trust)
        exhausted = resumed and nothing_left_to_train(load_checkpoint(resumed, trust=trust),
                                                      cfg.trainer.get("max_epochs"), str(resumed), resuming=True)
        if exhausted:
            raise exhausted
    return checked


def train(cfg: DictConfig, run_dir: Path, checked: dict[str, Any] | None = None) -> dict[str, float]:
    """Fit ``cfg.model`` on ``cfg.data`` and test it; every output goes to ``run_dir``. ``checked``:
    what :func:`check` returned when the job ran it already (``run_job``); else it runs here."""
    import pytorch_lightning as pl

    from expkit.build import (
        build_callbacks,
        build_datamodule,
        build_model,
        build_trainer,
        data_sizes,
        describe_data,
        logs_to_wandb,
    )
    from expkit.callbacks import CheckMonitoredMetric
    from expkit.checkpoints import RunCheckpointIO, load_checkpoint
    from expkit.errors import IncompatibleModelData
    from expkit.rebuild import weight_mismatch
    from expkit.reproducibility import EpochSeeder
    from expkit.secrets import masked_argv, recordable
    from expkit.startup import started
    from expkit.tracking.data_version import data_files, describe_data_version, write_data_version
    from expkit.tracking.files import (
        inside_run,
        resumable_checkpoint,
        write_metrics,
        write_resolved_config,
    )
    from expkit.tracking.history import EpochHistory
    from expkit.tracking.plots import plot_learning_curves
    from expkit.tracking.record import note_run
    from expkit.tracking.wandb import start_service_in_background

    if checked is None:
        check(cfg)  # fail before launch: every bad input, one clear error
    if process_rank() == 0 and logs_to_wandb(cfg.get("logger")):
        start_service_in_background()  # W&B's service starts while the data and model are built
    config = recordable(cfg)  # what records keep: resolved but for ${oc.env:...}, secrets masked
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg.data)
    sizes = data_sizes(datamodule)
    data = describe_data(datamodule, sizes)
    model = build_model(cfg.model, sizes, data)
    log.info("Training %s on %s", cfg.model._target_, data)

    callbacks = [CheckMonitoredMetric(cfg.monitor.metric), *build_callbacks(cfg.get("callbacks"), run_dir)]
    if not any(isinstance(c, EpochHistory) for c in callbacks):
        callbacks.append(EpochHistory())  # learning curves belong to every run's record
    if cfg.seed is not None:
        callbacks.append(EpochSeeder(cfg.seed))  # a resumed run repeats the uninterrupted one
    trust = bool(cfg.get("trust_checkpoint", False))
    # Every checkpoint carries the run's config and the data's sizes: eval, predict and the
    # registry rebuild the model from the checkpoint alone (expkit.checkpoints).
    checkpoint_io = RunCheckpointIO({"config": config, "sizes": sizes}, trust=trust)
    trainer = build_trainer(cfg.trainer, cfg.get("logger"), run_dir, callbacks, plugins=[checkpoint_io])
    # The DVC hash of the files the data comes from ties this run to its data version.
    data_version = describe_data_version(data_files(datamodule), getattr(datamodule, "name", None))
    if trainer.is_global_zero:
        write_resolved_config(run_dir, config)
        write_data_version(run_dir, data_version)
    with masked_argv():  # the first use of W&B starts its run, which records the command line
        for logger in trainer.loggers:
            logger.log_hyperparams({**config, "data_version": data_version})
    provenance = note_run(run_dir, data_version=data_version) if trainer.is_global_zero else {}
    if provenance:
        for logger in trainer.loggers:
            logger.log_hyperparams({"provenance": provenance})

    # A directory that already holds checkpoints is an interrupted run (resume, SLURM requeue).
    ckpt_path = cfg.get("ckpt_path") or resumable_checkpoint(run_dir, trust=trust)
    if ckpt_path:
        why = weight_mismatch(load_checkpoint(str(ckpt_path), trust=trust)["state_dict"], model)
        if why:  # Lightning's restore would stop with load_state_dict's traceback
            raise IncompatibleModelData(f"{ckpt_path}: its weights do not fit model {cfg.model._target_} as configured here "
                                        f"({why}): continue it with the model config it was trained with, or start a new "
                                        "run in another directory.")
        log.info("Resuming from %s", ckpt_path)
    started()  # the run's long-lived objects exist: garbage collection resumes (expkit.startup)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)

    # Validate and test the best checkpoint (the current weights when none was kept); in a moved
    # or copied run directory, its own copy of it.
    best = inside_run(trainer.checkpoint_callback.best_model_path, run_dir) if trainer.checkpoint_callback else ""
    ckpt_path = best or None
    metrics: dict[str, float] = {}
    if has_stage(model, datamodule, "validation"):  # an empty loader gives no results
        metrics.update(next(iter(trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)), {}))
    if cfg.test and has_stage(model, datamodule, "test"):
        metrics.update(next(iter(trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)), {}))
    checkpointing = trainer.checkpoint_callback
    if cfg.monitor.metric not in metrics and checkpointing and checkpointing.monitor == cfg.monitor.metric \
            and checkpointing.best_model_score is not None:  # a training metric: its best value
        metrics[cfg.monitor.metric] = float(checkpointing.best_model_score)
    if trainer.is_global_zero:
        write_metrics(run_dir, metrics)
        plot_learning_curves(run_dir)
        log.info("Metrics: %s (best checkpoint: %s)", {k: round(float(v), 4) for k, v in metrics.items()}, best or "none")
    return metrics


def has_stage(model, datamodule, stage: str) -> bool:
    """Whether the module has a ``<stage>_step`` and the datamodule a ``<stage>`` dataloader
    (``stage``: ``validation``, ``test``, ``predict``); training without one is allowed."""
    from pytorch_lightning.utilities.model_helpers import is_overridden

    loader = "val_dataloader" if stage == "validation" else f"{stage}_dataloader"
    return is_overridden(f"{stage}_step", model) and (is_overridden(loader, datamodule) or is_overridden(loader, model))


def job(cfg: DictConfig) -> float | None:
    """Hydra's task function: the run, recorded; returns the monitored metric (what sweepers optimize)."""
    metrics = run_job(train, cfg, check)
    value = metrics.get(cfg.monitor.metric)
    return None if value is None else float(value)


def main(config_path: str | os.PathLike | None = None, config_name: str = "train") -> float | None:
    """``python train.py [overrides]``: the Hydra app on ``config_path`` (default expkit's ``conf/``;
    a research repo passes its own ``conf/``, which extends expkit's configs) with primary config
    ``config_name``."""
    return run_app(config_name, job, config_path)


if __name__ == "__main__":
    main()
