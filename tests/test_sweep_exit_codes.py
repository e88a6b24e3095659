"""One exit-status rule for every sweeper and launcher (``expkit.launching.sweep.exit_status``):
non-zero when a job failed or none completed, pruned trials are no failures; and a study storage
that cannot be used stops the search with one line and exit code 3."""

from __future__ import annotations

import pytest

from expkit.launching.sweep import exit_status, read_summary
from tests.conftest import run_cli
from tests.test_sweeps import FAST, NAN_ERROR, NAN_LR, TINY_SEARCH, sweep_dirs


def job(number: int, status: str, error: str | None = None) -> dict:
    return {"job": number, "status": status, "error": error}


@pytest.mark.parametrize(
    ("launched", "earlier", "code", "message"),
    [
        ([job(0, "completed"), job(1, "completed")], [], 0, "2 jobs: 2 completed"),
        ([job(0, "completed"), job(1, "pruned")], [], 0, "2 jobs: 1 completed, 1 pruned"),
        ([job(0, "skipped"), job(1, "completed")], [], 0, "2 jobs: 1 skipped, 1 completed"),
        ([job(0, "completed"), job(1, "failed", "ValueError: bad")], [], 1, "1 of 2 jobs failed (1); job 1: ValueError: bad"),
        ([job(0, "failed", "A: x"), job(1, "cancelled", "not run")], [], 1, "2 of 2 jobs failed (0, 1); job 0: A: x"),
        ([job(0, "running")], [], 1, "1 of 1 jobs failed (0); job 0: it did not finish (its process died)"),
        ([job(0, "pruned"), job(1, "pruned")], [], 1, "no job completed (2 pruned)"),
        # A resumed search: its new trial was pruned, an earlier one completed.
        ([job(3, "pruned")], [job(0, "completed")], 0, "1 jobs: 1 pruned"),
        # A study that already has its n_trials: nothing to run.
        ([], [job(0, "completed")], 0, "0 jobs: none to run"),
        ([], [job(0, "failed", "E: e")], 1, "no job completed (none ran)"),
        # An earlier command's failure is that command's: this one ran fine.
        ([job(1, "completed")], [job(0, "failed", "E: e")], 0, "1 jobs: 1 completed"),
        # A job stopped by a signal (here a worker signalled alone) stops the command's success:
        # 128 + N, not a failure; a re-run resumes it.
        ([job(0, "completed"), {**job(1, "interrupted"), "signal": 15}], [], 143,
         "stopped by SIGTERM (1 completed, 1 interrupted); run the command again to resume it"),
        # ... unless another job failed (the command itself took no signal): the failure is named.
        ([{**job(0, "interrupted"), "signal": 15}, job(1, "failed", "E: died")], [], 1,
         "1 of 2 jobs failed (1); job 1: E: died"),
    ],
)
def test_exit_status_rule(launched, earlier, code, message):
    assert exit_status(launched, [*earlier, *launched]) == (code, message)


def test_an_interrupted_command_exits_128_plus_the_signal_even_after_a_failure():
    """Ctrl-C after a job failed: the sweep was interrupted (a re-run resumes it), not judged."""
    launched = [job(0, "failed", "E: e"), {**job(1, "interrupted"), "signal": 2}]
    assert exit_status(launched, launched, interrupted=2) == (
        130, "stopped by SIGINT (1 failed, 1 interrupted); run the command again to resume it")
    assert exit_status([], [], interrupted=1) == (129, "stopped by SIGHUP (no job started); run the command again to resume it")


def test_long_errors_are_cut_in_the_exit_line():
    code, message = exit_status([job(0, "failed", "E: " + "x" * 400)], [])
    assert code == 1 and len(message) < 220 and message.endswith("...")


