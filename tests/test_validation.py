"""Fail before launch: every bad input gets one clear error, the right exit code and no traceback.

Most cases run in-process (compose -> validate -> the entry points' error printer); command-line
cases run ``train.py``/``eval.py`` as a user does, and stop before torch is imported.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest
from annotated_types import Gt
from hypothesis import given, settings
from hypothesis import strategies as st

from expkit.config import closest, compose, expand_sweep, validate
from expkit.config.schema import MAX_SEED, check_schema
from expkit.config.suggest import edit_distance
from expkit.config.targets import Range
from expkit.errors import ExpkitError, exit_with
from tests.conftest import ROOT


# --------------------------------------------------------------------------------------------
# Bad inputs: files the table below refers to by name
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    """Broken user data, config files and checkpoints, one of each kind."""
    import pandas as pd
    import torch

    root = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    n = 40
    good = pd.DataFrame(rng.standard_normal((n, 3)), columns=["f0", "f1", "f2"])
    good["label"] = rng.integers(0, 2, n)
    files: dict[str, Path] = {"root": root}

    def table(name: str, frame) -> None:
        files[name] = root / f"{name}.csv"
        frame.to_csv(files[name], index=False)

    table("no_target", good.rename(columns={"label": "labl"}))
    table("text_column", good.assign(colour=["red", "blue"] * (n // 2)))
    table("nan_column", good.assign(f1=[math.nan] + list(good.f1[1:])))
    table("inf_column", good.assign(f2=[math.inf] + list(good.f2[1:])))
    table("one_class", good.assign(label=1))
    table("good", good)
    files["notes"] = root / "notes.txt"
    files["notes"].write_text("not data\n")
    files["corrupt_parquet"] = root / "corrupt.parquet"
    files["corrupt_parquet"].write_bytes(b"PAR1 this is not parquet")
    files["npz_no_y"] = root / "no_y.npz"
    np.savez(files["npz_no_y"], x=np.zeros((4, 3)), labels=np.arange(4))
    files["npz_mismatch"] = root / "mismatch.npz"
    np.savez(files["npz_mismatch"], x=np.zeros((5, 3)), y=np.arange(4) % 2)
    files["header_only"] = root / "header_only.csv"
    files["header_only"].write_text("f0,f1,label\n")
    files["empty_csv"] = root / "empty.csv"
    files["empty_csv"].write_text("")
    files["duplicate_columns"] = root / "duplicate_columns.csv"
    files["duplicate_columns"].write_text("a,a,label\n" + "".join(f"{i},{i + 1},{i % 2}\n" for i in range(20)))
    table("index_column", good.set_axis(list(good.columns), axis=1).reset_index().rename(columns={"index": ""}))
    table("tiny", good.head(3))
    files["empty_parquet"] = root / "empty.parquet"
    good.head(0).to_parquet(files["empty_parquet"])
    files["npz_empty"] = root / "empty.npz"
    np.savez(files["npz_empty"], x=np.zeros((0, 3)), y=np.zeros(0))
    files["no_images"] = root / "images"
    (files["no_images"] / "cat").mkdir(parents=True)
    (files["no_images"] / "cat" / "readme.txt").write_text("no images here\n")

    # Checkpoints: garbage, not Lightning's, one holding a pickled object, two that do not fit.
    mlp = {"model": {"_target_": "expkit.models.Classifier", "net": {"_target_": "expkit.models.nets.MLP"}}, "data": {}}
    files["ckpt_garbage"] = root / "garbage.ckpt"
    files["ckpt_garbage"].write_bytes(b"\x00not a checkpoint" * 10)
    files["ckpt_foreign"] = root / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, files["ckpt_foreign"])
    files["ckpt_pickled"] = root / "pickled.ckpt"
    torch.save({"state_dict": {}, "expkit": {"config": mlp}, "extra": argparse.Namespace(a=1)}, files["ckpt_pickled"])
    files["ckpt_wine"] = root / "wine.ckpt"
    wine = {"input_shape": [13], "num_classes": 3}
    torch.save({"state_dict": {}, "expkit": {"config": mlp, "sizes": wine}}, files["ckpt_wine"])
    files["ckpt_cnn"] = root / "cnn.ckpt"
    cnn = {"model": {"_target_": "expkit.models.Classifier", "net": {"_target_": "expkit.models.nets.CNN"}}, "data": {}}
    digits = {"input_shape": [1, 8, 8], "num_classes": 10}
    torch.save({"state_dict": {}, "expkit": {"config": cnn, "sizes": digits}}, files["ckpt_cnn"])

    # A user's config directory (hydra.searchpath) with broken experiment files.
    experiments = root / "conf" / "experiment"
    experiments.mkdir(parents=True)
    header = "# @package _global_\n"
    (experiments / "typo_group.yaml").write_text(header + "trianer:\n  max_epochs: 3\n")
    (experiments / "typo_argument.yaml").write_text(header + "model:\n  net:\n    dropuot: 0.2\n")
    (experiments / "broken_yaml.yaml").write_text(header + "trainer:\n  max_epochs: [3\n")
    (experiments / "bad_value.yaml").write_text(header + "trainer:\n  max_epochs: 0\n")
    files["conf"] = root / "conf"
    return files


def searchpath(files: dict[str, Path]) -> str:
    return f"hydra.searchpath=[file://{files['conf']}]"


@dataclass
class Case:
    """One bad input: ``args`` (Hydra overrides, or a function of the bad files giving them)."""

    id: str
    args: list[str] | Callable[[dict[str, Path]], list[str]]
    exit_code: int
    phrases: tuple[str, ...]
    where: str = "validate"  # "validate": in-process; "train.py"/"eval.py": a subprocess
    config: str = "train"
    env: dict[str, str] = field(default_factory=dict)

    def overrides(self, files: dict[str, Path]) -> list[str]:
        return self.args(files) if callable(self.args) else list(self.args)


CASES = [
    # -- the command line: Hydra's own parsing and composition, explained; torch never imported --
    Case("unknown-group-option", ["model=cnnn"], 2, ("no option 'cnnn' in group 'model'", "Did you mean 'model=cnn'?"), "train.py"),
    Case("unknown-key", ["trainer.max_epoch=5"], 2, ("unknown key 'trainer.max_epoch'", "Did you mean 'trainer.max_epochs=5'?"), "train.py"),
    Case("unknown-group", ["modle=cnn"], 2, ("unknown key 'modle'", "Did you mean 'model=cnn'?"), "train.py"),
    Case("unknown-optional-option", ["experiment=digits_cnnn"], 2, ("Did you mean 'experiment=digits_cnn'?",), "train.py"),
    Case("unknown-option-in-list", ["logger=[wandb,csvv]"], 2, ("no option 'csvv'", "Did you mean 'logger=csv'?"), "train.py"),
    Case("unknown-nested-group-option", ["model/optimizer=adamm"], 2, ("Did you mean 'model/optimizer=adamw'?",), "train.py"),
    Case("sweep-without-multirun", ["seed=0,1"], 2, ("seed=0,1", "--multirun", "seed=[0,1]"), "train.py"),
    Case("append-existing-key", ["+trainer.max_epochs=5"], 2, ("exists already", "trainer.max_epochs=5"), "train.py"),
    Case("unparsable-override", ["trainer.max_epochs=[1,"], 2, ("not a valid override",), "train.py"),
    Case("required-value-unset", ["data=files"], 2, ("data.path", "not set"), "train.py"),
    Case("delete-missing-key", ["~trainer.foo"], 2, ("no key 'trainer.foo' to delete",), "train.py"),
    Case("bad-option-in-sweep", ["-m", "model=mlp,cnnn"], 2, ("Did you mean 'model=cnn'?",), "train.py"),
    Case("eval-without-checkpoint", [], 2, ("ckpt_path", "not set"), "eval.py", config="eval"),
    # -- values reaching Hydra's app (kinds of value: the tables below, checked in-process) ------
    Case("monitor-metric-never-logged", ["monitor.metric=val/accuracy", "data=wine", "logger=none", "trainer.max_epochs=1"], 2,
         ("monitor.metric=val/accuracy: the module never logs it", "Did you mean 'monitor.metric=val/acc'?"), "train.py"),
    Case("unknown-argument", ["+model.net.dropuot=0.2"], 2, ("model.net.dropuot", "takes no argument", "Did you mean 'model.net.dropout'?")),
    Case("target-typo", ["model.net._target_=expkit.models.nets.MLPP"], 2, ("Did you mean 'expkit.models.nets.MLP'?",)),
    Case("target-no-module", ["model.optimizer._target_=torch.optimm.AdamW"], 2, ("model.optimizer._target_=torch.optimm.AdamW", "has no 'optimm'")),
    Case("missing-argument", ["+callbacks.stop._target_=pytorch_lightning.callbacks.EarlyStopping"], 2,
         ("callbacks.stop.monitor", "needs argument 'monitor'")),
    Case("model-does-not-fit-data", ["model=cnn", "data=wine"], 2, ("model 'CNN'", "data 'wine'", "Pick another model or data")),
    Case("transformer-too-many-tokens", ["model=transformer", "data=synthetic", "data.input_shape=[3,64,64]"], 2, ("exceed 4096",)),
    Case("several-problems", ["seed=x", "monitor.mode=up"], 2, ("problems in the config", "seed='x'", "monitor.mode='up'")),
    # Each kind of value once through train.py: exit code, one line, no traceback, no run left.
    Case("e2e-range", ["model.optimizer.lr=nan", "data=wine", "logger=none"], 2, ("model.optimizer.lr=nan: not a number",), "train.py"),
    Case("e2e-layer", ["model.net.dropout=1.5", "data=wine", "logger=none"], 2, ("model.net.dropout=1.5", "torch.nn.Dropout"), "train.py"),
    Case("e2e-empty-split", ["data.val_fraction=0", "data=wine", "logger=none"], 2, ("data.val_fraction=0 leaves the validation split empty",), "train.py"),
    Case("e2e-no-rows", lambda f: ["data=files", f"data.path={f['header_only']}", "logger=none"], 3, ("header_only.csv", "no rows"), "train.py"),
    Case("e2e-split-rounds-to-none", ["data=wine", "data.val_fraction=0.001", "logger=none"], 2,
         ("data.val_fraction=0.001 of wine's 178 samples holds out none", "data.val_fraction=0.00282"), "train.py"),
    Case("e2e-train-task-validates", ["seed=1.5", "data=wine", "logger=none"], 2, ("seed=1.5 must be an integer",), "train.py"),
    # -- config files (a user's experiment, found through hydra.searchpath) ---------------------
    Case("config-file-top-level-typo", lambda f: [searchpath(f), "experiment=typo_group"], 2, ("trianer", "Did you mean 'trainer'?")),
    Case("config-file-argument-typo", lambda f: [searchpath(f), "experiment=typo_argument"], 2, ("model.net.dropuot", "Did you mean 'model.net.dropout'?")),
    Case("config-file-bad-yaml", lambda f: [searchpath(f), "experiment=broken_yaml"], 2, ("does not load", "broken_yaml.yaml")),
    Case("config-file-bad-value", lambda f: [searchpath(f), "experiment=bad_value"], 2, ("trainer.max_epochs=0",)),
    # -- the same through --config-dir (checked on Hydra's own composition, where its configs are found)
    Case("config-dir-unknown-key", lambda f: ["--config-dir", str(f["conf"]), "trainer.max_epoch=5"], 2,
         ("unknown key 'trainer.max_epoch'", "Did you mean 'trainer.max_epochs=5'?"), "train.py"),
    Case("config-dir-option-typo", lambda f: ["--config-dir", str(f["conf"]), "experiment=typo_grup"], 2,
         ("no option 'typo_grup'", "Did you mean 'experiment=typo_group'?"), "train.py"),
    Case("config-dir-file-typo", lambda f: ["--config-dir", str(f["conf"]), "experiment=typo_group"], 2,
         ("trianer", "Did you mean 'trainer'?"), "train.py"),
    Case("config-dir-sweep-typo", lambda f: ["-m", "--config-dir", str(f["conf"]), "experiment=digits_cnn,typo_grup"], 2,
         ("experiment=digits_cnn,typo_grup", "Did you mean 'experiment=typo_group'?"), "train.py"),
    # -- user data (data=files), MNIST files ---------------------------------------------------
    Case("data-missing-file", lambda f: ["data=files", f"data.path={f['root']}/absent.csv"], 3, ("data.path=", "absent.csv", "does not exist")),
    Case("data-unsupported-type", lambda f: ["data=files", f"data.path={f['notes']}"], 3, ("notes.txt", "unsupported file type '.txt'")),
    Case("data-no-target-column", lambda f: ["data=files", f"data.path={f['no_target']}"], 3,
         ("no_target.csv", "no target column 'label'", "Did you mean 'labl'?")),
    Case("data-missing-feature-column", lambda f: ["data=files", f"data.path={f['good']}", "data.feature_columns=[f0,f9]"], 3,
         ("good.csv", "missing columns ['f9']",)),
    Case("data-text-column", lambda f: ["data=files", f"data.path={f['text_column']}"], 3, ("text_column.csv", "column 'colour'", "expected numbers")),
    Case("data-missing-values", lambda f: ["data=files", f"data.path={f['nan_column']}"], 3, ("nan_column.csv", "column 'f1' has missing values")),
    Case("data-infinite-values", lambda f: ["data=files", f"data.path={f['inf_column']}"], 3, ("inf_column.csv", "column 'f2' has infinite values")),
    Case("data-one-class", lambda f: ["data=files", f"data.path={f['one_class']}"], 3, ("one_class.csv", "1 distinct value")),
    Case("data-corrupt-parquet", lambda f: ["data=files", f"data.path={f['corrupt_parquet']}"], 3, ("corrupt.parquet", "cannot be read as a table")),
    Case("data-npz-missing-array", lambda f: ["data=files", f"data.path={f['npz_no_y']}"], 3, ("no_y.npz", "no array 'y'", "data.y_key")),
    Case("data-npz-length-mismatch", lambda f: ["data=files", f"data.path={f['npz_mismatch']}"], 3, ("mismatch.npz", "5 samples", "4 labels")),
    Case("data-no-images", lambda f: ["data=files", f"data.path={f['no_images']}", "model=cnn"], 3, ("no images found",)),
    Case("data-mnist-missing", lambda f: ["data=mnist", f"data.root={f['root']}/mnist"], 3, ("data.root=", "does not exist", "data.download=true")),
    # -- checkpoints (train resume, eval) ------------------------------------------------------
    Case("ckpt-missing", ["ckpt_path=absent/last.ckpt"], 3, ("ckpt_path=absent/last.ckpt", "no such file")),
    Case("ckpt-garbage", lambda f: [f"ckpt_path={f['ckpt_garbage']}"], 3, ("garbage.ckpt", "not a readable checkpoint")),
    Case("ckpt-not-lightning", lambda f: [f"ckpt_path={f['ckpt_foreign']}"], 3, ("foreign.ckpt", "not a Lightning checkpoint")),
    Case("ckpt-untrusted-pickle", lambda f: [f"ckpt_path={f['ckpt_pickled']}"], 3, ("pickled.ckpt", "pickled Python object (argparse.Namespace)", "trust_checkpoint=true")),
    Case("ckpt-other-data", lambda f: [f"ckpt_path={f['ckpt_wine']}", "data=digits"], 2,
         ("wine.ckpt", "input_shape=(13,), num_classes=3", "input_shape=(1, 8, 8)")),
    Case("ckpt-other-network", lambda f: [f"ckpt_path={f['ckpt_cnn']}", "model=mlp"], 2,
         ("cnn.ckpt", "model.net._target_=expkit.models.nets.CNN", "expkit.models.nets.MLP")),
    Case("eval-corrupt-checkpoint", lambda f: [f"ckpt_path={f['ckpt_garbage']}"], 3, ("garbage.ckpt", "not a readable checkpoint"), "eval.py", config="eval"),
]


def run_script(script: str, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=300)


def in_process(case: Case, overrides: list[str], capsys) -> tuple[int, str]:
    """What the entry points do with the config: validate, print the error, exit with its code."""
    try:
        validate(compose(case.config, overrides), task=case.config)
    except ExpkitError as exc:
        with pytest.raises(SystemExit) as exit_info:
            exit_with(exc)
        return exit_info.value.code, capsys.readouterr().err
    return 0, ""


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_clearly(case: Case, bad, tmp_path, capsys):
    overrides = case.overrides(bad)
    if case.where == "validate":
        code, err = in_process(case, overrides, capsys)
    else:
        proc = run_script(case.where, overrides, cwd=tmp_path, env=case.env)
        code, err = proc.returncode, proc.stderr
    assert code == case.exit_code, err
    for phrase in case.phrases:
        assert phrase in err, f"{phrase!r} not in: {err}"
    assert any(line.startswith("error: ") for line in err.splitlines()) and "Traceback" not in err
    # Nothing that looks like a finished run is left behind.
    assert not list(tmp_path.rglob("metrics.json"))
    for record in tmp_path.rglob("run.json"):
        assert '"status": "failed"' in record.read_text()


# --------------------------------------------------------------------------------------------
# Values, one table per kind: the outcome of each case is its assertion.
#   "ok": valid; "warn": valid, with a warning (legal but degenerate); 2 / 3: refused, exit code.
# Checked in-process with expkit.config.validate.check (what `expkit validate` and train run).
# --------------------------------------------------------------------------------------------
@dataclass
class Value:
    id: str
    args: list[str] | Callable[[dict[str, Path]], list[str]]
    outcome: str | int
    phrases: tuple[str, ...] = ()
    config: str = "train"

    def overrides(self, files: dict[str, Path]) -> list[str]:
        return self.args(files) if callable(self.args) else list(self.args)


def cpu_only(value: Value) -> Any:
    """A case about this machine's hardware, true on a machine without a GPU."""
    import torch

    return pytest.param(value, id=value.id, marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present"))


TYPES = [
    Value("seed-int", ["seed=7"], "ok"),
    Value("seed-null", ["seed=null"], "ok"),
    Value("seed-float", ["seed=1.5"], 2, ("seed=1.5 must be an integer",)),
    Value("seed-bool", ["seed=true"], 2, ("seed=True must be an integer",)),
    Value("lr-int-for-float", ["model.optimizer.lr=1"], "ok"),
    Value("lr-word", ["model.optimizer.lr=fast"], 2, ("model.optimizer.lr='fast'", "AdamW expects")),
    Value("precision-literal", ["trainer.precision=31"], 2, ("trainer.precision=31", "one of", "'bf16-mixed'")),
    Value("precision-64", ["trainer.precision=64"], "ok"),
    Value("accumulate-float", ["trainer.accumulate_grad_batches=1.5"], 2, ("trainer.accumulate_grad_batches=1.5", "expects int")),
    Value("widths-scalar", ["model.net.hidden_dims=64"], 2, ("model.net.hidden_dims=64", "MLP expects")),
    Value("channels-not-ints", ["model=cnn", "model.net.channels=[32,wide]"], 2, ("model.net.channels=", "CNN expects")),
    Value("batch-size-float", ["data.batch_size=32.0"], 2, ("data.batch_size=32.0 must be an integer >= 1",)),
    Value("tags-not-list", ["tags=baseline"], 2, ("tags='baseline' must be a list",)),
    Value("test-not-bool", ["test=maybe"], 2, ("test='maybe' must be true or false",)),
    Value("monitor-mode", ["monitor.mode=maximize"], 2, ("monitor.mode='maximize' must be min or max",)),
    Value("early-stopping-mode", ["callbacks.early_stopping.mode=maxx"], 2, ("callbacks.early_stopping.mode=maxx", "EarlyStopping")),
]

RANGES = [
    # learning rate and weight decay: torch optimizers (by class: any torch.optim.Optimizer)
    Value("lr-nan", ["model.optimizer.lr=nan"], 2, ("model.optimizer.lr=nan: not a number",)),
    Value("lr-inf", ["model.optimizer.lr=inf"], 2, ("model.optimizer.lr=inf must be a finite number > 0 (AdamW)",)),
    Value("lr-negative", ["model.optimizer.lr=-1"], 2, ("model.optimizer.lr=-1 must be a finite number > 0", "e.g. model.optimizer.lr=0.001")),
    Value("lr-zero", ["model.optimizer.lr=0"], 2, ("model.optimizer.lr=0 must be a finite number > 0",)),
    Value("lr-huge-but-finite", ["model.optimizer.lr=1e30"], "ok"),  # legal: a NaN loss stops it at run time
    Value("weight-decay-negative", ["model.optimizer.weight_decay=-1"], 2, ("model.optimizer.weight_decay=-1 must be a finite number >= 0",)),
    Value("weight-decay-inf", ["model.optimizer.weight_decay=inf"], 2, ("model.optimizer.weight_decay=inf",)),
    Value("weight-decay-zero", ["model.optimizer.weight_decay=0"], "ok"),
    Value("betas", ["+model.optimizer.betas=[0.9,1.5]"], 2, ("model.optimizer.betas=[0.9,1.5] must be a list of 2",)),
    Value("momentum-one", ["model/optimizer=sgd", "model.optimizer.momentum=1"], 2, ("model.optimizer.momentum=1 must be a finite number in [0, 1)",)),
    Value("nesterov-without-momentum", ["model/optimizer=sgd", "model.optimizer.momentum=0"], 2,
          ("model.optimizer.momentum=0", "Nesterov momentum requires a momentum")),
    Value("user-optimizer-class", ["model.optimizer._target_=torch.optim.RMSprop", "model.optimizer.lr=-0.1"], 2,
          ("model.optimizer.lr=-0.1 must be a finite number > 0 (RMSprop)",)),
    # schedulers: built on the optimizer and stepped
    Value("plateau-factor-one", ["model/scheduler=plateau", "model.scheduler.factor=1"], 2, ("model.scheduler.factor=1 must be a finite number in (0, 1)",)),
    Value("cosine-t-max-from-epochs", ["trainer.max_epochs=-1"], 2, ("model.scheduler.T_max=-1 (from ${trainer.max_epochs}) must be an integer >= 1",)),
    Value("no-epoch-limit-constant-lr", ["trainer.max_epochs=-1", "model/scheduler=none"], "ok"),
    Value("step-size-zero", ["model.scheduler._target_=torch.optim.lr_scheduler.StepLR", "~model.scheduler.T_max",
                             "+model.scheduler.step_size=0"], 2, ("model.scheduler.step_size=0 must be an integer >= 1",)),
    Value("exponential-gamma-negative", ["model.scheduler._target_=torch.optim.lr_scheduler.ExponentialLR", "~model.scheduler.T_max",
                                         "+model.scheduler.gamma=-1"], 2, ("model.scheduler.gamma=-1 must be a finite number > 0",)),
    # dropout and widths: torch.nn's own checks on the meta device, and layers that pass nothing on
    Value("dropout-above-one", ["model.net.dropout=1.5"], 2, ("model.net.dropout=1.5: torch.nn.Dropout refuses it",)),
    Value("dropout-negative", ["model.net.dropout=-0.1"], 2, ("model.net.dropout=-0.1: torch.nn.Dropout refuses it",)),
    Value("dropout-one", ["model.net.dropout=1.0"], 2, ("model.net.dropout=1.0", "would drop every activation")),
    Value("dropout-zero", ["model.net.dropout=0"], "ok"),
    Value("dropout-transformer", ["model=transformer", "data=wine", "model.net.dropout=2"], 2, ("model.net.dropout=2: torch.nn.Dropout",)),
    Value("width-negative", ["model.net.hidden_dims=[64,-4]"], 2, ("model.net.hidden_dims=[64,-4]: torch.nn.Linear refuses it", "negative dimension")),
    Value("width-zero", ["model.net.hidden_dims=[0]"], 2, ("model.net.hidden_dims=[0]: a layer of width 0",)),
    Value("no-hidden-layer", ["model.net.hidden_dims=[]"], "ok"),  # a linear model
    Value("cnn-width-negative", ["model=cnn", "model.net.hidden_dim=-1"], 2, ("model.net.hidden_dim=-1: torch.nn.Linear",)),
    Value("cnn-channels-zero", ["model=cnn", "model.net.channels=[0]"], 2, ("model.net.channels=[0]: a layer of width 0",)),
    Value("heads-do-not-divide", ["model=transformer", "data=wine", "model.net.num_heads=3"], 2,
          ("model.net.num_heads=3: torch.nn.MultiheadAttention refuses it",)),
    # seeds: NumPy's range, which Lightning's seed_everything enforces
    Value("seed-zero", ["seed=0"], "ok"),
    Value("seed-negative", ["seed=-1"], 2, ("seed=-1 must be an integer from 0 to 4294967295",)),
    Value("seed-too-big", ["seed=4294967296"], 2, ("seed=4294967296 must be an integer from 0 to 4294967295",)),
    Value("seed-largest-usable", ["seed=4294967275"], "ok"),  # + 20 epochs = 2**32 - 1
    Value("split-seed-negative", ["data.split_seed=-1"], 2, ("data.split_seed=-1 must be an integer >= 0",)),
    # Lightning Trainer arguments (by class: any Trainer subclass)
    Value("accumulate-zero", ["trainer.accumulate_grad_batches=0"], 2, ("trainer.accumulate_grad_batches=0 must be an integer >= 1",)),
    Value("accumulate-four", ["trainer.accumulate_grad_batches=4"], "ok"),
    Value("max-epochs-zero", ["trainer.max_epochs=0"], 2, ("trainer.max_epochs=0 must be -1 or an integer >= 1",)),
    Value("max-steps-zero", ["+trainer.max_steps=0"], 2, ("trainer.max_steps=0 must be -1 or an integer >= 1",)),
    Value("limit-train-zero", ["+trainer.limit_train_batches=0"], 2, ("trainer.limit_train_batches=0 must be an integer >= 1",)),
    Value("limit-train-over-one", ["+trainer.limit_train_batches=1.5"], 2, ("trainer.limit_train_batches=1.5",)),
    Value("log-every-zero", ["trainer.log_every_n_steps=0"], 2, ("trainer.log_every_n_steps=0 must be an integer >= 1",)),
    Value("clip-negative", ["trainer.gradient_clip_val=-1"], 2, ("trainer.gradient_clip_val=-1 must be a finite number >= 0",)),
    Value("clip-positive", ["trainer.gradient_clip_val=1.0"], "ok"),
    Value("lightning-own-check", ["+trainer.fast_dev_run=-1"], 2, ("trainer.fast_dev_run=-1", "Trainer (pytorch_lightning.Trainer) refuses")),
    Value("checkpoint-top-k", ["callbacks.model_checkpoint.save_top_k=-2"], 2, ("callbacks.model_checkpoint.save_top_k=-2", "ModelCheckpoint")),
    Value("batch-size-zero", ["data.batch_size=0"], 2, ("data.batch_size=0 must be an integer >= 1",)),
    Value("workers-negative", ["data.num_workers=-1"], 2, ("data.num_workers=-1 must be an integer >= 0",)),
    # devices and precision against this machine (a job sent elsewhere is checked where it runs)
    cpu_only(Value("gpu-on-a-cpu-machine", ["trainer=gpu"], 2, ("trainer.accelerator=gpu", "Lightning cannot run this Trainer on this machine"))),
    cpu_only(Value("ddp-on-a-cpu-machine", ["trainer=ddp"], 2, ("No supported gpu backend found",))),
    Value("devices-zero", ["trainer.devices=0"], 2, ("trainer.devices=0", "not a valid input")),
    Value("more-cpu-processes-than-cores", ["trainer=ddp_cpu", f"trainer.devices={(os.cpu_count() or 1) + 1}"], "warn", ("CPU processes share the",)),
    Value("fp16-on-cpu", ["trainer.accelerator=cpu", "trainer.precision=16-mixed"], "warn", ("Using `precision='bf16-mixed'` instead",)),
]

EMPTINESS = [
    Value("val-split-empty", ["data.val_fraction=0"], 2, ("data.val_fraction=0 leaves the validation split empty",)),
    Value("test-split-empty", ["data.test_fraction=0"], 2, ("data.test_fraction=0 leaves the test split empty", "test=false")),
    Value("test-split-empty-untested", ["data.test_fraction=0", "test=false"], "ok"),
    Value("no-training-data", ["data.val_fraction=0.6", "data.test_fraction=0.5"], 2, ("leaves no training data",)),
    Value("val-split-rounds-to-none", lambda f: ["data=files", f"data.path={f['good']}", "data.val_fraction=0.01"], 2,
          ("data.val_fraction=0.01 of good.csv's 40 samples holds out none", "data.val_fraction=0.0126")),
    Value("too-few-rows-to-split", lambda f: ["data=files", f"data.path={f['tiny']}"], 2, ("tiny.csv's 3 samples holds out none",)),
    Value("csv-header-no-rows", lambda f: ["data=files", f"data.path={f['header_only']}"], 3, ("header_only.csv: a header (3 columns) but no rows",)),
    Value("csv-empty-file", lambda f: ["data=files", f"data.path={f['empty_csv']}"], 3, ("empty.csv: the file is empty",)),
    Value("parquet-no-rows", lambda f: ["data=files", f"data.path={f['empty_parquet']}"], 3, ("empty.parquet: a header", "no rows")),
    Value("npz-no-samples", lambda f: ["data=files", f"data.path={f['npz_empty']}"], 3, ("empty.npz: arrays 'x' and 'y' hold no samples",)),
    Value("image-folder-no-images", lambda f: ["data=files", f"data.path={f['no_images']}", "model=cnn"], 3, ("no images found",)),
    Value("no-tags", ["tags=[]"], "ok"),
    Value("validation-batches-none", ["+trainer.limit_val_batches=0"], 2, ("trainer.limit_val_batches=0 skips validation",)),
]

CONSISTENCY = [
    Value("min-above-max-epochs", ["trainer.min_epochs=30"], 2, ("trainer.min_epochs=30 > trainer.max_epochs=20",)),
    Value("never-validated", ["trainer.check_val_every_n_epoch=30"], 2, ("trainer.check_val_every_n_epoch=30 > trainer.max_epochs=20",)),
    Value("never-validated-training-metric", ["trainer.check_val_every_n_epoch=30", "monitor.metric=train/loss"], "ok"),
    Value("seed-plus-epochs", ["seed=4294967290"], 2, ("seed=4294967290: epoch e is seeded with seed + e + 1", "at most 4294967275")),
    Value("derived-value-named-once", ["seed=-1"], 2, ("seed=-1",)),  # data.shuffle_seed=${seed} is not refused again
    Value("target-among-features", lambda f: ["data=files", f"data.path={f['good']}", "data.feature_columns=[f0,label]"], 2,
          ("data.feature_columns=[f0,label] includes the target column 'label'",)),
    Value("feature-twice", lambda f: ["data=files", f"data.path={f['good']}", "data.feature_columns=[f0,f0]"], 2,
          ("data.feature_columns=[f0,f0] names f0 more than once",)),
    Value("duplicate-column-names", lambda f: ["data=files", f"data.path={f['duplicate_columns']}"], 3,
          ("duplicate_columns.csv: 2 columns are named 'a' (columns [1, 2])", "'a.1'")),
    Value("nameless-column", lambda f: ["data=files", f"data.path={f['index_column']}"], 3, ("index_column.csv: a column has no name",)),
    Value("nameless-column-not-a-feature", lambda f: ["data=files", f"data.path={f['index_column']}", "data.feature_columns=[f0,f1]"], "ok"),
    Value("model-does-not-fit-data", ["model=cnn", "data=wine"], 2, ("model 'CNN'", "data 'wine'")),
]


def outcome(value: Value, files: dict[str, Path]) -> tuple[str | int, str]:
    """What `expkit validate` decides for ``value``: the outcome and the message (or warnings)."""
    from expkit.config.validate import _combine, check

    problems, notes, _ = check(compose(value.config, value.overrides(files)), task=value.config)
    if problems:
        error = _combine(problems)
        assert len(problems) == 1, f"one problem, reported once: {[str(p) for p in problems]}"
        return error.exit_code, str(error)
    return ("warn" if notes else "ok"), "\n".join(notes)


def check_outcome(value: Value, files: dict[str, Path]) -> None:
    got, message = outcome(value, files)
    assert got == value.outcome, f"{value.id}: expected {value.outcome}, got {got}: {message}"
    for phrase in value.phrases:
        assert phrase in message, f"{phrase!r} not in: {message}"
    if isinstance(got, int):
        assert "\n" not in message, "a refusal is one line"


@pytest.mark.parametrize("value", TYPES, ids=[v.id for v in TYPES])
def test_value_types(value, bad):
    check_outcome(value, bad)


@pytest.mark.parametrize("value", RANGES, ids=[v.id if isinstance(v, Value) else v.id for v in RANGES])
def test_value_ranges(value, bad):
    check_outcome(value, bad)


@pytest.mark.parametrize("value", EMPTINESS, ids=[v.id for v in EMPTINESS])
def test_emptiness(value, bad):
    check_outcome(value, bad)


@pytest.mark.parametrize("value", CONSISTENCY, ids=[v.id for v in CONSISTENCY])
def test_consistency_between_keys(value, bad):
    check_outcome(value, bad)


def test_an_empty_split_found_when_the_data_loads_names_the_fraction():
    """Bundled data declares no sample count: the split is checked when it loads."""
    from hydra.utils import instantiate

    from expkit.errors import ConfigError

    datamodule = instantiate(compose("train", ["data=wine", "data.test_fraction=0.001"]).data)
    with pytest.raises(ConfigError, match=r"data.test_fraction=0.001 of wine's 178 samples holds out none: use at least "
                                          r"data.test_fraction=0.00282 .*test=false"):
        datamodule.setup("fit")


def test_annotated_ranges_apply_to_any_component(bad):
    """A component of the user's own declares its ranges with typing.Annotated; expkit reads them."""
    from expkit.config.targets import check_targets

    node = {"_target_": f"{__name__}.Smoother", "rate": 1.5, "widths": [8, 0], "name": "x"}
    problems = [str(p) for p in check_targets({"smoother": node}, {})]
    assert problems == [
        "smoother.rate=1.5 must be a finite number in [0, 1) (Smoother); e.g. smoother.rate=0.1 (Smoother's default).",
        "smoother.widths=[8,0] must be a list, each an integer > 0 (Smoother); e.g. smoother.widths=[8] (Smoother's default).",
    ]
    assert not check_targets({"smoother": {**node, "rate": 0.5, "widths": [8]}}, {})


class Smoother:
    """A stand-in for a user's component (importable by _target_ from this module)."""

    def __init__(self, rate: Annotated[float, Range(ge=0, lt=1)] = 0.1,
                 widths: Sequence[Annotated[int, Gt(0)]] = (8,), name: str = "smoother") -> None:
        self.rate, self.widths, self.name = rate, widths, name


def test_command_line_errors_do_not_import_torch(tmp_path):
    proc = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "train.py"), "model=cnnn"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "pytorch_lightning" not in imported
    assert not (tmp_path / "logs").exists()  # Hydra never started: no run directory at all


