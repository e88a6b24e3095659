"""Which version of the data a run read: the DVC hash of every data file or folder it loaded.

DVC records hashes in ``<path>.dvc`` files (``dvc add``) and in ``dvc.lock`` (stage outputs such as
``data/processed``). This reads those YAML files directly: no ``dvc`` import, no lock taken, so
it works while ``dvc repro`` runs the training stage. A path inside a tracked folder gets the
folder's hash. A single file is also re-hashed (md5, as DVC 3 does) to tell whether the
workspace still matches the record; a folder's match is left to ``dvc status``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DATA_VERSION_FILE = "data_version.json"
NOT_TRACKED = "not tracked by DVC"


def find_dvc_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: the working directory) holding ``.dvc/``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tracked_outputs(root: Path, rel: Path) -> Iterable[tuple[Path, dict[str, Any], str]]:
    """(output path relative to root, its DVC record, what records it) for outputs that could hold ``rel``."""
    import yaml

    for candidate in (rel, *rel.parents):
        dvc_file = root / candidate.parent / f"{candidate.name}.dvc"
        if candidate.name and dvc_file.is_file():
            for out in (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", []):
                yield candidate.parent / out["path"], out, dvc_file.relative_to(root).as_posix()
    lock = root / "dvc.lock"
    if lock.is_file():
        for stage, record in ((yaml.safe_load(lock.read_text()) or {}).get("stages") or {}).items():
            for out in record.get("outs", []):
                yield Path(out["path"]), out, f"dvc.lock (stage {stage})"


def describe_path(path: Path, root: Path | None) -> dict[str, Any]:
    """The DVC record of one data path: ``{"path", "dvc_md5", "tracked_by", ...}``."""
    path = Path(path)
    entry: dict[str, Any] = {"path": path.as_posix(), "dvc_md5": None}
    if root is None:
        entry["tracked_by"] = f"{NOT_TRACKED} (no DVC repository here)"
        return entry
    try:
        rel = path.resolve().relative_to(root)
    except ValueError:
        entry["tracked_by"] = f"{NOT_TRACKED} (outside the DVC repository {root})"
        return entry
    for out_path, out, source in _tracked_outputs(root, rel):
        if rel == out_path or out_path in rel.parents:
            entry.update(dvc_md5=out.get("md5"), tracked_by=source, dvc_output=out_path.as_posix())
            if rel == out_path and path.is_file() and out.get("md5"):
                entry["workspace_matches"] = file_md5(path) == out["md5"]
            return entry
    entry["tracked_by"] = f"{NOT_TRACKED}: `dvc add {rel.as_posix()}` versions it"
    return entry


def data_files(datamodule: Any) -> list[Path]:
    """The files or folders ``datamodule`` reads, from its optional ``data_files()`` method (see
    ``expkit.build``): ``[]`` for a datamodule without one (its data version is not recorded)."""
    method = getattr(datamodule, "data_files", None)
    return [Path(p) for p in method()] if callable(method) else []


def describe_data_version(paths: list[Path], data_name: str | None, root: Path | None = None) -> dict[str, Any]:
    """What a run records about its data; ``sources`` is empty for generated or bundled data, and
    for a datamodule that does not say which files it reads."""
    root = root or find_dvc_root()
    if not paths:
        return {"data": data_name, "sources": [],
                "note": f"{NOT_TRACKED}: no files named (generated or bundled data, or a datamodule without data_files())"}
    return {"data": data_name, "sources": [describe_path(p, root) for p in paths]}


def write_data_version(run_dir: Path, version: dict[str, Any]) -> Path:
    from expkit.tracking.files import write_atomic

    return write_atomic(Path(run_dir) / DATA_VERSION_FILE, json.dumps(version, indent=2) + "\n")