def test_parallel_grid_with_a_failed_job_exits_1_with_one_line(tmp_path):
    proc = run_cli("train.py", "-m", f"model.optimizer.lr=0.003,{NAN_LR}", *FAST, "logger=none", "launcher=parallel",
                   "hydra.launcher.n_jobs=2", cwd=tmp_path, check=False)
    (sweep,) = sweep_dirs(tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"1 of 2 jobs failed (1); job 1: {NAN_ERROR}" in proc.stderr
    assert "Traceback (most recent call last)" not in proc.stderr
    assert [r["status"] for r in read_summary(sweep)] == ["completed", "failed"]


def test_optuna_search_where_no_trial_completes_exits_1(tmp_path):
    """Every trial's loss becomes NaN: the search says so and exits 1 (it used to exit 0)."""
    proc = run_cli("train.py", *TINY_SEARCH, f"model.optimizer.lr={NAN_LR}", "hydra.sweeper.n_trials=2",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "No trial completed" in proc.stdout
    assert "2 of 2 jobs failed (0, 1); job 0: NonFiniteLoss: the training loss became non-finite" in proc.stderr
    sweep = tmp_path / "logs" / "train" / "multiruns" / "digits_optuna"
    assert [r["status"] for r in read_summary(sweep)] == ["failed", "failed"]


def error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback (most recent call last)" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def test_corrupt_study_storage_is_one_line_exit_3(tmp_path):
    sweep = tmp_path / "logs" / "train" / "multiruns" / "digits_optuna"
    sweep.mkdir(parents=True)
    (sweep / "optuna.db").write_bytes(b"not a database, overwritten by something else" * 100)
    proc = run_cli("train.py", *TINY_SEARCH, cwd=tmp_path, check=False)
    assert proc.returncode == 3
    line = error_line(proc)
    assert f"{sweep / 'optuna.db'} is not a readable Optuna study (file is not a database)" in line
    assert "restore it from a copy" in line and "hydra.sweep.dir" in line
    assert not [p for p in sweep.iterdir() if p.name.isdigit()], "no trial may start"


@pytest.mark.parametrize("kind", ["directory", "another database"])
def test_a_study_file_optuna_would_write_into_or_fail_on_is_refused_untouched_exit_3(tmp_path, kind):
    """optuna.db a directory, or a SQLite database of something else: one line naming it, exit 3,
    before Optuna writes its tables into it (or fails without naming it)."""
    import sqlite3

    sweep = tmp_path / "logs" / "train" / "multiruns" / "digits_optuna"
    sweep.mkdir(parents=True)
    study = sweep / "optuna.db"
    if kind == "directory":
        study.mkdir()
    else:
        with sqlite3.connect(study) as db:
            db.execute("CREATE TABLE measurements (t REAL, value REAL)")
            db.execute("INSERT INTO measurements VALUES (1.0, 2.0)")
        before = study.read_bytes()
    proc = run_cli("train.py", *TINY_SEARCH, cwd=tmp_path, check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    line = error_line(proc)
    assert f"{study} is not a readable Optuna study" in line and "hydra.sweep.dir" in line
    assert ("not a file" if kind == "directory" else "tables: measurements") in line
    assert "retrying" not in proc.stderr + proc.stdout  # named at once, not after Optuna's retries
    if kind != "directory":
        assert study.read_bytes() == before
    assert not [p for p in sweep.iterdir() if p.name.isdigit()], "no trial may start"


@pytest.mark.parametrize("storage", ["empty", "another study's", "deleted"])
def test_trial_directories_of_another_study_are_refused_exit_3(tmp_path, storage):
    """optuna.db replaced by an empty one, by a copy of another study's, or deleted, beside earlier
    trials' directories: a new trial 0 would run beside the old trial 0's checkpoints and metrics;
    the search refuses instead, and leaves the file as it was (no study, no tables written into it)."""
    import optuna

    sweep = tmp_path / "logs" / "train" / "multiruns" / "digits_optuna"
    for number in ("0", "1"):
        (sweep / number / "checkpoints").mkdir(parents=True)
        (sweep / number / "checkpoints" / "last.ckpt").write_bytes(b"an earlier trial's")
    db = sweep / "optuna.db"
    if storage == "empty":
        db.write_bytes(b"")  # sqlite reads an empty file as an empty database
    elif storage == "another study's":
        other = optuna.create_study(study_name="other", storage=f"sqlite:///{db}")
        other.enqueue_trial({"x": 1.0})
    before = db.read_bytes() if db.exists() else None
    proc = run_cli("train.py", *TINY_SEARCH, cwd=tmp_path, check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    line = error_line(proc)
    assert "logs/train/multiruns/digits_optuna holds trial directories (0, 1) that study 'digits_optuna'" in line
    assert "does not have (it has 0 trials)" in line and "Restore the storage, or use a new hydra.sweep.dir" in line
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert (sweep / "0" / "checkpoints" / "last.ckpt").read_bytes() == b"an earlier trial's"
    assert (db.read_bytes() if db.exists() else None) == before


def test_a_copy_of_another_studys_storage_with_the_same_name_is_refused_untouched(tmp_path):
    """Two searches of the same name in two directories; the second's optuna.db copied over the
    first's: as many trials, so no directory is unknown to it, but its trials are not the ones
    recorded there. The search refuses (exit 3) and leaves the file as it is."""
    import shutil

    run_cli("train.py", *TINY_SEARCH, "hydra.sweeper.n_trials=2", "hydra.sweep.dir=a", cwd=tmp_path)
    run_cli("train.py", *TINY_SEARCH, "hydra.sweeper.n_trials=2", "seed=5", "hydra.sweep.dir=b", cwd=tmp_path)
    shutil.copy(tmp_path / "b" / "optuna.db", tmp_path / "a" / "optuna.db")
    before = (tmp_path / "a" / "optuna.db").read_bytes()
    proc = run_cli("train.py", *TINY_SEARCH, "hydra.sweeper.n_trials=3", "hydra.sweep.dir=a", cwd=tmp_path, check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    line = error_line(proc)
    assert "a/0 holds a job of another study: its overrides lack seed=5" in line, line
    assert "Restore the storage, or use a new hydra.sweep.dir" in line
    assert (tmp_path / "a" / "optuna.db").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if p.is_dir()) == ["0", "1"]
    # The same command on its own storage resumes as before.
    again = run_cli("train.py", *TINY_SEARCH, "hydra.sweeper.n_trials=2", "seed=5", "hydra.sweep.dir=b", cwd=tmp_path,
                    check=False)
    assert again.returncode == 0, again.stderr[-2000:]


@pytest.mark.parametrize("driver", ["pg8000", "nosuchdriver"])
def test_a_storage_url_whose_driver_is_missing_is_a_config_error(tmp_path, driver):
    """A URL naming a database driver that is not installed (or does not exist): one line naming the
    fix, exit 2 (it used to say only "the command line does not run: Failed to import DB access module")."""
    import importlib.util

    if importlib.util.find_spec(driver) is not None:
        pytest.skip(f"{driver} is installed here")
    proc = run_cli("train.py", *TINY_SEARCH, f"hydra.sweeper.storage='postgresql+{driver}://u:secret@127.0.0.1:9/db'",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = error_line(proc)
    assert f"hydra.sweeper.storage=postgresql+{driver}://u:***@127.0.0.1:9/db: SQLAlchemy has no driver" in line, line
    assert "postgresql+psycopg2://" in line and "secret" not in proc.stderr + proc.stdout


def test_a_sqlite_storage_in_a_missing_directory_is_one_line_at_once(tmp_path):
    proc = run_cli("train.py", *TINY_SEARCH, f"hydra.sweeper.storage=sqlite:///{tmp_path}/no/such/dir/x.db",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"the directory {tmp_path}/no/such/dir does not exist" in error_line(proc)
    assert "retrying" not in proc.stderr + proc.stdout and not (tmp_path / "no").exists()


def test_unreachable_study_server_is_one_line_exit_3(tmp_path):
    proc = run_cli("train.py", *TINY_SEARCH, "hydra.sweeper.storage='postgresql+psycopg2://u:secret@127.0.0.1:9/none'",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 3
    line = error_line(proc)
    assert "hydra.sweeper.storage=postgresql+psycopg2://u:***@127.0.0.1:9/none is not reachable" in line
    assert "secret" not in proc.stderr + proc.stdout
