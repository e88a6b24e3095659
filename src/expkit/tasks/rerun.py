"""Re-running recorded runs: ``expkit reproduce RUN_DIR`` and ``expkit resume RUN_DIR``.

Both read the run record (``run.json``), compose the config again from the recorded overrides
and refuse when it differs from the recorded one (unless allowed), then start the train task:
reproduce into a new run directory, resume into the same one, where the task continues from
``checkpoints/last.ckpt``, the record gets a segment and W&B continues the recorded run id. The
run's launch directory is importable, as it was when the run was launched (its own package).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

from expkit.errors import ConfigError, ExpkitError
from expkit.tracking.record import RESUMING, RunRecord, git_state, package_versions, redact

# Overrides that place a run, not define it: never carried over to a re-run.
PLACEMENT_PREFIXES = ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir", "hydra.job.name", "hydra.output_subdir")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def dict_diff(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every dotted key whose value differs."""
    a, b = flatten(old), flatten(new)
    return [(k, a.get(k, "<absent>"), b.get(k, "<absent>")) for k in sorted(a.keys() | b.keys()) if a.get(k, "<absent>") != b.get(k, "<absent>")]


def recorded_overrides(record: RunRecord, extra: list[str]) -> list[str]:
    kept = [o for o in record.data["overrides"] if not o.lstrip("+~").startswith(PLACEMENT_PREFIXES)]
    return kept + list(extra)


def composition_of(record: RunRecord) -> dict[str, Any]:
    """How the run was composed (``run.json``'s ``composition``): the entry point, the primary
    config's name and directory, the ``--config-dir`` directories, the ``hydra.searchpath``
    overrides. A recorded directory that is gone is refused naming it (exit 2)."""
    from expkit.paths import config_dir
    from expkit.tracking.composition import source_dir

    recorded = record.data.get("composition") or {}
    main = source_dir(recorded.get("config_path")) or config_dir()
    dirs = [source_dir(d) for d in recorded.get("config_dirs") or []]
    for directory, what in ((main, "its primary config directory"), *((d, "--config-dir") for d in dirs)):
        if directory is None or not directory.is_dir():
            raise ConfigError(f"{record.run_dir} was composed from {what} {directory}, which is gone: restore it (or its "
                              "checkout) to reproduce the run.")
    return {"job": recorded.get("job") or "train", "config_name": recorded.get("config_name") or record.data.get("task") or "train",
            "config_path": main, "config_dirs": dirs, "hydra_overrides": list(recorded.get("hydra_overrides") or []),
            "files": recorded.get("files") or []}


def hydra_arguments(composition: dict[str, Any], overrides: list[str]) -> list[str]:
    """The command line that composes the run again: ``--config-name``, ``--config-dir``s, the
    job's overrides and the ``hydra.searchpath`` overrides."""
    dirs = [arg for d in composition["config_dirs"] for arg in ("--config-dir", str(d))]
    return ["--config-name", composition["config_name"], *dirs, *overrides, *composition["hydra_overrides"]]


def compose_resolved(composition: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The job config composed again from the recorded sources, as recorded (``recordable``).

    The search path is built the way Hydra's own entry point builds it (``_run_hydra``: the
    primary config directory, search-path plugins, then each ``--config-dir`` before the schema
    source), so a primary config found only in a ``--config-dir`` (the DVC stage's params.yaml)
    composes; Hydra's compose API takes a single directory."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    import expkit.resolvers  # noqa: F401
    from expkit.secrets import recordable

    search_path = create_config_search_path(str(composition["config_path"]))
    for directory in composition["config_dirs"]:
        search_path.prepend(provider="command-line", path=f"file://{Path(directory).resolve()}",
                            anchor=SearchPathQuery(provider="schema"))
    job_overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    cfg = ConfigLoaderImpl(config_search_path=search_path).load_configuration(
        config_name=composition["config_name"], overrides=[*job_overrides, *composition["hydra_overrides"]],
        run_mode=RunMode.RUN)
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} resolves as in the run
    with open_dict(cfg):
        del cfg["hydra"]
    return recordable(cfg)  # as the run recorded it: secrets masked, ${oc.env:...} kept


