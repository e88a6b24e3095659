"""Every shipped config file composes and its components instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from expkit.build import build_callbacks, build_model, build_trainer, data_sizes
from expkit.tasks.common import resolved
from tests.conftest import CONF, compose_config, data_overrides

PRIMARY_CONFIGS = sorted(p.stem for p in CONF.glob("*.yaml"))  # train, eval, pipeline, ...
CONFIG_FILES = sorted(str(p.relative_to(CONF)) for p in CONF.rglob("*.yaml") if p.parent != CONF)


def overrides_for(config_file: str, files: dict[str, Path]) -> list[str]:
    group, option = str(Path(config_file).parent), Path(config_file).stem
    if group == "data":
        return [*data_overrides(option, files), *_model_for_data(option)]
    if group in ("experiment", "debug", "hydra", "paths"):
        return [f"{group}={option}"]
    if group == "kpis":  # selected by a model config's defaults list, not on the command line
        model = next(p.stem for p in sorted((CONF / "model").glob("*.yaml")) if f"/kpis@_global_.kpis: {option}" in p.read_text())
        return [f"model={model}", *_data_for_model(model)]
    if group == "model":
        return [f"model={option}", *_data_for_model(option)]
    if group == "monitor":
        return []
    if group == "trainer" and option in ("gpu", "ddp"):
        # No GPU here: check every other argument binds, on the CPU.
        return [f"trainer={option}", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true"]
    return [f"{group}={option}"]


def _data_for_model(model: str) -> list[str]:
    """Data a model option trains on: the data of the experiment preset that picks it, if any."""
    for preset in sorted((CONF / "experiment").glob("*.yaml")):
        text = preset.read_text()
        if f"override /model: {model}" in text:
            data = next((line.split(":")[-1].strip() for line in text.splitlines() if "override /data:" in line), None)
            return [f"data={data}"] if data else []
    return []


def _model_for_data(data: str) -> list[str]:
    """The model of the experiment preset that picks data option ``data``, if any."""
    for preset in sorted((CONF / "experiment").glob("*.yaml")):
        lines = preset.read_text().splitlines()
        if f"  - override /data: {data}" in lines:
            return [f"model={line.split(':')[-1].strip()}" for line in lines if "override /model:" in line]
    return []


def test_every_config_file_is_collected():
    groups = {str(Path(f).parent) for f in CONFIG_FILES}
    assert {"data", "model", "model/optimizer", "model/scheduler", "trainer", "logger", "callbacks",
            "experiment", "debug", "paths", "hydra", "kpis", "monitor"} <= groups


@pytest.mark.parametrize("config_file", CONFIG_FILES)
def test_config_composes_and_instantiates(config_file, user_files, tmp_path):
    header = (CONF / config_file).read_text().splitlines()
    assert any("python train.py" in line for line in header[:6]), f"{config_file}: header must show the command that uses it"

    cfg = compose_config(overrides_for(config_file, user_files))
    config = resolved(cfg)  # every interpolation resolves without Hydra's runtime
    assert "hydra" not in config

    datamodule = instantiate(cfg.data)
    sizes = data_sizes(datamodule)
    model = build_model(cfg.model, sizes)
    model.configure_optimizers()
    trainer = build_trainer(cfg.trainer, cfg.get("logger"), tmp_path, callbacks=build_callbacks(cfg.get("callbacks"), tmp_path))
    assert len(trainer.loggers) == len(cfg.logger or {})

    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    if "input_shape" in sizes:
        assert tuple(x.shape[1:]) == tuple(sizes["input_shape"])
    out = model(x)
    assert out.shape[0] == len(y)
    if "num_classes" in sizes:  # a classifier: one logit per class
        assert out.shape[-1] == sizes["num_classes"]


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
    trainer = build_trainer(cfg.trainer, cfg.logger, tmp_path)
    assert [type(lg).__name__ for lg in trainer.loggers] == ["WandbLogger", "CSVLogger", "TensorBoardLogger"]
    assert all(Path(lg.save_dir) == tmp_path for lg in trainer.loggers)


def test_monitored_metric_named_once():
    cfg = compose_config()
    assert cfg.callbacks.model_checkpoint.monitor == cfg.callbacks.early_stopping.monitor == cfg.monitor.metric
    raw = (CONF / "callbacks" / "default.yaml").read_text()
    assert "val/" not in raw, "callbacks must reference monitor.metric, not a metric name"