def test_full_error_shows_the_traceback(tmp_path):
    proc = run_script("train.py", ["model=cnnn"], cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "Did you mean 'model=cnn'" in proc.stderr


def test_trusting_a_checkpoint_loads_it(bad):
    from expkit.checkpoints import load_checkpoint

    checkpoint = load_checkpoint(str(bad["ckpt_pickled"]), trust=True)
    assert checkpoint["extra"].a == 1


def test_good_configs_validate_fast_without_building_anything(bad):
    import time

    validate(compose("train", []))  # imports once
    start = time.perf_counter()
    for overrides in (["model=cnn"], ["experiment=wine_transformer"], ["data=files", f"data.path={bad['good']}"],
                      ["debug=fdr"], ["logger=[wandb,csv,tensorboard]"], ["trainer=ddp_cpu"]):
        sizes = validate(compose("train", overrides))
        assert sizes["num_classes"] >= 2
    assert time.perf_counter() - start < 10


def test_validate_command(capsys):
    from expkit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "-m", "model=mlp,transformer", "data=wine"])
    assert exit_info.value.code == 0
    assert "ok: 2 job(s) of train are valid (input_shape=(13,), num_classes=3)" in capsys.readouterr().out
    main(["validate", "model=transformer", "data=wine"])
    assert "ok: 1 job of train is valid (input_shape=(13,), num_classes=3)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "-m", "model=mlp,cnn", "data=wine"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "job 1 (model=cnn data=wine): model 'CNN'" in err


