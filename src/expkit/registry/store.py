"""The model registry: ``registry/registry.json`` plus one folder per version.

    registry/registry.json             names -> versions (run, metrics, data hashes), stages, history
    registry/<name>/v<N>/model.ckpt    the checkpoint          (DVC-tracked: registry/<name>/v<N>.dvc)
    registry/<name>/v<N>/card.json     the version's entry + its run record, test fingerprint, train stats

``expkit register RUN_DIR --name NAME`` evaluates the run's best checkpoint on its test split,
copies it into a new version folder, ``dvc add``s the folder when inside a DVC repository (so
``dvc get <repo> registry/<name>/v<N>`` fetches it, ``dvc push`` shares it) and logs it as a W&B
model artifact ``<name>`` with aliases ``v<N>``/``latest`` (offline: recorded in the local W&B run,
uploaded by ``wandb sync``). ``expkit promote`` moves a stage (``production``) to a version only if
it beats the version holding that stage on the KPIs (:mod:`expkit.registry.kpis`), both evaluated
on the same test data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from expkit.errors import ConfigError, DataError, ExpkitError
from expkit.registry import evaluation, git_artifacts
from expkit.registry.kpis import KPI, Judgement, judge, kpis_of, unmeasured

REGISTRY_FILE = "registry.json"
DEFAULT_ROOT = Path("registry")
CARD_FILE = "card.json"
MODEL_FILE = "model.ckpt"
TRAIN_STATS_FILE = "train_stats.json"


class PromotionRefused(ExpkitError):
    """The candidate does not beat the model holding the stage on the declared KPIs."""

    exit_code = 4


@contextmanager
def registry_lock(root: Path) -> Iterator[None]:
    """Hold ``<root>/.registry.lock`` (a ``filelock`` file lock, across processes) while reading,
    changing and writing ``registry.json``: concurrent ``register``/``promote`` commands take turns."""
    from filelock import FileLock

    Path(root).mkdir(parents=True, exist_ok=True)
    git_ignore(Path(root), "/.registry.lock")
    with FileLock(str(Path(root) / ".registry.lock"), timeout=3600):
        yield


def git_ignore(root: Path, pattern: str) -> None:
    """Have ``<root>/.gitignore`` list ``pattern`` (files of the registry's own that git must not track)."""
    path = Path(root) / ".gitignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    if pattern not in lines:
        path.write_text("\n".join([*lines, pattern]) + "\n")


class Registry:
    """``registry.json`` under ``root``; every change is written at once (atomically). Change it
    inside :func:`registry_lock`.

    Raises :class:`DataError` (exit 3) for a ``registry.json`` that is not a readable registry; it
    is never overwritten then.
    """

    def __init__(self, root: Path = DEFAULT_ROOT) -> None:
        self.root = Path(root)
        path = self.root / REGISTRY_FILE
        self.data: dict[str, Any] = self._read(path) if path.is_file() else {"models": {}}

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        fix = "restore it from git (git checkout -- <file>) or a copy; expkit will not overwrite it"
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not readable JSON ({exc}); {fix}.") from None
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise DataError(f"{path}: not a model registry (no 'models' mapping); {fix}.")
        return data

    def save(self) -> None:
        from expkit.tracking.files import write_atomic

        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.root / REGISTRY_FILE, json.dumps(self.data, indent=2, default=str) + "\n")

    def model(self, name: str) -> dict[str, Any]:
        if name not in self.data["models"]:
            known = ", ".join(sorted(self.data["models"])) or "none yet"
            raise ConfigError(f"no model named {name!r} in {self.root / REGISTRY_FILE} (registered: {known}); "
                              f"register one with `expkit register RUN_DIR --name {name}`.")
        return self.data["models"][name]

    def version(self, name: str, number: int) -> dict[str, Any]:
        for entry in self.model(name)["versions"]:
            if entry["version"] == number:
                return entry
        raise ConfigError(f"{name} has no version {number} (expkit models lists them).")

    def stage_holder(self, name: str, stage: str) -> dict[str, Any] | None:
        number = self.model(name)["stages"].get(stage)
        return None if number is None else self.version(name, number)

    def version_dir(self, name: str, number: int) -> Path:
        return self.root / name / f"v{number}"

    def find(self, spec: str, name: str | None = None) -> tuple[str, dict[str, Any]]:
        """A version from ``NAME:vN`` / ``NAME@stage`` or the run directory it was registered from."""
        for sep in (":v", "@"):
            if sep in spec and not Path(spec).exists():
                model, ref = spec.split(sep, 1)
                entry = self.version(model, int(ref)) if sep == ":v" else self.stage_holder(model, ref)
                if entry is None:
                    raise ConfigError(f"no version of {model} holds stage {ref!r}.")
                return model, entry
        run_dir = str(evaluation.run_dir_of(evaluation.resolve_checkpoint(spec)))
        found = [(n, v) for n, m in self.data["models"].items() if name in (None, n)
                 for v in m["versions"] if v["run_dir"] == run_dir]
        if not found:
            hint = f" --name {name}" if name else " --name NAME"
            raise ConfigError(f"{spec} is not registered{' as ' + name if name else ''}: `expkit register {spec}{hint}` first.")
        if len({n for n, _ in found}) > 1:
            raise ConfigError(f"{spec} is registered under several names ({sorted({n for n, _ in found})}): pass --name.")
        return found[-1]


