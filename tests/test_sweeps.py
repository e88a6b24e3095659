"""Sweeps as a user runs them: grid multiruns with a summary table, failures, fail-fast and
re-launching; the parallel launcher; refusing in-process DDP in a multirun; Optuna on sqlite,
resumed and with three workers on one sweep directory; typed ``expkit runs --where`` queries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from expkit.errors import ConfigError
from expkit.launching.sweep import check_multirun_ddp, read_record, read_summary
from expkit.tracking.wandb_log import find_run_logs, read_run_log
from hydra_plugins.expkit_launchers.parallel_launcher import worker_slots
from tests.conftest import ROOT, compose_config, run_cli

FAST = ["debug=limit", "data=wine"]  # a few batches of the wine table: seconds per job
# A learning rate the config accepts (a positive number) that fails the job while it trains: the
# loss overflows to NaN (debug=limit's anomaly detection names the op; otherwise NonFiniteLoss).
NAN_LR = "1e30"
NAN_ERROR = "RuntimeError: Function 'LogSoftmaxBackward0' returned nan values"
# An Optuna search at its smallest: the MLP (CNN needs images) on the wine table, one epoch.
TINY_SEARCH = ["-m", "hparams_search=digits_optuna", "data=wine", "model=mlp", "trainer.max_epochs=1",
               "logger=none", "trainer=cpu"]


def start_workers(n: int, args: list[str], cwd: Path) -> list[subprocess.Popen]:
    """``n`` copies of one ``train.py`` command started together, as on n nodes of a cluster."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return [subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]


