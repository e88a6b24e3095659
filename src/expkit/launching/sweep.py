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
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from expkit.errors import ConfigError, ExpkitError

log = logging.getLogger("expkit")

RECORD_FILE = "sweep_job.json"
SUMMARY_CSV = "sweep_summary.csv"
SUMMARY_MD = "sweep_summary.md"
STOP_FILE = ".sweep_stopped"  # written by a failed job under fail_fast; cleared when a sweep starts
# Set by the Optuna sweeper in each trial's job: the trial's number and its id in the storage.
TRIAL_ENV = "EXPKIT_OPTUNA_TRIAL"
TRIAL_ID_ENV = "EXPKIT_OPTUNA_TRIAL_ID"

# Statuses a job ends with. "skipped": completed earlier (see "source"); "cancelled": not run
# after a fail-fast failure; "pruned": stopped early by the Optuna pruner.
DONE = ("completed", "skipped")


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


def write_record(job_dir: Path, record: Mapping[str, Any]) -> None:
    path = Path(job_dir) / RECORD_FILE
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(dict(record), indent=2, default=str) + "\n")
    os.replace(tmp, path)  # readers never see half a record


def sweep_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """The job records of one sweep, by job number."""
    records = [r for p in Path(sweep_dir).glob(f"*/{RECORD_FILE}") if (r := read_record(p.parent))]
    return sorted(records, key=lambda r: r["job"])


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
        for name, write in ((SUMMARY_CSV, _write_csv), (SUMMARY_MD, _write_markdown)):
            tmp = sweep_dir / f".{name}.tmp"
            write(tmp, columns, rows)
            os.replace(tmp, sweep_dir / name)
    return sweep_dir / SUMMARY_CSV


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)


def _write_markdown(path: Path, columns: list[str], rows: list[dict]) -> None:
    def cell(value: Any) -> str:
        if value is None:
            return ""
        return f"{value:.6g}" if isinstance(value, float) else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    path.write_text("\n".join(lines) + "\n")


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


_active: SweepRecorder | None = None  # the recorder of the job running in this process


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
        # Checked once on the master config before any job starts; before_job checks each job.
        check_multirun_ddp(config, config.hydra.launcher)
        (Path(config.hydra.sweep.dir) / STOP_FILE).unlink(missing_ok=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _active
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        _active = self
        sweep_dir, job_dir = Path(config.hydra.sweep.dir), Path(config.hydra.runtime.output_dir)
        self.record = {
            "job": int(config.hydra.job.num),
            "trial": int(os.environ[TRIAL_ENV]) if os.environ.get(TRIAL_ENV) else None,
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
                record["value"] = float(value) if isinstance(value, int | float) else None
                record["status"] = "completed"
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
            if self.fail_fast:
                (sweep_dir / STOP_FILE).write_text(f"job {record['job']}: {record['error']}\n")
        else:
            log.info("Job %s %s; summary: %s", record["job"], record["status"], summary)


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