def dvc_root(start: Path) -> Path | None:
    from expkit.tracking.data_version import find_dvc_root

    return find_dvc_root(start)


def dvc_add(path: Path) -> str | None:
    """``dvc add`` a version folder when it lies in a DVC repository; returns the ``.dvc`` file."""
    root = dvc_root(path.resolve().parent)
    if root is None:
        return None
    proc = subprocess.run([sys.executable, "-m", "dvc", "add", "-q", str(path.resolve().relative_to(root))],
                          cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExpkitError(f"dvc add {path} failed: {proc.stderr.strip()[-500:]}")
    return str(path.resolve().relative_to(root)) + ".dvc"


def wandb_alias(number: int) -> str:
    """The W&B alias of registry version ``number`` (W&B numbers its own versions v0, v1, ...)."""
    return f"expkit-v{number}"


def log_wandb_artifact(name: str, version_dir: Path, aliases: list[str], metadata: dict[str, Any],
                       project: str | None, registry_root: Path) -> dict[str, Any] | None:
    """Log the version folder as a W&B model artifact (offline unless W&B is configured online)."""
    from expkit.tracking.wandb import logged_in

    if os.environ.get("WANDB_MODE") == "disabled":
        return None
    import wandb

    mode = os.environ.get("WANDB_MODE") or ("online" if logged_in() else "offline")
    registry_root.mkdir(parents=True, exist_ok=True)
    git_ignore(registry_root, "/wandb/")  # W&B's local runs (<registry>/wandb/) stay out of git
    run = wandb.init(project=project or "expkit", job_type="registry", dir=str(registry_root.resolve()), mode=mode,
                     name=f"registry-{name}-{aliases[0]}", settings=wandb.Settings(silent=True), reinit="create_new")
    try:
        artifact = wandb.Artifact(name, type="model", metadata=metadata)
        artifact.add_dir(str(version_dir))
        run.log_artifact(artifact, aliases=aliases)
        info = {"mode": mode, "project": run.project, "run_id": run.id, "artifact": name, "aliases": aliases,
                "run_dir": str(Path(run.dir).parent)}
    finally:
        run.finish()
    return info


def register(run: str | Path, name: str, root: Path = DEFAULT_ROOT, wandb_log: bool = True,
             git: bool = False) -> dict[str, Any]:
    """Register the best checkpoint of ``run`` as the next version of ``name``; ``git``: also as a DVC
    artifact with a GTO version tag, committed (:mod:`expkit.registry.git_artifacts`)."""
    from expkit.tracking.record import RUN_RECORD_FILE

    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"--name {name!r}: use letters, digits, '-' and '_' only (it names a folder and a W&B artifact).")
    registry = Registry(root)  # a corrupt registry is refused before any work
    repo = git_artifacts.open_repo(registry.root, name) if git else None  # refuse before any work
    ckpt = evaluation.resolve_checkpoint(run)
    run_dir = evaluation.run_dir_of(ckpt)
    trained = evaluation.load_trained(ckpt)
    result = evaluation.evaluate(trained)
    kpis = kpis_of(trained.config)
    record_path = run_dir / RUN_RECORD_FILE
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    with registry_lock(registry.root):  # the version number and the files: one command at a time
        return _add_version(Registry(root), name, ckpt, run_dir, trained, result, kpis, record, repo, wandb_log)


