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


def write_metrics(run_dir: Path, metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics.json`` (sorted keys, plain floats; non-finite values become null)."""
    clean = {}
    for key, value in sorted(metrics.items()):
        number = to_number(value)
        clean[key] = number if math.isfinite(number) else None
    path = Path(run_dir) / METRICS_FILE
    path.write_text(json.dumps(clean, indent=2) + "\n")
    return path


def read_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((Path(run_dir) / METRICS_FILE).read_text())


def write_resolved_config(run_dir: Path, config: Mapping[str, Any]) -> Path:
    from omegaconf import OmegaConf

    path = Path(run_dir) / RESOLVED_CONFIG_FILE
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(dict(config))))
    return path


def resumable_checkpoint(run_dir: Path) -> str | None:
    """``<run_dir>/checkpoints/last.ckpt`` when the directory holds an interrupted run."""
    last = Path(run_dir) / CHECKPOINT_DIR / "last.ckpt"
    return str(last) if last.is_file() else None
