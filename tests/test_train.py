"""Training end to end: every compatible model x data pair fits; incompatible ones are refused."""

from __future__ import annotations

import json

import pytest

from expkit.errors import IncompatibleModelData
from expkit.metrics import ALL_KEYS
from expkit.tasks.train import train
from tests.conftest import compose_config, data_overrides

MODELS = ["mlp", "cnn", "transformer"]
DATA = ["digits", "wine", "synthetic", "files", "mnist"]
IMAGE_DATA = {"digits", "mnist"}


def pairs(compatible: bool):
    return [
        (model, data)
        for model in MODELS
        for data in DATA
        if (model != "cnn" or data in IMAGE_DATA) == compatible
    ]


@pytest.mark.parametrize(("model", "data"), pairs(compatible=True))
def test_short_fit_for_every_compatible_pair(model, data, user_files, tmp_path):
    cfg = compose_config([f"model={model}", *data_overrides(data, user_files), "debug=fdr"])
    metrics = train(cfg, tmp_path)
    assert {"val/acc", "val/loss", "test/acc", "test/loss"} <= set(metrics)
    assert set(json.loads((tmp_path / "metrics.json").read_text())) <= set(ALL_KEYS)


@pytest.mark.parametrize(("model", "data"), pairs(compatible=False))
def test_incompatible_pair_refused_before_training(model, data, user_files, tmp_path):
    cfg = compose_config([f"model={model}", *data_overrides(data, user_files), "debug=fdr"])
    with pytest.raises(IncompatibleModelData) as error:
        train(cfg, tmp_path)
    message = str(error.value)
    assert "CNN" in message and "input shape" in message and "classes" in message
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.json").exists()


def test_pinned_class_count_must_match_data(tmp_path):
    cfg = compose_config(["data=wine", "+model.net.num_classes=10", "debug=fdr"])
    with pytest.raises(IncompatibleModelData, match=r"num_classes=10 .*3 classes"):
        train(cfg, tmp_path)


@pytest.mark.parametrize("data", ["csv", "parquet", "npz", "images"])
def test_user_files_in_every_format(data, user_files, tmp_path):
    overrides = ["data=files", f"data.path={user_files[data]}", "debug=fdr"]
    if data in ("csv", "parquet"):
        overrides.append("data.target_column=species")
    metrics = train(compose_config(overrides), tmp_path)
    assert 0.0 <= metrics["test/acc"] <= 1.0


def test_split_is_fixed_and_independent_of_training_seed():
    from hydra.utils import instantiate

    def test_labels(seed: int):
        datamodule = instantiate(compose_config([f"seed={seed}"]).data)
        datamodule.setup()
        return datamodule.datasets["test"].tensors[1].tolist()

    assert test_labels(0) == test_labels(1)
    digits = instantiate(compose_config().data)
    digits.setup()
    assert sum(len(d) for d in digits.datasets.values()) == 1797


def test_seed_zero_is_a_seed(tmp_path):
    first = train(compose_config(["seed=0", "data=wine", "trainer=cpu", "trainer.max_epochs=2", "logger=none", "callbacks=none"]), tmp_path / "a")
    second = train(compose_config(["seed=0", "data=wine", "trainer=cpu", "trainer.max_epochs=2", "logger=none", "callbacks=none"]), tmp_path / "b")
    assert first == second
