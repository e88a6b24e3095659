"""Files a run writes into its directory."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"
RESOLVED_CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"


def to_number(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename: a reader
    sees the old content or the new, never half; a link at ``path`` is replaced, not followed."""
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_metrics(run_dir: Path, metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics.json`` (sorted keys, plain floats; non-finite values become null)."""
    clean = {}
    for key, value in sorted(metrics.items()):
        number = to_number(value)
        clean[key] = number if math.isfinite(number) else None
    return write_atomic(Path(run_dir) / METRICS_FILE, json.dumps(clean, indent=2) + "\n")


def read_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((Path(run_dir) / METRICS_FILE).read_text())


def write_resolved_config(run_dir: Path, config: Mapping[str, Any]) -> Path:
    from omegaconf import OmegaConf

    return write_atomic(Path(run_dir) / RESOLVED_CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.create(dict(config))))


def resumable_checkpoint(run_dir: Path, trust: bool = False) -> str | None:
    """The checkpoint an interrupted run continues from: ``<run_dir>/checkpoints/last.ckpt``, or,
    when that one is unreadable, the newest readable checkpoint there (with a warning); ``None``
    when the directory holds none, or when its run record says this job starts a new run there
    (a completed run's directory re-used: its checkpoints are the old run's)."""
    import logging

    from expkit.checkpoints import load_checkpoint
    from expkit.errors import DataError
    from expkit.tracking.record import started_fresh

    if started_fresh(run_dir):
        return None
    folder = Path(run_dir) / CHECKPOINT_DIR
    last = folder / "last.ckpt"
    candidates = [last] + sorted((p for p in folder.glob("*.ckpt") if p != last), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in (p for p in candidates if p.is_file()):
        try:
            load_checkpoint(str(path), trust=trust)
        except DataError as exc:
            logging.getLogger("expkit").warning("Skipping %s: %s", path, exc)
            continue
        if path != last:
            logging.getLogger("expkit").warning("%s is unreadable: resuming from %s, the newest readable checkpoint", last, path)
        return str(path)
    return None


def inside_run(path: str | None, run_dir: Path) -> str | None:
    """``path`` (a checkpoint Lightning recorded) inside ``run_dir``: a run directory that was moved
    or copied keeps absolute paths of its old place in its checkpoints' callback state; the file
    of the same name in this run's own checkpoint folder is meant."""
    if not path:
        return path
    own = Path(run_dir) / CHECKPOINT_DIR / Path(path).name
    return str(own) if own.is_file() else path
