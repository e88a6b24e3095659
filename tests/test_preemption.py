"""SLURM preemption on the real one-node cluster (.ci/services.sh): a job of a `launcher=slurm`
sweep is signalled as preempted, submitit checkpoints and requeues it, and the requeued job
resumes in the same run directory and W&B run, ending where the uninterrupted run ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from expkit.tracking.record import RUN_RECORD_FILE
from tests.conftest import ROOT, run_cli, run_dirs
from tests.services import require_slurm

TRAIN = ["trainer=cpu", "seed=0", "data=digits", "data.batch_size=16", "trainer.max_epochs=5",
         "callbacks.early_stopping.patience=100", "logger=wandb"]


@pytest.mark.slow
def test_preempted_slurm_job_requeues_and_resumes_in_the_same_run(tmp_path):
    require_slurm()
    reference_cwd, sweep_cwd = tmp_path / "reference", tmp_path / "sweep"
    reference_cwd.mkdir(), sweep_cwd.mkdir()
    run_cli("train.py", *TRAIN, cwd=reference_cwd)
    (reference,) = run_dirs(reference_cwd)

    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    launcher = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", *TRAIN, "launcher=slurm", "hydra.launcher.timeout_min=30",
         "hydra.launcher.cpus_per_task=1"],
        cwd=sweep_cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        job_dir, record = None, None
        deadline = time.time() + 300
        while time.time() < deadline and launcher.poll() is None:
            histories = list(sweep_cwd.glob("logs/train/multiruns/*/0/history.csv"))
            if histories and len(histories[0].read_text().splitlines()) >= 3:  # 2 epochs checkpointed
                job_dir = histories[0].parent
                record = json.loads((job_dir / RUN_RECORD_FILE).read_text())
                break
            time.sleep(0.1)
        assert job_dir is not None, "the SLURM job did not get through 2 epochs"
        job_id = record["segments"][-1]["slurm"]["slurm_job_id"]
        # What SLURM sends before preemption or the time limit: submitit checkpoints and requeues.
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        # SLURM holds a requeued job for ~2 minutes (BeginTime); release it at once to save time.
        deadline = time.time() + 120
        while time.time() < deadline:
            state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout.strip()
            if state == "PENDING":
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
                break
            time.sleep(0.5)
        output, _ = launcher.communicate(timeout=600)
        assert launcher.returncode == 0, output[-4000:]
    finally:
        if launcher.poll() is None:
            launcher.kill()

    record = json.loads((job_dir / RUN_RECORD_FILE).read_text())
    assert record["status"] == "completed"
    first, *later = record["segments"]
    assert first["status"] == "interrupted" and later, "the job must have been requeued"
    assert {s["slurm"]["slurm_job_id"] for s in record["segments"]} == {job_id}
    assert later[-1]["slurm"].get("slurm_restart_count") not in (None, "0")
    assert {s["wandb"]["id"] for s in record["segments"]} == {record["wandb"]["id"]}
    assert json.loads((job_dir / "metrics.json").read_text()) == json.loads((reference / "metrics.json").read_text())