def _add_version(registry: Registry, name: str, ckpt: Path, run_dir: Path, trained: Any, result: Any,
                 kpis: list[KPI], record: dict[str, Any], repo: Any, wandb_log: bool) -> dict[str, Any]:
    model = registry.data["models"].setdefault(name, {"versions": [], "stages": {}, "history": []})
    number = max((v["version"] for v in model["versions"]), default=0) + 1
    version_dir = registry.version_dir(name, number)
    if repo is not None:
        git_artifacts.check_register(repo, name, number)
    version_dir.mkdir(parents=True, exist_ok=False)
    shutil.copy2(ckpt, version_dir / MODEL_FILE)
    (version_dir / TRAIN_STATS_FILE).write_text(json.dumps(evaluation.input_stats(trained)) + "\n")
    entry = {
        "version": number,
        "registered_at": _now(),
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt),
        "model": trained.config["model"]["_target_"],
        "kpis": [vars(k) for k in kpis],
        "metrics": result.metrics,
        "training_metrics": record.get("metrics"),
        "per_class": result.per_class,
        "eval_data": {"fingerprint": result.data_fingerprint, "samples": result.samples,
                      "data": trained.config["data"].get("path") or trained.config["data"]["_target_"]},
        "data_version": record.get("data_version"),
        "git": {k: v for k, v in (record.get("git") or {}).items() if k != "diff"} or None,
        "run_wandb": record.get("wandb"),
    }
    card = {"name": name, **entry, "run_record": record}
    (version_dir / CARD_FILE).write_text(json.dumps(card, indent=2, default=str) + "\n")
    entry["dvc_file"] = dvc_add(version_dir)
    if wandb_log:
        project = (record.get("wandb") or {}).get("project")
        entry["wandb"] = log_wandb_artifact(name, version_dir, [wandb_alias(number), "latest"],
                                            {k: entry[k] for k in ("version", "run_dir", "metrics", "eval_data")}, project, registry.root)
    model["versions"].append(entry)
    model["history"].append({"at": entry["registered_at"], "event": "registered", "version": number})
    if repo is not None:
        entry["gto_tag"] = git_artifacts.version_tag(name, number)
    registry.save()
    if repo is not None:
        entry["git_commit"] = git_artifacts.commit_and_tag_version(repo, name, entry, registry.root, kpis)
    return entry


def compare_with_stage(registry: Registry, name: str, candidate: dict[str, Any], stage: str,
                       kpis: list[KPI]) -> tuple[Judgement, dict[str, Any] | None, dict[str, float] | None, str]:
    """Judge ``candidate`` against the version holding ``stage``, on the candidate's test data.

    Returns (judgement, holder entry, holder metrics on that data, how they were obtained)."""
    holder = registry.stage_holder(name, stage)
    if holder is None:
        return judge(kpis, candidate["metrics"], None), None, None, f"the candidate's test data; no model holds {stage!r} yet"
    if holder["version"] == candidate["version"]:
        raise ConfigError(f"{name} v{candidate['version']} already holds stage {stage!r}.")
    if holder["eval_data"]["fingerprint"] == candidate["eval_data"]["fingerprint"]:
        reference, how = holder["metrics"], f"recorded metrics, same test data ({candidate['eval_data']['fingerprint']})"
    else:  # other test data: evaluate the stage holder on the candidate's test split
        data_cfg = _candidate_data(registry, name, candidate)
        trained = evaluation.load_trained(registry.version_dir(name, holder["version"]) / MODEL_FILE, data_cfg=data_cfg)
        reference = evaluation.evaluate(trained).metrics
        how = f"re-evaluated v{holder['version']} on the candidate's test data ({candidate['eval_data']['fingerprint']})"
    return judge(kpis, candidate["metrics"], reference), holder, reference, how


