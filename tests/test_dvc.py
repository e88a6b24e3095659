"""The DVC pipeline with the real ``dvc`` CLI in a temporary git repository (offline).

A "fresh clone" is the working tree's files (tracked and not ignored) in a new git repository,
with a tiny ``params.yaml`` (2 epochs, no W&B) so every stage runs in seconds, and a local
remote inside the test's temporary folder (``.dvc/config.local``, as a user would override it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from expkit.errors import DataError
from tests.conftest import ROOT

TINY = ["trainer.max_epochs=2", "logger=none"]
STAGES = ("digits", "prepare", "train", "evaluate")
TRAIN_CMD = ["train.py", "--config-dir", ".", "--config-name", "params"]  # as in dvc.yaml
METRICS = ("outputs/dvc/train/metrics.json", "outputs/dvc/evaluate/metrics.json")


def env() -> dict[str, str]:
    # Stage commands say `python`: it must be this interpreter even when its bin/ is not on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
            "PYTHONDONTWRITEBYTECODE": "1"}


def run(cwd: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "dvc", *args, check=check)


def python(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, *args, check=check)


def git(cwd: Path, *args: str) -> str:
    return run(cwd, "git", *args).stdout


def use_remote(repo: Path, remote: Path) -> None:
    """Point the committed default remote at ``remote`` for this clone only (config.local)."""
    dvc(repo, "remote", "modify", "--local", "local", "url", str(remote))


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)


def ran_stages(output: str) -> set[str]:
    return {stage for stage in STAGES if f"Running stage '{stage}'" in output}


def metrics(repo: Path) -> dict[str, dict]:
    return {path: json.loads((repo / path).read_text()) for path in METRICS}


def copy_repo(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    """The project as a fresh clone: committed, nothing reproduced, tiny parameters."""
    repo = tmp_path_factory.mktemp("clone") / "repo"
    repo.mkdir()
    listed = run(ROOT, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    for rel in filter(None, listed.split("\0")):
        source = ROOT / rel
        if source.is_symlink():  # conf -> src/expkit/conf
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).symlink_to(os.readlink(source))
        elif source.is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / rel)
    git(repo, "init", "-q")
    git(repo, "config", "user.name", "expkit tests")
    git(repo, "config", "user.email", "tests@expkit.invalid")
    use_remote(repo, repo.parent / "remote")
    python(repo, "-m", "expkit.pipeline.params", *TINY)
    commit_all(repo, "fresh clone")
    return repo


@pytest.fixture(scope="module")
def reproduced(fresh_clone, tmp_path_factory) -> tuple[Path, str]:
    """``dvc repro`` once on a copy of the fresh clone, dvc.lock committed: (repo, repro output)."""
    repo = copy_repo(fresh_clone, tmp_path_factory.mktemp("reproduced") / "repo")
    output = dvc(repo, "repro").stdout
    commit_all(repo, "reproduce")
    return repo, output


# -- the pipeline ----------------------------------------------------------------------------
def test_fresh_repro_runs_every_stage_then_nothing(reproduced):
    repo, first = reproduced
    assert ran_stages(first) == set(STAGES), first
    for path, values in metrics(repo).items():
        assert {"test/acc", "test/loss"} <= set(values), path
        assert 0.0 <= values["test/acc"] <= 1.0
    train, evaluate = metrics(repo).values()
    assert evaluate["test/acc"] == pytest.approx(train["test/acc"], abs=1e-6)  # same best checkpoint

    start = time.perf_counter()
    status = dvc(repo, "status").stdout
    status_s = time.perf_counter() - start
    start = time.perf_counter()
    second = dvc(repo, "repro").stdout
    repro_s = time.perf_counter() - start
    assert "up to date" in status
    assert ran_stages(second) == set(), second
    assert "Data and pipelines are up to date" in second
    assert repro_s < status_s + 5.0, f"no-op repro took {repro_s:.1f} s, dvc status {status_s:.1f} s"


def test_model_change_reruns_only_train_and_evaluate(reproduced, tmp_path):
    repo = copy_repo(reproduced[0], tmp_path / "repo")
    python(repo, "-m", "expkit.pipeline.params", *TINY, "model.optimizer.lr=0.01")
    output = dvc(repo, "repro").stdout
    assert ran_stages(output) == {"train", "evaluate"}, output
    assert "Stage 'prepare' didn't change" in output


def test_push_then_pull_in_another_clone(reproduced, tmp_path):
    repo = copy_repo(reproduced[0], tmp_path / "repo")
    remote = tmp_path / "remote"
    use_remote(repo, remote)
    dvc(repo, "push")
    assert any(remote.rglob("*")), "nothing was pushed"

    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(repo), str(other))
    use_remote(other, remote)
    dvc(other, "pull")
    assert "up to date" in dvc(other, "status").stdout
    output = dvc(other, "repro").stdout
    assert ran_stages(output) == set(), output
    assert metrics(other) == metrics(repo)


@pytest.mark.slow  # two full pipelines from scratch
def test_two_repros_from_scratch_give_identical_results(reproduced, tmp_path):
    """trainer=cpu (conf/pipeline.yaml) is deterministic: same metrics, curves, predictions."""
    repo = copy_repo(reproduced[0], tmp_path / "repo")
    for generated in ("outputs", "data/processed", "data/raw/digits.npz", ".dvc/cache"):
        shutil.rmtree(repo / generated, ignore_errors=True) if (repo / generated).is_dir() else (repo / generated).unlink(missing_ok=True)
    output = dvc(repo, "repro", "--force").stdout  # --force: really run, no run-cache
    assert ran_stages(output) == set(STAGES), output
    first = reproduced[0]
    assert metrics(repo) == metrics(first)
    for path in ("data/raw/digits.npz", "data/processed/train_x.npy", "outputs/dvc/train/history.csv",
                 "outputs/dvc/evaluate/predictions.csv"):
        assert (repo / path).read_bytes() == (first / path).read_bytes(), path
    # dvc.lock records the same hashes for every data file and metric.
    lock, first_lock = (yaml.safe_load((r / "dvc.lock").read_text())["stages"] for r in (repo, first))
    for stage in ("digits", "prepare", "evaluate"):
        assert lock[stage]["outs"] == first_lock[stage]["outs"], stage


def test_plots_render(reproduced):
    shown = json.loads(dvc(reproduced[0], "plots", "show", "--json").stdout)
    assert not shown.get("errors"), shown["errors"]
    rows = {name: len(plot[0]["content"]["data"]["values"]) for name, plot in shown["data"].items()}
    # 2 epochs x 2 series per learning curve; one point per test sample in the confusion matrix
    # and in the regression stage's predicted-vs-actual plot.
    diabetes = reproduced[0] / "outputs" / "dvc" / "diabetes" / "evaluate" / "predictions.csv"
    assert rows == {"Learning curves (loss)": 4, "Learning curves (accuracy)": 4,
                    "Confusion matrix (test split)": 270,
                    "outputs/dvc/diabetes/evaluate/predictions.csv": len(diabetes.read_text().splitlines()) - 1}


# -- errors ----------------------------------------------------------------------------------
def test_missing_processed_data_names_the_fix(reproduced, tmp_path):
    repo = copy_repo(reproduced[0], tmp_path / "repo")
    shutil.rmtree(repo / "data" / "processed")
    proc = python(repo, *TRAIN_CMD, "hydra.run.dir=outputs/missing", check=False)
    assert proc.returncode == DataError.exit_code, proc.stderr[-2000:]
    assert "dvc repro prepare" in proc.stderr and "dvc pull" in proc.stderr, proc.stderr[-2000:]
    assert "data.processed_dir=data/processed" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("damage", ["truncated array", "garbage meta", "missing array", "other split"])
def test_corrupt_processed_data_names_the_fix(reproduced, tmp_path, damage):
    from expkit.data import FilesDataModule

    processed = copy_repo(reproduced[0] / "data" / "processed", tmp_path / "processed")
    split_seed = 0
    if damage == "truncated array":
        data = (processed / "train_x.npy").read_bytes()
        (processed / "train_x.npy").write_bytes(data[: len(data) // 2])
    elif damage == "garbage meta":
        (processed / "meta.json").write_text("{not json")
    elif damage == "missing array":
        (processed / "val_y.npy").unlink()
    else:
        split_seed = 1
    datamodule = FilesDataModule(path="data/raw/digits.npz", processed_dir=str(processed), split_seed=split_seed)
    with pytest.raises(DataError, match="dvc repro prepare.*dvc pull"):
        datamodule.setup("fit")


# -- parameters: one source of truth ---------------------------------------------------------
def test_params_yaml_is_the_composition_of_conf():
    """Fails when conf/ changed and params.yaml was not regenerated (python -m expkit.pipeline.params)."""
    from dvc.utils.hydra import compose_and_dump

    from expkit.pipeline.params import compose_params, hydra_settings

    root, config_dir, config_name = hydra_settings(ROOT)
    assert (root, config_dir.name, config_name) == (ROOT, "conf", "pipeline")
    committed = (ROOT / "params.yaml").read_text()
    assert compose_params(config_dir=config_dir, config_name=config_name) == committed, (
        "params.yaml is stale: run `python -m expkit.pipeline.params` and commit it"
    )
    # Byte-for-byte what `dvc exp run` writes, so an experiment never reformats params.yaml.
    dumped = Path(os.environ.get("TMPDIR", "/tmp")) / f"expkit-dvc-params-{os.getpid()}.yaml"
    try:
        compose_and_dump(dumped, str(config_dir), None, config_name, str(ROOT), [])
        assert dumped.read_text() == committed
    finally:
        dumped.unlink(missing_ok=True)
    # Nothing DVC's composition cannot evaluate: every value is resolved, the run dir is not a param.
    assert "${" not in committed and "hydra" not in yaml.safe_load(committed)


def test_exp_run_composes_through_hydra(reproduced, tmp_path):
    from expkit.pipeline.params import compose_params

    repo = copy_repo(reproduced[0], tmp_path / "repo")
    output = dvc(repo, "exp", "run", "-S", "model=cnn", *(f"-S={o}" for o in TINY)).stdout
    assert ran_stages(output) == {"train", "evaluate"}, output
    # DVC re-composed conf/pipeline.yaml with the override: the whole model group switched.
    assert (repo / "params.yaml").read_text() == compose_params(
        ["model=cnn", *TINY], config_dir=repo / "conf", config_name="pipeline")

    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    experiments = [rev for entry in shown for exp in entry.get("experiments") or [] for rev in exp["revs"]]
    assert experiments, shown
    data = experiments[0]["data"]
    assert data["params"]["params.yaml"]["data"]["model"]["net"]["_target_"] == "expkit.models.nets.CNN"
    assert "test/acc" in data["metrics"]["outputs/dvc/evaluate/metrics.json"]["data"]


# -- data versions ---------------------------------------------------------------------------
def test_plain_run_records_dvc_hash_of_its_data(reproduced, tmp_path):
    """`python train.py` outside DVC records the DVC hash of what it read: run dir and W&B config."""
    from expkit.tracking.wandb_log import find_run_logs, read_run_log

    repo = copy_repo(reproduced[0], tmp_path / "repo")
    python(repo, "train.py", "--config-name", "pipeline", "trainer.max_epochs=1", "logger=wandb")
    (run_dir,) = (repo / "logs" / "train" / "runs").iterdir()
    recorded = json.loads((run_dir / "data_version.json").read_text())
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (processed,) = lock["stages"]["prepare"]["outs"]
    assert recorded["sources"] == [{"path": "data/processed", "dvc_md5": processed["md5"],
                                    "tracked_by": "dvc.lock (stage prepare)", "dvc_output": "data/processed"}]
    (log_file,) = find_run_logs(run_dir / "wandb")
    assert read_run_log(log_file)["config"]["data_version"] == recorded


def test_data_version_of_added_files_and_untracked_data(fresh_clone, tmp_path):
    from expkit.tracking.data_version import describe_data_version

    repo = copy_repo(fresh_clone, tmp_path / "repo")
    table = repo / "data" / "raw" / "mine.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("f0,label\n0.5,a\n1.5,b\n")
    dvc(repo, "add", "data/raw/mine.csv")
    md5 = yaml.safe_load((repo / "data/raw/mine.csv.dvc").read_text())["outs"][0]["md5"]

    (source,) = describe_data_version([table], "mine.csv", root=repo)["sources"]
    assert source["dvc_md5"] == md5 and source["workspace_matches"] is True
    assert source["tracked_by"] == "data/raw/mine.csv.dvc"
    table.write_text("f0,label\n9,a\n1.5,b\n")
    (source,) = describe_data_version([table], "mine.csv", root=repo)["sources"]
    assert source["workspace_matches"] is False

    (untracked,) = describe_data_version([repo / "data" / "other.csv"], "other", root=repo)["sources"]
    assert untracked["dvc_md5"] is None and "dvc add data/other.csv" in untracked["tracked_by"]
    bundled = describe_data_version([], "digits", root=repo)
    assert bundled["sources"] == [] and "not tracked by DVC" in bundled["note"]


def test_raw_digits_export_is_the_digits_datamodule_data(tmp_path):
    from expkit.data import DigitsDataModule
    from expkit.pipeline.digits import export_digits

    first, second = export_digits(tmp_path / "a.npz"), export_digits(tmp_path / "b.npz")
    assert first.read_bytes() == second.read_bytes()  # deterministic bytes: a stable DVC hash
    x, y = DigitsDataModule().load_arrays()
    with np.load(first) as raw:
        np.testing.assert_array_equal(raw["x"], x)
        np.testing.assert_array_equal(raw["y"], y)
