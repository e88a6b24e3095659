"""Sweeps on real services started by .ci/services.sh: a SLURM job array through launcher=slurm,
and two Optuna workers sharing one study in PostgreSQL."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import pytest

from expkit.launching.sweep import read_record, read_summary
from expkit.tracking.wandb_log import find_run_logs, read_run_log
from tests.conftest import ROOT, run_cli
from tests.services import require_postgres, require_slurm


def test_slurm_sweep_runs_each_job_as_an_array_task_with_its_run_dir_and_wandb_run(tmp_path):
    require_slurm()
    run_cli("train.py", "-m", "seed=0,1", "launcher=slurm", "debug=limit", "data=wine", "logger=wandb",
            "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1", cwd=tmp_path)
    (sweep,) = (tmp_path / "logs" / "debug" / "multiruns").iterdir()
    assert [r["status"] for r in read_summary(sweep)] == ["completed", "completed"]
    job_ids = [read_record(sweep / str(job))["job_id"] for job in (0, 1)]
    array = {re.fullmatch(r"(\d+)_(\d)", job_id).group(1) for job_id in job_ids}
    assert len(array) == 1, f"one job array expected, got SLURM jobs {job_ids}"
    for job in (0, 1):
        assert (sweep / str(job) / "metrics.json").is_file()
        (log_file,) = find_run_logs(sweep / str(job))
        record = read_run_log(log_file)
        assert record["run"]["group"] == sweep.name and record["exit_code"] == 0
        assert record["config"]["seed"] == job


def test_two_optuna_workers_share_one_postgresql_study(tmp_path):
    import optuna

    url = require_postgres()
    study_name = f"expkit_test_{uuid.uuid4().hex[:8]}"
    args = ["-m", "hparams_search=digits_optuna", "debug=limit", "model=mlp", f"hydra.sweeper.storage='{url}'",
            f"hydra.sweeper.study_name={study_name}", "hydra.sweeper.n_trials=4"]
    workers = [
        subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, f"hydra.sweep.dir={tmp_path / f'worker{i}'}"],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    try:
        errors = [w.communicate(timeout=600)[1] for w in workers]
        assert all(w.returncode == 0 for w in workers), "\n".join(e[-3000:] for e in errors)
        study = optuna.load_study(study_name=study_name, storage=url)
        # Each worker stops asking once the study has 4 trials (one more at most if both ask at once).
        assert 4 <= len(study.trials) <= 5
        states = {t.state.name for t in study.trials}
        assert "COMPLETE" in states and states <= {"COMPLETE", "PRUNED"}  # the median pruner may stop one
        ran = [{int(r["trial"]) for r in read_summary(tmp_path / f"worker{i}")} for i in range(2)]
        assert all(ran), f"both workers must run trials of the shared study, got {ran}"
        assert not ran[0] & ran[1] and ran[0] | ran[1] == {t.number for t in study.trials}
        for i in range(2):
            assert "best_value" in (tmp_path / f"worker{i}" / "optimization_results.yaml").read_text()
            assert "expkit:***@" in (tmp_path / f"worker{i}" / "optimization_results.yaml").read_text()
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
    require_slurm()
    run_cli("train.py", "-m", "seed=0", "trainer=ddp_cpu", "trainer.max_epochs=2", "data=wine", "logger=wandb",
            "launcher=slurm", "hydra.launcher.tasks_per_node=2", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.timeout_min=10", cwd=tmp_path)
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    assert [r["status"] for r in read_summary(sweep)] == ["completed"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["0"]
    assert len(find_run_logs(sweep)) == 1
    assert len(list((sweep / "0" / "checkpoints").glob("last*.ckpt"))) == 1
