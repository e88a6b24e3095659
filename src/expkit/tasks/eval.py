"""Evaluate a checkpoint on the test split: ``python eval.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt``.

Model and data configs come from the checkpoint (its training run's resolved config) unless
given on the command line (``data=wine``); metrics go to ``metrics.json`` in eval's own run dir.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

import expkit.resolvers  # noqa: F401  (registers the run-directory resolver before Hydra composes)
from expkit.config import checked_entry_point, validate
from expkit.paths import config_dir
from expkit.tasks.common import build_trainer, log, run_job


def load_checkpoint(path: str, trust: bool = False) -> dict:
    """Load an expkit checkpoint without running pickled code unless ``trust`` (see
    :mod:`expkit.models.checkpoint`)."""
    from expkit.models.checkpoint import load_checkpoint as load

    return load(path, trust=trust)


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Test the checkpoint ``cfg.ckpt_path``; every output goes to ``run_dir``."""
    from hydra.utils import instantiate

    from expkit.errors import IncompatibleModelData
    from expkit.models import check_model_fits_data
    from expkit.models.classifier import RUN_CONFIG_KEY
    from expkit.startup import started
    from expkit.tracking.files import write_metrics

    validate(cfg, task="eval")
    checkpoint = load_checkpoint(cfg.ckpt_path, trust=cfg.get("trust_checkpoint", False))
    hparams = checkpoint["hyper_parameters"]
    run_config = checkpoint[RUN_CONFIG_KEY]
    data_cfg = cfg.data if cfg.get("data") is not None else run_config["data"]
    model_cfg = cfg.model if cfg.get("model") is not None else run_config["model"]
    run_dir.mkdir(parents=True, exist_ok=True)

    datamodule = instantiate(data_cfg)
    trained_on = (tuple(hparams["input_shape"]), int(hparams["num_classes"]))
    if (tuple(datamodule.spec.input_shape), datamodule.spec.num_classes) != trained_on:
        raise IncompatibleModelData(
            f"checkpoint {cfg.ckpt_path} was trained on input shape {trained_on[0]} with "
            f"{trained_on[1]} classes and cannot be evaluated on {datamodule.spec.describe()}: "
            "evaluate it on matching data."
        )
    check_model_fits_data(model_cfg, datamodule.spec)
    model = instantiate(model_cfg, input_shape=trained_on[0], num_classes=trained_on[1], _convert_="all")
    model.load_state_dict(checkpoint["state_dict"])
    datamodule.load_state_dict(checkpoint.get(type(datamodule).__qualname__, {}))

    trainer = build_trainer(cfg, run_dir)
    started()  # garbage collection resumes (expkit.startup)
    metrics = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    if trainer.is_global_zero:
        write_metrics(run_dir, metrics)
        log.info("Test metrics of %s: %s", cfg.ckpt_path, {k: round(float(v), 4) for k, v in metrics.items()})
    return metrics


@checked_entry_point("eval")
@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
def main(cfg: DictConfig) -> None:
    run_job(evaluate, cfg)


if __name__ == "__main__":
    main()
