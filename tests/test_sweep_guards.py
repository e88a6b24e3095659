"""A grid sweep never lets two jobs write one directory, and a signal during its pre-launch check is
an interruption, not a config error: two commands on one sweep directory (the second is refused,
exit 3, before it writes anything), jobs whose ``hydra.sweep.subdir`` collides (refused before
launch, exit 2), SIGTERM while the check imports torch (exit 143, "stopped ... before any job
started"). Real ``train.py`` processes; the right outcome is the assertion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from expkit.launching.sweep import read_record, read_summary
from tests.conftest import ROOT, run_cli

ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
FAST = ["debug=limit", "data=wine", "logger=none", "hydra.verbose=false"]
LAUNCHERS = {"local": ["launcher=local"], "parallel": ["launcher=parallel", "hydra.launcher.n_jobs=2"]}


def start(args: list[str], cwd: Path, name: str) -> subprocess.Popen:
    with open(cwd / f"{name}.out", "w") as out, open(cwd / f"{name}.err", "w") as err:
        return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=ENV, stdout=out,
                                stderr=err, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_second_grid_command_on_a_running_sweep_directory_is_refused(tmp_path, launcher):
    """The user's case: the same command started twice together. One runs the sweep, the other is
    refused (exit 3) before it writes anything of a job; then the directory is free again."""
    args = ["-m", "seed=60,61", *FAST, "trainer.max_epochs=6", *LAUNCHERS[launcher], "hydra.sweep.dir=g_two"]
    procs = [start(args, tmp_path, name) for name in ("a", "b")]
    try:
        codes = [finish(proc) for proc in procs]
    finally:
        for proc in procs:
            finish(proc)
    errs = [(tmp_path / f"{name}.err").read_text() for name in ("a", "b")]
    assert sorted(codes) == [0, 3], errs
    ran, refused = (0, 1) if codes[0] == 0 else (1, 0)
    last = errs[refused].strip().splitlines()[-1]
    assert "g_two" in last and f"pid {procs[ran].pid}" in last and "hydra.sweep.dir" in last and "wait" in last, last
    records = [read_record(tmp_path / "g_two" / str(job)) for job in (0, 1)]
    # Every job ran once, launched by the command that ran; no checkpoint of a second training.
    assert len({r["launch"] for r in records}) == 1 and {r["status"] for r in records} == {"completed"}
    assert [r["status"] for r in read_summary(tmp_path / "g_two")] == ["completed", "completed"]
    for job in (0, 1):
        checkpoints = sorted(p.name for p in (tmp_path / "g_two" / str(job) / "checkpoints").iterdir())
        assert len(checkpoints) == 2 and "last.ckpt" in checkpoints, checkpoints  # the best and the last
    # Once it has ended, the directory is free: the same command runs (and finds both done).
    again = run_cli("train.py", *args, cwd=tmp_path, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "had already completed" in again.stdout + again.stderr


def test_a_grid_sweep_and_an_optuna_search_never_share_a_sweep_directory(tmp_path):
    """A grid command on a directory holding a search's trials is refused (it would take over the
    trials' directories and summary), and a search worker on a directory a grid command holds."""
    search = ["-m", "hparams_search=digits_optuna", "data=wine", "model=mlp", "trainer.max_epochs=1", "logger=none",
              "hydra.sweeper.n_trials=1", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1"]
    run_cli("train.py", *search, "hydra.sweep.dir=mixed", cwd=tmp_path)
    summary = (tmp_path / "mixed" / "sweep_summary.csv").read_text()
    grid = run_cli("train.py", "-m", "seed=7,8", *FAST, "hydra.sweep.dir=mixed", cwd=tmp_path, check=False)
    assert grid.returncode == 3, grid.stderr[-3000:]
    last = grid.stderr.strip().splitlines()[-1]
    assert "mixed holds an Optuna search's trials" in last and "hydra.sweep.dir" in last, last
    assert (tmp_path / "mixed" / "sweep_summary.csv").read_text() == summary
    assert sorted(p.name for p in (tmp_path / "mixed").iterdir() if p.is_dir()) == ["0"]

    long = ["trainer.max_epochs=1000", "~callbacks.early_stopping"]  # still running when the worker starts
    running = start(["-m", "seed=60,61", *FAST, *long, "hydra.sweep.dir=held"], tmp_path, "grid")
    try:
        lock = tmp_path / "held" / ".sweep.lock"
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.2)
        worker = run_cli("train.py", *search, "hydra.sweep.dir=held", cwd=tmp_path, check=False)
        assert worker.returncode == 3, worker.stderr[-3000:]
        last = worker.stderr.strip().splitlines()[-1]
        assert f"held is in use by a grid sweep command (pid {running.pid}" in last, last
        assert not (tmp_path / "held" / "optuna.db").exists()
    finally:
        os.killpg(running.pid, signal.SIGKILL)
        running.wait()


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_jobs_sharing_a_directory_are_refused_before_launch(tmp_path, launcher):
    proc = run_cli("train.py", "-m", "hydra.sweep.subdir=same", "seed=9,10", *FAST, *LAUNCHERS[launcher],
                   "hydra.sweep.dir=collide", cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "jobs 0 (seed=9" in last and "1 (seed=10" in last and "${hydra.job.num}" in last, last
    assert not (tmp_path / "collide").exists()  # nothing of a job was created


def loads_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads /proc/<pid>/maps")
@pytest.mark.parametrize("delay", [0.0, 0.4, 1.0])
def test_sigterm_during_the_pre_launch_check_stops_the_sweep_and_is_no_config_error(tmp_path, delay):
    """The check's first job imports torch and Lightning: a signal then used to cut an import short
    (the handler itself imported Lightning), which the check reported as a config error (exit 2)."""
    proc = start(["-m", "seed=0,1,2", *FAST, *LAUNCHERS["parallel"], "hydra.sweep.dir=sig"], tmp_path, "sweep")
    try:
        deadline = time.monotonic() + 120
        while not loads_torch(proc.pid):  # the check has started (nothing imports torch before it)
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "sweep.err").read_text()[-3000:]
            time.sleep(0.02)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGTERM)
        code = finish(proc, timeout=120)
    finally:
        finish(proc)
    err = (tmp_path / "sweep.err").read_text()
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert "stopped by SIGTERM" in err.strip().splitlines()[-1], err[-3000:]
    assert "could not be validated" not in err and "importing it fails" not in err