def wait_for(workers: list[subprocess.Popen], while_running=None, timeout: float = 900) -> list[tuple[int, str]]:
    """Each worker's exit code and output; ``while_running()`` is called every 0.5 s until all end."""
    deadline = time.monotonic() + timeout
    try:
        while any(w.poll() is None for w in workers):
            assert time.monotonic() < deadline, "the workers did not finish"
            if while_running is not None:
                while_running()
            time.sleep(0.5)
        return [(w.returncode, w.stdout.read() + w.stderr.read()) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()


def summary_is_consistent(sweep: Path) -> int:
    """Check one snapshot of the summary of a live Optuna sweep: one row per trial directory, each
    row's job, trial and directory the same number. Returns the number of rows."""
    try:
        rows = read_summary(sweep)
    except FileNotFoundError:
        return 0
    jobs = [r["job"] for r in rows]
    assert len(jobs) == len(set(jobs)), f"two rows for one job: {jobs}"
    for row in rows:
        assert row["job"] == row["trial"] == row["job_dir"], row
        assert (sweep / row["job_dir"]).is_dir()
    return len(rows)


def check_one_directory_per_trial(sweep: Path, study) -> None:
    """Every trial of ``study`` ran in ``<sweep>/<trial number>``, and every file there is that
    trial's: its overrides, resolved config, run record, checkpoint config and metrics; the
    summary has exactly one row per trial, with the trial's state."""
    from expkit.checkpoints import load_checkpoint
    from expkit.tracking.record import RunRecord

    trials = {t.number: t for t in study.trials}
    assert sorted(int(p.name) for p in sweep.iterdir() if p.name.isdigit()) == sorted(trials)
    rows = {int(r["job"]): r for r in read_summary(sweep)}
    assert sorted(rows) == sorted(trials), "one summary row per trial"
    state = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed"}
    for number, trial in trials.items():
        job = sweep / str(number)
        assert rows[number]["status"] == state[trial.state.name] and rows[number]["trial"] == str(number)
        assert read_record(job)["trial"] == number
        assert Path(trial.user_attrs["job_dir"]) == job.resolve()
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        assert all(f"- {o}\n" in overrides for o in trial.user_attrs["overrides"]), (number, overrides)
        lr = float(next(o for o in trial.user_attrs["overrides"] if o.startswith("model.optimizer.lr=")).split("=")[1])
        assert RunRecord.load(job).data["config"]["model"]["optimizer"]["lr"] == pytest.approx(lr)
        if trial.state.name == "COMPLETE":
            assert json.loads((job / "metrics.json").read_text())["val/loss"] == pytest.approx(trial.value)
            assert float(rows[number]["val/loss"]) == pytest.approx(trial.value)
        for ckpt in (job / "checkpoints").glob("*.ckpt"):
            assert load_checkpoint(ckpt)["expkit"]["config"]["model"]["optimizer"]["lr"] == pytest.approx(lr)


def sweep_dirs(cwd: Path, task: str = "debug") -> list[Path]:
    return sorted(p for p in (cwd / "logs" / task / "multiruns").iterdir() if p.is_dir())


def test_grid_sweep_records_failures_goes_on_and_relaunch_skips_completed(tmp_path):
    args = ["-m", "seed=0,1", f"model.optimizer.lr=0.003,{NAN_LR}", *FAST]
    first = run_cli("train.py", *args, cwd=tmp_path, check=False)
    assert first.returncode == 1, "a sweep with failed jobs must not exit 0"
    (sweep,) = sweep_dirs(tmp_path)
    # One line that names the failed jobs and the first error, not Hydra's re-raised traceback.
    assert "Traceback (most recent call last)" not in first.stderr
    assert f"error: sweep {sweep.relative_to(tmp_path)}: 2 of 4 jobs failed (1, 3); job 1: {NAN_ERROR}" in first.stderr
    rows = read_summary(sweep)
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["status"] for r in rows] == ["completed", "failed", "completed", "failed"]
    for row in rows:
        assert "seed=" in row["overrides"] and "model.optimizer.lr=" in row["overrides"]
        if row["status"] == "failed":
            assert row["error"].startswith(NAN_ERROR) and row["val/loss"] == ""
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
    proc = run_cli("train.py", "-m", f"model.optimizer.lr={NAN_LR},0.003,0.001", *FAST,
                   "hydra.callbacks.sweep.fail_fast=true", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and f"3 of 3 jobs failed (0, 1, 2); job 0: {NAN_ERROR}" in proc.stderr
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


# Runs train.py's main counting this process's job compositions (Hydra's load_sweep_config).
COUNT_SWEEP_COMPOSITIONS = """
import os, sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from expkit.tasks.train import main
calls, pid = [], os.getpid()
original = ConfigLoaderImpl.load_sweep_config
def counted(self, *args, **kwargs):
    if os.getpid() == pid:
        calls.append(1)
    return original(self, *args, **kwargs)
ConfigLoaderImpl.load_sweep_config = counted
sys.argv[0] = {train!r}
try:
    main()
finally:
    print("COMPOSED", len(calls))
"""


def test_a_parallel_sweep_runs_the_job_configs_its_pre_launch_check_composed(tmp_path):
    """Each job is composed by the pre-launch check (job 0 here, the others in the workers), once
    more by Hydra's sweeper (its own check), and not again by the launcher."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, "-c", COUNT_SWEEP_COMPOSITIONS.format(train=str(ROOT / "train.py")), "-m",
                           "seed=0,1,2", "launcher=parallel", "hydra.launcher.n_jobs=2", *FAST, "logger=none"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split("COMPOSED")[-1]) == 1 + 3
    (sweep,) = sweep_dirs(tmp_path)
    assert [r["status"] for r in read_summary(sweep)] == ["completed"] * 3
    for job in range(3):  # the configs Hydra would have composed: this job's overrides, number and directory
        hydra = (sweep / str(job) / ".hydra" / "hydra.yaml").read_text()
        assert f"    - seed={job}\n" in hydra and f"    num: {job}\n" in hydra and f"output_dir: {sweep / str(job)}\n" in hydra


# A bare Hydra 1.3 app on expkit's conf/: its task reads (resolves) its config, nothing more.
BARE_APP = """
import hydra, expkit.resolvers
from omegaconf import OmegaConf
hydra.main(version_base="1.3", config_path={conf!r}, config_name="train")(lambda cfg: OmegaConf.to_container(cfg, resolve=True))()
"""


@pytest.mark.parametrize("launcher", ["local", "parallel"])
def test_job_directories_named_by_launch_time_values_are_the_ones_bare_hydra_makes(launcher, tmp_path):
    """``hydra.sweep.subdir`` may name what the launcher sets only when it launches a job
    (``${hydra.job.num}``, Hydra's own default) and ``hydra.sweep.dir`` may interpolate: the
    pre-launch check accepts them, and each job runs in the directory a bare Hydra app gives it,
    with its own overrides and number (under launcher=parallel, from the configs the check composed)."""
    from expkit.paths import config_dir

    sweep = ["-m", "seed=1,2", "hydra.sweep.subdir=j${hydra.job.num}_${seed}", "hydra.sweep.dir=sweeps/${task_name}_${now:%Y}",
             *FAST, "logger=none"]
    (tmp_path / "bare").mkdir()
    (tmp_path / "expkit").mkdir()
    bare = subprocess.run([sys.executable, "-c", BARE_APP.format(conf=str(config_dir())), *sweep,
                           "~hydra.callbacks.validate_sweep", "~hydra.callbacks.sweep"],
                          cwd=tmp_path / "bare", capture_output=True, text=True, timeout=300)
    assert bare.returncode == 0, bare.stderr[-3000:]
    run_cli("train.py", *sweep, f"launcher={launcher}", cwd=tmp_path / "expkit")

    def job_dirs(root: Path) -> list[str]:
        return sorted(str(p.parent.parent.relative_to(root)) for p in root.glob("sweeps/*/*/.hydra/hydra.yaml"))

    year = time.strftime("%Y")
    # debug=limit names the task debug
    assert job_dirs(tmp_path / "bare") == [f"sweeps/debug_{year}/j0_1", f"sweeps/debug_{year}/j1_2"]
    assert job_dirs(tmp_path / "expkit") == job_dirs(tmp_path / "bare")
    sweep_dir = tmp_path / "expkit" / "sweeps" / f"debug_{year}"
    assert [r["status"] for r in read_summary(sweep_dir)] == ["completed"] * 2
    for num, seed in enumerate((1, 2)):
        job = sweep_dir / f"j{num}_{seed}"
        hydra = (job / ".hydra" / "hydra.yaml").read_text()
        assert f"    - seed={seed}\n" in hydra and f"    num: {num}\n" in hydra and f"output_dir: {job}\n" in hydra
        assert f"seed: {seed}\n" in (job / "config.yaml").read_text()


def test_a_job_config_composed_before_launch_is_the_one_hydra_composes_at_launch():
    """What the pre-launch check hands the parallel launcher (pickled) equals Hydra's own
    load_sweep_config at launch, down to the sweep directory's resolved time and id."""
    import pickle

    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from expkit.config.compose import compose_job
    from expkit.config.validate import validate_sweep
    from expkit.paths import config_dir

    hydra = Hydra.create_main_hydra2(task_name="train", config_search_path=create_config_search_path(f"file://{config_dir()}"))
    try:  # with a job directory that only the launcher's job number resolves (unresolved until launch)
        master = hydra.compose_config("train", ["seed=0,1", "launcher=parallel", "logger=none", "data=wine",
                                                "hydra.sweep.subdir=j${hydra.job.num}"], run_mode=RunMode.MULTIRUN)
        job = ["seed=1", "launcher=parallel", "logger=none", "data=wine"]
        before = pickle.loads(pickle.dumps(compose_job(master, job)))
        composed: dict = {}
        validate_sweep([job], master=master, composed=composed)
        checked = pickle.loads(composed[tuple(job)])
        at_launch = GlobalHydra.instance().config_loader().load_sweep_config(master, job)
        assert OmegaConf.to_yaml(before) == OmegaConf.to_yaml(checked) == OmegaConf.to_yaml(at_launch)
        assert before.hydra.sweep.dir == at_launch.hydra.sweep.dir == master.hydra.sweep.dir
        assert before.seed == 1 and list(before.hydra.overrides.task) == job
    finally:
        GlobalHydra.instance().clear()


def test_only_forked_cpu_workers_validate_a_sweep(monkeypatch):
    """Spawned (GPU) workers have neither this process's Hydra nor its imports: the pre-launch
    check validates the jobs itself."""
    from hydra_plugins.expkit_launchers.parallel_launcher import validation_workers

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert validation_workers({"n_jobs": None, "gpus_per_job": 1, "share_gpus": False, "threads_per_job": None}, 4) is None


def test_cpu_workers_are_forked_gpu_workers_spawned():
    import sys

    import torch  # noqa: F401  (the sweeping process has it imported by the pre-launch check)

    from hydra_plugins.expkit_launchers.parallel_launcher import start_method

    assert start_method([None, None]) == ("fork" if sys.platform == "linux" else "spawn")
    assert start_method(["0", "1"]) == "spawn"  # torch's cached device count must not reach them
    assert start_method(["", ""]) == "spawn"  # GPUs hidden: still spawned, CUDA_VISIBLE_DEVICES read fresh


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
    # 1) one trial that fails: recorded as failed, the search goes on to its end and exits 1.
    failed = run_cli("train.py", *base, f"model.optimizer.lr={NAN_LR}", "hydra.sweeper.n_trials=1", cwd=tmp_path, check=False)
    assert failed.returncode == 1 and f"1 of 1 jobs failed (0); job 0: {NAN_ERROR}" in failed.stderr
    sweep = tmp_path / "logs" / "debug" / "multiruns" / "digits_optuna"
    # 2) the same search again with 2 trials in all: resumes the study, runs one more (exit 0: it completed).
    run_cli("train.py", *base, "hydra.sweeper.n_trials=2", cwd=tmp_path)
    # 3) a pruner that prunes at the first report: the Lightning callback reports each epoch. A pruned
    # trial is no failure, and the sweep has a completed one: exit 0.
    run_cli("train.py", *base, "hydra.sweeper.n_trials=3",
            "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner", "~hydra.sweeper.pruner.n_startup_trials",
            "hydra.sweeper.pruner.n_warmup_steps=0", "+hydra.sweeper.pruner.upper=0.0", cwd=tmp_path)

    study = optuna.load_study(study_name="digits_optuna", storage=f"sqlite:///{sweep / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "COMPLETE", "PRUNED"]
    assert study.trials[0].user_attrs["error"].startswith(NAN_ERROR)
    assert set(study.trials[1].params) == {"model.optimizer.lr", "model.net.hidden_dims"}
    assert study.trials[2].intermediate_values.keys() == {0}  # reported epoch 0, then pruned
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1", "2"]
    assert [r["status"] for r in read_summary(sweep)] == ["failed", "completed", "pruned"]
    # The run records agree: a pruned trial is no failed run (expkit runs --status pruned lists it).
    from expkit.tracking.record import RunRecord

    assert [RunRecord.load(sweep / n).data["status"] for n in ("0", "1", "2")] == ["failed", "completed", "pruned"]
    listed = subprocess.run([sys.executable, "-m", "expkit.cli", "runs", str(sweep), "--status", "pruned"],
                            capture_output=True, text=True, check=True).stdout
    assert "1 run(s) under" in listed

    results = (sweep / "optimization_results.yaml").read_text()
    assert f"best_value: {study.best_value}" in results and "best_trial: 1" in results
    best_dir = Path(study.best_trial.user_attrs["job_dir"])
    assert json.loads((best_dir / "metrics.json").read_text())["val/loss"] == pytest.approx(study.best_value)


@pytest.mark.slow
def test_three_optuna_workers_share_one_sqlite_sweep_directory(tmp_path):
    """The same command started three times (as on three nodes): one study in the sweep directory's
    optuna.db, one directory and one summary row per trial, named by the trial's number, no file
    written by two trials, and a summary that is consistent while the workers run."""
    import optuna

    workers = start_workers(3, [*TINY_SEARCH, "hydra.sweeper.n_trials=6"], tmp_path)
    sweep = tmp_path / "logs" / "train" / "multiruns" / "digits_optuna"
    seen = []
    ended = wait_for(workers, while_running=lambda: seen.append(summary_is_consistent(sweep)))
    assert [code for code, _ in ended] == [0, 0, 0], "\n".join(out[-3000:] for _, out in ended)
    assert max(seen) >= 1, "the summary must be written while the trials run"

    study = optuna.load_study(study_name="digits_optuna", storage=f"sqlite:///{sweep / 'optuna.db'}")
    # Each worker counts the study's trials before each ask: 6, or one more per worker that asked
    # in the same instant as another.
    assert 6 <= len(study.trials) <= 8 and {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
    check_one_directory_per_trial(sweep, study)
    # Every worker ran trials of the shared study (none waited for the others to finish).
    launches = {read_record(sweep / str(t.number))["launch"] for t in study.trials}
    assert len(launches) == 3, launches
    # Seeded sampler, seed + trial number: workers starting together do not repeat each other's draws.
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == len(params)


def test_runs_where_and_compare_compare_numbers_booleans_and_null_by_value(tmp_path):
    """``expkit runs --where`` and ``expkit compare``: 2e-3, 0.002 and 2.0e-3 are the same number;
    true/false and null are values, not text (0 is not false, 1 is not true)."""
    from expkit.tracking.browse import config_differences, same_value, typed

    assert typed("2e-3") == typed("0.002") == typed("2.0e-3") == 0.002
    assert typed("true") is True and typed("null") is None and typed("mlp") == "mlp" and typed("[1,2]") == [1, 2]
    assert same_value(0.002, typed("2e-3")) and same_value(2, typed("2.0")) and same_value([64, 32], typed("[64,32]"))
    assert not same_value(0, typed("false")) and not same_value(1, typed("true")) and not same_value(0, typed("null"))
    assert same_value(False, typed("false")) and same_value(None, typed("null")) and not same_value(False, typed("null"))
    a = {"model": {"lr": 0.002, "dims": [64, 32]}, "test": True, "ckpt": None, "seed": 0}
    b = {"model": {"lr": 2e-3, "dims": [64, 32]}, "test": 1, "ckpt": None, "seed": False, "extra": 1}
    assert config_differences(a, b) == [("extra", "<absent>", 1), ("seed", 0, False), ("test", True, 1)]

    run_cli("train.py", "-m", "model.optimizer.lr=2e-3,0.01", "seed=0", *FAST, "logger=none", cwd=tmp_path)
    expkit = [sys.executable, "-m", "expkit.cli", "runs", "logs"]

    def listed(*where: str) -> int:
        out = subprocess.run([*expkit, *(a for w in where for a in ("--where", w))], cwd=tmp_path,
                             capture_output=True, text=True, check=True).stdout
        return int(out.split(" run(s) under")[0].split()[-1])

    for spelling in ("2e-3", "0.002", "2.0e-3", "0.0020"):
        assert listed(f"model.optimizer.lr={spelling}") == 1, spelling
    assert listed("model.optimizer.lr=1e-2") == 1 and listed("model.optimizer.lr=0.003") == 0
    assert listed("test=true") == 2 and listed("test=True") == 2 and listed("test=false") == 0
    assert listed("ckpt_path=null") == 2 and listed("ckpt_path=~") == 2
    assert listed("seed=0") == 2 and listed("seed=0.0") == 2 and listed("seed=false") == 0  # 0 is not false
    assert listed("status=completed", "model.optimizer.lr=2e-3") == 1

    first, second = sorted(p.parent for p in (tmp_path / "logs").rglob("run.json") if "wandb" not in p.parts)
    compared = subprocess.run([sys.executable, "-m", "expkit.cli", "compare", str(first), str(second)], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout
    config_rows = compared.split("Metrics")[0]
    assert "model.optimizer.lr" in config_rows and "seed" not in config_rows and "test " not in config_rows

    # Runs named by condition, matched by value like `runs --where`: the same two runs, any spelling.
    def compare(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "expkit.cli", "compare", *args], cwd=tmp_path,
                              capture_output=True, text=True)

    from expkit.tracking.record import RunRecord

    low, high = sorted((first, second), key=lambda d: RunRecord.load(d).data["config"]["model"]["optimizer"]["lr"])
    by_condition = compare("model.optimizer.lr=2.0e-3", "model.optimizer.lr=1e-2", "--where", "status=completed")
    assert by_condition.returncode == 0, by_condition.stderr
    assert by_condition.stdout == compare(str(low), str(high)).stdout
    missing = compare("model.optimizer.lr=0.003", str(high))
    assert missing.returncode == 2 and "no run under logs has model.optimizer.lr=0.003" in missing.stderr
    assert compare("model.optimizer.lr=0.002", str(high), "--where", "test=false").returncode == 2
    assert compare("no_such_dir", str(high)).returncode == 2
    # KEY=VALUE is a condition even where a directory has that name; ./KEY=VALUE is the directory.
    shutil.copytree(high, tmp_path / "model.optimizer.lr=2e-3")
    assert compare("model.optimizer.lr=2e-3", str(high)).stdout == compare(str(low), str(high)).stdout
    assert "(identical configs)" in compare("./model.optimizer.lr=2e-3", str(high)).stdout
