"""Registry versions and stages as DVC artifacts with GTO git tags (opt-in: ``--git``).

``dvc artifacts get URL NAME --rev vX.Y.Z | --stage S`` resolves an artifact only from git tags in
GTO's format plus an ``artifacts:`` entry in ``dvc.yaml`` at the tagged commit:

    NAME@v<N>.0.0        annotated tag on the commit that registered version N  (GTO wants semver)
    NAME#<stage>#<k>     annotated tag on that same commit when the stage moves to version N
                         (k counts this artifact's counted tags, as GTO numbers them; the newest
                         tag of a stage wins)

``expkit register RUN --name NAME --git`` writes ``artifacts: NAME: {path: registry/NAME/v<N>,
type: model, desc, labels, meta}`` into the repository's ``dvc.yaml``, commits only the registry
files it touched (``registry.json``, ``v<N>.dvc``, the ``.gitignore`` files, ``dvc.yaml``) and tags
that commit; ``expkit promote ... --git`` commits ``registry.json`` and tags the promoted version's
commit with the stage. Nothing is pushed: ``git push --follow-tags`` (or ``git push origin TAG``) and
``dvc push`` share them. Without ``--git`` expkit never touches git.

Plain ``git`` commands (the tag names are checked with GTO's own parser), so nothing here needs a
network or a GTO configuration.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expkit.errors import ConfigError, ExpkitError

PROJECT_FILE = "dvc.yaml"


def registry_file(registry_root: Path) -> Path:
    from expkit.registry.store import REGISTRY_FILE  # store imports this module

    return Path(registry_root) / REGISTRY_FILE


def gto_version(number: int) -> str:
    """The GTO (semver) version of registry version ``number``: 3 -> ``v3.0.0``."""
    return f"v{number}.0.0"


def version_tag(name: str, number: int) -> str:
    return f"{name}@{gto_version(number)}"


@dataclass
class GitRepo:
    """The git work tree (also the DVC root) that holds a registry."""

    root: Path

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["git", *args], cwd=self.root, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise ExpkitError(f"git {' '.join(args)} failed in {self.root}: {(proc.stderr or proc.stdout).strip()[-800:]}")
        return proc

    def rel(self, path: Path) -> str:
        return Path(os.path.relpath(Path(path).resolve(), self.root)).as_posix()

    def staged(self) -> list[str]:
        return [p for p in self.git("diff", "--cached", "--name-only", "-z").stdout.split("\0") if p]

    def tag_exists(self, tag: str) -> bool:
        return self.git("rev-parse", "-q", "--verify", f"refs/tags/{tag}", check=False).returncode == 0

    def tags(self) -> list[str]:
        return [t for t in self.git("tag", "--list").stdout.splitlines() if t]

    def commit(self, paths: list[str], message: str) -> str:
        """Stage exactly ``paths`` (removals too) and commit them; returns the commit hash."""
        self.git("add", "-A", "--", *paths)
        extra = sorted(set(self.staged()) - set(paths))
        if extra:  # e.g. core.autostage staged something else meanwhile: do not commit it
            raise ConfigError(f"refusing to commit: unrelated staged files {extra}; unstage them (git restore --staged) and retry.")
        if self.staged():
            self.git("commit", "-q", "-m", message, "--", *paths)
        return self.git("rev-parse", "HEAD").stdout.strip()

    def annotated_tag(self, tag: str, commit: str, message: str) -> None:
        self.git("tag", "-a", tag, commit, "-m", message)


def _check_gto_name(value: str, what: str) -> None:
    from gto.constants import check_string_is_valid

    if not check_string_is_valid(value):
        raise ConfigError(f"{what} {value!r} cannot be a DVC/GTO artifact name with --git: letters, digits, '-', '_' "
                          f"and '/', starting and ending with a letter or digit (e.g. {value.strip('-_') or 'model'!r}).")


def _check_tag(tag: str, **expected: Any) -> None:
    """The tag parses in GTO as intended (the format dvc artifacts get relies on)."""
    from gto.tag import parse_name

    parsed = parse_name(tag, raise_on_fail=False)
    if not parsed or any(parsed.get(k) != v for k, v in expected.items()):
        raise ExpkitError(f"internal error: {tag!r} is not the GTO tag expected ({expected}); parsed as {parsed}.")


def open_repo(registry_root: Path, name: str) -> GitRepo:
    """The git + DVC repository holding ``registry_root``, refusing (exit 2) with the fix when unusable."""
    start = Path(registry_root).resolve()
    while not start.exists():
        start = start.parent
    proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError(f"--git: {registry_root} is not inside a git repository; run `git init` (and `dvc init`) "
                          "there first, or register without --git.")
    repo = GitRepo(Path(proc.stdout.strip()).resolve())
    if not (repo.root / ".dvc").is_dir():
        raise ConfigError(f"--git: {repo.root} is a git repository but not a DVC one (`dvc artifacts get` needs DVC "
                          f"at the git root); run `dvc init` in {repo.root}, or register without --git.")
    _check_gto_name(name, "--name")
    if repo.git("var", "GIT_COMMITTER_IDENT", check=False).returncode != 0:
        raise ConfigError("--git: git has no committer identity here; set it (git config user.name ...; "
                          "git config user.email ...) and retry.")
    staged = repo.staged()
    if staged:
        raise ConfigError(f"--git: files are already staged in {repo.root} ({', '.join(staged[:5])}"
                          f"{', ...' if len(staged) > 5 else ''}); expkit commits only the registry files: commit or "
                          "unstage them first (git commit / git restore --staged), then retry.")
    registry_json = repo.rel(registry_file(registry_root))
    if repo.git("status", "--porcelain", "--", registry_json).stdout.strip():
        raise ConfigError(f"--git: {registry_json} has uncommitted changes (a version registered or promoted without "
                          "--git, or an edit), which the registry commit would include without their files; commit "
                          f"them first (git add {repo.rel(Path(registry_root))} && git commit), then retry.")
    return repo


def check_register(repo: GitRepo, name: str, number: int) -> None:
    """Before anything is written: the version tag is free and dvc.yaml has no uncommitted edits."""
    tag = version_tag(name, number)
    if repo.tag_exists(tag):
        raise ConfigError(f"--git: the tag {tag} already exists, although {name} v{number} is not in registry.json; "
                          f"delete the stale tag (git tag -d {tag}) or restore registry.json from git.")
    if repo.git("status", "--porcelain", "--", PROJECT_FILE).stdout.strip():
        raise ConfigError(f"--git: {PROJECT_FILE} has uncommitted changes, which the registry commit would include; "
                          f"commit or stash them first.")


def artifact_entry(name: str, entry: dict[str, Any], path: str, kpis: list | None) -> dict[str, Any]:
    """The ``artifacts:`` entry of ``dvc.yaml`` for one registry version."""
    metrics = entry.get("metrics") or {}
    kpi_metrics = [k.metric for k in kpis] if kpis else list(metrics)
    meta = {
        "expkit_version": entry["version"],
        "gto_version": gto_version(entry["version"]),
        "model": entry["model"],
        "run_dir": entry["run_dir"],
        "test_data": entry["eval_data"]["fingerprint"],
        "kpis": {m: round(float(metrics[m]), 6) for m in kpi_metrics if m in metrics},
    }
    primary = kpi_metrics[0] if kpi_metrics else None
    desc = f"{name} v{entry['version']}: {entry['model'].rsplit('.', 1)[-1]}"
    if primary in metrics:
        desc += f", {primary}={metrics[primary]:.4f} on test data {meta['test_data']}"
    labels = ["expkit", entry["model"].rsplit(".", 1)[-1]]
    return {"path": path, "type": "model", "desc": desc, "labels": labels, "meta": meta}


def write_artifact(repo: GitRepo, name: str, artifact: dict[str, Any]) -> str:
    """Add or replace ``artifacts.<name>`` in the root ``dvc.yaml`` (comments kept, as DVC does)."""
    from dvc.utils.serialize import dump_yaml, modify_yaml

    path = repo.root / PROJECT_FILE
    if not path.exists():
        dump_yaml(path, {"artifacts": {name: artifact}})
    else:
        with modify_yaml(path) as data:
            data.setdefault("artifacts", {})[name] = artifact
    return PROJECT_FILE


def commit_and_tag_version(repo: GitRepo, name: str, entry: dict[str, Any], registry_root: Path,
                           kpis: list | None) -> dict[str, Any]:
    """After ``register`` wrote the version (and ``registry.json``): dvc.yaml, commit, version tag."""
    number = entry["version"]
    if not entry.get("dvc_file"):
        raise ExpkitError(f"--git: {name} v{number} was not `dvc add`ed; the registry must lie in the DVC repository {repo.root}.")
    version_dir = Path(registry_root) / name / f"v{number}"
    artifact = artifact_entry(name, entry, repo.rel(version_dir), kpis)
    paths = [repo.rel(registry_file(registry_root)), repo.rel(version_dir) + ".dvc", write_artifact(repo, name, artifact)]
    for ignore in (version_dir.parent / ".gitignore", Path(registry_root) / ".gitignore"):
        if ignore.is_file():
            paths.append(repo.rel(ignore))
    tag = version_tag(name, number)
    _check_tag(tag, name=name, version=gto_version(number))
    commit = repo.commit(paths, f"Register {name} v{number} ({tag}) from {entry['run_dir']}")
    repo.annotated_tag(tag, commit, f"expkit register: {name} v{number} = {artifact['desc']}")
    return {"tag": tag, "commit": commit, "artifact": name, "path": artifact["path"], "files": paths}


def version_commit(repo: GitRepo, name: str, number: int) -> str:
    tag = version_tag(name, number)
    if not repo.tag_exists(tag):
        raise ConfigError(f"--git: {name} v{number} has no version tag {tag} (it was registered without --git), so "
                          f"`dvc artifacts get` cannot resolve it; register the run again with --git, or promote without --git.")
    return repo.git("rev-parse", f"{tag}^{{commit}}").stdout.strip()


def stage_tag(repo: GitRepo, name: str, stage: str) -> str:
    """``NAME#STAGE#k``, k one more than the highest counter among this artifact's tags (GTO's rule)."""
    from gto.tag import parse_name

    counters = [p.get("counter", 0) for p in (parse_name(t, raise_on_fail=False) for t in repo.tags()) if p and p.get("name") == name]
    return f"{name}#{stage}#{max(counters, default=0) + 1}"


def check_promote(repo: GitRepo, name: str, number: int, stage: str) -> str:
    """Before promoting: the stage is a valid GTO name and the version has its tag; returns its commit."""
    _check_gto_name(stage, "--stage")
    return version_commit(repo, name, number)


def commit_and_tag_stage(repo: GitRepo, name: str, number: int, stage: str, commit: str,
                         registry_root: Path, tag: str) -> dict[str, Any]:
    """After a successful promotion: commit ``registry.json`` and tag the version's commit with the stage."""
    state = commit_registry(repo, registry_root, f"Promote {name} v{number} to {stage} ({tag})")
    _check_tag(tag, name=name, stage=stage)
    repo.annotated_tag(tag, commit, f"expkit promote: {name} v{number} ({version_tag(name, number)}) to {stage}")
    return {"tag": tag, "commit": commit, "registry_commit": state}


def commit_registry(repo: GitRepo, registry_root: Path, message: str) -> str:
    """Commit ``registry.json`` (e.g. a promotion or a refused one, which its history records)."""
    paths = [repo.rel(registry_file(registry_root))]
    if (Path(registry_root) / ".gitignore").is_file():
        paths.append(repo.rel(Path(registry_root) / ".gitignore"))
    return repo.commit(paths, message)
