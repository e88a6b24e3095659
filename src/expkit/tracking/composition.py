"""What a run was composed from, as its record keeps it (``run.json``'s ``composition``), and what
has changed in those sources since: ``expkit reproduce`` and ``expkit resume`` compose the run again
from exactly these sources, and refuse (exit 2, naming the file) when one of its config files is
gone or edited.

Recorded: the Hydra job (the entry point: ``train``, ``eval``, ``predict``), the primary config's
name and directory, the ``--config-dir`` directories, the ``hydra.searchpath`` overrides, every
config source in search order, the launch directory, and the sha256 of each config file the run
used (the primary config, the configs its defaults list names, and the option Hydra chose for
every group), and those options by group (``choices``, for ``expkit runs --where GROUP=OPTION``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def composition() -> dict[str, Any]:
    """The running Hydra job's composition record (see the module docstring)."""
    import os

    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    sources = [{"provider": s.provider, "path": f"{s.schema}://{s.path}"} for s in hc.runtime.config_sources]
    return {
        "job": hc.job.name,
        "config_name": hc.job.config_name,
        "config_path": next((s["path"] for s in sources if s["provider"] == "main"), None),
        "config_dirs": [s["path"] for s in sources if s["provider"] == "command-line"],
        "hydra_overrides": [o for o in hc.overrides.hydra if o.lstrip("+~").split("=", 1)[0] == "hydra.searchpath"],
        "sources": sources,
        "cwd": os.getcwd(),
        "files": config_files(sources, hc.job.config_name, dict(hc.runtime.choices)),
        # The option of every config group, chosen or by default (``expkit runs --where model=mlp``).
        "choices": {group: option for group, option in hc.runtime.choices.items()
                    if not group.startswith("hydra/") and isinstance(option, str)},
    }


def source_dir(path: str | None) -> Path | None:
    """A config source's directory (``file://DIR``, or a bare ``DIR``); ``None`` for package or
    structured sources. expkit's own ``conf/`` recorded by another install (a moved checkout, a
    wheel) is this install's."""
    from expkit.paths import config_dir

    if not path or "://" in path and not path.startswith("file://"):
        return None
    directory = Path(path.removeprefix("file://"))
    if not directory.is_dir() and directory.name == "conf" and directory.parent.name == "expkit":
        return config_dir()
    return directory


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _used_names(sources: list[dict[str, str]], config_name: str, choices: dict[str, Any]) -> list[str]:
    """Relative paths (``train.yaml``, ``model/mlp.yaml``) of the configs the run used."""
    import yaml

    names = [f"{config_name}.yaml"]
    for group, option in choices.items():
        if option is not None and not str(group).startswith("hydra/"):
            names.append(f"{str(group).split('@', 1)[0].lstrip('/')}/{option}.yaml")
    # Configs the primary's defaults list names without a group (conf/pipeline.yaml: - train).
    for source in sources:
        directory = source_dir(source["path"])
        primary = directory / f"{config_name}.yaml" if directory else None
        if primary and primary.is_file():
            try:
                defaults = (yaml.safe_load(primary.read_text()) or {}).get("defaults") or []
            except yaml.YAMLError:
                defaults = []
            names += [f"{entry}.yaml" for entry in defaults if isinstance(entry, str) and entry != "_self_"]
            break
    return list(dict.fromkeys(names))


def config_files(sources: list[dict[str, str]], config_name: str, choices: dict[str, Any]) -> list[dict[str, str]]:
    """``{"source", "file", "sha256"}`` of each config file the run used, found as Hydra finds
    it: in the first file source (search order) that has it. Configs in packages (expkit's own
    through ``pkg://``, Hydra's) are left to the installed versions' record."""
    found = []
    for name in _used_names(sources, config_name, choices):
        for source in sources:
            directory = source_dir(source["path"])
            if directory and (directory / name).is_file():
                found.append({"source": source["path"], "file": name, "sha256": _sha256(directory / name)})
                break
    return found


def source_changes(recorded: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(file, recorded, now)`` for every recorded config file that is gone or whose content
    changed since the run (``now``: ``deleted`` or the new sha256, first 12 digits)."""
    changes = []
    for entry in recorded.get("files") or []:
        directory = source_dir(entry["source"])
        path = directory / entry["file"] if directory else None
        if path is None:
            continue
        if not path.is_file():
            changes.append((str(path), entry["sha256"][:12], "deleted"))
        elif _sha256(path) != entry["sha256"]:
            changes.append((str(path), entry["sha256"][:12], _sha256(path)[:12]))
    return changes
