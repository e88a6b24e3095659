"""A signal stops a sweep as it stops a single run (``expkit.launching.signals``): SIGTERM, SIGINT or
SIGHUP to the sweeping process alone (a scheduler, ``kill``) or Ctrl-C to its whole process group
stops the running jobs after they saved their state (recorded ``interrupted``), starts no other job,
leaves no process behind and exits 128 + N; running the command again resumes the sweep. Workers of
``launcher=parallel`` never outlive the sweeping process, even after ``kill -9``. Real ``train.py``
processes and real signals; the right outcome is the assertion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from expkit.launching.sweep import read_summary
from tests.conftest import ROOT

ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
# Three jobs, signalled mid-training: long ones (LONG) unless the sweep is then run to its end.
SWEEP = ["-m", "seed=0,1,2", "data=wine", "trainer=cpu", "data.batch_size=4", "~callbacks.early_stopping",
         "logger=none", "hydra.sweep.dir=sweep"]
LONG, SHORT = "trainer.max_epochs=300", "trainer.max_epochs=20"
PARALLEL = ["launcher=parallel", "hydra.launcher.n_jobs=2"]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """The sweep in a session of its own (every process it starts is in it); output to files, as a
    surviving worker would keep a pipe open."""
    with open(cwd / "out.txt", "w") as out, open(cwd / "err.txt", "w") as err:
        return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=ENV, stdout=out,
                                stderr=err, start_new_session=True)


def session(proc: subprocess.Popen) -> list[str]:
    """The processes still alive in the sweep's session (zombies are dead)."""
    ps = subprocess.run(["ps", "-eo", "pid=,sid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in ps.splitlines()
            if int(line.split()[1]) == proc.pid and not line.split()[2].startswith("Z")]


def wait_for_training(cwd: Path, jobs: list[int], proc: subprocess.Popen) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if all((cwd / "sweep" / str(job) / "history.csv").is_file() for job in jobs):
            return time.sleep(0.5)  # into the next epoch
        time.sleep(0.1)
    raise AssertionError(f"jobs {jobs} did not start training: {proc.poll()}\n{(cwd / 'err.txt').read_text()[-3000:]}")


def ended(proc: subprocess.Popen, cwd: Path, timeout: float = 120) -> tuple[int, list[str]]:
    """The sweep's exit code and, a moment later, what is left of its session (then ended)."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    time.sleep(2)
    left = session(proc)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a failing test leaves nothing running either
    except ProcessLookupError:
        pass
    proc.wait()
    return code, left


def run_status(job_dir: Path) -> str:
    return json.loads((job_dir / "run.json").read_text())["status"]


SLOW = pytest.mark.slow  # the same mechanism as the default cases, another signal or recipient


@pytest.mark.parametrize(("name", "group"), [("SIGTERM", False), ("SIGINT", False),
                                             pytest.param("SIGHUP", False, marks=SLOW),
                                             pytest.param("SIGINT", True, marks=SLOW)],
                         ids=["term", "int", "hup", "ctrl-c-to-the-group"])
def test_a_signal_stops_a_parallel_sweep_and_a_rerun_resumes_it(name, group, tmp_path):
    number = getattr(signal, name)
    epochs = SHORT if name == "SIGTERM" else LONG  # SIGTERM: then resumed to the end
    proc = start([*SWEEP, epochs, *PARALLEL], tmp_path)
    wait_for_training(tmp_path, [0, 1], proc)
    if group:
        os.killpg(proc.pid, number)
    else:
        proc.send_signal(number)
    code, left = ended(proc, tmp_path)
    err = (tmp_path / "err.txt").read_text()
    assert code == 128 + number, err[-3000:]
    assert left == [], left  # no worker outlives the sweep
    assert f"stopped by {name} (2 interrupted); run the command again to resume it" in err
    assert "Traceback" not in err
    sweep = tmp_path / "sweep"
    assert [(r["job"], r["status"]) for r in read_summary(sweep)] == [("0", "interrupted"), ("1", "interrupted")]
    for job in (0, 1):  # each saved its state and recorded its end, as a single run does
        assert run_status(sweep / str(job)) == "interrupted"
        assert (sweep / str(job) / "checkpoints" / "last.ckpt").is_file()
    assert not (sweep / "2").exists()  # the job no worker had started never starts
    if name != "SIGTERM":
        return

    proc = start([*SWEEP, epochs, *PARALLEL], tmp_path)
    code, left = ended(proc, tmp_path, timeout=600)
    assert code == 0, (tmp_path / "err.txt").read_text()[-3000:]
    assert [r["status"] for r in read_summary(sweep)] == ["completed"] * 3
    segments = json.loads((sweep / "0" / "run.json").read_text())["segments"]
    assert [s["status"] for s in segments] == ["interrupted", "completed"]  # resumed in its own directory


@pytest.mark.parametrize("name", ["SIGTERM", pytest.param("SIGINT", marks=SLOW)])
def test_a_signal_stops_a_sequential_sweep_after_the_running_job(name, tmp_path):
    number = getattr(signal, name)
    proc = start([*SWEEP, LONG], tmp_path)
    wait_for_training(tmp_path, [0], proc)
    proc.send_signal(number)
    code, left = ended(proc, tmp_path)
    err = (tmp_path / "err.txt").read_text()
    assert code == 128 + number and left == [], err[-3000:]
    assert f"stopped by {name} (1 interrupted)" in err and "Traceback" not in err
    sweep = tmp_path / "sweep"
    assert [(r["job"], r["status"]) for r in read_summary(sweep)] == [("0", "interrupted")]
    assert run_status(sweep / "0") == "interrupted" and (sweep / "0" / "checkpoints" / "last.ckpt").is_file()
    assert not (sweep / "1").exists()  # the next jobs never start


def test_workers_never_outlive_a_killed_sweep(tmp_path):
    proc = start([*SWEEP, LONG, *PARALLEL], tmp_path)
    wait_for_training(tmp_path, [0, 1], proc)
    proc.kill()  # kill -9: the sweeping process can pass nothing on
    code, left = ended(proc, tmp_path, timeout=30)
    assert code == -signal.SIGKILL
    assert left == [], left
    sweep = tmp_path / "sweep"
    for job in (0, 1):  # the kernel's SIGTERM stopped each job (a resumable state is on disk)
        assert run_status(sweep / str(job)) != "completed"
        assert (sweep / str(job) / "checkpoints" / "last.ckpt").is_file()
    assert not (sweep / "2").exists()  # no worker took another job