def _candidate_data(registry: Registry, name: str, candidate: dict[str, Any]) -> dict[str, Any]:
    """The candidate's data config, refused when its test split changed since registration."""
    from expkit.rebuild import data_fingerprint

    data_cfg = evaluation.load_trained(registry.version_dir(name, candidate["version"]) / MODEL_FILE).config["data"]
    if data_fingerprint(data_cfg)[0] != candidate["eval_data"]["fingerprint"]:
        raise ConfigError(f"{name} v{candidate['version']}: its test data changed since registration "
                          f"({candidate['eval_data']['data']}); register the run again on the current data.")
    return data_cfg


def promote(spec: str, stage: str, root: Path = DEFAULT_ROOT, name: str | None = None,
            kpis: list[KPI] | None = None, wandb_log: bool = True, git: bool = False) -> tuple[Judgement, str]:
    """Give ``stage`` to the version ``spec`` names if it beats the current holder on the
    candidate's KPIs (its experiment's, recorded at registration; ``kpis`` overrides them); else
    raise :class:`PromotionRefused` carrying the comparison. A candidate whose test metrics lack a
    KPI's metric is refused with :class:`ConfigError` (exit 2) before anything is written. ``git``: also commit
    ``registry.json`` and put the GTO stage tag on the version's commit
    (:mod:`expkit.registry.git_artifacts`)."""
    with registry_lock(Path(root)):  # judged against the stage holder of this moment; one command at a time
        return _promote(Registry(root), spec, stage, name, kpis, wandb_log, git)


def _promote(registry: Registry, spec: str, stage: str, name: str | None, kpis: list[KPI] | None,
             wandb_log: bool, git: bool) -> tuple[Judgement, str]:
    name, candidate = registry.find(spec, name)
    kpis = kpis or kpis_of_entry(candidate)
    why = unmeasured(kpis, candidate["metrics"])
    if why:  # nothing to judge by: a config error, whether or not a model holds the stage
        raise ConfigError(f"{name} v{candidate['version']} cannot be promoted to {stage}: {why}")
    if git:  # refuse before judging: not a git+DVC repo, staged files, no version tag
        repo = git_artifacts.open_repo(registry.root, name)
        version_commit = git_artifacts.check_promote(repo, name, candidate["version"], stage)
    judgement, holder, _, how = compare_with_stage(registry, name, candidate, stage, kpis)
    model = registry.model(name)
    event = {"at": _now(), "event": f"promote to {stage}", "version": candidate["version"],
             "against": holder and holder["version"], "compared_on": how, "passed": judgement.passed,
             "reasons": judgement.reasons}
    model["history"].append(event)
    if not judgement.passed:
        registry.save()
        if git:  # the refusal is in registry.json's history: commit it, so later --git runs find it clean
            git_artifacts.commit_registry(repo, registry.root, f"Refuse {name} v{candidate['version']} for {stage}: "
                                          + "; ".join(judgement.reasons))
        exc = PromotionRefused(f"{name} v{candidate['version']} was not promoted to {stage}: " + "; ".join(judgement.reasons))
        exc.judgement, exc.how = judgement, how  # type: ignore[attr-defined]
        raise exc
    model["stages"][stage] = candidate["version"]
    if git:
        event["gto_tag"] = git_artifacts.stage_tag(repo, name, stage)
    if wandb_log and candidate.get("wandb"):
        version_dir = registry.version_dir(name, candidate["version"])
        # The same files give the same artifact version: W&B moves the alias onto it (and, as W&B
        # always does when logging, "latest" too).
        candidate["wandb_promotion"] = log_wandb_artifact(name, version_dir, [wandb_alias(candidate["version"]), stage], {"stage": stage},
                                                          candidate["wandb"].get("project"), registry.root)
    registry.save()
    if git:
        git_artifacts.commit_and_tag_stage(repo, name, candidate["version"], stage, version_commit, registry.root, event["gto_tag"])
    return judgement, how


def kpis_of_entry(entry: dict[str, Any]) -> list[KPI]:
    """The KPIs a version was registered with (its experiment's)."""
    return [KPI(**k) for k in entry.get("kpis") or []] or kpis_of({})


def _now() -> str:
    from expkit.tracking.record import now

    return now()