@pytest.mark.parametrize("launcher", ["local", "parallel"])
def test_multirun_validates_every_job_before_the_first_starts(launcher, tmp_path):
    # launcher=parallel: the workers validate jobs 1-3 side by side; the first bad job in order is named.
    proc = run_script("train.py", ["-m", "model=mlp,cnn", "seed=0,1", "data=wine", "logger=none", f"launcher={launcher}"],
                      cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: job 2 (model=cnn seed=0 data=wine") and "model 'CNN'" in line
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("run.json")), "no job may start"


def test_a_value_from_the_environment_is_checked_before_launch_as_the_run_checks_it(tmp_path):
    """``${oc.env:...}`` gives the job a string ('3'), which the seed's schema refuses: a single
    run, a sweep (before any job starts) and ``expkit validate -m`` refuse it alike, in the same
    line, naming the fix; with that fix (``oc.decode``) the sweep is valid."""
    env = {"EXPKIT_TEST_SEED": "3"}

    def validate_sweep(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "expkit.cli", "validate", "-m", *args], cwd=tmp_path,
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=300)

    from_env = "seed=${oc.env:EXPKIT_TEST_SEED,3}"
    single = run_script("train.py", [from_env, "data=wine", "logger=none"], cwd=tmp_path, env=env)
    sweep = run_script("train.py", ["-m", "model=mlp,transformer", from_env, "data=wine", "logger=none", "launcher=parallel"],
                       cwd=tmp_path, env=env)
    checked = validate_sweep("model=mlp,transformer", from_env, "data=wine")
    problem = ("seed='3' (from ${oc.env:EXPKIT_TEST_SEED,3}) must be an integer", "${oc.decode:${oc.env:EXPKIT_TEST_SEED,3}}")
    for proc in (single, sweep, checked):
        (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
        assert proc.returncode == 2 and all(p in line for p in problem) and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not list(tmp_path.rglob("run.json")), "no job may start"
    decoded = validate_sweep("model=mlp,transformer", "seed='${oc.decode:${oc.env:EXPKIT_TEST_SEED,3}}'", "data=wine")
    assert decoded.returncode == 0 and "ok: 2 job(s)" in decoded.stdout, decoded.stderr[-2000:]


# --------------------------------------------------------------------------------------------
# Runtime: a non-finite loss stops the run and keeps the last good checkpoint
# --------------------------------------------------------------------------------------------
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import ModelCheckpoint

    from expkit.build import build_model, data_sizes
    from expkit.callbacks import StopOnNonFiniteLoss
    from expkit.errors import NonFiniteLoss

    class Diverge(pl.Callback):
        """Stands in for an exploding optimizer: from epoch 2 on, the weights are NaN."""

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 2:
                with torch.no_grad():
                    next(pl_module.parameters()).fill_(float("nan"))

    cfg = compose("train", ["data=wine", "trainer=cpu"])
    datamodule = instantiate(cfg.data)
    model = build_model(cfg.model, data_sizes(datamodule))
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = pl.Trainer(max_epochs=5, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[checkpoints, StopOnNonFiniteLoss(check_every_n_steps=2), Diverge()])
    with pytest.raises(NonFiniteLoss, match=r"non-finite \(NaN or inf\) at step \d+ \(epoch 2\)") as failure:
        trainer.fit(model, datamodule=datamodule)
    # The first bad step is named, although the losses are checked only every 2 steps: the first of epoch 2.
    assert f"at step {2 * trainer.num_training_batches + 1} " in str(failure.value)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1  # written after the last good epoch, never after the bad step
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())


