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


def compose_resolved(task: str, overrides: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import expkit.resolvers  # noqa: F401
    from expkit.paths import config_dir

    job_overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name=task, overrides=job_overrides)
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


def launch_train(overrides: list[str]) -> None:
    from expkit.tasks.train import main

    sys.argv = ["expkit-train", *overrides]
    main()


def reproduce(run_dir: Path, extra: list[str], allow_differences: bool) -> None:
    record = RunRecord.load(run_dir)
    overrides = recorded_overrides(record, extra)
    config_changes = dict_diff(record.data["config"], compose_resolved(record.data["task"], overrides))
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
    launch_train(overrides)


def resume(run_dir: Path, extra: list[str], allow_config_change: bool) -> None:
    record = RunRecord.load(run_dir)
    if record.data["status"] == "completed":
        raise ConfigError(f"{run_dir} completed on {record.data['ended_at']}: nothing to resume (expkit reproduce re-runs it).")
    overrides = recorded_overrides(record, extra)
    changes = dict_diff(record.data["config"], compose_resolved(record.data["task"], overrides))
    if changes:
        show_diff(f"Resuming {run_dir} with a changed config", changes)
        if not allow_config_change:
            raise ConfigError(f"the config of {run_dir} would change ({len(changes)} keys above); pass --allow-config-change to resume anyway.")
    launch_train([*overrides, f'hydra.run.dir="{Path(run_dir).resolve()}"'])


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
