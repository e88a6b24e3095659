"""Sweeps on real services started by .ci/services.sh: a SLURM job array through launcher=slurm,
an Optuna search whose trials run as SLURM jobs, and three Optuna workers sharing one study in
PostgreSQL and one sweep directory (one of them launching its trials on SLURM)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid

import pytest

from expkit.launching.sweep import read_record, read_summary
from expkit.tracking.wandb_log import find_run_logs, read_run_log
from tests.conftest import run_cli
from tests.services import require_postgres, require_slurm
from tests.test_sweeps import (
    NAN_LR,
    TINY_SEARCH,
    check_one_directory_per_trial,
    start_workers,
    summary_is_consistent,
    wait_for,
)

SLURM = ["launcher=slurm", "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1"]


def require_slurm_node(wait_s: float = 120) -> None:
    """require_slurm, once the node is free: a job whose result submitit already returned (the
    previous test's) keeps the node "allocated" while its process exits."""
    deadline = time.monotonic() + wait_s
    while shutil.which("sinfo") and time.monotonic() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.split()
        if not state or any(s.startswith(("idle", "mixed")) for s in state):
            break
        time.sleep(2)
    require_slurm()


def slurm_array(job_dir) -> str:
    """The SLURM job (array) a sweep job ran in: submitit's job id is <array>_<task>, or <job> for
    a batch of one."""
    return re.fullmatch(r"(\d+)(_\d+)?", read_record(job_dir)["job_id"]).group(1)


def test_slurm_sweep_runs_each_job_as_an_array_task_with_its_run_dir_and_wandb_run(tmp_path):
    require_slurm_node()
    run_cli("train.py", "-m", "seed=0,1", "launcher=slurm", "debug=limit", "data=wine", "logger=wandb",
            "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1", cwd=tmp_path)
    (sweep,) = (tmp_path / "logs" / "debug" / "multiruns").iterdir()
    assert [r["status"] for r in read_summary(sweep)] == ["completed", "completed"]
    assert len({slurm_array(sweep / str(job)) for job in (0, 1)}) == 1, "one job array expected"
    for job in (0, 1):
        assert (sweep / str(job) / "metrics.json").is_file()
        (log_file,) = find_run_logs(sweep / str(job))
        record = read_run_log(log_file)
        assert record["run"]["group"] == sweep.name and record["exit_code"] == 0
        assert record["config"]["seed"] == job


@pytest.mark.slow
def test_optuna_trials_run_as_slurm_jobs_a_batch_per_round_and_resume(tmp_path):
    """hparams_search with launcher=slurm: each round asks n_jobs=2 trials and submits them as one
    job array; the same command with more n_trials resumes the study; a failed trial makes the
    command exit 1 (the exit rule holds on SLURM: the jobs' records carry the command's mark)."""
    import optuna

    require_slurm_node()
    run_cli("train.py", *TINY_SEARCH, *SLURM, "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=4", cwd=tmp_path)
    sweep = tmp_path / "logs" / "train" / "multiruns" / "digits_optuna"
    # Resumed, one more trial, pinned to a learning rate that fails while training (NaN loss).
    failed = run_cli("train.py", *TINY_SEARCH, *SLURM, "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=5",
                     f"model.optimizer.lr={NAN_LR}", cwd=tmp_path, check=False)
    assert failed.returncode == 1 and "1 of 1 jobs failed (4); job 4: NonFiniteLoss" in failed.stderr

    study = optuna.load_study(study_name="digits_optuna", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert {t.state.name for t in study.trials[:4]} <= {"COMPLETE", "PRUNED"} and study.trials[4].state.name == "FAIL"
    check_one_directory_per_trial(sweep, study)
    arrays = [slurm_array(sweep / str(n)) for n in range(5)]
    assert arrays[0] == arrays[1] != arrays[2] == arrays[3] != arrays[4], f"one array per round: {arrays}"
    assert "best_value" in (sweep / "optimization_results.yaml").read_text()


@pytest.mark.slow
def test_three_optuna_workers_share_one_postgresql_study_and_one_sweep_directory(tmp_path):
    """The same command started three times against one PostgreSQL study and one sweep directory
    (as on three nodes of a cluster with a shared file system); the third worker runs its trials as
    SLURM jobs. One directory and one summary row per trial, named by its number."""
    import optuna

    url = require_postgres()
    require_slurm_node()
    study_name = f"expkit_test_{uuid.uuid4().hex[:8]}"
    sweep = tmp_path / "sweep"
    args = [*TINY_SEARCH, f"hydra.sweeper.storage='{url}'", f"hydra.sweeper.study_name={study_name}",
            "hydra.sweeper.n_trials=6", f"hydra.sweep.dir={sweep}"]
    workers = [*start_workers(2, args, tmp_path), *start_workers(1, [*args, *SLURM], tmp_path)]
    try:
        ended = wait_for(workers, while_running=lambda: summary_is_consistent(sweep))
        assert [code for code, _ in ended] == [0, 0, 0], "\n".join(out[-3000:] for _, out in ended)
        study = optuna.load_study(study_name=study_name, storage=url)
        assert 6 <= len(study.trials) <= 8 and {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
        check_one_directory_per_trial(sweep, study)
        records = [read_record(sweep / str(t.number)) for t in study.trials]
        assert len({r["launch"] for r in records}) == 3, "every worker ran trials of the shared study"
        on_slurm = {p.name for p in (sweep / ".submitit").iterdir()}  # submitit's folder per SLURM job
        assert {r["job_id"] for r in records} & on_slurm, "the SLURM worker's trials ran as SLURM jobs"
        results = (sweep / "optimization_results.yaml").read_text()
        assert "best_value" in results and "expkit:***@" in results  # the password is masked
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        try:
            optuna.delete_study(study_name=study_name, storage=url)
        except KeyError:
            pass


@pytest.mark.slow
def test_ddp_in_a_multirun_through_slurm_tasks_gives_one_run_per_job(tmp_path):
    """launcher=slurm with tasks_per_node = devices: SLURM starts both ranks, nothing re-runs the sweep."""
    require_slurm_node()
    run_cli("train.py", "-m", "seed=0", "trainer=ddp_cpu", "trainer.max_epochs=2", "data=wine", "logger=wandb",
            "launcher=slurm", "hydra.launcher.tasks_per_node=2", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.timeout_min=10", cwd=tmp_path)
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    assert [r["status"] for r in read_summary(sweep)] == ["completed"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["0"]
    assert len(find_run_logs(sweep)) == 1
    assert len(list((sweep / "0" / "checkpoints").glob("last*.ckpt"))) == 1
