"""A multirun's bookkeeping: one record per job, a summary table, skipping done jobs, failing fast.

Every job of a sweep (any launcher, any sweeper) writes ``<job dir>/sweep_job.json`` when it starts
and when it ends; ``<sweep dir>/sweep_summary.csv`` and ``sweep_summary.md`` are rebuilt from those
records (under a file lock) each time a job finishes, so the table is current while the sweep runs:

    job  status     val/loss  overrides              duration_s  error
    0    completed  0.0712    model=mlp seed=0       11.2
    1    failed               model=cnn data=wine    2.1         IncompatibleModelData: ...

Hydra calls :class:`SweepRecorder` around each job (``hydra.callbacks.sweep`` in conf/hydra);
:func:`before_job` runs inside the task (``run_job``) before anything is built. Re-launching a
sweep skips every job whose composed config already completed in a sweep beside it (same
``multiruns/`` folder), reusing its metrics; failed, interrupted and new jobs run. With
``hydra.callbacks.sweep.fail_fast=true`` the first failure cancels the jobs that have not started.
A signal (SIGTERM, Ctrl-C, SIGHUP) stops the sweep: its running jobs are recorded ``interrupted``,
no other job starts (``expkit.launching.signals``).

Several commands may share one sweep directory (Optuna workers on one or many machines, SLURM jobs
on a shared file system): the table has one row per job directory, every record and table is
written whole (a temporary file, then ``os.replace``) and the table is rebuilt under a file lock.
When the command ends, :func:`exit_status` decides its exit code from the records of the jobs it
launched (:func:`run_multirun`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from expkit.errors import ConfigError, ExpkitError, Interrupted
from expkit.launching.signals import SWEEP_SIGNALS, SweepInterrupted

log = logging.getLogger("expkit")

RECORD_FILE = "sweep_job.json"
SUMMARY_CSV = "sweep_summary.csv"
SUMMARY_MD = "sweep_summary.md"
LOCK_FILE = ".sweep.lock"  # held by the grid sweep command running in the directory (lock_sweep_dir)
STOP_FILE = ".sweep_stopped"  # written by a failed job under fail_fast; cleared when a sweep starts
# Set by the Optuna sweeper in each trial's job: the trial's number and its id in the storage.
TRIAL_ENV = "EXPKIT_OPTUNA_TRIAL"
TRIAL_ID_ENV = "EXPKIT_OPTUNA_TRIAL_ID"
# Set by the sweeping process and inherited by every job (in-process, worker processes, SLURM jobs):
# which command launched a job, so that a command's exit status counts its own jobs only.
LAUNCH_ENV = "EXPKIT_SWEEP_LAUNCH"

# Statuses a job ends with. "skipped": completed earlier (see "source"); "cancelled": not run
# after a fail-fast failure; "pruned": stopped early by the Optuna pruner; "interrupted": stopped
# by a signal after saving its state (see "signal"), a re-run resumes it.
DONE = ("completed", "skipped")
# What makes a command exit non-zero: failed, cancelled, or still "running" once its launcher has
# returned (the job's process died before it could record its end).
NOT_DONE = ("failed", "cancelled", "running")


class SweepStopped(ExpkitError):
    """A job of a fail-fast sweep did not start because another job failed."""


def config_hash(cfg: DictConfig) -> str:
    """A short fingerprint of a composed job config (hydra's runtime node is never part of it)."""
    try:
        text = OmegaConf.to_yaml(cfg, resolve=True, sort_keys=True)
    except Exception:  # an unresolvable config fails in the task with a proper message
        text = OmegaConf.to_yaml(cfg, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rank_zero() -> bool:
    """Only one process of a distributed job (SLURM tasks, DDP ranks) keeps the records."""
    return all(int(os.environ.get(key, 0)) == 0 for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"))


def read_record(job_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(job_dir) / RECORD_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole: readers (other jobs, other machines on a shared file
    system) see the old file or the new one, never a mix of two writers."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_record(job_dir: Path, record: Mapping[str, Any]) -> None:
    """Write a job's record whole, its text fields (overrides, error) masked
    (:func:`expkit.secrets.mask_text`): the summary tables are built from records."""
    from expkit.secrets import mask_text

    masked = {k: mask_text(v) if isinstance(v, str) else v for k, v in record.items()}
    write_atomic(Path(job_dir) / RECORD_FILE, json.dumps(masked, indent=2, default=str) + "\n")


def sweep_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """The job records of one sweep, one per job directory, by job number (an Optuna trial's job
    number is its trial number)."""
    records = [r for p in Path(sweep_dir).glob(f"*/{RECORD_FILE}") if (r := read_record(p.parent))]
    return sorted(records, key=lambda r: (r.get("job", -1), str(r.get("job_dir"))))


def update_summary(sweep_dir: Path) -> Path:
    """Rewrite the sweep's summary table (CSV and Markdown) from its job records."""
    import fcntl

    sweep_dir = Path(sweep_dir)
    with open(sweep_dir / ".sweep_summary.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # jobs of a parallel or SLURM sweep finish together
        records = sweep_records(sweep_dir)
        metric = next((r["metric"] for r in records if r.get("metric")), "value")
        # Every other metric the jobs logged (their metrics.json), after the optimized one.
        logged = sorted({k for r in records for k in (r.get("metrics") or {})} - {metric})
        columns = ["job", "status", metric, *logged, "overrides", "duration_s", "error", "job_dir", "note"]
        if any(r.get("trial") is not None for r in records):
            columns.insert(1, "trial")
        rows = [
            {**{k: r.get(k) for k in columns}, **(r.get("metrics") or {}), metric: r.get("value"),
             "note": f"same config completed in {r['source']}" if r.get("source") else None}
            for r in records
        ]
        # Whole files even without the lock (a file system without locks): readers never see half.
        write_atomic(sweep_dir / SUMMARY_CSV, _csv_text(columns, rows))
        write_atomic(sweep_dir / SUMMARY_MD, _markdown_text(columns, rows))
    return sweep_dir / SUMMARY_CSV


def _csv_text(columns: list[str], rows: list[dict]) -> str:
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return out.getvalue()


def _markdown_text(columns: list[str], rows: list[dict]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return ""
        return f"{value:.6g}" if isinstance(value, float) else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def read_summary(sweep_dir: Path) -> list[dict[str, str]]:
    with (Path(sweep_dir) / SUMMARY_CSV).open() as f:
        return list(csv.DictReader(f))


def _error_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]


def check_multirun_ddp(cfg: DictConfig, launcher: Mapping | None) -> None:
    """Refuse in-process multi-rank DDP in a multirun: Lightning starts ranks 1..N by re-running
    the command line, which in a multirun (``-m``) would re-run the whole sweep in every rank."""
    trainer = cfg.get("trainer") or {}
    strategy = str(trainer.get("strategy", "auto"))
    if not strategy.startswith("ddp") or any(w in strategy for w in ("spawn", "fork", "notebook")):
        return
    devices, nodes = trainer.get("devices", 1), int(trainer.get("num_nodes", 1) or 1)
    n_devices = len(devices) if OmegaConf.is_list(devices) or isinstance(devices, list) else devices
    if str(n_devices) in ("1", "0") and nodes == 1:
        return
    target = str((launcher or {}).get("_target_", ""))
    tasks = (launcher or {}).get("tasks_per_node")
    if target.endswith("SlurmLauncher") and str(tasks) == str(n_devices):
        return  # SLURM starts one task per rank; Lightning starts nothing
    raise ConfigError(
        f"trainer.strategy={strategy} with trainer.devices={n_devices} cannot run in a multirun on "
        f"this launcher: Lightning starts the other ranks by re-running the command, which would "
        f"re-run the whole sweep in each of them. Use launcher=slurm with "
        f"hydra.launcher.tasks_per_node={n_devices} (and hydra.launcher.gpus_per_node={n_devices} "
        f"on GPUs) so that SLURM starts the ranks, or train each DDP job without -m."
    )


def is_optuna(hydra_cfg: Mapping) -> bool:
    """Whether the sweep's sweeper is the Optuna one, whose workers may share a sweep directory
    (each trial in its own directory); every other sweeper is a grid sweep, one command a directory."""
    return "optuna" in str((hydra_cfg.get("sweeper") or {}).get("_target_", "")).lower()


class SweepDirInUse(ExpkitError):
    """Another command is running a grid sweep in the same sweep directory."""

    exit_code = 3


_sweep_lock: tuple[Path, Any] | None = None  # (sweep dir, the open lock file) this process holds


def lock_sweep_dir(sweep_dir: Path, optuna: bool = False) -> None:
    """Before a sweep writes anything in ``sweep_dir``: lock its :data:`LOCK_FILE`, held while this
    process lives (its workers inherit it). A grid command takes it exclusively, so two grid
    commands never run the same jobs in the same job directories, and refuses a directory that
    holds an Optuna study's trials; an Optuna worker takes it shared (its workers share a directory
    by design), so a grid command and a search never mix their jobs in one directory. Raises
    :class:`SweepDirInUse` (exit 3) naming what holds it."""
    import fcntl
    import socket

    global _sweep_lock
    sweep_dir = Path(sweep_dir)
    if _sweep_lock is not None and _sweep_lock[0] == sweep_dir.resolve():
        return  # this process's own sweep, run again
    if not optuna and ((sweep_dir / "optuna.db").exists() or any(
            (read_record(path.parent) or {}).get("trial") is not None for path in sweep_dir.glob(f"*/{RECORD_FILE}"))):
        raise SweepDirInUse(f"sweep directory {sweep_dir} holds an Optuna search's trials: give this grid sweep "
                            "another hydra.sweep.dir (a grid's jobs would take over the trials' directories).")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = open(sweep_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held open for the process's life
    try:
        fcntl.flock(lock, (fcntl.LOCK_SH if optuna else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        holder = lock.read().strip() if optuna else lock.read().strip() or "an Optuna search's workers"
        lock.close()
        kind = "a grid sweep command" if optuna else "another sweep command"
        raise SweepDirInUse(f"sweep directory {sweep_dir} is in use by {kind} ({holder or 'another process'}); wait "
                            "for it to finish, or give this sweep another hydra.sweep.dir.") from None
    if not optuna:  # shared holders write nothing: the text names the exclusive one
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        lock.flush()
    if _sweep_lock is not None:
        _sweep_lock[1].close()
    else:
        import atexit

        atexit.register(lambda: _sweep_lock and _sweep_lock[1].close())  # released as the process ends
    _sweep_lock = (sweep_dir.resolve(), lock)


_active: SweepRecorder | None = None  # the recorder of the job running in this process
_launch: tuple[Path, str] | None = None  # (sweep dir, launch mark) of this process's multirun
_sweeping_pid: int | None = None  # the process that launched the multirun (its jobs may run in it)
# Launchers whose jobs all run in the sweeping process or its workers: once the command ends, none runs.
LOCAL_LAUNCHERS = ("BasicLauncher", "ParallelLauncher")
_local_jobs = False  # this multirun's launcher is one of them


class SweepRecorder(Callback):
    """Hydra callback keeping a multirun's records and summary table (single runs: does nothing).

    Args:
        fail_fast: after the first failed job, cancel the jobs that have not started yet.
        skip_completed: skip a job whose composed config already completed in a sweep of the same
            ``multiruns/`` folder; its earlier metrics stand in for the run.
    """

    def __init__(self, fail_fast: bool = False, skip_completed: bool = True) -> None:
        self.fail_fast = fail_fast
        self.skip_completed = skip_completed
        self.record: dict[str, Any] | None = None
        self.done_here = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _launch, _sweeping_pid, _local_jobs
        # Checked once on the master config before any job starts; before_job checks each job.
        check_multirun_ddp(config, config.hydra.launcher)
        sweep_dir = Path(config.hydra.sweep.dir)
        try:  # a grid command exclusively, an Optuna worker shared
            lock_sweep_dir(sweep_dir, optuna=is_optuna(config.hydra))
        except SweepDirInUse as exc:  # Hydra would turn a callback's error into a warning
            from expkit.errors import exit_with

            exit_with(exc)
        (sweep_dir / STOP_FILE).unlink(missing_ok=True)
        # This command's mark on its jobs' records (the jobs inherit the environment), for exit_status.
        launch = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        os.environ[LAUNCH_ENV] = launch
        _launch, _sweeping_pid = (sweep_dir, launch), os.getpid()
        _local_jobs = str(config.hydra.launcher.get("_target_", "")).endswith(LOCAL_LAUNCHERS)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _active
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        _active = self
        sweep_dir, job_dir = Path(config.hydra.sweep.dir), Path(config.hydra.runtime.output_dir)
        trial = int(os.environ[TRIAL_ENV]) if os.environ.get(TRIAL_ENV) else None
        self.record = {
            # An Optuna trial's job is its trial number (also its directory): unique in the study,
            # whichever worker ran it; hydra.job.num only counts one process's jobs.
            "job": trial if trial is not None else int(config.hydra.job.num),
            "trial": trial,
            "launch": os.environ.get(LAUNCH_ENV),
            "status": "running",
            "metric": OmegaConf.select(config, "monitor.metric", default=None),
            "value": None,
            "overrides": " ".join(config.hydra.overrides.task),
            "config_hash": config_hash(_job_config(config)),
            "job_dir": os.path.relpath(job_dir, sweep_dir),
            "sweep_dir": str(sweep_dir.resolve()),
            "job_id": str(config.hydra.job.id),  # the SLURM array task under launcher=slurm
            "host": os.uname().nodename,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "started": time.time(),
        }
        # Re-launched into the same sweep directory: a job that completed here stays as it is.
        previous = read_record(job_dir)
        self.done_here = bool(self.skip_completed and previous and previous.get("status") == "completed"
                              and previous.get("config_hash") == self.record["config_hash"])
        if self.done_here:
            self.record = previous
            if rank_zero():  # it counts as this command's job (exit_status); nothing else changes
                write_record(job_dir, {**previous, "launch": os.environ.get(LAUNCH_ENV)})
        elif rank_zero():
            write_record(job_dir, self.record)
            update_summary(sweep_dir)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        global _active
        from hydra.core.utils import JobStatus

        if self.record is None:
            return
        record, self.record, _active = self.record, None, None
        if self.done_here:
            log.info("Job %s had already completed in %s", record["job"], config.hydra.runtime.output_dir)
            return
        if record["status"] == "running":
            value = job_return._return_value
            if job_return.status == JobStatus.COMPLETED:
                number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
                record["value"], record["status"] = number, "completed"
                # What the Optuna sweeper tells the study as FAIL is failed here too: one truth.
                if number is not None and not math.isfinite(number):
                    record.update(status="failed", error=f"{record['metric'] or 'the result'} is {number}")
                elif number is None and record.get("trial") is not None:
                    record.update(status="failed", error=f"returned no value of {record['metric'] or 'the metric'}")
            elif isinstance(value, Interrupted):  # saved its state: a re-run resumes it
                record.update(status="interrupted", error=_error_line(value), signal=value.signum)
            else:
                record["status"] = "pruned" if type(value).__name__ == "TrialPruned" else "failed"
                record["error"] = _error_line(value)
        record["finished"] = time.time()
        record["duration_s"] = round(record["finished"] - record["started"], 2)
        if not rank_zero():
            return
        sweep_dir = Path(record["sweep_dir"])
        metrics_file = sweep_dir / record["job_dir"] / "metrics.json"
        if metrics_file.is_file():
            try:
                record["metrics"] = json.loads(metrics_file.read_text())
            except json.JSONDecodeError:
                pass
        write_record(sweep_dir / record["job_dir"], record)
        summary = update_summary(sweep_dir)
        if record["status"] == "failed":
            log.error("Job %s failed (%s); the sweep goes on. Summary: %s", record["job"], record["error"], summary)
            if self.fail_fast:  # its text reaches other jobs' records and the disk: masked like them
                from expkit.secrets import mask_text

                (sweep_dir / STOP_FILE).write_text(mask_text(f"job {record['job']}: {record['error']}\n"))
        else:
            log.info("Job %s %s; summary: %s", record["job"], record["status"], summary)
        if record["status"] == "interrupted" and os.getpid() == _sweeping_pid:
            # The job ran in the sweeping process (launcher=local) and took the signal: the sweep stops too.
            raise SweepInterrupted(record["signal"])


def _job_config(config: DictConfig) -> DictConfig:
    """The task's config: the composed config without its ``hydra`` node (what the task receives)."""
    return OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])


def before_job(cfg: DictConfig) -> dict[str, Any] | None:
    """Run inside a multirun job before anything is built: refuse in-process DDP, cancel the job
    after a fail-fast failure, or return the metrics of an earlier identical completed job (then the
    job is skipped). ``None``: run the job."""
    from hydra.core.hydra_config import HydraConfig

    check_multirun_ddp(cfg, HydraConfig.get().launcher)
    recorder = _active
    if recorder is None or recorder.record is None:
        return None
    record = recorder.record
    sweep_dir = Path(record["sweep_dir"])
    if (sweep_dir / STOP_FILE).exists():
        record.update(status="cancelled", error=f"not run: {(sweep_dir / STOP_FILE).read_text().strip()} (fail_fast)")
        raise SweepStopped(f"the sweep stopped at the first failure ({(sweep_dir / STOP_FILE).read_text().strip()})")
    here = (sweep_dir / record["job_dir"]).resolve()
    if recorder.done_here:
        return _metrics_of(here, record)
    if not recorder.skip_completed:
        return None
    for path in sorted(sweep_dir.parent.glob(f"*/*/{RECORD_FILE}")):
        earlier = read_record(path.parent)
        if (earlier and earlier["status"] == "completed" and earlier["config_hash"] == record["config_hash"]
                and path.parent.resolve() != here):
            record.update(status="skipped", value=earlier["value"], source=str(path.parent.resolve()))
            log.info("Skipping job %s: the same config completed in %s", record["job"], path.parent)
            return _metrics_of(path.parent, earlier)
    return None


def _metrics_of(job_dir: Path, record: Mapping[str, Any]) -> dict[str, Any]:
    """What a completed job returned: its metrics.json, with the recorded optimized value."""
    metrics_file = Path(job_dir) / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    if record.get("metric"):
        metrics[record["metric"]] = record["value"]
    return metrics


def exit_status(launched: Sequence[Mapping[str, Any]], sweep: Sequence[Mapping[str, Any]],
                interrupted: int | None = None) -> tuple[int, str]:
    """The exit status of a multirun command: one rule for every sweeper (grid, Optuna) and every
    launcher (local, parallel, SLURM).

    128 + N when the command was stopped by signal N (``interrupted``), or a job it launched was
    (status ``interrupted``, its ``signal``) and none failed: an interrupted sweep is not a failed
    one, running the command again resumes it. Else non-zero (1) when a job this command launched did not succeed
    (``failed``; ``cancelled`` after a fail-fast failure; still ``running`` when the command ends,
    i.e. its process died), or when no job of the sweep has completed (``completed``, or
    ``skipped`` because it completed earlier), counting earlier commands and concurrent workers on
    the same sweep directory. Pruned trials are neither failures nor completions: a search whose
    every trial was pruned completed nothing.

    Args:
        launched: the records (:func:`read_record`) of the jobs this command launched; empty when
            it launched none (an Optuna study that already has its ``n_trials``).
        sweep: the records of every job in the sweep directory, ``launched`` included.
        interrupted: the signal that stopped this command, if one did.

    Returns:
        ``(code, message)``, e.g. ``(1, "1 of 2 jobs failed (1); job 1: ValueError: Invalid
        learning rate: -1")`` or ``(0, "2 jobs: 2 completed")``.
    """
    def count(records: Sequence[Mapping[str, Any]]) -> str:
        statuses = [str(r.get("status")) for r in records]
        return ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))

    bad = [r for r in launched if r.get("status") in NOT_DONE]
    signum = interrupted or next((int(r["signal"]) for r in launched if r.get("status") == "interrupted"
                                  and r.get("signal")), None)
    if signum is not None and (interrupted is not None or not bad):
        import signal

        return 128 + signum, (f"stopped by {signal.Signals(signum).name} ({count(launched) or 'no job started'}); "
                              "run the command again to resume it")
    if bad:
        jobs = ", ".join(str(r.get("job")) for r in bad[:10]) + (", ..." if len(bad) > 10 else "")
        error = bad[0].get("error") or "it did not finish (its process died)"
        error = error if len(error) <= 160 else error[:157] + "..."
        return 1, f"{len(bad)} of {len(launched)} jobs failed ({jobs}); job {bad[0].get('job')}: {error}"
    if not any(r.get("status") in DONE for r in sweep):
        return 1, f"no job completed ({count(launched) or 'none ran'})"
    return 0, f"{len(launched)} jobs: {count(launched) or 'none to run'}"


def run_multirun(app: Callable[[], Any]) -> None:
    """Run Hydra's multirun ``app`` and end this process by :func:`exit_status`: a line on stderr
    and exit code 1 when a job failed or none completed. Hydra's grid sweeper re-raises the first
    failed job's error after its batch: that error is in the table, so the rule decides. An error
    of the sweep itself (no job of this command failed) propagates to the entry point."""
    global _launch
    _launch, error, interrupted = None, None, None
    SWEEP_SIGNALS.install()  # SIGTERM, Ctrl-C, SIGHUP stop the sweep as they stop a run (launching.signals)
    try:
        app()
    except SweepInterrupted as exc:
        interrupted = exc.signum
    except Exception as exc:
        error = exc
    finally:
        SWEEP_SIGNALS.restore()
    if _launch is None:  # no multirun started here (or no sweep callback): nothing to judge
        if interrupted is not None:
            import signal

            print(f"error: stopped by {signal.Signals(interrupted).name} before any job started", file=sys.stderr)
            sys.exit(128 + interrupted)
        if error is not None:
            raise error
        return
    sweep_dir, launch = _launch
    if interrupted is not None and _local_jobs:
        mark_interrupted(sweep_dir, launch, interrupted)
    sweep = sweep_records(sweep_dir) if sweep_dir.is_dir() else []
    launched = [r for r in sweep if r.get("launch") == launch]
    if error is not None and not any(r.get("status") in (*NOT_DONE, "interrupted") for r in launched):
        raise error
    code, message = exit_status(launched, sweep, interrupted)
    if code:
        from expkit.secrets import mask_text

        print(mask_text(f"error: sweep {sweep_dir}: {message}; see {sweep_dir / SUMMARY_MD}"), file=sys.stderr)
        sys.exit(code)
    log.info("Sweep %s: %s (%s)", sweep_dir, message, sweep_dir / SUMMARY_MD)


def mark_interrupted(sweep_dir: Path, launch: str, signum: int) -> None:
    """After a local sweep stopped by ``signum``: a job of this command whose record still says
    ``running`` was stopped before it could record its end (e.g. the signal came as it started, or
    a second signal ended it at once); none of them runs any more (they ran in this process or its
    workers), so each is recorded ``interrupted``."""
    import signal

    marked = False
    for record in sweep_records(sweep_dir):
        if record.get("launch") == launch and record.get("status") == "running" and rank_zero():
            finished = time.time()
            write_record(Path(sweep_dir) / record["job_dir"], {
                **record, "status": "interrupted", "signal": signum, "finished": finished,
                "duration_s": round(finished - record.get("started", finished), 2),
                "error": f"stopped by {signal.Signals(signum).name} with the sweep"})
            marked = True
    if marked:
        update_summary(sweep_dir)