def test_non_finite_loss_fails_the_run(tmp_path):
    proc = run_script("train.py", ["data=wine", "logger=none", "trainer.max_epochs=2", "model.optimizer.lr=1e30"], cwd=tmp_path)
    assert proc.returncode == 1
    assert "error: the training loss became non-finite (NaN or inf) at step" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("metrics.json"))
    for record in tmp_path.rglob("run.json"):  # the run record (tracking/record.py), where kept
        assert '"status": "failed"' in record.read_text()


# --------------------------------------------------------------------------------------------
# Properties: did-you-mean, sweep expansion, the schema
# --------------------------------------------------------------------------------------------
KEYS = ["max_epochs", "min_epochs", "accelerator", "devices", "precision", "batch_size", "val_fraction",
        "test_fraction", "split_seed", "shuffle_seed", "num_workers", "dropout", "hidden_dims", "channels",
        "optimizer", "scheduler", "monitor", "callbacks", "logger", "seed", "tags"]


@st.composite
def typo(draw):
    """A key of ``KEYS`` with one character deleted, replaced, inserted or two swapped."""
    word = draw(st.sampled_from(KEYS))
    i = draw(st.integers(0, len(word) - 1))
    letter = draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz_"))
    edit = draw(st.sampled_from(["delete", "replace", "insert", "swap"]))
    if edit == "delete":
        mutated = word[:i] + word[i + 1 :]
    elif edit == "replace":
        mutated = word[:i] + letter + word[i + 1 :]
    elif edit == "insert":
        mutated = word[:i] + letter + word[i:]
    else:
        j = min(i + 1, len(word) - 1)
        mutated = word[:i] + word[j] + word[i] + word[j + 1 :] if j > i else word
    return word, mutated


