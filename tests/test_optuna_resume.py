"""An Optuna study agrees with its trials' records, whatever stopped the command that ran them.

- A trial stopped by a signal (SIGTERM to the sweeping process: recorded ``interrupted``, after it
  saved ``last.ckpt``) stays RUNNING in the study, and running the same command again resumes it
  first: same trial number, parameters and directory (from its ``last.ckpt``), then COMPLETE.
- A trial whose job completed but whose sweeping process died before it told the study (SIGTERM to
  a sweep on SLURM: the array runs on; ``kill -9`` here) is told COMPLETE with its recorded value
  by the next command, before any trial is failed as stale.
Real ``train.py`` processes and real signals; the right outcome is the assertion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from expkit.launching.sweep import read_record, read_summary
from tests.conftest import ROOT, run_cli
from tests.test_sweeps import TINY_SEARCH

ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
# Heartbeats every second, stale after 2 s; no pruning (one outcome to assert); one batch an epoch.
SEARCH = [*TINY_SEARCH, "hydra.sweep.dir=sweep", "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2",
          "hydra.sweeper.pruner=null", "~callbacks.early_stopping", "++trainer.limit_train_batches=1",
          "++trainer.limit_val_batches=1", "trainer.max_epochs=40"]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    with open(cwd / "out.txt", "w") as out:
        return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=ENV, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_until(condition, proc: subprocess.Popen, cwd: Path, what: str) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        assert proc.poll() is None and time.monotonic() < deadline, \
            f"{what} never happened ({proc.poll()}):\n{(cwd / 'out.txt').read_text()[-3000:]}"
        time.sleep(0.05)


def study_trials(cwd: Path) -> list:
    import optuna

    study = optuna.load_study(study_name="digits_optuna", storage=f"sqlite:///{cwd / 'sweep' / 'optuna.db'}")
    return study.get_trials(deepcopy=False)


def test_an_interrupted_trial_is_resumed_by_the_next_command(tmp_path):
    args = [*SEARCH, "hydra.sweeper.n_trials=2"]
    sweep = tmp_path / "sweep"
    proc = start(args, tmp_path)
    wait_until(lambda: (sweep / "0" / "history.csv").is_file(), proc, tmp_path, "trial 0 training")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, (tmp_path / "out.txt").read_text()[-3000:]
    assert read_record(sweep / "0")["status"] == "interrupted"
    assert (sweep / "0" / "checkpoints" / "last.ckpt").is_file()
    [trial] = study_trials(tmp_path)
    assert trial.state.name == "RUNNING"  # not failed, not finished: to be resumed
    params = trial.params

    time.sleep(3)  # past the grace period: resuming it must come before failing it as stale
    rerun = run_cli("train.py", *args, cwd=tmp_path, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trials = study_trials(tmp_path)
    assert [(t.number, t.state.name) for t in trials] == [(0, "COMPLETE"), (1, "COMPLETE")]
    assert trials[0].params == params
    assert "Resuming interrupted trial 0" in rerun.stdout + rerun.stderr
    assert f"Resuming from {sweep.resolve() / '0' / 'checkpoints' / 'last.ckpt'}" in rerun.stdout + rerun.stderr \
        or "Resuming from" in rerun.stdout + rerun.stderr
    records = {n: read_record(sweep / str(n)) for n in (0, 1)}
    assert records[0]["status"] == "completed" and records[0]["value"] == trials[0].value
    assert records[0]["finished"] <= records[1]["started"]  # resumed before a new trial was asked
    assert {row["trial"]: row["status"] for row in read_summary(sweep)} == {"0": "completed", "1": "completed"}
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["trials"] == {"complete": 2, "pruned": 0, "fail": 0, "running": 0}


def test_a_trial_that_completed_after_its_sweep_died_is_told_complete(tmp_path):
    # One batch of two trials run one after the other (launcher=local): the study hears of trial 0
    # only when the batch ends. The sweep dies (kill -9) while trial 1 trains: trial 0 completed.
    args = [*SEARCH, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"]
    sweep = tmp_path / "sweep"
    proc = start(args, tmp_path)
    wait_until(lambda: (sweep / "1" / "history.csv").is_file(), proc, tmp_path, "trial 1 training")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    record = read_record(sweep / "0")
    assert record["status"] == "completed"
    assert [t.state.name for t in study_trials(tmp_path)] == ["RUNNING", "RUNNING"]

    time.sleep(3)  # past the grace period: trial 1 (its process died) is failed as stale, trial 0 is not
    rerun = run_cli("train.py", *args, cwd=tmp_path, check=False)
    trials = study_trials(tmp_path)
    assert [(t.state.name, t.value) for t in trials] == [("COMPLETE", record["value"]), ("FAIL", None)]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["trials"] == {"complete": 1, "pruned": 0, "fail": 1, "running": 0}
    assert results["best_trial"] == 0
    rows = {row["trial"]: row["status"] for row in read_summary(sweep)}
    assert rows == {"0": "completed", "1": "failed"}
    # It launched nothing, and a trial of the sweep completed: 0 (the README's rule).
    assert rerun.returncode == 0, rerun.stderr[-3000:]


def test_a_trial_the_signal_kept_from_starting_runs_first_next_time(tmp_path):
    # One batch of two trials run one after the other (launcher=local): SIGTERM while trial 0 trains
    # stops the sweep before trial 1 starts. Trial 1 is not lost, nor failed: it runs next time, in
    # its own directory, with its parameters, and the search still runs n_trials trials.
    args = [*SEARCH, "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2"]
    sweep = tmp_path / "sweep"
    proc = start(args, tmp_path)
    wait_until(lambda: (sweep / "0" / "history.csv").is_file(), proc, tmp_path, "trial 0 training")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, (tmp_path / "out.txt").read_text()[-3000:]
    assert "Trial 1 did not start before the sweep stopped" in (tmp_path / "out.txt").read_text()
    assert read_record(sweep / "1") is None
    before = study_trials(tmp_path)
    assert [(t.number, t.state.name) for t in before] == [(0, "RUNNING"), (1, "FAIL"), (2, "WAITING")]
    assert before[2].user_attrs["resumes"] == 1

    rerun = run_cli("train.py", *args, cwd=tmp_path, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trials = study_trials(tmp_path)
    assert [(t.number, t.state.name) for t in trials] == [(0, "COMPLETE"), (1, "FAIL"), (2, "COMPLETE"),
                                                          (3, "COMPLETE")]
    assert trials[2].params == before[1].params  # trial 1's point, run at last
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "3"]
    assert read_record(sweep / "1")["status"] == "completed"
    assert {row["trial"]: row["status"] for row in read_summary(sweep)} == {"0": "completed", "1": "completed",
                                                                           "3": "completed"}
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["trials"] == {"complete": 3, "pruned": 0, "fail": 0, "running": 0}  # n_trials, none failed
