"""Training end to end: every compatible model x data pair fits; incompatible ones are refused."""

from __future__ import annotations

import json

import pytest

from expkit.errors import IncompatibleModelData
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
    assert set(json.loads((tmp_path / "metrics.json").read_text())) == set(metrics)  # what the module logged


@pytest.mark.parametrize(("model", "data"), pairs(compatible=False))
def test_incompatible_pair_refused_before_training(model, data, user_files, tmp_path):
    cfg = compose_config([f"model={model}", *data_overrides(data, user_files), "debug=fdr"])
    with pytest.raises(IncompatibleModelData) as error:
        train(cfg, tmp_path)
    message = str(error.value)
    assert "CNN" in message and "input shape" in message and "num_classes=" in message
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.json").exists()


def test_pinned_class_count_must_match_data(tmp_path):
    cfg = compose_config(["data=wine", "+model.num_classes=10", "debug=fdr"])
    with pytest.raises(IncompatibleModelData, match=r"model.num_classes=10 but data 'wine' .*num_classes=3"):
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


def test_batches_cut_in_one_piece_equal_the_default_loaders():
    """The same samples, order and values as a DataLoader that fetches sample by sample."""
    import torch
    from hydra.utils import instantiate
    from torch.utils.data import DataLoader, TensorDataset

    datamodule = instantiate(compose_config(["data.batch_size=100"]).data)
    datamodule.setup()
    for stage, loader in (("train", datamodule.train_dataloader()), ("val", datamodule.val_dataloader())):
        plain = DataLoader(TensorDataset(*datamodule.datasets[stage].tensors), batch_size=100,
                           sampler=loader.sampler if stage == "train" else None)
        batches, expected = list(loader), list(plain)
        assert len(batches) == len(expected) > 1
        for (x, y), (x_ref, y_ref) in zip(batches, expected, strict=True):
            assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_batches_pinned_when_the_trainer_runs_on_cuda(tmp_path):
    """Pageable batches make every host-to-GPU copy wait for the GPU's queued work."""
    from types import SimpleNamespace

    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate

    def pinned(overrides, device=None):
        datamodule = instantiate(compose_config(overrides).data)
        datamodule.setup()
        if device == "cpu":  # a real trainer, as Lightning attaches it before asking for loaders
            datamodule.trainer = pl.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path)
        elif device:  # a CUDA trainer's device, on a machine that may have no GPU
            datamodule.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
        return datamodule.train_dataloader().pin_memory

    assert not pinned([])  # no trainer attached (predict, notebooks)
    assert not pinned([], "cpu")
    assert pinned([], "cuda:0")
    assert not pinned(["data.pin_memory=false"], "cuda:0")
    assert pinned(["data.pin_memory=true"], "cpu")


def test_seed_zero_is_a_seed(tmp_path):
    first = train(compose_config(["seed=0", "data=wine", "trainer=cpu", "trainer.max_epochs=2", "logger=none", "callbacks=none"]), tmp_path / "a")
    second = train(compose_config(["seed=0", "data=wine", "trainer=cpu", "trainer.max_epochs=2", "logger=none", "callbacks=none"]), tmp_path / "b")
    assert first == second


def _fit_digits(trainer_kwargs: dict, callbacks: list, tmp_path, overrides=()):
    """A default MLP fit on digits by a bare Trainer, the callbacks given (no logger)."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from expkit.build import build_model, data_sizes

    cfg = compose_config(["trainer=cpu", *overrides])
    datamodule = instantiate(cfg.data)
    model = build_model(cfg.model, data_sizes(datamodule))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_model_summary=False,
                         default_root_dir=tmp_path, callbacks=callbacks, **{"enable_progress_bar": False, **trainer_kwargs})
    trainer.fit(model, datamodule=datamodule)
    return trainer


@pytest.mark.parametrize("limits,sum_every", [({"max_epochs": 2}, 50), ({"max_epochs": 2}, 3),
                                              ({"max_epochs": 2, "limit_train_batches": 7}, 3), ({"max_steps": 13}, 5)],
                         ids=["full epochs", "summed every 3 steps", "limit_train_batches", "max_steps mid-epoch"])
def test_train_metrics_are_the_epochs_sample_weighted_loss_and_accuracy(limits, sum_every, tmp_path, monkeypatch):
    """train/loss and train/acc come from the steps' losses and predictions, summed on the device
    every few steps: they must equal the mean of the epoch's per-sample losses and its accuracy,
    also when the epoch ends early and when its last batch is smaller."""
    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F

    from expkit.models import classifier

    monkeypatch.setattr(classifier, "TRAIN_SUM_EVERY", sum_every)

    class Witness(pl.Callback):
        """Recomputes each batch's loss and hits just before its step (no dropout: the same logits)."""

        def __init__(self):
            self.per_epoch = {}  # epoch -> [loss sum, hits, samples]
            self.logged = {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            x, y = batch
            with torch.no_grad():
                logits = pl_module(x)
            sums = self.per_epoch.setdefault(trainer.current_epoch, [0.0, 0, 0])
            sums[0] += float(F.cross_entropy(logits, y)) * len(y)
            sums[1] += int((logits.argmax(-1) == y).sum())
            sums[2] += len(y)

        def on_train_epoch_end(self, trainer, pl_module):
            self.logged[trainer.current_epoch] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}

    witness = Witness()
    _fit_digits(limits, [witness], tmp_path, overrides=["model.net.dropout=0.0"])
    assert witness.logged and set(witness.logged) == set(witness.per_epoch)
    for epoch, (loss_sum, hits, n) in witness.per_epoch.items():
        logged = witness.logged[epoch]
        assert logged["train/loss"] == pytest.approx(loss_sum / n, rel=1e-5)
        assert logged["train/acc"] == pytest.approx(hits / n, abs=1e-6)


def test_throttled_progress_bar_skips_updates_but_shows_each_epochs_last_batch(tmp_path):
    import pytorch_lightning as pl

    from expkit.callbacks import ThrottledRichProgressBar

    bar = ThrottledRichProgressBar(refresh_rate=1)  # at most one update a second: most batches skipped
    updates = []
    original = bar._update

    def count(task_id, current, *args, **kwargs):
        if task_id is not None and task_id == bar.train_progress_bar_id:
            updates.append(current)
        return original(task_id, current, *args, **kwargs)

    bar._update = count

    class Completed(pl.Callback):
        seen = []

        def on_train_epoch_end(self, trainer, pl_module):
            task = bar.progress.tasks[bar.train_progress_bar_id]
            self.seen.append((task.completed, trainer.num_training_batches))

    _fit_digits({"max_epochs": 2, "enable_progress_bar": True}, [bar, Completed()], tmp_path)
    assert Completed.seen and all(done == total for done, total in Completed.seen), Completed.seen
    assert len(updates) < 2 * 40, f"{len(updates)} updates for 2 x 40 batches: nothing was skipped"