def environment_diff(record: RunRecord) -> list[tuple[str, Any, Any]]:
    """Code, data and package differences between the record and this checkout."""
    from expkit.tracking.data_version import describe_path, find_dvc_root

    diffs: list[tuple[str, Any, Any]] = []
    then, now = record.data.get("git") or {}, redact(git_state() or {})  # the record keeps its diff masked
    if then.get("commit") != now.get("commit"):
        diffs.append(("git commit", then.get("commit"), now.get("commit")))

    def digest(diff: str | None) -> str:
        return hashlib.sha1((diff or "").encode()).hexdigest()[:12] if diff else "clean"

    if digest(then.get("diff")) != digest(now.get("diff")):
        diffs.append(("uncommitted changes", digest(then.get("diff")), digest(now.get("diff"))))
    root = find_dvc_root()
    for source in (record.data.get("data_version") or {}).get("sources", []):
        current = describe_path(Path(source["path"]), root)
        if current.get("dvc_md5") != source.get("dvc_md5") or current.get("workspace_matches") is False:
            state = current.get("dvc_md5") if current.get("workspace_matches") is not False else "modified in the workspace"
            diffs.append((f"data {source['path']}", source.get("dvc_md5"), state))
    current_versions = package_versions()
    for name, version in (record.data.get("versions") or {}).items():
        if current_versions.get(name) != version:
            diffs.append((f"package {name}", version, current_versions.get(name)))
    return diffs


