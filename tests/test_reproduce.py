"""``expkit reproduce`` and ``expkit resume`` rebuild every kind of run exactly as it was composed:
a plain run, each debug and experiment preset, a grid job and an Optuna trial, the DVC train
stage's run, a run from the user's own config directory or search path, an eval run. On the CPU
the reproduced run's metrics equal the original's; an interrupted run resumes to completion. A
config file that changed or went away since is named before anything runs (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CONF, ROOT

ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT)}  # tests.probes
TINY = ["trainer.max_epochs=1", "logger=none", "seed=0"]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
DEBUGS = sorted(p.stem for p in (CONF / "debug").glob("*.yaml"))
USER_EXPERIMENT = "# @package _global_\ndefaults:\n  - override /data: wine\ntrainer:\n  max_epochs: 1\ntags: [mine]\n"


def run(args: list[str], cwd: Path, script: str = "train.py", check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / script)] if script.endswith(".py") else [sys.executable, "-m", "expkit.cli", script]
    proc = subprocess.run([*command, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}")
    return proc


def run_dirs(cwd: Path) -> set[Path]:
    return {p.parent for p in cwd.rglob("run.json") if "wandb" not in p.parts}


def user_conf(cwd: Path) -> Path:
    conf = cwd / "my_conf"
    (conf / "experiment").mkdir(parents=True, exist_ok=True)
    (conf / "experiment" / "mine.yaml").write_text(USER_EXPERIMENT)
    return conf


def dvc_params(cwd: Path) -> Path:
    """The DVC train stage's config: conf/pipeline.yaml composed into a params.yaml (on wine, so
    no prepared data is needed), which the stage's command runs as its whole config."""
    from expkit.pipeline.params import compose_params

    folder = cwd / "stage"
    folder.mkdir(exist_ok=True)
    (folder / "params.yaml").write_text(compose_params(["data=wine", "~data.path", "~data.processed_dir"], CONF, "pipeline"))
    return folder


KINDS = {
    "plain": lambda cwd: ["data=wine", *TINY],
    **{f"debug={name}": (lambda name: lambda cwd: [f"debug={name}", "data=wine", "trainer.max_epochs=1"])(name) for name in DEBUGS},  # noqa: B023
    **{f"experiment={name}": (lambda name: lambda cwd: [f"experiment={name}", *TINY, "++trainer.limit_train_batches=3"])(name)  # noqa: B023
       for name in EXPERIMENTS},
    "grid-job": lambda cwd: ["-m", "data=wine", *TINY, "seed=0,1", "hydra.sweep.dir=sweep"],
    # model=mlp pins the search's model choice: its CNN option needs images, and wine is a table
    "optuna-trial": lambda cwd: ["-m", "hparams_search=digits_optuna", "data=wine", "model=mlp", *TINY,
                                 "hydra.sweeper.n_trials=1",
                                 "hydra.sweep.dir=optuna"],
    # params.yaml is a flat config (no groups): its W&B logger is switched off by value.
    "dvc-stage": lambda cwd: ["--config-dir", str(dvc_params(cwd)), "--config-name", "params", "trainer.max_epochs=1", "logger.wandb=null"],
    "config-dir": lambda cwd: ["--config-dir", str(user_conf(cwd)), "experiment=mine", "logger=none", "seed=0"],
    "searchpath": lambda cwd: [f"hydra.searchpath=[file://{user_conf(cwd)}]", "experiment=mine", "logger=none", "seed=0"],
}
QUICK = {"plain", "dvc-stage", "config-dir", "grid-job"}


@pytest.mark.parametrize("kind", [pytest.param(k, marks=() if k in QUICK else pytest.mark.slow) for k in KINDS])
def test_every_kind_of_run_reproduces_to_identical_metrics(kind, tmp_path):
    run(KINDS[kind](tmp_path), tmp_path)
    before = run_dirs(tmp_path)
    original = sorted(before)[0]  # a sweep's job 0
    # Code differences are allowed here (test_record checks they are refused): this is about the config.
    proc = run([str(original), "--allow-differences"], tmp_path, script="reproduce")
    assert "Config differs" not in proc.stderr + proc.stdout
    (again,) = run_dirs(tmp_path) - before
    record = json.loads((again / "run.json").read_text())
    assert record["composition"]["config_name"] == json.loads((original / "run.json").read_text())["composition"]["config_name"]
    assert json.loads((again / "metrics.json").read_text()) == json.loads((original / "metrics.json").read_text())


def test_an_eval_run_reproduces(tmp_path):
    run(["data=wine", *TINY, "hydra.run.dir=train"], tmp_path)
    checkpoint = next((tmp_path / "train" / "checkpoints").glob("epoch_*.ckpt"))
    run([f"ckpt_path={checkpoint}", "hydra.run.dir=eval"], tmp_path, script="eval.py")
    run([str(tmp_path / "eval"), "--allow-differences"], tmp_path, script="reproduce")
    evals = sorted((tmp_path / "logs" / "eval" / "runs").iterdir())
    assert json.loads((evals[0] / "metrics.json").read_text()) == json.loads((tmp_path / "eval" / "metrics.json").read_text())


@pytest.mark.parametrize("kind", ["plain", "config-dir", "dvc-stage"])
def test_an_interrupted_run_of_each_source_resumes(kind, tmp_path):
    args = [a for a in KINDS[kind](tmp_path) if not a.startswith("trainer.max_epochs")]
    proc = run([*args, "trainer.max_epochs=2", "+callbacks.signal._target_=tests.probes.SignalAtEpochEnd",
                "hydra.run.dir=run"], tmp_path, check=False)
    assert proc.returncode == 143, proc.stderr[-2000:]
    run([str(tmp_path / "run"), "--allow-config-change"], tmp_path, script="resume")
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [s["status"] for s in record["segments"]] == ["interrupted", "completed"]


def test_a_changed_or_deleted_config_file_is_named_before_running(tmp_path):
    conf = user_conf(tmp_path)
    run(["--config-dir", str(conf), "experiment=mine", "logger=none", "hydra.run.dir=run"], tmp_path)
    experiment = conf / "experiment" / "mine.yaml"
    experiment.write_text(USER_EXPERIMENT.replace("max_epochs: 1", "max_epochs: 3"))
    proc = run([str(tmp_path / "run")], tmp_path, script="reproduce", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{experiment} was edited (" in proc.stderr and "trainer.max_epochs: 1 -> 3" in proc.stderr
    experiment.unlink()
    proc = run([str(tmp_path / "run")], tmp_path, script="reproduce", check=False)
    assert proc.returncode == 2 and f"{experiment} is gone" in proc.stderr
    assert len(run_dirs(tmp_path)) == 1  # nothing ran
