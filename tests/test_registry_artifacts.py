"""Registry versions and stages as DVC artifacts (``--git``): GTO tags + ``artifacts:`` in dvc.yaml,
fetched with the real ``dvc artifacts get`` from another directory, the files coming from the DVC
remote (the repository's cache is deleted first).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from expkit.errors import ConfigError
from expkit.registry.store import PromotionRefused, Registry, promote, register
from tests.conftest import train_side_by_side
from tests.test_dvc import dvc, git
from tests.test_production import TINY, expkit

DVC_YAML = """\
# a user's pipeline: comments and stages must survive the artifact entries
stages:
  hello:
    cmd: echo hello
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A good (>= 0.9 test accuracy, the KPI bound) and a poor digits MLP, trained side by side."""
    root = tmp_path_factory.mktemp("artifact_runs")
    overrides = {"good": ["trainer.max_epochs=4"], "poor": ["trainer.max_epochs=1", "model.optimizer.lr=1e-4"]}
    return train_side_by_side(root, {name: [*o, *TINY] for name, o in overrides.items()})


def new_repo(path: Path, remote: Path) -> Path:
    path.mkdir()
    git(path, "init", "-q")
    git(path, "config", "user.name", "expkit tests")
    git(path, "config", "user.email", "tests@expkit.invalid")
    dvc(path, "init", "-q")
    dvc(path, "remote", "add", "-d", "storage", str(remote))
    (path / "dvc.yaml").write_text(DVC_YAML)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "init")
    return path


def test_versions_and_stages_with_dvc_artifacts_get(runs, tmp_path):
    repo = new_repo(tmp_path / "repo", tmp_path / "remote")
    registry_root = repo / "registry"

    # Refusals (exit 2, before anything is written): no git repository; unrelated staged files.
    with pytest.raises(ConfigError, match="not inside a git repository.*git init"):
        register(runs["good"], "digits", tmp_path / "elsewhere" / "registry", wandb_log=False, git=True)
    (repo / "notes.txt").write_text("work in progress\n")
    git(repo, "add", "notes.txt")
    with pytest.raises(ConfigError, match=r"already staged.*notes\.txt.*git restore --staged"):
        register(runs["good"], "digits", registry_root, wandb_log=False, git=True)
    assert not registry_root.exists()
    git(repo, "rm", "-q", "--cached", "notes.txt")  # stays untracked: must not be committed by expkit

    v1 = register(runs["good"], "digits", registry_root, wandb_log=False, git=True)
    assert v1["git_commit"]["tag"] == "digits@v1.0.0"
    out = expkit(repo, "register", str(runs["poor"]), "--name", "digits", "--no-wandb", "--git").stdout
    assert "tagged digits@v2.0.0" in out and "--rev v2.0.0" in out

    with pytest.raises(PromotionRefused):  # the poor one misses the KPI bound: no stage tag, the refusal committed
        promote("digits:v2", "production", registry_root, wandb_log=False, git=True)
    assert git(repo, "log", "-1", "--format=%s").startswith("Refuse digits v2 for production: ")
    out = expkit(repo, "promote", "digits:v1", "--stage", "production", "--no-wandb", "--git").stdout
    assert "tagged digits#production#1" in out and "--stage production" in out

    tags = set(git(repo, "tag", "--list").split())
    assert tags == {"digits@v1.0.0", "digits@v2.0.0", "digits#production#1"}
    assert {git(repo, "cat-file", "-t", t).strip() for t in tags} == {"tag"}  # annotated, as GTO requires
    commit = {t: git(repo, "rev-parse", f"{t}^{{commit}}").strip() for t in tags}
    assert commit["digits#production#1"] == commit["digits@v1.0.0"] != commit["digits@v2.0.0"]
    assert git(repo, "status", "--porcelain").split() == ["??", "notes.txt"]  # only expkit's files committed
    assert git(repo, "log", "-1", "--format=%s", "digits@v1.0.0").startswith("Register digits v1 (digits@v1.0.0)")
    assert set(git(repo, "show", "--name-only", "--format=", "digits@v1.0.0^{commit}").split()) == {
        "dvc.yaml", "registry/registry.json", "registry/digits/v1.dvc", "registry/digits/.gitignore",
        "registry/.gitignore"}  # it keeps the registry's lock file (and W&B's local runs) out of git
    assert Registry(registry_root).model("digits")["stages"] == {"production": 1}

    # dvc.yaml: the user's comment and stage kept; the artifact entry at each version's commit.
    text = (repo / "dvc.yaml").read_text()
    assert text.startswith("# a user's pipeline") and "hello:" in text
    for number in (1, 2):
        spec = yaml.safe_load(git(repo, "show", f"digits@v{number}.0.0:dvc.yaml"))["artifacts"]["digits"]
        assert spec["path"] == f"registry/digits/v{number}" and spec["type"] == "model"
        assert spec["meta"]["expkit_version"] == number and "test/acc" in spec["meta"]["kpis"] and spec["desc"]

    # GTO itself (offline, from the local path) sees the versions and the stage.
    from gto.api import find_versions_in_stage

    assert [v.version for v in find_versions_in_stage(str(repo), "digits", "production")] == ["v1.0.0"]

    dvc(repo, "push", "-q")
    shutil.rmtree(repo / ".dvc" / "cache")  # the files must come from the remote
    elsewhere = tmp_path / "consumer"
    elsewhere.mkdir()
    dvc(elsewhere, "artifacts", "get", str(repo), "digits", "--stage", "production", "-o", "prod")
    dvc(elsewhere, "artifacts", "get", str(repo), "digits", "--rev", "v2.0.0", "-o", "v2")
    for got, number in (("prod", 1), ("v2", 2)):
        expected = registry_root / "digits" / f"v{number}"
        assert (elsewhere / got / "model.ckpt").read_bytes() == (expected / "model.ckpt").read_bytes()
        assert json.loads((elsewhere / got / "card.json").read_text())["version"] == number
    assert (registry_root / "digits/v1/model.ckpt").read_bytes() != (registry_root / "digits/v2/model.ckpt").read_bytes()

    # --git refuses while registry.json has changes made without --git: the commit would sweep them in.
    register(runs["good"], "digits", registry_root, wandb_log=False)
    for refused in (lambda: promote("digits:v1", "staging", registry_root, wandb_log=False, git=True),
                    lambda: register(runs["good"], "digits", registry_root, wandb_log=False, git=True)):
        with pytest.raises(ConfigError, match=r"registry/registry\.json has uncommitted changes.*git add registry"):
            refused()
    assert len(Registry(registry_root).model("digits")["versions"]) == 3 and "staging" not in git(repo, "tag", "--list")
    git(repo, "add", "registry")
    git(repo, "commit", "-q", "-m", "v3, registered without --git")

    # promote --git refuses a version registered without --git (no tag to point at), before judging.
    with pytest.raises(ConfigError, match="no version tag digits@v3.0.0"):
        promote("digits:v3", "production", registry_root, wandb_log=False, git=True)