def show_diff(title: str, rows: list[tuple[str, Any, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("what", "recorded", "now"):
        table.add_column(column, overflow="fold")
    for what, old, new in rows:
        table.add_row(str(what), str(old), str(new))
    Console(stderr=True).print(table)


ENTRY_POINTS = {"train": "expkit.tasks.train", "eval": "expkit.tasks.eval", "predict": "expkit.tasks.predict"}


def make_importable(record: RunRecord) -> list[Path]:
    """Put the run's launch directory (``composition.cwd``) and its script's directory on
    ``sys.path`` (and ``PYTHONPATH``, for the processes the job starts), after the current
    directory: the run's own package (``my_lab``) imports as it did when the run was launched
    (``python train.py`` puts the script's directory first), from any directory. Returns those added."""
    import os

    cwd = (record.data.get("composition") or {}).get("cwd")
    command = record.data.get("command") or []
    candidates = [Path(cwd)] if cwd else []
    if cwd and command and str(command[0]).endswith(".py"):
        candidates.insert(0, (Path(cwd) / command[0]).parent)
    added = []
    for directory in dict.fromkeys(c.resolve() for c in candidates):
        if directory.is_dir() and str(directory) not in sys.path:
            sys.path.insert(1 if sys.path and sys.path[0] in ("", os.getcwd()) else 0, str(directory))
            added.append(directory)
    if added:
        os.environ["PYTHONPATH"] = os.pathsep.join([*map(str, added), *filter(None, [os.environ.get("PYTHONPATH")])])
    return added


def launch(composition: dict[str, Any], overrides: list[str]) -> None:
    """Run the recorded entry point (train, eval, predict) on the recorded config sources with
    ``overrides``."""
    import importlib

    job = composition["job"] if composition["job"] in ENTRY_POINTS else "train"
    sys.argv = [f"expkit-{job}", *hydra_arguments(composition, overrides)]
    importlib.import_module(ENTRY_POINTS[job]).main(config_path=composition["config_path"])


def check_sources(run_dir: Path, composition: dict[str, Any], config_changes: list, strict: bool = True) -> list[tuple[str, Any, Any]]:
    """The recorded config files that are gone or edited (``expkit.tracking.composition``),
    shown as a table; with ``strict``, raises :class:`ConfigError` (exit 2) naming them and what
    differs."""
    from expkit.tracking.composition import source_changes

    changed = source_changes({"files": composition["files"]})
    if changed and not strict:
        show_diff(f"Config files of {run_dir} changed (allowed)", changed)
    elif changed:
        show_diff(f"Config files of {run_dir} changed", changed)
        what = "; ".join(f"{path} {'is gone' if now == 'deleted' else 'was edited'}" for path, _, now in changed)
        keys = ", ".join(f"{k}: {old} -> {new}" for k, old, new in config_changes[:3])
        raise ConfigError(f"{run_dir} was composed from config files that changed since: {what}"
                          + (f" ({keys}{', ...' if len(config_changes) > 3 else ''})" if keys else "")
                          + "; restore them to reproduce the run as recorded (tables above).")
    return changed


def _config_changes(record: RunRecord, composition: dict[str, Any], overrides: list[str],
                    allowed: bool = False) -> list[tuple[str, Any, Any]]:
    """The recorded config against its composition now; a changed or deleted config file stops
    here (before anything runs) with the file named, unless ``allowed``."""
    try:
        changes = dict_diff(record.data["config"], compose_resolved(composition, overrides))
    except Exception as exc:  # a deleted option or file no longer composes
        check_sources(record.run_dir, composition, [])
        raise ConfigError(f"{record.run_dir} no longer composes from its recorded sources ({str(exc).splitlines()[0]}).") from None
    check_sources(record.run_dir, composition, changes, strict=not allowed)
    return changes


def reproduce(run_dir: Path, extra: list[str], allow_differences: bool) -> None:
    record = RunRecord.load(run_dir)
    make_importable(record)
    overrides = recorded_overrides(record, extra)
    composition = composition_of(record)
    config_changes = _config_changes(record, composition, overrides, allowed=allow_differences)
    env_changes = environment_diff(record)
    if config_changes:
        show_diff(f"Config differs from {run_dir}", config_changes)
    if env_changes:
        show_diff(f"Code, data or packages differ from {run_dir}", env_changes)
    if (config_changes or env_changes) and not allow_differences:
        raise ConfigError(
            f"{run_dir} cannot be reproduced exactly ({len(config_changes)} config and "
            f"{len(env_changes)} code/data/package differences above); rerun with --allow-differences to run anyway."
        )
    launch(composition, overrides)


def resume(run_dir: Path, extra: list[str], allow_config_change: bool) -> None:
    record = RunRecord.load(run_dir)
    if record.data["status"] == "completed":
        raise ConfigError(f"{run_dir} completed on {record.data['ended_at']}: nothing to resume (expkit reproduce re-runs it).")
    make_importable(record)
    overrides = recorded_overrides(record, extra)
    composition = composition_of(record)
    changes = _config_changes(record, composition, overrides, allowed=allow_config_change)
    if changes:
        show_diff(f"Resuming {run_dir} with a changed config", changes)
        if not allow_config_change:
            raise ConfigError(f"the config of {run_dir} would change ({len(changes)} keys above); pass --allow-config-change to resume anyway.")
    RESUMING.append(Path(run_dir).resolve())  # the job's record continues this run's (a new segment)
    launch(composition, [*overrides, f'hydra.run.dir="{Path(run_dir).resolve()}"'])


def main(argv: list[str], command: str) -> None:
    parser = argparse.ArgumentParser(prog=f"expkit {command}", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory holding run.json")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (they count as config changes)")
    if command == "reproduce":
        parser.add_argument("--allow-differences", action="store_true", help="run even if code, data, packages or config differ")
    else:
        parser.add_argument("--allow-config-change", action="store_true", help="resume even if the config changes")
    args = parser.parse_args(argv)
    try:
        if command == "reproduce":
            reproduce(args.run_dir, args.overrides, args.allow_differences)
        else:
            resume(args.run_dir, args.overrides, args.allow_config_change)
    except ExpkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
