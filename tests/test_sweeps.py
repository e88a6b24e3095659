"""Sweeps as a user runs them: grid multiruns with a summary table, failures, fail-fast and
re-launching; the parallel launcher; refusing in-process DDP in a multirun; Optuna on sqlite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from expkit.errors import ConfigError
from expkit.launching.sweep import check_multirun_ddp, read_record, read_summary
from expkit.tracking.wandb_log import find_run_logs, read_run_log
from hydra_plugins.expkit_launchers.parallel_launcher import worker_slots
from tests.conftest import compose_config, run_cli

FAST = ["debug=limit", "data=wine"]  # a few batches of the wine table: seconds per job


def sweep_dirs(cwd: Path, task: str = "debug") -> list[Path]:
    return sorted(p for p in (cwd / "logs" / task / "multiruns").iterdir() if p.is_dir())


def test_grid_sweep_records_failures_goes_on_and_relaunch_skips_completed(tmp_path):
    args = ["-m", "seed=0,1", "model.optimizer.lr=0.003,-1", *FAST]
    first = run_cli("train.py", *args, cwd=tmp_path, check=False)
    assert first.returncode != 0, "a sweep with failed jobs must not exit 0"
    (sweep,) = sweep_dirs(tmp_path)
    rows = read_summary(sweep)
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["status"] for r in rows] == ["completed", "failed", "completed", "failed"]
    for row in rows:
        assert "seed=" in row["overrides"] and "model.optimizer.lr=" in row["overrides"]
        if row["status"] == "failed":
            assert row["error"] == "ValueError: Invalid learning rate: -1" and row["val/loss"] == ""
        else:  # the value train's main() returned: the monitored metric of the job's run
            metrics = json.loads((sweep / row["job"] / "metrics.json").read_text())
            assert float(row["val/loss"]) == pytest.approx(metrics["val/loss"])
    assert (sweep / "sweep_summary.md").read_text().count("| completed |") == 2

    # The same command again: completed configs are skipped, the failed ones run again.
    run_cli("train.py", *args, cwd=tmp_path, check=False)
    second = next(p for p in sweep_dirs(tmp_path) if p != sweep)
    again = read_summary(second)
    assert [r["status"] for r in again] == ["skipped", "failed", "skipped", "failed"]
    assert [r["val/loss"] for r in again if r["status"] == "skipped"] == [r["val/loss"] for r in rows if r["status"] == "completed"]
    assert str(sweep / "0") in again[0]["note"]
    assert not (second / "0" / "metrics.json").exists(), "a skipped job must not train"

    # Into the first sweep's own directory: its completed jobs stay as they were.
    finished = read_record(sweep / "0")["finished"]
    run_cli("train.py", *args, f"hydra.sweep.dir={sweep}", cwd=tmp_path, check=False)
    assert [r["status"] for r in read_summary(sweep)] == ["completed", "failed", "completed", "failed"]
    assert read_record(sweep / "0")["finished"] == finished


def test_fail_fast_cancels_the_jobs_after_the_first_failure(tmp_path):
    proc = run_cli("train.py", "-m", "model.optimizer.lr=-1,0.003,0.001", *FAST,
                   "hydra.callbacks.sweep.fail_fast=true", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    (sweep,) = sweep_dirs(tmp_path)
    rows = read_summary(sweep)
    assert [r["status"] for r in rows] == ["failed", "cancelled", "cancelled"]
    assert "fail_fast" in rows[1]["error"]
    assert not list(sweep.rglob("metrics.json"))


def test_parallel_launcher_gives_each_worker_its_own_gpu_and_one_wandb_run_per_job(tmp_path):
    # Two GPU ids are visible (the CPU build ignores them): each worker must keep its own.
    run_cli("train.py", "-m", "seed=0,1,2,3", "launcher=parallel", *FAST, "logger=wandb",
            cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": "0,1"})
    (sweep,) = sweep_dirs(tmp_path)
    records = [read_record(sweep / str(job)) for job in range(4)]
    assert all(r["status"] == "completed" for r in records)
    assert {r["cuda_visible_devices"] for r in records} == {"0", "1"}
    # Jobs that ran at the same time never shared a GPU.
    for a in records:
        for b in records:
            if a is not b and a["started"] < b["finished"] and b["started"] < a["finished"]:
                assert a["cuda_visible_devices"] != b["cuda_visible_devices"]
    logs = [read_run_log(p) for p in find_run_logs(sweep)]
    assert len(logs) == 4 and {r["run"]["group"] for r in logs} == {sweep.name}
    assert sorted(r["config"]["seed"] for r in logs) == [0, 1, 2, 3]


def test_worker_slots():
    assert worker_slots(None, ["0", "1", "2", "3"], 1, False) == ["0", "1", "2", "3"]
    assert worker_slots(None, ["4", "5", "6", "7"], 2, False) == ["4,5", "6,7"]
    assert worker_slots(3, ["0", "1"], 1, True) == ["0", "1", "0"]
    assert worker_slots(2, ["0", "1"], 0, False) == ["", ""]  # GPUs hidden from CPU jobs
    assert worker_slots(2, [], 1, False) == [None, None]  # no GPU: leave the variable alone
    with pytest.raises(ConfigError, match="share_gpus=true"):
        worker_slots(3, ["0", "1"], 1, False)


def test_multirun_with_in_process_ddp_is_refused_before_any_job(tmp_path):
    proc = run_cli("train.py", "-m", "seed=0,1", "trainer=ddp_cpu", "data=wine", "logger=none", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "launcher=slurm" in proc.stderr and "tasks_per_node=2" in proc.stderr
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").rglob("metrics.json"))


def test_ddp_check_allows_slurm_started_ranks():
    cfg = compose_config(["trainer=ddp_cpu"])
    slurm = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}
    check_multirun_ddp(cfg, {**slurm, "tasks_per_node": 2})  # SLURM starts both ranks
    with pytest.raises(ConfigError, match="tasks_per_node=2"):
        check_multirun_ddp(cfg, {**slurm, "tasks_per_node": 1})
    check_multirun_ddp(compose_config(["trainer=ddp_cpu", "trainer.devices=1"]), {})
    check_multirun_ddp(compose_config([]), {})


def test_optuna_sqlite_study_fails_resumes_and_prunes(tmp_path):
    import optuna

    base = ["-m", "hparams_search=digits_optuna", "debug=limit", "model=mlp", "trainer.max_epochs=3"]
    # 1) one trial that fails: recorded as failed, the sweep itself ends normally.
    run_cli("train.py", *base, "model.optimizer.lr=-1.0", "hydra.sweeper.n_trials=1", cwd=tmp_path)
    sweep = tmp_path / "logs" / "debug" / "multiruns" / "digits_optuna"
    # 2) the same search again with 2 trials in all: resumes the study, runs one more.
    run_cli("train.py", *base, "hydra.sweeper.n_trials=2", cwd=tmp_path)
    # 3) a pruner that prunes at the first report: the Lightning callback reports each epoch.
    run_cli("train.py", *base, "hydra.sweeper.n_trials=3",
            "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner", "~hydra.sweeper.pruner.n_startup_trials",
            "hydra.sweeper.pruner.n_warmup_steps=0", "+hydra.sweeper.pruner.upper=0.0", cwd=tmp_path)

    study = optuna.load_study(study_name="digits_optuna", storage=f"sqlite:///{sweep / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "COMPLETE", "PRUNED"]
    assert study.trials[0].user_attrs["error"].startswith("ValueError: Invalid learning rate")
    assert set(study.trials[1].params) == {"model.optimizer.lr", "model.net.hidden_dims"}
    assert study.trials[2].intermediate_values.keys() == {0}  # reported epoch 0, then pruned
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1", "2"]
    assert [r["status"] for r in read_summary(sweep)] == ["failed", "completed", "pruned"]

    results = (sweep / "optimization_results.yaml").read_text()
    assert f"best_value: {study.best_value}" in results and "best_trial: 1" in results
    best_dir = Path(study.best_trial.user_attrs["job_dir"])
    assert json.loads((best_dir / "metrics.json").read_text())["val/loss"] == pytest.approx(study.best_value)