def test_a_parallel_worker_killed_fails_its_job_and_the_others_resume(tmp_path):
    """kill -9 of the worker running job 1 (the out-of-memory killer does the same): Python's process
    pool then stops the other workers. Job 1 is recorded failed with why, job 0 saved its state and
    is recorded interrupted (running the command again resumes it); the command exits 1 naming job
    1 (it used to name job 0, and leave job 1 `running`)."""
    # Three jobs on two workers: job 2 waits in the pool's queue when the worker dies (a worker
    # then took it and the command hung, its result unread).
    args = ["-m", "seed=60,61,62", *FAST, "trainer.max_epochs=1000", "~callbacks.early_stopping",
            *LAUNCHERS["parallel"], "hydra.sweep.dir=k9", "hydra.launcher.stop_timeout_s=30"]
    proc = start(args, tmp_path, "sweep")
    sweep = tmp_path / "k9"
    try:
        deadline = time.monotonic() + 180
        while not all((sweep / job / "history.csv").is_file() for job in ("0", "1")):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "sweep.err").read_text()[-3000:]
            time.sleep(0.2)
        worker = json.loads((sweep / "1" / "run.json").read_text())["segments"][-1]["pid"]
        os.kill(worker, signal.SIGKILL)
        code = finish(proc, timeout=120)
    finally:
        finish(proc)
    err = (tmp_path / "sweep.err").read_text()
    assert code == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "1 of 2 jobs failed (1); job 1: its worker process died" in last, last
    assert read_record(sweep / "2") is None  # never started: the next run of the command runs it
    assert read_record(sweep / "0")["status"] == "interrupted" and (sweep / "0" / "checkpoints" / "last.ckpt").is_file()
    assert read_record(sweep / "1")["status"] == "failed"
    assert [(r["job"], r["status"]) for r in read_summary(sweep)] == [("0", "interrupted"), ("1", "failed")]
