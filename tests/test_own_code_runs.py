"""A researcher's own code, run after run: predict writes a column per output of a ``predict_step``
returning a dict or a tuple (and refuses anything else in one line); predict rebuilds a checkpoint
saved outside expkit from the ``model=`` and ``data=`` options named; a new run in an old run
directory replaces its record, a resume appends a segment and marks a killed one; the ``expkit``
command imports the package of the directory it runs in, and reproduce the recorded run's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from expkit.errors import ConfigError
from tests.conftest import write_project
from tests.test_own_code import BASE, MODULE

OWN = MODULE + '''

class NpRegData(pl.LightningDataModule):
    """y = 2x: a plain datamodule with a predict split of inputs only."""

    def __init__(self, n: int = 48, batch_size: int = 16):
        super().__init__()
        self.n, self.batch_size = n, batch_size

    def setup(self, stage=None):
        self.x = torch.linspace(-1, 1, self.n).unsqueeze(1)
        self.y = 2 * self.x

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size)

    def predict_dataloader(self):
        return DataLoader(TensorDataset(self.x), batch_size=self.batch_size)


class Reg(pl.LightningModule):
    """A plain regressor whose predict_step returns ``out``: a dict, a tuple, or one number per batch."""

    def __init__(self, hidden: int = 4, out: str = "dict"):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self(x), y)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/mse", F.mse_loss(self(x), y))

    def predict_step(self, batch, batch_idx):
        (x,) = batch
        p = self(x)
        if self.hparams.out == "dict":
            return {"mean": p.squeeze(1), "std": p.abs()}
        if self.hparams.out == "tuple":
            return p, 2 * x
        return p.mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class KillAtEpochEnd(pl.Callback):
    """kill -9 this process at the end of training epoch ``epoch`` of the run's first segment."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        import json, os, signal
        from pathlib import Path

        record = json.loads((Path(trainer.default_root_dir) / "run.json").read_text())
        if trainer.current_epoch == self.epoch and len(record["segments"]) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
