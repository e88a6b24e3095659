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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from expkit.config import closest, compose, expand_sweep, validate
from expkit.config.schema import check_schema
from expkit.config.suggest import edit_distance
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
    # -- values: the typed schema and the targets' signatures ----------------------------------
    Case("seed-float", ["seed=1.5"], 2, ("seed=1.5 must be an integer",)),
    Case("monitor-metric-never-logged", ["monitor.metric=val/accuracy", "data=wine", "logger=none", "trainer.max_epochs=1"], 2,
         ("monitor.metric=val/accuracy: the module never logs it", "Did you mean 'monitor.metric=val/acc'?"), "train.py"),
    Case("monitor-mode", ["monitor.mode=maximize"], 2, ("monitor.mode='maximize' must be min or max",)),
    Case("batch-size-zero", ["data.batch_size=0"], 2, ("data.batch_size=0 must be an integer >= 1",)),
    Case("max-epochs-zero", ["trainer.max_epochs=0"], 2, ("trainer.max_epochs=0 must be an integer >= 1",)),
    Case("tags-not-list", ["tags=baseline"], 2, ("tags='baseline' must be a list",)),
    Case("test-not-bool", ["test=maybe"], 2, ("test='maybe' must be true or false",)),
    Case("no-training-data", ["data.val_fraction=0.6", "data.test_fraction=0.5"], 2, ("leaves no training data",)),
    Case("precision-literal", ["trainer.precision=31"], 2, ("trainer.precision=31", "one of", "'bf16-mixed'")),
    Case("lr-not-number", ["model.optimizer.lr=fast"], 2, ("model.optimizer.lr='fast'", "AdamW expects")),
    Case("channels-not-ints", ["model=cnn", "model.net.channels=[32,wide]"], 2, ("model.net.channels=", "CNN expects")),
    Case("unknown-argument", ["+model.net.dropuot=0.2"], 2, ("model.net.dropuot", "takes no argument", "Did you mean 'model.net.dropout'?")),
    Case("target-typo", ["model.net._target_=expkit.models.nets.MLPP"], 2, ("Did you mean 'expkit.models.nets.MLP'?",)),
    Case("target-no-module", ["model.optimizer._target_=torch.optimm.AdamW"], 2, ("model.optimizer._target_=torch.optimm.AdamW", "has no 'optimm'")),
    Case("missing-argument", ["+callbacks.stop._target_=pytorch_lightning.callbacks.EarlyStopping"], 2,
         ("callbacks.stop.monitor", "needs argument 'monitor'")),
    Case("model-does-not-fit-data", ["model=cnn", "data=wine"], 2, ("model 'CNN'", "data 'wine'", "Pick another model or data")),
    Case("transformer-too-many-tokens", ["model=transformer", "data=synthetic", "data.input_shape=[3,64,64]"], 2, ("exceed 4096",)),
    Case("several-problems", ["seed=x", "monitor.mode=up"], 2, ("problems in the config", "seed='x'", "monitor.mode='up'")),
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
    # -- reaching the task: the schema checked inside train() (torch imported, run recorded failed)
    Case("train-task-validates", ["seed=1.5", "data=wine", "logger=none"], 2, ("seed=1.5 must be an integer",), "train.py"),
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


def test_multirun_validates_every_job_before_the_first_starts(tmp_path):
    proc = run_script("train.py", ["-m", "model=mlp,cnn", "data=wine", "logger=none"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "job 1 (model=cnn data=wine" in proc.stderr and "model 'CNN'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("run.json")), "no job may start"


# --------------------------------------------------------------------------------------------
# Runtime: a non-finite loss stops the run and keeps the last good checkpoint
# --------------------------------------------------------------------------------------------
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import ModelCheckpoint

    from expkit.callbacks import StopOnNonFiniteLoss
    from expkit.build import build_model, data_sizes
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


@given(st.one_of(st.integers(), st.none(), st.floats(allow_nan=True), st.text(max_size=5), st.booleans()))
def test_schema_accepts_exactly_integer_or_null_seeds(seed):
    problems = check_schema({"seed": seed}, task="none")
    valid = seed is None or (isinstance(seed, int) and not isinstance(seed, bool))
    assert (not problems) == valid
    if problems:
        assert f"seed={seed!r} must be an integer" in str(problems[0])
