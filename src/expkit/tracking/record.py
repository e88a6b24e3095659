"""The run record (``run.json``): what a run needs to be identified exactly and re-run.

Written when the job starts (status ``running``), updated when W&B starts and when the job ends
(``completed`` or ``failed`` with the error). A run resumed in the same directory appends a
segment instead of starting over, so a record killed with ``kill -9`` still says what ran (the
resume marks that segment ``killed``); a new run in a directory that holds an old record replaces
it (:func:`continues_run` decides which), after moving the old run aside when it left checkpoints
(:func:`set_aside`).
Secrets never reach it (``expkit.secrets``: secret keys, URL passwords, secret environment values
are masked) and the environment is not recorded (only SLURM's job ids).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

RUN_RECORD_FILE = "run.json"
# A run's recorded status: "running" while it runs (or until its process died), then how it ended.
RUN_STATUSES = ("running", "completed", "failed", "interrupted", "pruned")  # pruned: an Optuna trial stopped early
SCHEMA_VERSION = 1
PACKAGES = ("expkit", "torch", "pytorch-lightning", "torchmetrics", "hydra-core", "omegaconf", "wandb", "dvc", "numpy")
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "SLURM_JOB_NODELIST")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def redact(value: Any) -> Any:
    """``value`` with its secrets masked (:func:`expkit.secrets.mask`)."""
    from expkit.secrets import mask

    return mask(value)


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(start: Path | None = None) -> dict[str, Any] | None:
    """Commit, dirtiness and the diff of uncommitted changes of the repository holding ``start``
    (the launch directory), else of the checkout holding expkit's own code."""
    from expkit.paths import config_dir

    for candidate in (start or Path.cwd(), config_dir()):
        top = _git(candidate, "rev-parse", "--show-toplevel")
        if top:
            root = Path(top.strip())
            status = _git(root, "status", "--porcelain", "--untracked-files=no") or ""
            return {
                "root": str(root),
                "commit": (_git(root, "rev-parse", "HEAD") or "").strip() or None,
                "branch": (_git(root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None,
                "dirty": bool(status.strip()),
                "diff": _git(root, "diff", "HEAD") or "",
            }
    return None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "system": platform.system(), "cpu_count": os.cpu_count(),
                            "cpu": platform.processor() or None, "hostname": platform.node()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        info["gpus"] = []
    info["gpu_count"] = len(info["gpus"])
    return info


def slurm_ids() -> dict[str, str] | None:
    ids = {k.lower(): os.environ[k] for k in SLURM_VARS if k in os.environ}
    return ids or None


class RunRecord:
    """``run.json`` in a run directory; every change is written at once (atomically)."""

    def __init__(self, run_dir: Path, data: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.data = data

    @property
    def path(self) -> Path:
        return self.run_dir / RUN_RECORD_FILE

    @classmethod
    def load(cls, run_dir: Path) -> RunRecord:
        """The record of ``run_dir``. Raises :class:`ConfigError` when there is none and
        :class:`DataError` (exit 3) when it is not a readable record; it is never overwritten then."""
        from expkit.errors import ConfigError, DataError

        path = Path(run_dir) / RUN_RECORD_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{run_dir} has no {RUN_RECORD_FILE}: it is not an expkit run directory.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not a readable run record ({exc}); restore it from a copy (its W&B run holds one) "
                            "or move the run directory aside.") from None
        if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
            raise DataError(f"{path}: not a run record (no segments); restore it from a copy or move the run directory aside.")
        return cls(Path(run_dir), data)

    @classmethod
    def start(cls, run_dir: Path, config: dict[str, Any], overrides: list[str], task: str,
              composition: dict[str, Any] | None = None) -> RunRecord:
        """Create the record; when the directory already holds one, append a segment if this job
        continues that run (:func:`continues_run`), else replace it: a new run in an old directory
        (a fixed ``hydra.run.dir``, a DVC stage) is described by its own config, never the old one's.
        When the old run left checkpoints, it is first moved aside whole (:func:`set_aside`), so the
        new run's checkpoint folder holds its own checkpoints only."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        segment = {"started_at": now(), "ended_at": None, "status": "running", "command": list(sys.argv),
                   "host": platform.node(), "pid": os.getpid(), "slurm": slurm_ids(), "wandb": None}
        previous = cls.load(run_dir) if (run_dir / RUN_RECORD_FILE).is_file() else None
        if previous is not None and continues_run(previous, config.get("ckpt_path")):
            record = previous
            record.close_dead_segments()
            record.data["segments"].append({**segment, "resumed": True})
            record.data.update(status="running", ended_at=None, error=None)
        else:
            if previous is not None and holds_checkpoints(run_dir):
                set_aside(previous)  # its checkpoints must never pass for this run's
            record = cls(run_dir, {
                "schema": SCHEMA_VERSION,
                "task": task,
                "status": "running",
                "started_at": segment["started_at"],
                "ended_at": None,
                "command": list(sys.argv),
                "overrides": list(overrides),
                "composition": composition,
                "seed": config.get("seed"),
                "config": config,
                "git": git_state(),
                "versions": package_versions(),
                "hardware": hardware(),
                "slurm": slurm_ids(),
                "data_version": None,
                "wandb": None,
                "metrics": None,
                "error": None,
                "segments": [{**segment, "resumed": False}],
            })
        record.save()
        return record

    def close_dead_segments(self) -> None:
        """Mark the segments still ``running`` as ``killed``: a job continuing this run means they
        died without ending (``kill -9``, a lost node). Their end is the last time they wrote into
        the run directory."""
        for segment in self.data["segments"]:
            if segment.get("status") == "running":
                segment.update(status="killed", ended_at=segment.get("ended_at") or last_write(self.run_dir))

    def reload(self) -> RunRecord:
        """Re-read the file: the task updates the record through its own handle while it runs."""
        self.data = json.loads(self.path.read_text())
        return self

    def save(self) -> None:
        from expkit.tracking.files import write_atomic

        write_atomic(self.path, json.dumps(redact(self.data), indent=2, default=str) + "\n")

    @property
    def wandb_id(self) -> str | None:
        return (self.data.get("wandb") or {}).get("id")

    def note_wandb(self) -> None:
        """Record the active W&B run (id, mode, local directory) in the record and this segment."""
        wandb = sys.modules.get("wandb")
        run = getattr(wandb, "run", None) if wandb else None
        if run is None:
            return
        self.reload()
        info = {"id": run.id, "project": run.project, "group": run.group or None, "name": run.name,
                "mode": "offline" if run.offline else "online", "dir": run.dir and _relative(Path(run.dir).parent, self.run_dir)}
        self.data["wandb"] = {k: info[k] for k in ("id", "project", "group", "mode")}
        self.data["segments"][-1]["wandb"] = info
        self.save()

    def provenance(self) -> dict[str, Any]:
        """What identifies the run beyond its config: code, packages, machine, command, SLURM job."""
        git = dict(self.data.get("git") or {})
        git.pop("diff", None)  # the diff stays in run.json, which is attached to the W&B run
        keys = ("command", "overrides", "versions", "hardware", "slurm")
        return {"git": git or None, **{k: self.data.get(k) for k in keys}}

    def attach_to_wandb(self) -> None:
        """Save ``run.json`` with the active W&B run (uploaded with it, or on ``wandb sync``)."""
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None:
            try:
                wandb.run.save(str(self.path), base_path=str(self.run_dir), policy="now")
            except (ConnectionError, OSError):  # W&B's service died with an interrupted job
                pass

    def finish(self, status: str, metrics: dict[str, float] | None = None, error: str | None = None) -> None:
        self.reload()
        ended = now()
        segment = self.data["segments"][-1]
        segment.update(ended_at=ended, status=status)
        self.data.update(status=status, ended_at=ended, error=error)
        if metrics is not None:
            self.data["metrics"] = {k: float(v) for k, v in metrics.items()}
        self.data["hardware"] = hardware()  # torch is imported by now: GPUs are known
        self.save()


# Set by ``expkit resume`` for the run directory it continues (``expkit.tasks.rerun``).
RESUMING: list[Path] = []


def continues_run(previous: RunRecord, ckpt_path: str | None) -> bool:
    """Whether a job starting in ``previous``'s directory continues that run (a resume: its record
    gets a segment) rather than starting a new one (the record is replaced). A resume is
    ``expkit resume``, a ``ckpt_path`` inside the run's own directory, or a run that did not
    complete whose directory holds a checkpoint to continue from (kill -9, a signal, a SLURM
    requeue re-running the same job); the train task resumes in exactly these cases
    (:func:`expkit.tracking.files.resumable_checkpoint`)."""
    run_dir = previous.run_dir.resolve()
    if any(Path(d).resolve() == run_dir for d in RESUMING):
        return True
    if ckpt_path:
        return Path(str(ckpt_path)).resolve().is_relative_to(run_dir)
    return previous.data.get("status") != "completed" and holds_checkpoints(run_dir)


def holds_checkpoints(run_dir: Path) -> bool:
    """Whether ``run_dir``'s checkpoint folder holds a checkpoint."""
    from expkit.tracking.files import CHECKPOINT_DIR

    return any((Path(run_dir) / CHECKPOINT_DIR).glob("*.ckpt"))


def set_aside(previous: RunRecord) -> Path:
    """Move the run recorded in ``previous`` out of its directory, which a new run is about to use,
    into a sibling ``<dir>.previous-<its start>``: its record, checkpoints, metrics and logs stay
    together, a complete run directory (``expkit runs`` lists it; it can be evaluated, registered,
    reproduced). What was already written there for the new job stays: Hydra's ``.hydra/`` (the old
    run's was overwritten), a sweep's job record (rewritten by the sweep for this job) and the log
    file the new job appends to (copied, the old run's lines with it). Returns the new place."""
    import logging
    import shutil

    from expkit.launching.sweep import RECORD_FILE as SWEEP_JOB_FILE

    run_dir = previous.run_dir.resolve()
    stamp = str(previous.data.get("started_at") or now())[:19].replace("T", "_").replace(":", "-")
    target = run_dir.with_name(f"{run_dir.name}.previous-{stamp}")
    number = 2
    while target.exists():
        target = run_dir.with_name(f"{run_dir.name}.previous-{stamp}-{number}")
        number += 1
    target.mkdir()
    open_logs = {Path(h.baseFilename).resolve() for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)}
    for entry in sorted(run_dir.iterdir()):
        if entry.name in (".hydra", SWEEP_JOB_FILE):
            continue
        if entry.resolve() in open_logs:
            shutil.copy2(entry, target / entry.name)
        else:
            os.replace(entry, target / entry.name)
    logging.getLogger("expkit").warning("%s held an earlier run (%s) and its checkpoints: moved it to %s; a new run "
                                        "starts there", run_dir, previous.data.get("status"), target)
    return target


