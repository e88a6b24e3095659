"""Every shipped config file composes and its components instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from expkit.models import build_model
from expkit.tasks.common import build_callbacks, build_trainer, resolved
from tests.conftest import CONF, compose_config, data_overrides

PRIMARY_CONFIGS = sorted(p.stem for p in CONF.glob("*.yaml"))  # train, eval, pipeline, ...
CONFIG_FILES = sorted(str(p.relative_to(CONF)) for p in CONF.rglob("*.yaml") if p.parent != CONF)


def overrides_for(config_file: str, files: dict[str, Path]) -> list[str]:
    group, option = str(Path(config_file).parent), Path(config_file).stem
    if group == "data":
        return data_overrides(option, files)
    if group in ("experiment", "debug", "hydra", "paths"):
        return [f"{group}={option}"]
    if group == "trainer" and option in ("gpu", "ddp"):
        # No GPU here: check every other argument binds, on the CPU.
        return [f"trainer={option}", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true"]
    return [f"{group}={option}"]


def test_every_config_file_is_collected():
    groups = {str(Path(f).parent) for f in CONFIG_FILES}
    assert {"data", "model", "model/optimizer", "model/scheduler", "trainer", "logger", "callbacks",
            "experiment", "debug", "paths", "hydra"} <= groups


@pytest.mark.parametrize("config_file", CONFIG_FILES)
def test_config_composes_and_instantiates(config_file, user_files, tmp_path):
    header = (CONF / config_file).read_text().splitlines()
    assert any("python train.py" in line for line in header[:6]), f"{config_file}: header must show the command that uses it"

    cfg = compose_config(overrides_for(config_file, user_files))
    config = resolved(cfg)  # every interpolation resolves without Hydra's runtime
    assert "hydra" not in config

    datamodule = instantiate(cfg.data)
    spec = datamodule.spec
    model = build_model(cfg.model, spec)
    model.configure_optimizers()
    trainer = build_trainer(cfg, tmp_path, callbacks=build_callbacks(cfg.get("callbacks"), tmp_path))
    assert len(trainer.loggers) == len(cfg.logger or {})

    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    assert tuple(x.shape[1:]) == spec.input_shape
    assert model(x).shape == (len(y), spec.num_classes)


@pytest.mark.parametrize("config_name", PRIMARY_CONFIGS)
def test_primary_config_composes_and_documents_its_command(config_name):
    header = (CONF / f"{config_name}.yaml").read_text().splitlines()[:8]
    assert any("python " in line or "dvc " in line for line in header), f"{config_name}.yaml: header must show its command"
    overrides = ["ckpt_path=some.ckpt"] if "ckpt_path: ???" in (CONF / f"{config_name}.yaml").read_text() else []
    cfg = compose_config(overrides, config_name=config_name)
    assert cfg.task_name


def test_hydra_run_dir_resolves_under_log_dir():
    cfg = compose_config(["paths.log_dir=somewhere"], hydra=True)
    run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    assert run_dir.startswith("somewhere/train/runs/")
    # date, time and a random id: two runs in the same second differ
    assert len(Path(run_dir).name.split("_")) == 3


def test_several_loggers_at_once(tmp_path):
    cfg = compose_config(["logger=[wandb,csv,tensorboard]"])
    trainer = build_trainer(cfg, tmp_path)
    assert [type(lg).__name__ for lg in trainer.loggers] == ["WandbLogger", "CSVLogger", "TensorBoardLogger"]
    assert all(Path(lg.save_dir) == tmp_path for lg in trainer.loggers)


def test_monitored_metric_named_once():
    cfg = compose_config()
    assert cfg.callbacks.model_checkpoint.monitor == cfg.callbacks.early_stopping.monitor == cfg.monitor.metric
    raw = (CONF / "callbacks" / "default.yaml").read_text()
    assert "val/" not in raw, "callbacks must reference monitor.metric, not a metric name"
