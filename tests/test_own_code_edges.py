"""A researcher's own plain classes at the edges of what expkit reads from them: a monitored
metric first logged by a later epoch's validation, a module that takes ``**kwargs``, a datamodule
whose ``sizes`` means something else, and constructors that refuse their arguments. The pre-launch
check (``validate``) must agree with what training does with each.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from expkit.config import compose, validate
from expkit.errors import ConfigError
from tests.conftest import write_project

PACKAGE = '''
import torch
import torch.nn.functional as F
import pytorch_lightning as pl
from torch.utils.data import DataLoader, TensorDataset


class SplitSizesData(pl.LightningDataModule):
    """y = x0 + x1 + x2; ``sizes`` is its split sizes, not expkit's sizes protocol."""

    def __init__(self, n: int = 96, batch_size: int = 16, validates: bool = True):
        super().__init__()
        self.n, self.batch_size = n, batch_size
        self.sizes = [n // 2, n // 4, n // 4]
        if not validates:  # no val_dataloader at all: the run has no validation loop
            self.val_dataloader = None

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(self.n, 3, generator=g)
        data = TensorDataset(x, x.sum(1, keepdim=True))
        self.parts = torch.utils.data.random_split(data, self.sizes, generator=g)

    def train_dataloader(self):
        return DataLoader(self.parts[0], batch_size=self.batch_size)

    def val_dataloader(self):
        return DataLoader(self.parts[1], batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.parts[2], batch_size=self.batch_size)


class RegNet(pl.LightningModule):
    """A plain regressor; ``d`` carries no annotation, so only torch.nn checks it."""

    def __init__(self, d=3, hidden: int = 8, lr: float = 0.02):
        super().__init__()
        self.lr = lr
        self.net = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        loss = F.mse_loss(self(batch[0]), batch[1])
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", F.mse_loss(self(batch[0]), batch[1]))

    def test_step(self, batch, batch_idx):
        self.log("test/loss", F.mse_loss(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class KW(RegNet):
    """Takes a ``note`` of its own from ``**kwargs`` and passes the rest to RegNet."""

    def __init__(self, *args, **kwargs):
        self.note = kwargs.pop("note", None)
        super().__init__(*args, **kwargs)


class Anything(RegNet):
    """Keeps whatever else it is given: any keyword goes."""

    def __init__(self, hidden: int = 8, **extra):
        super().__init__(hidden=hidden)
        self.extra = extra


class Raises(RegNet):
    """Refuses a width its own code cannot handle (not torch.nn's check)."""

    def __init__(self, hidden: int = 8, lr: float = 0.02):
        if hidden > 4:
            raise ValueError("hidden must be at most 4")
        super().__init__(hidden=hidden, lr=lr)
'''

MODELS = {"reg": "RegNet", "kw": "KW", "anything": "Anything", "raises": "Raises"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """``edgelab/`` (the package, importable) and ``conf/`` (its configs) of a researcher."""
    root = write_project(tmp_path_factory.mktemp("edges"), "edgelab", {"lab.py": PACKAGE}, {
        **{f"model/{option}": f"_target_: edgelab.lab.{name}\nhidden: 8\n" for option, name in MODELS.items()},
        "data/split": "_target_: edgelab.lab.SplitSizesData\n"})
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m == "edgelab" or m.startswith("edgelab.")]:
        del sys.modules[name]


def config(project: Path, *overrides: str):
    return compose("train", [f"hydra.searchpath=[file://{project / 'conf'}]", "data=split", "monitor.metric=val/loss",
                             "trainer=cpu", "logger=none", *overrides])


def refusal(project: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as exc:
        validate(config(project, *overrides), task="train")
    return str(exc.value)


# -- 1. the monitored metric is judged once the run has validated (or cannot) ------------------
def fit(project: Path, monitor: str, *, validates: bool = True, **trainer_args):
    """Train RegNet on SplitSizesData in-process with expkit's metric check and early stopping on
    ``monitor`` (which fails on an unknown name by itself, after expkit's check); returns the
    trainer, the check and the error that stopped training (``None``)."""
    import pytorch_lightning as pl
    from edgelab.lab import RegNet, SplitSizesData

    from expkit.callbacks import CheckMonitoredMetric

    check = CheckMonitoredMetric(monitor)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1, limit_train_batches=2,
                         callbacks=[check, pl.callbacks.EarlyStopping(monitor=monitor, patience=5)], **trainer_args)
    try:
        trainer.fit(RegNet(), datamodule=SplitSizesData(validates=validates))
    except ConfigError as exc:
        return trainer, check, exc
    return trainer, check, None


def test_a_metric_first_logged_by_a_later_validation_is_accepted(project):
    trainer, check, error = fit(project, "val/loss", num_sanity_val_steps=0, check_val_every_n_epoch=2)
    assert error is None and check.found and trainer.current_epoch == 2 and "val/loss" in trainer.callback_metrics


@pytest.mark.parametrize(("monitor", "trainer_args", "epoch", "logged"), [
    # judged at the end of the first validation (epoch 1), before early stopping trips over it
    ("val/los", {"num_sanity_val_steps": 0, "check_val_every_n_epoch": 2}, 1, "train/loss, val/loss"),
    # a training metric: at the end of the first epoch, as soon as training metrics are logged
    ("train/los", {"num_sanity_val_steps": 0, "check_val_every_n_epoch": 2}, 0, "train/loss"),
    # no validation at all (limit_val_batches=0, or no val_dataloader): at the first epoch's end
    ("val/loss", {"limit_val_batches": 0}, 0, "train/loss"),
    ("val/loss", {"validates": False}, 0, "train/loss"),
], ids=["misspelt-val", "misspelt-train", "no-val-batches", "no-val-dataloader"])
def test_a_metric_never_logged_stops_the_run_once_that_is_certain(project, monitor, trainer_args, epoch, logged):
    trainer, check, error = fit(project, monitor, **trainer_args)
    assert error is not None and trainer.current_epoch == epoch
    assert str(error).startswith(f"monitor.metric={monitor}: the module never logs it.")
    assert f"It logs: {logged}." in str(error)


# -- 2. **kwargs ---------------------------------------------------------------------------------
def test_a_module_taking_kwargs_is_checked_against_what_it_reads(project):
    validate(config(project, "model=kw", "+model.note=hi", "+model.lr=0.02"), task="train")
    message = refusal(project, "model=kw", "+model.nte=hi")  # neither KW nor RegNet reads it
    assert message.startswith("model.nte: KW (edgelab.lab.KW) takes no argument 'nte'.")
    assert "Did you mean 'model.note'?" in message
    validate(config(project, "model=anything", "+model.colour=red"), task="train")  # kept whole: any key
    assert "model.note: RegNet (edgelab.lab.RegNet) takes no argument 'note'." in refusal(project, "model=reg", "+model.note=hi")


def test_the_kwargs_module_trains_with_its_own_argument(project):
    from expkit.build import build_model

    model = build_model(config(project, "model=kw", "+model.note=hi").model)
    assert model.note == "hi" and model.lr == 0.02


# -- 3. a sizes attribute that is not expkit's sizes protocol ------------------------------------
def test_a_sizes_attribute_of_another_kind_is_ignored(project):
    from edgelab.lab import SplitSizesData

    from expkit.build import data_sizes

    assert validate(config(project, "model=reg"), task="train") == {}
    data = SplitSizesData()
    for other in ([240, 80, 80], {"train": "240"}, {"train": [1.5]}, "240/80/80", {1: 2}):
        data.sizes = other
        assert data_sizes(data) == {}
    data.sizes = {"input_shape": [1, 8, 8], "num_classes": 10}  # expkit's protocol is still read
    assert data_sizes(data) == {"input_shape": (1, 8, 8), "num_classes": 10}


# -- 4. a constructor that refuses its config: validate says what training says -----------------
def test_validate_refuses_a_model_its_constructor_refuses_as_training_does(project):
    from expkit.build import build_model

    message = refusal(project, "model=raises")
    with pytest.raises(ConfigError) as built:
        build_model(config(project, "model=raises").model)
    assert message == str(built.value)
    assert message.startswith("model: edgelab.lab.Raises could not be built from the config (ValueError: hidden must be at most 4)")
    validate(config(project, "model=raises", "model.hidden=4"), task="train")


# -- 5. a value torch.nn refuses names its key ---------------------------------------------------
def test_a_value_torch_refuses_for_its_type_names_its_key(project):
    message = refusal(project, "model=reg", "+model.d=five")
    assert message.startswith("model.d=five: torch.nn.Linear refuses it"), message
    assert message.endswith("change model.d."), message
