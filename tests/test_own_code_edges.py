"""A researcher's own plain classes at the edges of what expkit reads from them: a monitored
metric first logged by a later epoch's validation, a module that takes ``**kwargs``, a datamodule
whose ``sizes`` means something else, and constructors that refuse their arguments. The pre-launch
check (``validate``) must agree with what training does with each. Then real runs of such code from
the command line: a checkpoint on data it does not fit (sizes declared or not) is refused in one
line; a KPI the module's ``test_step`` never logs refuses promotion naming it and the fix; a refused
run leaves no run directory; a new run in an old run's directory moves the old run aside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from expkit.config import compose, validate
from expkit.errors import ConfigError
from tests.conftest import ROOT, write_project

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


class TestMse(RegNet):
    """Logs its test metric as ``test/mse``, not the test twin of ``val/loss``."""

    def test_step(self, batch, batch_idx):
        self.log("test/mse", F.mse_loss(self(batch[0]), batch[1]))


class SizedNet(RegNet):
    """Sized from the data by expkit's sizes protocol: takes ``input_shape``."""

    def __init__(self, input_shape=(3,), hidden: int = 8, lr: float = 0.02):
        super().__init__(d=input_shape[0], hidden=hidden, lr=lr)


class Features(pl.LightningDataModule):
    """y = the sum of ``d`` features; ``declare``: it declares expkit's sizes (``input_shape``)."""

    def __init__(self, d: int = 3, n: int = 48, batch_size: int = 16, declare: bool = False):
        super().__init__()
        self.d, self.n, self.batch_size = d, n, batch_size
        if declare:
            self.sizes = {"input_shape": (d,)}

    def setup(self, stage=None):
        x = torch.rand(self.n, self.d, generator=torch.Generator().manual_seed(self.d))
        self.parts = [TensorDataset(x[i::3], x[i::3].sum(1, keepdim=True)) for i in range(3)]

    def train_dataloader(self):
        return DataLoader(self.parts[0], batch_size=self.batch_size)

    def val_dataloader(self):
        return DataLoader(self.parts[1], batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.parts[2], batch_size=self.batch_size)


class Raises(RegNet):
    """Refuses a width its own code cannot handle (not torch.nn's check)."""

    def __init__(self, hidden: int = 8, lr: float = 0.02):
        if hidden > 4:
            raise ValueError("hidden must be at most 4")
        super().__init__(hidden=hidden, lr=lr)
