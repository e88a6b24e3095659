"""Prepared splits on disk: one ``.npy`` per split and array, plus ``meta.json``; the one place
that knows this layout (the DVC ``prepare`` stage writes it, datamodules read it memory-mapped).

    data/processed/meta.json            spec (sizes, task), classes, split settings, sample counts
    data/processed/{train,val,test}_{x,y}.npy

Bytes are deterministic: the same splits give the same files (``np.save`` has no timestamps).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from expkit.data.base import DataSpec
from expkit.errors import DataError

FORMAT_VERSION = 1
META_FILE = "meta.json"
SPLITS = ("train", "val", "test")
# The data settings that decide the split: the prepared arrays are only valid for these values.
SPLIT_KEYS = ("val_fraction", "test_fraction", "split_seed")
FIX = "rebuild it with `dvc repro prepare`, or fetch it with `dvc pull`"


def array_file(directory: Path, split: str, array: str) -> Path:
    return Path(directory) / f"{split}_{array}.npy"


def write_processed(
    directory: Path,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    spec: DataSpec,
    split: dict[str, Any],
    classes: list | None = None,
) -> Path:
    """Write ``splits`` (float32 features; int64 labels, or float32 regression targets) and
    ``meta.json`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stage in SPLITS:
        x, y = splits[stage]
        np.save(array_file(directory, stage, "x"), np.ascontiguousarray(x, dtype=np.float32))
        np.save(array_file(directory, stage, "y"), np.ascontiguousarray(y, dtype=_target_dtype(spec.num_classes)))
    meta = {
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "input_shape": list(spec.input_shape),
        "num_classes": None if spec.num_classes is None else int(spec.num_classes),
        "target_shape": None if spec.target_shape is None else list(spec.target_shape),
        "classes": [c.item() if hasattr(c, "item") else c for c in classes] if classes is not None else None,
        "split": {key: split[key] for key in SPLIT_KEYS},
        "counts": {stage: int(len(splits[stage][1])) for stage in SPLITS},
    }
    # Written last: a directory without meta.json is an unfinished one.
    path = directory / META_FILE
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def _target_dtype(num_classes: int | None) -> type:
    return np.int64 if num_classes is not None else np.float32


def read_meta(directory: Path) -> dict[str, Any]:
    """``meta.json`` of a prepared directory; a clear :class:`DataError` when missing or unreadable."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise DataError(
            f"data.processed_dir={directory}: no prepared data ({path} is missing): {FIX}."
        )
    try:
        meta = json.loads(path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
        for key in ("name", "input_shape", "num_classes", "split", "counts"):
            if key not in meta:
                raise ValueError(f"no {key!r}")
    except (ValueError, AttributeError) as exc:
        raise DataError(f"data.processed_dir={directory}: {path} is corrupt ({exc}): {FIX}.") from exc
    return meta


def read_processed(directory: Path, meta: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Memory-map the prepared arrays and check them against ``meta`` (shapes, dtypes, counts)."""
    splits = {}
    for stage in SPLITS:
        arrays = []
        target = (_target_dtype(meta["num_classes"]), tuple(meta.get("target_shape") or ()))
        for array, dtype, shape in (("x", np.float32, tuple(meta["input_shape"])), ("y", *target)):
            path = array_file(directory, stage, array)
            if not path.is_file():
                raise DataError(f"data.processed_dir={directory}: {path.name} is missing: {FIX}.")
            try:
                # Copy-on-write: mapped lazily like "r", but writable (torch refuses read-only arrays).
                value = np.load(path, mmap_mode="c", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataError(f"data.processed_dir={directory}: {path.name} is corrupt ({exc}): {FIX}.") from exc
            expected = (meta["counts"][stage], *shape)
            if value.dtype != dtype or tuple(value.shape) != expected:
                raise DataError(
                    f"data.processed_dir={directory}: {path.name} holds {value.dtype}{list(value.shape)}, "
                    f"meta.json says {np.dtype(dtype)}{list(expected)}: {FIX}."
                )
            arrays.append(value)
        splits[stage] = (arrays[0], arrays[1])
    return splits
