"""A trial whose worker died (``kill -9`` here; a ``scancel``ed SLURM array the same way) stays
RUNNING in the study until a later worker fails it as stale (no heartbeat for
``hydra.sweeper.grace_period`` seconds). Its sweep record and row in ``sweep_summary.csv`` must then
say ``failed`` with the reason, as the study does, and the command that failed it exits by the
sweep rule: it launched no job and a trial of the sweep completed, so 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import yaml

from expkit.launching.sweep import read_record, read_summary
from tests.conftest import ROOT, run_cli
from tests.test_sweeps import TINY_SEARCH

# Heartbeats every second, stale after 2 s: the study fails a dead worker's trial within seconds.
SEARCH = [*TINY_SEARCH, "hydra.sweep.dir=sweep", "hydra.sweeper.heartbeat_interval=1",
          "hydra.sweeper.grace_period=2", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1"]
# The second command's trial trains until it is killed (one batch an epoch: light on the CPU).
ENDLESS = [*SEARCH, "hydra.sweeper.n_trials=2", "trainer.max_epochs=100000", "++trainer.limit_train_batches=1"]


def test_a_trial_failed_as_stale_is_failed_in_the_summary_too(tmp_path):
    run_cli("train.py", *SEARCH, "hydra.sweeper.n_trials=1", cwd=tmp_path)  # trial 0 completes
    sweep = tmp_path / "sweep"

    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    worker = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *ENDLESS], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (sweep / "1" / "metrics.json").exists() and not (sweep / "1" / "checkpoints").is_dir():
            assert worker.poll() is None and time.monotonic() < deadline, "trial 1 never started training"
            time.sleep(0.5)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and anything it started, mid-trial
        worker.wait()
    assert read_record(sweep / "1")["status"] == "running"

    time.sleep(3)  # past the grace period: the next worker finds trial 1 stale
    proc = run_cli("train.py", *ENDLESS, cwd=tmp_path, check=False)

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["trials"] == {"complete": 1, "pruned": 0, "fail": 1, "running": 0}
    rows = {row["trial"]: row for row in read_summary(sweep)}
    assert rows["0"]["status"] == "completed"
    assert rows["1"]["status"] == "failed", rows["1"]
    assert "stale: no heartbeat for 2 s" in rows["1"]["error"]
    record = read_record(sweep / "1")
    assert record["status"] == "failed" and record["error"] == rows["1"]["error"]
    assert "no heartbeat" in (sweep / "sweep_summary.md").read_text()
    # The README's rule: non-zero when a job this command launched failed, or no job of the sweep
    # completed. This command launched none (the study has its n_trials) and trial 0 completed: 0.
    # Trial 1's failure is the killed command's, which is where its exit status belonged.
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Trial 1 failed: stale: no heartbeat for 2 s" in proc.stdout + proc.stderr