'''

MODELS = {"reg": "RegNet", "kw": "KW", "anything": "Anything", "raises": "Raises", "testmse": "TestMse", "sized": "SizedNet"}
FEATURES = {"feat3": "d: 3", "feat5": "d: 5", "sized3": "d: 3\ndeclare: true", "sized5": "d: 5\ndeclare: true"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """``edgelab/`` (the package, importable) and ``conf/`` (its configs) of a researcher."""
    root = write_project(tmp_path_factory.mktemp("edges"), "edgelab", {"lab.py": PACKAGE}, {
        **{f"model/{option}": f"_target_: edgelab.lab.{name}\nhidden: 8\n" for option, name in MODELS.items()},
        **{f"data/{option}": f"_target_: edgelab.lab.Features\n{args}\n" for option, args in FEATURES.items()},
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


# -- 6..9: real runs of the researcher's code, through the command line ---------------------------
TINY = ["trainer=cpu", "logger=none", "seed=0", "trainer.max_epochs=1", "+trainer.limit_train_batches=2"]


def launch(project: Path, cwd: Path, jobs: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess]:
    """Run the commands ``jobs`` (name -> ``[script or expkit command, args...]``) at once, from
    ``cwd``, with the researcher's package importable and ``--config-dir`` at its ``conf/`` (most of a
    tiny run is start-up, which overlaps well on 2 cores)."""
    path = os.pathsep.join(p for p in (str(project), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    procs = {}
    for name, (command, *args) in jobs.items():
        if command.endswith(".py"):
            argv = [sys.executable, str(ROOT / command), "--config-dir", str(project / "conf"), *args]
        else:
            argv = [str(Path(sys.executable).parent / "expkit"), command, *args]
        procs[name] = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{' '.join(proc.args)} exited {proc.returncode}:\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
    return proc


def refused(proc: subprocess.CompletedProcess, code: int) -> str:
    """The one line a refused command printed (``error: ...``), after checking its exit code."""
    assert proc.returncode == code and "Traceback" not in proc.stderr, f"exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    return line


@pytest.fixture(scope="module")
def runs(project) -> dict[str, Path]:
    """Tiny runs of the researcher's modules, trained side by side: RegNet on 3 features (no sizes
    declared) and SizedNet sized by data that declares ``input_shape=(3,)``; RegNet monitoring its
    training loss; TestMse, whose test metric is not the twin of ``val/loss``."""
    jobs = {"plain3": ["model=reg", "data=feat3", "monitor.metric=val/loss"],
            "sized3": ["model=sized", "data=sized3", "monitor.metric=val/loss"],
            "trainmon": ["model=reg", "data=feat3", "monitor.metric=train/loss"],
            "testmse": ["model=testmse", "data=feat3", "monitor.metric=val/loss"]}
    done = launch(project, project, {name: ["train.py", *args, *TINY, f"hydra.run.dir=logs/{name}"] for name, args in jobs.items()})
    for proc in done.values():
        ok(proc)
    return {name: project / "logs" / name for name in jobs}


def best(run: Path) -> Path:
    from expkit.registry.evaluation import resolve_checkpoint

    return resolve_checkpoint(run)


# -- 6. a checkpoint on data it does not fit: one line, sizes declared or not -------------------
def test_a_checkpoint_on_data_it_does_not_fit_is_refused_in_one_line(project, runs, tmp_path):
    plain, sized = best(runs["plain3"]), best(runs["sized3"])
    done = launch(project, tmp_path, {
        "plain": ["eval.py", f"ckpt_path={plain}", "data=feat5"],  # no sizes: one sample through forward tells
        "sized": ["eval.py", f"ckpt_path={sized}", "data=sized5"],  # declared sizes differ
        "sized_plain": ["eval.py", f"ckpt_path={sized}", "data=feat5"],  # trained on declared sizes, other data declares none
        "weights": ["eval.py", f"ckpt_path={plain}", "model=reg", "+model.d=5", "data=feat5"],  # load_state_dict would refuse
        "resume": ["train.py", "model=reg", "+model.d=5", "data=feat5", f"ckpt_path={plain}", *TINY],  # Lightning's restore would
        "same": ["eval.py", f"ckpt_path={plain}", "data=feat3", "+data.n=60"],  # other data of the same sizes: evaluated
    })
    line = refused(done["plain"], 2)
    assert line.startswith(f"error: ckpt_path={plain} was trained on data 'Features' (inputs of shape (3,)) and does "
                           "not run on data 'Features' (inputs of shape (5,): RuntimeError: mat1 and mat2"), line
    assert line.endswith("use it on data of the sizes it was trained on, or pick a checkpoint trained on this data."), line
    line = refused(done["sized_plain"], 2)
    assert line.startswith(f"error: ckpt_path={sized} was trained on data 'Features' (input_shape=(3,); inputs of shape "
                           "(3,)) and does not run on data 'Features' (inputs of shape (5,): RuntimeError: "), line
    line = refused(done["sized"], 2)
    assert line == (f"error: ckpt_path={sized} was trained on data with input_shape=(3,); the data here has "
                    "input_shape=(5,): pick matching data or another checkpoint."), line
    for name in ("weights", "resume"):
        line = refused(done[name], 2)
        assert line.startswith(f"error: ckpt_path={plain}: its weights do not fit model edgelab.lab.RegNet as configured "
                               "here (net.0.weight is (8, 3) in the checkpoint and (8, 5) here)"), line
    ok(done["same"])
    (evaluated,) = (tmp_path / "logs" / "eval" / "runs").iterdir()  # the refused ones left nothing behind
    assert json.loads((evaluated / "run.json").read_text())["status"] == "completed"
    assert not [p for p in (tmp_path / "logs" / "train").rglob("*") if p.is_file()]


# -- 7. a KPI the module never measures: promotion cannot judge it -----------------------------
def test_a_run_monitoring_a_training_metric_is_judged_on_its_test_twin(project, runs, tmp_path):
    from expkit.registry.kpis import kpis_of

    assert [(k.name, k.metric, k.goal) for k in kpis_of(json.loads((runs["trainmon"] / "run.json").read_text())["config"])] \
        == [("loss", "test/loss", "min")]
    registry = tmp_path / "registry"
    ok(launch(project, tmp_path, {"r": ["register", str(runs["trainmon"]), "--name", "wave", "--registry", str(registry),
                                        "--no-wandb"]})["r"])
    promoted = ok(launch(project, tmp_path, {"p": ["promote", str(runs["trainmon"]), "--stage", "production",
                                                   "--registry", str(registry), "--no-wandb"]})["p"])
    assert f"promoted {runs['trainmon']} to production" in promoted.stdout
    assert json.loads((registry / "registry.json").read_text())["models"]["wave"]["stages"] == {"production": 1}


def test_a_kpi_its_test_step_does_not_log_refuses_promotion_naming_it_and_the_fix(project, runs, tmp_path):
    from expkit.config import compose
    from expkit.registry.kpis import kpis_of

    registry = tmp_path / "registry"
    registered = ok(launch(project, tmp_path, {"r": ["register", str(runs["testmse"]), "--name", "mse", "--registry",
                                                     str(registry), "--no-wandb"]})["r"])
    warning = ("mse v1 cannot be promoted: its KPI loss (test/loss) was not measured (its test_step logs: test/mse): log "
               "test/loss in the module's test_step and register the run again, or train it with a KPI it logs, e.g. "
               "'++kpis.loss={metric: test/mse, goal: min}'.")
    assert f"warning: {warning}" in registered.stderr.splitlines()
    before = (registry / "registry.json").read_text()
    line = refused(launch(project, tmp_path, {"p": ["promote", "mse:v1", "--stage", "production", "--registry",
                                                    str(registry), "--no-wandb"]})["p"], 2)
    assert line == f"error: {warning.replace('cannot be promoted', 'cannot be promoted to production')}"
    assert (registry / "registry.json").read_text() == before  # refused before anything was written
    # The override the message suggests composes into the KPI it names.
    cfg = compose("train", [f"hydra.searchpath=[file://{project / 'conf'}]", "model=testmse", "data=feat3",
                            "++kpis.loss={metric: test/mse, goal: min}"])
    assert [(k.metric, k.goal) for k in kpis_of(OmegaConf.to_container(cfg, resolve=True))] == [("test/mse", "min")]


# -- 8. a refused run leaves nothing behind ----------------------------------------------------
def test_a_run_refused_before_launch_leaves_no_run_directory(project, runs, tmp_path):
    from expkit.tracking.browse import find_runs

    plain = best(runs["plain3"])
    record = (runs["plain3"] / "run.json").read_text()
    kept = sorted(p.name for p in (runs["plain3"] / "checkpoints").iterdir())
    done = launch(project, tmp_path, {
        "train": ["train.py", "model=raises", "data=feat3", *TINY],
        "eval": ["eval.py", f"ckpt_path={tmp_path / 'missing.ckpt'}"],
        "predict": ["predict.py", f"ckpt_path={plain}", "+data.d=5"],
        # a refused run in an old run's directory: that run stays as it was
        "again": ["train.py", "model=raises", "data=feat3", *TINY, f"hydra.run.dir={runs['plain3']}"],
    })
    for name, code in (("train", 2), ("eval", 3), ("predict", 2), ("again", 2)):
        refused(done[name], code)
    assert not (tmp_path / "logs").exists() or not [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]
    assert (runs["plain3"] / "run.json").read_text() == record
    assert sorted(p.name for p in (runs["plain3"] / "checkpoints").iterdir()) == kept
    assert find_runs(tmp_path) == []  # `expkit runs` lists nothing


# -- 9. a new run in an old run's directory: the old run moves aside ---------------------------
def test_a_new_run_in_an_old_run_directory_moves_the_old_run_aside(project, tmp_path):
    fixed = tmp_path / "fixed"
    first = ["train.py", "model=reg", "data=feat3", "monitor.metric=val/loss", *TINY, "trainer.max_epochs=3",
             f"hydra.run.dir={fixed}"]
    ok(launch(project, tmp_path, {"first": first})["first"])
    old_files = sorted(p.name for p in (fixed / "checkpoints").iterdir())  # the best of 3 epochs, last.ckpt
    ok(launch(project, tmp_path, {"second": [*first[:-2], "model.hidden=4", f"hydra.run.dir={fixed}"]})["second"])
    for path in (fixed / "checkpoints").iterdir():  # only the new run's checkpoints: width 4
        assert torch.load(path, weights_only=True)["state_dict"]["net.0.weight"].shape == (4, 3), path.name
    assert torch.load(best(fixed), weights_only=True)["state_dict"]["net.0.weight"].shape == (4, 3)
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("fixed.previous-")]
    old = json.loads((aside / "run.json").read_text())
    assert old["status"] == "completed" and old["config"]["model"]["hidden"] == 8
    assert sorted(p.name for p in (aside / "checkpoints").iterdir()) == old_files
    assert (aside / "metrics.json").is_file() and (aside / "train.log").is_file()
    new = json.loads((fixed / "run.json").read_text())
    assert new["config"]["model"]["hidden"] == 4 and len(new["segments"]) == 1