'''
TINY = ["trainer.max_epochs=1", "+trainer.limit_train_batches=3", "logger=none"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """``ownlab/`` (the package) and ``conf/`` (its configs), outside this repository."""
    return write_project(tmp_path_factory.mktemp("own"), "ownlab", {"models.py": OWN}, {
        "model/wave": "_target_: ownlab.models.WaveNet\nhidden: 16\nlr: 0.01\n",
        "data/wave": "_target_: ownlab.models.WaveData\nbatch_size: 32\n",
        "model/reg": "_target_: ownlab.models.Reg\nhidden: 4\n",
        "data/npreg": "_target_: ownlab.models.NpRegData\n"})


def expkit(cwd: Path, *args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """The installed ``expkit`` console script, run in ``cwd`` (``pythonpath``: the package's root)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", **({"PYTHONPATH": str(pythonpath)} if pythonpath else {}))
    return subprocess.run([str(Path(sys.executable).parent / "expkit"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{' '.join(proc.args)} exited {proc.returncode}:\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
    return proc


# --- predict: one column per output ---------------------------------------------------------

def test_dict_and_tuple_outputs_get_a_column_each_and_extra_dimensions_a_npy(tmp_path):
    from expkit.tasks.predict import write_predictions

    batches = [{"mean": torch.arange(3.0), "std": torch.ones(3, 1), "pair": torch.zeros(3, 2), "tokens": torch.ones(3, 4, 2)},
               {"mean": torch.arange(2.0), "std": torch.ones(2, 1), "pair": torch.zeros(2, 2), "tokens": torch.ones(2, 4, 2)}]
    written, rows = write_predictions(batches, tmp_path / "p.csv", None, {})
    assert (written, rows) == (tmp_path / "p.csv", 5)
    lines = written.read_text().splitlines()
    assert lines[0] == "row,mean,std,pair_0,pair_1" and lines[4].startswith("3,0.0,1.0")
    assert np.load(tmp_path / "p_tokens.npy").shape == (5, 4, 2)

    written, _ = write_predictions([(torch.ones(2, 1), torch.zeros(2)), (torch.ones(1, 1), torch.zeros(1))],
                                   tmp_path / "t.csv", None, {})
    assert written.read_text().splitlines() == ["row,output_0,output_1", "0,1.0,0.0", "1,1.0,0.0", "2,1.0,0.0"]
    written, _ = write_predictions([torch.ones(2, 1)], tmp_path / "s.csv", None, {})  # a tensor: as before
    assert written.read_text().splitlines()[0] == "row,prediction"


@pytest.mark.parametrize("outputs, names", [
    ([torch.tensor(0.5)], "one number per batch"),
    ([{"label": ["a", "b"]}], "'label' of type list"),
    ([{"mean": torch.ones(2), "std": torch.ones(3)}], "different row counts"),
    ([{"mean": torch.ones(2)}, {"std": torch.ones(2)}], "the same outputs for every batch"),
])
def test_unsupported_predict_outputs_are_refused_naming_the_problem(tmp_path, outputs, names):
    from expkit.tasks.predict import write_predictions

    with pytest.raises(ConfigError, match=names) as refused:
        write_predictions(outputs, tmp_path / "p.csv", None, {}, model="Reg")
    assert str(refused.value).startswith("Reg.predict_step returns") and "\n" not in str(refused.value)
    assert not (tmp_path / "p.csv").exists()


def test_predict_rebuilds_a_plain_checkpoint_from_the_named_model_and_data(project, tmp_path):
    import pytorch_lightning as pl

    sys.path.insert(0, str(project))
    try:
        from ownlab.models import NpRegData, Reg

        trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(Reg(), datamodule=NpRegData())
        trainer.save_checkpoint(tmp_path / "plain.ckpt")  # no expkit key: no recorded config
    finally:
        sys.path.remove(str(project))
    args = ["predict", "--config-dir", "conf", "model=reg", "data=npreg", f"ckpt_path={tmp_path / 'plain.ckpt'}"]
    ok(expkit(project, *args, f"hydra.run.dir={tmp_path / 'dict'}", pythonpath=project))
    lines = (tmp_path / "dict" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "row,mean,std" and len(lines) == 1 + 48
    refused = expkit(project, *args, "+model.out=scalar", f"hydra.run.dir={tmp_path / 'scalar'}", pythonpath=project)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "error: Reg.predict_step returns its output as one number per batch" in refused.stderr
    assert not (tmp_path / "scalar" / "predictions.csv").exists()


# --- the run record: a new run replaces it, a resume continues it -------------------------------

def record_of(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def test_a_new_run_in_an_old_run_directory_replaces_its_record(project, tmp_path):
    args = ["train", *BASE, *TINY, f"hydra.run.dir={tmp_path / 'fixed'}"]
    ok(expkit(project, *args, pythonpath=project))
    ok(expkit(project, *args, "model.hidden=4", pythonpath=project))  # a new run, not a resume
    record = record_of(tmp_path / "fixed")
    assert record["config"]["model"]["hidden"] == 4 and "model.hidden=4" in record["overrides"]
    assert record["status"] == "completed" and [s["status"] for s in record["segments"]] == ["completed"]
    state = torch.load(tmp_path / "fixed" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["net.0.weight"].shape == (4, 1)  # trained afresh, not continued from the old run's weights


def test_only_a_resume_continues_the_recorded_run(tmp_path, monkeypatch):
    from expkit.tracking import record as records
    from expkit.tracking.files import resumable_checkpoint

    def old_run(status: str, checkpoint: bool = True, name: str = "") -> Path:
        run = tmp_path / (name or status)
        (run / "checkpoints").mkdir(parents=True)
        if checkpoint:
            torch.save({"state_dict": {}}, run / "checkpoints" / "last.ckpt")
        records.RunRecord.start(run, {"seed": 0, "model": {"hidden": 16}}, ["model.hidden=16"], task="train")
        records.RunRecord.load(run).finish(status)
        return run

    new = {"seed": 0, "model": {"hidden": 4}}
    done = old_run("completed")
    records.RunRecord.start(done, new, ["model.hidden=4"], task="train")  # the same directory, a new run
    assert record_of(done)["config"] == new and len(record_of(done)["segments"]) == 1
    assert resumable_checkpoint(done) is None  # its checkpoints are the old run's

    own = old_run("completed", name="own")
    records.RunRecord.start(own, {**new, "ckpt_path": str(own / "checkpoints" / "last.ckpt")}, [], task="train")
    assert record_of(own)["config"]["model"]["hidden"] == 16 and len(record_of(own)["segments"]) == 2

    for status, continued in (("interrupted", True), ("failed", True)):
        run = old_run(status)
        records.RunRecord.start(run, new, [], task="train")  # a requeued job continues from its checkpoint
        assert (len(record_of(run)["segments"]) == 2) is continued and resumable_checkpoint(run) is not None
    fresh = old_run("failed", checkpoint=False, name="failed-early")
    records.RunRecord.start(fresh, new, [], task="train")
    assert len(record_of(fresh)["segments"]) == 1

    resumed = old_run("completed", checkpoint=False, name="resumed")
    monkeypatch.setattr(records, "RESUMING", [resumed])  # what `expkit resume` sets
    records.RunRecord.start(resumed, new, [], task="train")
    assert [s["status"] for s in record_of(resumed)["segments"]] == ["completed", "running"]


def test_a_resumed_run_marks_its_killed_segment(project, tmp_path):
    run = tmp_path / "killed"
    killed = expkit(project, "train", *BASE, "trainer.max_epochs=3", "+trainer.limit_train_batches=3", "logger=none",
                    "callbacks.early_stopping.patience=100", "+callbacks.kill._target_=ownlab.models.KillAtEpochEnd",
                    f"hydra.run.dir={run}", pythonpath=project)
    assert killed.returncode == -9 and record_of(run)["segments"][0]["status"] == "running"
    ok(expkit(project, "resume", str(run), pythonpath=project))
    record = record_of(run)
    assert record["status"] == "completed"
    assert [s["status"] for s in record["segments"]] == ["killed", "completed"]
    first = record["segments"][0]
    assert first["ended_at"] is not None and first["started_at"] <= first["ended_at"] <= record["segments"][1]["started_at"]


# --- the expkit command imports the project's own package ----------------------------------------

def test_expkit_imports_the_package_of_its_directory_and_of_the_recorded_run(tmp_path):
    ok(expkit(tmp_path, "init", "my-lab"))
    lab = tmp_path / "my-lab"
    ok(expkit(lab, "validate", "-cd", "conf", "-cn", "config"))  # no PYTHONPATH: as `python -m` would
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ok(subprocess.run([sys.executable, "train.py", "trainer=cpu", *TINY], cwd=lab, env={**env, "WANDB_MODE": "offline"},
                      capture_output=True, text=True, timeout=600))
    (run,) = (lab / "logs" / "train" / "runs").iterdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ok(expkit(elsewhere, "reproduce", str(run), "--allow-differences"))  # from another directory
    (again,) = (elsewhere / "logs" / "train" / "runs").iterdir()
    assert record_of(again)["status"] == "completed"
    assert json.loads((again / "metrics.json").read_text()) == json.loads((run / "metrics.json").read_text())


def test_init_refuses_a_package_name_that_would_hide_an_installed_one(tmp_path):
    from expkit.scaffold import init

    with pytest.raises(ConfigError, match="--package torch: an installed package has that name"):
        init(tmp_path / "torch")
    assert not (tmp_path / "torch").exists() or not any((tmp_path / "torch").iterdir())  # nothing written
    assert init(tmp_path / "lab")  # a name nothing installed has: the repository is written
