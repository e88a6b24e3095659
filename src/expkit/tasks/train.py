"""Train a model: ``python train.py model=cnn data=digits trainer.max_epochs=20``.

compose (Hydra) -> seed -> data spec -> check model fits data -> build model, trainer, loggers,
callbacks -> fit (resuming from the run directory's last checkpoint if it has one) -> validate and
test the best checkpoint -> write metrics.json and the learning curves.
Returns the monitored metric, so Hydra sweepers can optimize it.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import expkit.resolvers  # noqa: F401  (registers the run-directory resolver before Hydra composes)
from expkit.config import checked_entry_point, validate
from expkit.paths import config_dir
from expkit.tasks.common import (
    build_callbacks,
    build_trainer,
    log,
    logs_to_wandb,
    process_rank,
    resolved,
    run_job,
)


def train(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Fit ``cfg.model`` on ``cfg.data`` and test it; every output goes to ``run_dir``."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from expkit.models import build_model
    from expkit.models.checkpoint import load_checkpoint
    from expkit.reproducibility import EpochSeeder
    from expkit.startup import started
    from expkit.tracking.data_version import describe_data_version, write_data_version
    from expkit.tracking.files import resumable_checkpoint, write_metrics, write_resolved_config
    from expkit.tracking.history import EpochHistory
    from expkit.tracking.plots import plot_learning_curves
    from expkit.tracking.record import note_run
    from expkit.tracking.wandb import start_service_in_background

    validate(cfg, task="train")  # fail before launch: every bad input, one clear error (issue 6)
    if process_rank() == 0 and logs_to_wandb(cfg.get("logger")):
        start_service_in_background()  # W&B's service starts while the data and model are built
    config = resolved(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    spec = datamodule.spec
    log.info("Training %s on %s", cfg.model.net._target_, spec.describe())
    model = build_model(cfg.model, spec)
    model.run_config = config

    callbacks = build_callbacks(cfg.get("callbacks"), run_dir)
    if not any(isinstance(c, EpochHistory) for c in callbacks):
        callbacks.append(EpochHistory())  # learning curves belong to every run's record
    if cfg.seed is not None:
        callbacks.append(EpochSeeder(cfg.seed))  # a resumed run repeats the uninterrupted one
    trainer = build_trainer(cfg, run_dir, callbacks=callbacks)
    # The DVC hash of the files the data comes from ties this run to its data version.
    data_version = describe_data_version(datamodule.data_files(), spec.name)
    if trainer.is_global_zero:
        write_resolved_config(run_dir, config)
        write_data_version(run_dir, data_version)
    for logger in trainer.loggers:  # the first use of W&B starts its run
        logger.log_hyperparams({**config, "data_version": data_version})
    provenance = note_run(run_dir, data_version=data_version) if trainer.is_global_zero else {}
    if provenance:
        for logger in trainer.loggers:
            logger.log_hyperparams({"provenance": provenance})

    # A directory that already holds checkpoints is an interrupted run (resume, SLURM requeue).
    ckpt_path = cfg.get("ckpt_path") or resumable_checkpoint(run_dir)
    if ckpt_path:
        if not cfg.get("ckpt_path"):  # validation checked ckpt_path; a kill may have truncated this one
            load_checkpoint(ckpt_path, trust=cfg.get("trust_checkpoint", False), key="checkpoints/last.ckpt")
        log.info("Resuming from %s", ckpt_path)
    started()  # the run's long-lived objects exist: garbage collection resumes (expkit.startup)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=not cfg.get("trust_checkpoint", False))

    # Validate and test the best checkpoint (the current weights when none was kept).
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    ckpt_path = best or None
    metrics: dict[str, float] = {}
    metrics.update(trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0])
    if cfg.test:
        metrics.update(trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0])
    if trainer.is_global_zero:
        write_metrics(run_dir, metrics)
        plot_learning_curves(run_dir)
        log.info("Metrics: %s (best checkpoint: %s)", {k: round(float(v), 4) for k, v in metrics.items()}, best or "none")
    return metrics


@checked_entry_point("train")  # a bad override exits 2 with a did-you-mean, before Hydra runs
@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_job(train, cfg)
    value = metrics.get(cfg.monitor.metric)
    return None if value is None else float(value)


if __name__ == "__main__":
    main()
