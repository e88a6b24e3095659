"""The entry points as a user runs them: train -> eval, W&B offline records, run directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from expkit.tracking.wandb_log import find_run_logs, read_run_log
from tests.conftest import ROOT, run_cli, run_dirs

FAST = ["trainer.max_epochs=3", "data=wine", "model=mlp"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One real training run from the command line, W&B offline."""
    cwd = tmp_path_factory.mktemp("project")
    run_cli("train.py", *FAST, "logger=[wandb,csv]", "tags=[cli,test]", cwd=cwd)
    (run_dir,) = run_dirs(cwd)
    return run_dir


def test_run_directory_contents(trained):
    for name in ("config.yaml", ".hydra/overrides.yaml", "train.log", "metrics.json", "checkpoints/last.ckpt"):
        assert (trained / name).is_file(), name
    assert list((trained / "checkpoints").glob("epoch_*.ckpt")), "best checkpoint missing"
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics) == {"val/acc", "val/loss", "test/acc", "test/loss"}


def test_wandb_offline_record(trained):
    (log_file,) = find_run_logs(trained / "wandb")  # exactly one W&B run
    record = read_run_log(log_file)
    config = record["config"]
    assert config["trainer"]["max_epochs"] == 3
    assert config["data"]["_target_"] == "expkit.data.SklearnTableDataModule"
    assert config["tags"] == ["cli", "test"]
    assert record["run"]["tags"] == ["cli", "test"]
    logged = {key for row in record["history"] for key in row}
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/acc", "epoch"} <= logged
    assert record["summary"]["test/acc"] == pytest.approx(json.loads((trained / "metrics.json").read_text())["test/acc"])
    assert record["exit_code"] == 0
    assert record["run"]["name"] == trained.name


def test_eval_reports_the_training_test_metrics(trained):
    best = next((trained / "checkpoints").glob("epoch_*.ckpt"))
    cwd = trained.parents[3]
    run_cli("eval.py", f"ckpt_path={best}", cwd=cwd)
    (eval_dir,) = run_dirs(cwd, task="eval")
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    trained_metrics = json.loads((trained / "metrics.json").read_text())
    assert evaluated == pytest.approx({k: v for k, v in trained_metrics.items() if k.startswith("test/")}, abs=1e-6)


def test_eval_refuses_checkpoint_on_mismatched_data(trained, tmp_path):
    proc = run_cli("eval.py", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", "data=digits", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "input_shape=(13,), num_classes=3" in proc.stderr and "input_shape=(1, 8, 8), num_classes=10" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_failed_job_finishes_its_wandb_run_with_an_error(tmp_path):
    # A loss that explodes fails the run after W&B started (bad inputs fail before: test_validation.py).
    proc = run_cli("train.py", *FAST, "model.optimizer.lr=1e30", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    (log_file,) = find_run_logs(tmp_path / "logs")
    assert read_run_log(log_file)["exit_code"] == 1


def test_incompatible_pair_refused_on_the_command_line(tmp_path):
    proc = run_cli("train.py", "model=cnn", "data=wine", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "model 'CNN'" in proc.stderr and "data 'wine'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("metrics.json"))


def test_multirun_gives_one_wandb_run_per_job_grouped_by_sweep(tmp_path):
    run_cli("train.py", "-m", "seed=0,1", "debug=limit", "data=wine", "logger=wandb", cwd=tmp_path)
    (sweep,) = (tmp_path / "logs" / "debug" / "multiruns").iterdir()
    logs = find_run_logs(sweep)
    assert len(logs) == 2
    records = [read_run_log(p) for p in logs]
    assert len({r["run"]["id"] for r in records}) == 2
    assert {r["run"]["group"] for r in records} == {sweep.name}
    assert sorted(r["config"]["seed"] for r in records) == [0, 1]
    assert all(r["exit_code"] == 0 for r in records)


def test_run_directories_unique_under_concurrent_starts(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, str(ROOT / "train.py"), "debug=fdr", "data=wine"], cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    dirs = run_dirs(tmp_path, task="debug")
    assert len(dirs) == 3
    assert all((d / "metrics.json").is_file() for d in dirs)


def test_help_lists_groups_and_cfg_job_stays_light(tmp_path):
    help_text = run_cli("train.py", "--help", cwd=tmp_path).stdout
    for line in ("model: char_lm, cnn, mlp, regressor, transformer", "data: diabetes, digits, files, mnist, synthetic, text, wine",
                 "trainer: cpu, ddp, ddp_cpu, default, gpu", "logger: csv, none, tensorboard, wandb"):
        assert line in help_text
    for flags, expected in ((["--cfg", "job"], "model:"), (["--help"], "== Configuration groups ==")):
        proc = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "train.py"), *flags],
                              cwd=tmp_path, capture_output=True, text=True, check=True)
        assert expected in proc.stdout
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
        assert "torch" not in imported and "pytorch_lightning" not in imported and "wandb" not in imported, flags


BARE_APP = """import sys, hydra, expkit.resolvers
from expkit.paths import config_dir
sys.argv[0] = {script!r}
hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")(lambda cfg: None)()
"""


@pytest.mark.parametrize("flag", ["--help", "--hydra-help"])
def test_help_is_hydras_own_help(flag, tmp_path):
    """train.py is a plain Hydra app: its help is exactly a bare Hydra app's on the same conf/."""
    ours = run_cli("train.py", flag, cwd=tmp_path).stdout
    bare = subprocess.run([sys.executable, "-c", BARE_APP.format(script=str(ROOT / "train.py")), flag],
                          cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert ours == bare
    assert "model: " in ours and "cnn" in ours if flag == "--help" else "hydra/launcher:" in ours


# The CNN's full training is the default suite's longest test (3.5 min on 2 loaded cores): slow.
@pytest.mark.parametrize(("model", "floor"), [("mlp", 0.95), pytest.param("cnn", 0.97, marks=pytest.mark.slow)])
def test_quality_bar_on_digits(model, floor, tmp_path):
    run_cli("train.py", f"model={model}", "logger=none", cwd=tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    assert json.loads((run_dir / "metrics.json").read_text())["test/acc"] >= floor


@pytest.mark.slow
def test_ddp_cpu_gives_one_run_directory_and_one_wandb_run(tmp_path):
    run_cli("train.py", "trainer=ddp_cpu", "trainer.max_epochs=2", "data=wine", cwd=tmp_path)
    (run_dir,) = run_dirs(tmp_path)
    assert len(find_run_logs(run_dir)) == 1
    assert len(list((run_dir / "checkpoints").glob("last*.ckpt"))) == 1
    assert (run_dir / "metrics.json").is_file()


def test_expkit_command_dispatches_to_the_tasks(tmp_path):
    expkit = [sys.executable, "-m", "expkit.cli"]
    assert "expkit 0.1.0" in subprocess.run([*expkit, "--version"], capture_output=True, text=True, check=True).stdout
    wrong = subprocess.run([*expkit, "trian"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "Did you mean 'train'" in wrong.stderr
    composed = subprocess.run([*expkit, "train", "model=cnn", "--cfg", "job"], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout
    assert "expkit.models.nets.CNN" in composed
