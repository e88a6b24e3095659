"""Evaluate a checkpoint on the test split: ``python eval.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt``.

The module and its datamodule are rebuilt from the config the training run recorded in the
checkpoint (``expkit.rebuild``), unless given on the command line (``data=wine``: other data of the
same sizes; ``model=... data=...`` for a checkpoint written outside expkit). Lightning runs the
module's own ``test_step``: the metrics are whatever it logs. They go to ``metrics.json`` in
eval's own run directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from expkit.config import run_app, validate
from expkit.tasks.common import log, resolved, run_job

if TYPE_CHECKING:
    from expkit.rebuild import Rebuilt


def check(cfg: DictConfig, run_dir: Path | None = None) -> Rebuilt:
    """The pre-launch check: the config (``expkit.config.validate``), then the checkpoint's module
    and datamodule rebuilt (``expkit.rebuild``: a checkpoint that does not fit the data is refused
    here). Returns what it rebuilt."""
    from expkit.rebuild import rebuild

    validate(cfg, task="eval")
    return rebuild(cfg.ckpt_path, trust=bool(cfg.get("trust_checkpoint", False)),
                   data_cfg=resolved(cfg.data) if cfg.get("data") else None,
                   model_cfg=resolved(cfg.model) if cfg.get("model") else None)


def evaluate(cfg: DictConfig, run_dir: Path, rebuilt: Rebuilt | None = None) -> dict[str, float]:
    """Test the checkpoint ``cfg.ckpt_path``; every output goes to ``run_dir``. ``rebuilt``: what
    :func:`check` returned when the job ran it already (``run_job``); else it runs here."""
    from expkit.build import build_trainer
    from expkit.checkpoints import RunCheckpointIO
    from expkit.rebuild import test_metrics
    from expkit.startup import started
    from expkit.tracking.files import write_metrics

    rebuilt = rebuilt if rebuilt is not None else check(cfg)
    trust = bool(cfg.get("trust_checkpoint", False))
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(cfg.trainer, cfg.get("logger"), run_dir, plugins=[RunCheckpointIO(trust=trust)])
    started()  # garbage collection resumes (expkit.startup)
    metrics = test_metrics(rebuilt, trainer)
    if trainer.is_global_zero:
        write_metrics(run_dir, metrics)
        log.info("Test metrics of %s: %s", cfg.ckpt_path, {k: round(float(v), 4) for k, v in metrics.items()})
    return metrics


def job(cfg: DictConfig) -> None:
    """Hydra's task function: the run, recorded."""
    run_job(evaluate, cfg, check)


def main(config_path: str | os.PathLike | None = None) -> None:
    """``python eval.py [overrides]``: the Hydra app on ``config_path`` (default expkit's ``conf/``)."""
    run_app("eval", job, config_path)


if __name__ == "__main__":
    main()