@given(typo())
def test_did_you_mean_never_suggests_a_farther_key(pair):
    original, mutated = pair
    suggestion = closest(mutated, KEYS)
    distance = edit_distance(mutated, original)
    if len(original) >= 4 and distance == 1:
        assert suggestion is not None  # a one-edit typo of a real key always gets a suggestion
    if suggestion is not None:
        assert edit_distance(mutated.lower(), suggestion.lower()) <= max(distance, 1) or mutated.lower() in suggestion.lower()
    unique_nearest = sorted(edit_distance(mutated, k) for k in KEYS)
    if distance <= 1 and unique_nearest[:2] != [distance, distance]:
        assert suggestion == original


values = st.lists(st.integers(-1000, 1000), min_size=1, max_size=4, unique=True)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(["seed", "data.batch_size", "trainer.max_epochs", "model.optimizer.lr"]), values, min_size=1))
def test_sweep_expansion_is_the_product(sweep):
    overrides = [f"{key}={','.join(map(str, vals))}" for key, vals in sweep.items()]
    jobs = expand_sweep(overrides)
    assert len(jobs) == math.prod(len(v) for v in sweep.values())
    assert len({tuple(job) for job in jobs}) == len(jobs)
    assert all(len(job) == len(sweep) for job in jobs)
    assert {line for job in jobs for line in job} == {f"{key}={v}" for key, vals in sweep.items() for v in vals}


@given(st.one_of(st.integers(), st.integers(-3, 3), st.integers(MAX_SEED - 3, MAX_SEED + 3), st.none(),
                 st.floats(allow_nan=True), st.text(max_size=5), st.booleans()))
def test_schema_accepts_exactly_the_seeds_numpy_takes_or_null(seed):
    problems = check_schema({"seed": seed}, task="none")
    valid = seed is None or (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED)
    assert (not problems) == valid
    if problems:
        assert f"seed={seed!r} must be an integer from 0 to {MAX_SEED}" in str(problems[0])


def test_the_seed_range_is_the_one_seeding_accepts():
    """MAX_SEED is what Lightning's seed_everything (NumPy's range) accepts, and no more."""
    from lightning_fabric.utilities.seed import seed_everything

    assert seed_everything(0, verbose=False) == 0 and seed_everything(MAX_SEED, verbose=False) == MAX_SEED
    for seed in (-1, MAX_SEED + 1):
        with pytest.raises(ValueError):
            seed_everything(seed, verbose=False)