def started_fresh(run_dir: Path) -> bool:
    """Whether the job in ``run_dir`` starts a new run rather than continuing the recorded one
    (:func:`continues_run`, as its record says): the checkpoints already there belong to another run."""
    try:
        data = json.loads((Path(run_dir) / RUN_RECORD_FILE).read_text())
        segment = data["segments"][-1]
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return False  # no record (a task called directly): its checkpoints are its own
    # A completed record not yet replaced is one a new job in that directory replaces (DDP ranks > 0).
    return data.get("status") == "completed" or (segment.get("resumed") is False and segment.get("status") == "running")


def last_write(run_dir: Path) -> str | None:
    """When anything in ``run_dir`` was last written, but for what a new job rewrites at its start
    (``.hydra/``, the log file, ``run.json``), as :func:`now` writes times."""
    times = [p.stat().st_mtime for p in Path(run_dir).rglob("*")
             if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log" and p.name != RUN_RECORD_FILE]
    return datetime.fromtimestamp(max(times), timezone.utc).isoformat(timespec="seconds") if times else None


def _relative(path: Path, run_dir: Path) -> str:
    """``path`` relative to ``run_dir`` when inside it (a run directory can be moved or copied)."""
    try:
        return str(Path(path).resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:
        return str(path)


def note_run(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Add ``fields`` and the active W&B run to ``run_dir``'s record, if it has one (rank zero
    under a launcher; tests calling the task directly have none). Returns the provenance part of
    the record, for the W&B config."""
    if not (Path(run_dir) / RUN_RECORD_FILE).is_file():
        return {}
    record = RunRecord.load(run_dir)
    record.data.update(fields)
    record.save()
    record.note_wandb()
    return record.provenance()
