"""A researcher's own plain LightningModule and LightningDataModule, in a package and conf/ of their
own outside this repository, get everything expkit offers: train, eval, predict, reproduce,
kill -9 + resume, a grid sweep and an Optuna search on the module's own metric, the run browser,
and the registry on its own test metric. Nothing in the package knows expkit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_project

MODULE = '''
import torch
import torch.nn.functional as F
import pytorch_lightning as pl
from torch.utils.data import DataLoader, TensorDataset


class WaveData(pl.LightningDataModule):
    """y = sin(x): a plain datamodule, no sizes, no expkit."""

    def __init__(self, n: int = 600, batch_size: int = 32, delay: float = 0.0):
        super().__init__()
        self.n, self.batch_size, self.delay = n, batch_size, delay

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(self.n, 1, generator=g) * 6 - 3
        y = torch.sin(x)
        self.parts = [TensorDataset(x[i::3], y[i::3]) for i in range(3)]

    def train_dataloader(self):
        return DataLoader(self.parts[0], batch_size=self.batch_size, shuffle=False)

    def val_dataloader(self):
        return DataLoader(self.parts[1], batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.parts[2], batch_size=self.batch_size)


class WaveNet(pl.LightningModule):
    """A plain regressor logging its own metric names (val/mse, test/mse, test/mae)."""

    def __init__(self, hidden: int = 16, lr: float = 0.01, delay: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if self.hparams.delay:
            import time
            time.sleep(self.hparams.delay)
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train/mse", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/mse", F.mse_loss(self(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/mse", F.mse_loss(self(x), y))
        self.log("test/mae", (self(x) - y).abs().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
'''

BASE = ["--config-dir", "conf", "model=wave", "data=wave", "monitor.metric=val/mse", "trainer=cpu", "seed=0"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A researcher's project: ``wavelab/`` (the package) and ``conf/`` (its two configs)."""
    return write_project(tmp_path_factory.mktemp("project"), "wavelab", {"models.py": MODULE}, {
        "model/wave": "_target_: wavelab.models.WaveNet\nhidden: 16\nlr: 0.01\n",
        "data/wave": "_target_: wavelab.models.WaveData\nbatch_size: 32\n"})


def cli(project: Path, *args: str, check: bool = True, script: str = "train.py") -> subprocess.CompletedProcess:
    """Run an expkit entry point (a script of this repo or ``expkit <command>``) in the project,
    its package importable as an installed one would be."""
    command = [sys.executable, str(ROOT / script)] if script.endswith(".py") else [sys.executable, "-m", "expkit.cli", script]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(project)}
    proc = subprocess.run([*command, *args], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def trained(project) -> Path:
    cli(project, *BASE, "trainer.max_epochs=4", "hydra.run.dir=logs/first")
    return project / "logs" / "first"


def test_a_plain_module_trains_on_its_own_metric(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert {"val/mse", "test/mse", "test/mae"} <= set(metrics)
    assert metrics["test/mse"] < 0.5
    assert "val/mse" in (trained / "history.csv").read_text().splitlines()[0]
    assert (trained / "learning_curves.png").is_file()
    checkpoint = __import__("torch").load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["expkit"]["config"]["model"]["_target_"] == "wavelab.models.WaveNet"  # added from outside


def test_eval_predict_runs_and_compare_use_its_metrics(project, trained):
    best = next(trained.glob("checkpoints/epoch_*.ckpt"))
    cli(project, f"ckpt_path={best}", "hydra.run.dir=logs/eval", script="eval.py")
    evaluated = json.loads((project / "logs" / "eval" / "metrics.json").read_text())
    assert evaluated == pytest.approx({k: v for k, v in json.loads((trained / "metrics.json").read_text()).items()
                                       if k.startswith("test/")}, rel=1e-5)
    cli(project, f"ckpt_path={best}", "hydra.run.dir=logs/predict", script="predict.py")
    rows = (project / "logs" / "predict" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "row,prediction" and len(rows) == 1 + 200
    runs = cli(project, "logs", "--where", "model.lr=1e-2", script="runs").stdout  # 1e-2 == 0.01
    assert "val/mse" in runs and "test/mae" in runs and "val/acc" not in runs and "first" in runs


def test_reproduce_gives_the_same_metrics(project, trained):
    cli(project, str(trained), "--allow-differences", script="reproduce")
    again = sorted(p for p in (project / "logs" / "train" / "runs").iterdir())[-1]
    assert json.loads((again / "metrics.json").read_text()) == json.loads((trained / "metrics.json").read_text())


def test_a_misspelt_metric_is_refused_with_the_modules_names(project):
    proc = cli(project, *BASE, "monitor.metric=val/mes", "trainer.max_epochs=1", "logger=none", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Did you mean 'monitor.metric=val/mse'?" in proc.stderr and "It logs: val/mse" in proc.stderr


def test_killed_plain_run_resumes_from_its_last_checkpoint(project):
    args = [*BASE, "trainer.max_epochs=5", "callbacks.early_stopping.patience=100", "+model.delay=0.02",
            "hydra.run.dir=logs/killed"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(project)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = project / "logs" / "killed"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        history = run / "history.csv"
        if history.is_file() and len(history.read_text().splitlines()) >= 3:  # two epochs done
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cli(project, str(run), script="resume")
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and len(record["segments"]) == 2
    epochs = [line.split(",")[0] for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1", "2", "3", "4"]  # every epoch once, across both segments


def test_grid_sweep_and_optuna_search_on_its_metric(project):
    cli(project, "-m", *BASE, "trainer.max_epochs=2", "logger=none", "model.lr=0.01,0.03", "hydra.sweep.dir=logs/grid")
    summary = (project / "logs" / "grid" / "sweep_summary.csv").read_text().splitlines()
    assert summary[0].split(",")[2] == "val/mse" and "test/mae" in summary[0] and len(summary) == 3
    cli(project, "-m", *BASE, "trainer.max_epochs=2", "logger=none", "hydra/sweeper=expkit_optuna",
        "hydra.sweeper.n_trials=2", "hydra.sweeper.direction=minimize", "hydra.sweeper.study_name=wave",
        "hydra.sweep.dir=logs/optuna", "model.lr=tag(log,interval(1e-3,1e-1))")
    results = (project / "logs" / "optuna" / "optimization_results.yaml").read_text()
    assert "best_value" in results and "complete: 2" in results


def test_registry_judges_on_its_own_test_metric(project, trained):
    registry = project / "registry"
    cli(project, str(trained), "--name", "wave", "--no-wandb", "--registry", str(registry), script="register")
    promoted = cli(project, str(trained), "--stage", "production", "--no-wandb", "--registry", str(registry), script="promote")
    assert "test/mse" in promoted.stdout and "test/acc" not in promoted.stdout
    entry = json.loads((registry / "registry.json").read_text())["models"]["wave"]["versions"][0]
    assert entry["kpis"][0]["metric"] == "test/mse" and entry["per_class"] is None
