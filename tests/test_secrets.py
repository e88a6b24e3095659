"""Secrets never reach disk: several planted secrets (an override, a nested value, a URL credential,
an environment variable) are looked for in every byte of every file of a run, a sweep, an Optuna
search, an eval, a registry entry and a DVC pipeline run, and on the console. None may be found.
The environment variable stays a ``${oc.env:...}`` reference in every record."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from expkit.launching.sweep import read_record
from expkit.secrets import MASK, is_secret_key, mask, mask_text
from tests.conftest import ROOT
from tests.services import require_postgres
from tests.test_dvc import fresh_clone  # noqa: F401  (the fixture)

SECRETS = {"override": "hunter2-override", "nested": "nested-tok-4242", "url": "pw-in-url-777", "env": "env-key-31337"}
PLANTED = [f"+db_password={SECRETS['override']}", f"+svc.creds.token={SECRETS['nested']}",
           f"+db_url=postgresql://user:{SECRETS['url']}@db.example/x", "+service.api_key=${oc.env:MY_SERVICE_TOKEN}"]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "MY_SERVICE_TOKEN": SECRETS["env"],
       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # dvc's stages run `python`
TINY = ["data=wine", "trainer=cpu", "trainer.max_epochs=1"]
BATCHES = ["++trainer.limit_train_batches=4", "++trainer.limit_val_batches=2", "logger=none"]


def run(args: list[str], cwd: Path, script: str = "train.py") -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / script)] if script.endswith(".py") else [sys.executable, "-m", "expkit.cli", script]
    proc = subprocess.run([*command, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{script} {args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def console(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def leaks(root: Path, *outputs: str) -> list[str]:
    """Every (file or console, secret) where a secret's bytes appear."""
    found = []
    for path in (p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        found += [f"{path.relative_to(root)}: {name}" for name, value in SECRETS.items() if value.encode() in data]
    for i, text in enumerate(outputs):
        found += [f"console {i}: {name}" for name, value in SECRETS.items() if value in text]
    return found


def test_the_masking_rule():
    assert [k for k in ("db_password", "apiKey", "AWS_SECRET_ACCESS_KEY", "auth_token", "credentials", "tokenizer",
                        "max_tokens", "passes", "author") if is_secret_key(k)] == \
        ["db_password", "apiKey", "AWS_SECRET_ACCESS_KEY", "auth_token", "credentials"]
    assert mask_text("+db_password=x1 url=redis://u:p4ss@h:6379/0 lr=0.1") == "+db_password=*** url=redis://u:***@h:6379/0 lr=0.1"
    # Hydra's override_dirname: assignments inside a value, and its escaped URL colons
    assert mask_text("override_dirname: +db_password=x1,+u=postgresql\\://a\\:p4ss@h/x,lr=0.1") == \
        "override_dirname: +db_password=***,+u=postgresql\\://a\\:***@h/x,lr=0.1"
    assert mask({"a": {"token": "t", "key": "${oc.env:T}"}, "password": "${oc.env:P}"}) == \
        {"a": {"token": "***", "key": "${oc.env:T}"}, "password": "${oc.env:P}"}


@pytest.mark.slow
def test_no_secret_in_any_file_of_a_run_sweep_search_eval_registry_or_pipeline(tmp_path):
    outputs = []
    outputs.append(run([*TINY, *PLANTED, "logger=[wandb,csv,tensorboard]", "hydra.run.dir=logs/run"], tmp_path).stdout)
    record = (tmp_path / "logs" / "run" / "run.json").read_text()
    assert "${oc.env:MY_SERVICE_TOKEN}" in record  # the documented way: a reference, never its value
    outputs.append(run(["-m", *TINY, *PLANTED, "logger=wandb", "seed=0,1", "hydra.sweep.dir=logs/sweep"], tmp_path).stdout)
    outputs.append(run(["-m", *TINY, *PLANTED, "logger=none", "hydra/sweeper=expkit_optuna", "hydra.sweeper.n_trials=2",
                        "hydra.sweeper.study_name=secret", "hydra.sweep.dir=logs/optuna",
                        "model.optimizer.lr=interval(1e-3,1e-2)"], tmp_path).stdout)
    checkpoint = next((tmp_path / "logs" / "run" / "checkpoints").glob("epoch_*.ckpt"))
    outputs.append(run([f"ckpt_path={checkpoint}", *PLANTED, "hydra.run.dir=logs/eval"], tmp_path, script="eval.py").stdout)
    outputs.append(run([str(tmp_path / "logs" / "run"), "--name", "wine", "--registry", str(tmp_path / "registry")],
                       tmp_path, script="register").stdout)
    assert leaks(tmp_path, *outputs) == []


@pytest.mark.slow
def test_no_secret_in_a_dvc_pipeline_run(fresh_clone, tmp_path):  # noqa: F811
    """The documented way: params.yaml keeps the reference (python -m expkit.pipeline.params); the
    train stage resolves it when it runs and writes it nowhere."""
    from tests.test_dvc import copy_repo

    repo = copy_repo(fresh_clone, tmp_path / "repo")
    for command in ([sys.executable, "-m", "expkit.pipeline.params", "+service.api_key=${oc.env:MY_SERVICE_TOKEN}",
                     f"+db_password={SECRETS['override']}", "trainer.max_epochs=1"], [sys.executable, "-m", "dvc", "repro"]):
        proc = subprocess.run(command, cwd=repo, env=ENV, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "${oc.env:MY_SERVICE_TOKEN}" in (repo / "params.yaml").read_text()
    assert leaks(repo / "outputs", proc.stdout, proc.stderr) == []


def test_no_secret_in_the_files_of_a_skipped_job(tmp_path):
    """A job whose config completed in another sweep of the same multiruns/ folder is skipped: the
    files Hydra wrote for it (.hydra/, the sweep's multirun.yaml) are masked all the same."""
    args = ["-m", *TINY, *BATCHES, *PLANTED, "seed=0"]
    first = run([*args, "hydra.sweep.dir=logs/multiruns/first"], tmp_path)
    second = run([*args, "hydra.sweep.dir=logs/multiruns/second"], tmp_path)
    skipped = tmp_path / "logs" / "multiruns" / "second" / "0"
    assert read_record(skipped)["status"] == "skipped"
    assert "+db_password=***" in (skipped / ".hydra" / "overrides.yaml").read_text()
    assert leaks(tmp_path, console(first), console(second)) == []


def test_no_storage_password_in_the_files_of_a_skipped_trial(tmp_path):
    """An Optuna search on PostgreSQL whose second trial draws the config the first completed: the
    skipped trial's files hold the storage URL masked, like the trial that ran."""
    import uuid

    import optuna

    url = require_postgres()
    study_name = f"expkit_test_{uuid.uuid4().hex[:8]}"
    try:
        proc = run(["-m", *TINY, *BATCHES, *PLANTED, "hydra/sweeper=expkit_optuna", f"hydra.sweeper.storage='{url}'",
                    f"hydra.sweeper.study_name={study_name}", "hydra.sweeper.n_trials=2", "hydra.sweep.dir=logs/optuna",
                    "model.optimizer.lr=choice(0.001)"], tmp_path)
    finally:
        try:
            optuna.delete_study(study_name=study_name, storage=url)
        except KeyError:
            pass
    sweep = tmp_path / "logs" / "optuna"
    assert [read_record(sweep / str(n))["status"] for n in (0, 1)] == ["completed", "skipped"]
    password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert f":{password}@" in url and f":{MASK}@" in (sweep / "1" / ".hydra" / "hydra.yaml").read_text()
    in_url = [f":{password}@".encode(), f"\\:{password}@".encode()]  # as written, and as Hydra escapes it
    files = [p for p in tmp_path.rglob("*") if p.is_file() and any(s in p.read_bytes() for s in in_url)]
    assert files == [] and f":{password}@" not in console(proc)
    assert leaks(tmp_path, console(proc)) == []


def test_no_secret_in_lightnings_srun_hint_on_the_console(tmp_path):
    """Where ``srun`` exists but the run was not started with it (a SLURM login or batch node),
    Lightning warns and quotes the command line: its secrets are masked. A fake ``srun`` on PATH
    makes any machine such a node."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    # A short script name: Lightning quotes the first 64 characters of the command line only.
    (tmp_path / "t.py").write_text("from expkit.tasks.train import main\n\nmain()\n")
    env = {k: v for k, v in ENV.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    proc = subprocess.run([sys.executable, "t.py", *PLANTED, *TINY, *BATCHES, "hydra.run.dir=run"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"like so: srun {Path(sys.executable).name} t.py +db_password={MASK} " in proc.stderr
    assert leaks(tmp_path, console(proc)) == []
