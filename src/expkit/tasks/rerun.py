"""Re-running recorded runs: ``expkit reproduce RUN_DIR`` and ``expkit resume RUN_DIR``.

Both read the run record (``run.json``), compose the config again from the recorded overrides
and refuse when it differs from the recorded one (unless allowed), then start the train task:
reproduce into a new run directory, resume into the same one, where the task continues from
``checkpoints/last.ckpt`` and W&B continues the recorded run id.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

from expkit.errors import ConfigError, ExpkitError
from expkit.tracking.record import RunRecord, git_state, package_versions

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
    """How the run was composed (``run.json``'s ``composition``): primary config name and
    directory, ``--config-dir`` directories, ``hydra.searchpath`` overrides. A recorded directory
    that is gone is refused naming it, except expkit's own ``conf/`` (found in this install)."""
    from expkit.paths import config_dir

    recorded = record.data.get("composition") or {}
    main = _path(recorded.get("config_path")) or config_dir()
    if not main.is_dir():
        if main.name == "conf" and main.parent.name == "expkit":  # expkit's configs, installed elsewhere
            main = config_dir()
        else:
            raise ConfigError(f"{record.run_dir} was composed from {main}, which is gone: restore it (or its checkout) "
                              "to reproduce the run.")
    dirs = [_path(d) for d in recorded.get("config_dirs") or []]
    for directory in dirs:
        if not directory.is_dir():
            raise ConfigError(f"{record.run_dir} was composed with --config-dir {directory}, which is gone: restore it "
                              "to reproduce the run.")
    return {"config_name": recorded.get("config_name") or record.data.get("task") or "train", "config_path": main,
            "config_dirs": dirs, "hydra_overrides": list(recorded.get("hydra_overrides") or [])}


def _path(source: str | None) -> Path | None:
    """A config source's directory (``file://...``), ``None`` for a package source or nothing."""
    if not source or source.startswith("pkg://"):
        return None
    return Path(source.removeprefix("file://"))


def hydra_arguments(composition: dict[str, Any], overrides: list[str]) -> list[str]:
    """The command line that composes the run again: ``--config-name``, ``--config-dir``s, the
    job's overrides and the ``hydra.searchpath`` overrides."""
    dirs = [arg for d in composition["config_dirs"] for arg in ("--config-dir", str(d))]
    return ["--config-name", composition["config_name"], *dirs, *overrides, *composition["hydra_overrides"]]


def compose_resolved(composition: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The job config composed again (Hydra's compose API on the recorded sources), resolved."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    import expkit.resolvers  # noqa: F401

    from hydra.core.override_parser.overrides_parser import OverridesParser

    job_overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    # --config-dir has no compose-API flag: its directories join the recorded hydra.searchpath.
    searchpath = [str(p) for o in composition["hydra_overrides"] for p in OverridesParser.create().parse_override(o).value()]
    searchpath += [f"file://{d.resolve()}" for d in composition["config_dirs"]]
    extra = [f"hydra.searchpath=[{','.join(searchpath)}]"] if searchpath else []
    with initialize_config_dir(config_dir=str(composition["config_path"]), version_base="1.3"):
        cfg = compose(config_name=composition["config_name"], return_hydra_config=True, overrides=[*job_overrides, *extra])
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} resolves as in the run
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True)


def environment_diff(record: RunRecord) -> list[tuple[str, Any, Any]]:
    """Code, data and package differences between the record and this checkout."""
    from expkit.tracking.data_version import describe_path, find_dvc_root

    diffs: list[tuple[str, Any, Any]] = []
    then, now = record.data.get("git") or {}, git_state() or {}
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


def launch_train(composition: dict[str, Any], overrides: list[str]) -> None:
    """Run the train entry point on the recorded config sources with ``overrides``."""
    from expkit.tasks.train import main

    sys.argv = ["expkit-train", *hydra_arguments(composition, overrides)]
    main(config_path=composition["config_path"])


def reproduce(run_dir: Path, extra: list[str], allow_differences: bool) -> None:
    record = RunRecord.load(run_dir)
    overrides = recorded_overrides(record, extra)
    composition = composition_of(record)
    config_changes = dict_diff(record.data["config"], compose_resolved(composition, overrides))
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
    launch_train(composition, overrides)


def resume(run_dir: Path, extra: list[str], allow_config_change: bool) -> None:
    record = RunRecord.load(run_dir)
    if record.data["status"] == "completed":
        raise ConfigError(f"{run_dir} completed on {record.data['ended_at']}: nothing to resume (expkit reproduce re-runs it).")
    overrides = recorded_overrides(record, extra)
    composition = composition_of(record)
    changes = dict_diff(record.data["config"], compose_resolved(composition, overrides))
    if changes:
        show_diff(f"Resuming {run_dir} with a changed config", changes)
        if not allow_config_change:
            raise ConfigError(f"the config of {run_dir} would change ({len(changes)} keys above); pass --allow-config-change to resume anyway.")
    launch_train(composition, [*overrides, f'hydra.run.dir="{Path(run_dir).resolve()}"'])


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
