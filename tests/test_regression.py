"""Regression, end to end on CPU with scikit-learn's bundled diabetes table and real components.

The preset (``experiment=diabetes_regression``) trains to its quality bar and records MSE, MAE
and R²; ``eval.py`` reproduces the test metrics from the best checkpoint; ``predict.py`` writes one
value per row of a table; the registry judges regressors on the regression KPIs; the ONNX export
matches; a misspelled monitor stops with a did-you-mean; ``dvc repro diabetes_evaluate`` runs the
pipeline in a fresh copy of the working tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from expkit.registry.store import Registry
from tests.conftest import ROOT, compose_config, run_cli, train_side_by_side

PRESET = ["experiment=diabetes_regression", "trainer=cpu", "logger=none"]
REGRESSION_METRICS = {"test/mse", "test/mae", "test/r2"}


def expkit(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The ``expkit`` command, as a user runs it."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "expkit.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"expkit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def best_checkpoint(run: Path) -> Path:
    """The one ranked checkpoint of a run (``save_top_k: 1``; ``last.ckpt`` aside)."""
    (best,) = sorted((run / "checkpoints").glob("epoch_*.ckpt"))
    return best


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Path]:
    """The preset as shipped (``good``) and a one-epoch run at a tiny learning rate (``poor``),
    trained side by side."""
    root = tmp_path_factory.mktemp("regression")
    runs = {"good": PRESET, "poor": [*PRESET, "trainer.max_epochs=1", "model.optimizer.lr=1e-5"]}
    return {"root": root, **train_side_by_side(root, runs)}


# -- training ----------------------------------------------------------------------------------
def test_preset_composes_the_regression_family():
    cfg = compose_config(["experiment=diabetes_regression"])
    assert cfg.model._target_ == "expkit.models.Regressor" and cfg.data.dataset == "diabetes"
    assert cfg.monitor.metric == "val/mse" and cfg.model.scheduler_monitor == "val/mse"
    assert [k.metric for k in cfg.kpis.values()] == ["test/r2", "test/mae", "test/latency_ms"]


def test_preset_reaches_its_quality_bar_and_records_regression_metrics(work):
    metrics = json.loads((work["good"] / "metrics.json").read_text())
    assert REGRESSION_METRICS <= set(metrics) and not any("acc" in k for k in metrics)
    assert metrics["test/r2"] >= 0.4, metrics  # the preset's bar (kpis.r2.at_least)
    assert 30.0 < metrics["test/mae"] < 60.0 and metrics["test/mse"] > metrics["test/mae"]  # target units
    history = pd.read_csv(work["good"] / "history.csv")
    assert {"train/loss", "val/mse", "val/mae", "val/r2"} <= set(history.columns)
    assert history["val/mse"].iloc[-1] < history["val/mse"].iloc[0]


def test_target_scaling_travels_in_the_checkpoint(work):
    """The training targets' statistics are buffers in the checkpoint, so a rebuilt model is the
    trained one (the diabetes targets: 25..346, mean ~152)."""
    state = torch.load(best_checkpoint(work["good"]), map_location="cpu", weights_only=True)["state_dict"]
    assert 140.0 < float(state["target_mean"]) < 165.0 and 65.0 < float(state["target_std"]) < 90.0


# -- evaluation and prediction -----------------------------------------------------------------
def test_eval_reproduces_the_test_metrics(work):
    best = best_checkpoint(work["good"])
    run_cli("eval.py", f"ckpt_path={best}", "hydra.run.dir=logs/eval", cwd=work["root"])
    trained = json.loads((work["good"] / "metrics.json").read_text())
    evaluated = json.loads((work["root"] / "logs/eval/metrics.json").read_text())
    for key in REGRESSION_METRICS:
        assert evaluated[key] == pytest.approx(trained[key], rel=1e-5), key


def predicted_vs_model(work: dict, table: pd.DataFrame, *overrides: str) -> tuple[np.ndarray, np.ndarray]:
    """``predict.py`` on ``table`` (written as CSV) with the preset's best checkpoint, and what the
    rebuilt module gives for the same features scaled with the checkpoint's statistics."""
    from expkit.rebuild import rebuild

    root, best = work["root"], best_checkpoint(work["good"])
    table.to_csv(root / "patients.csv", index=False)
    (root / "predictions.csv").unlink(missing_ok=True)
    run_cli("predict.py", f"ckpt_path={best}", f"data.path={root / 'patients.csv'}", "++data.task=regression", *overrides,
            f"output={root / 'predictions.csv'}", "hydra.run.dir=logs/predict", cwd=root)
    predictions = pd.read_csv(root / "predictions.csv")
    assert list(predictions.columns) == ["row", "prediction"]
    rebuilt = rebuild(best)
    features = table.drop(columns="target", errors="ignore").to_numpy()
    x = (features - rebuilt.datamodule.feature_mean) / rebuilt.datamodule.feature_std
    with torch.no_grad():
        expected = rebuilt.model(torch.as_tensor(x, dtype=torch.float32)).numpy()
    return predictions.prediction.to_numpy(), expected


def test_predict_a_table_one_value_per_row(work):
    """Without ``data=``, predict reads the file as a table (``data=files``) and keeps the training
    run's settings (standardization with the checkpoint's statistics)."""
    from sklearn.datasets import load_diabetes

    diabetes = load_diabetes(as_frame=True)
    predicted, expected = predicted_vs_model(work, diabetes.frame, "data.target_column=target")
    assert len(predicted) == len(diabetes.frame)
    np.testing.assert_allclose(predicted, expected, rtol=1e-4, atol=1e-3)
    target = diabetes.target.to_numpy()
    assert 1 - ((predicted - target) ** 2).sum() / ((target - target.mean()) ** 2).sum() > 0.4  # R² on all 442


def test_predict_a_table_without_the_target(work):
    from sklearn.datasets import load_diabetes

    features = load_diabetes(as_frame=True).data  # the ten features, named as in training's source, no target
    predicted, expected = predicted_vs_model(work, features)
    np.testing.assert_allclose(predicted, expected, rtol=1e-4, atol=1e-3)


def test_several_targets_one_column_each(tmp_path):
    """Targets of shape (3,) in an .npz: the regressor predicts (batch, 3), R² averages the three,
    predictions have one column per target."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((240, 6)).astype(np.float32)
    y = (x @ rng.standard_normal((6, 3)) * 10 + np.array([100.0, -50.0, 5.0])).astype(np.float32)
    np.savez(tmp_path / "targets.npz", x=x, y=y)
    run_cli("train.py", "data=files", f"data.path={tmp_path / 'targets.npz'}", "++data.task=regression", "model=regressor",
            "monitor.metric=val/mse", "trainer=cpu", "logger=none", "trainer.max_epochs=3", "hydra.run.dir=run", cwd=tmp_path)
    assert REGRESSION_METRICS <= set(json.loads((tmp_path / "run/metrics.json").read_text()))
    run_cli("predict.py", f"ckpt_path={tmp_path / 'run/checkpoints/last.ckpt'}", f"output={tmp_path / 'predictions.csv'}",
            "hydra.run.dir=predict", cwd=tmp_path)
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert list(predictions.columns) == ["row", "prediction_0", "prediction_1", "prediction_2"] and len(predictions) == 240


# -- registry and export -------------------------------------------------------------------------
def test_registry_judges_regressors_on_the_regression_kpis(work):
    root = work["root"]
    expkit(root, "register", str(work["good"]), "--name", "diab", "--no-wandb")
    expkit(root, "register", str(work["poor"]), "--name", "diab", "--no-wandb")
    good, poor = (Registry(root / "registry").version("diab", v) for v in (1, 2))
    assert REGRESSION_METRICS | {"test/latency_ms"} <= set(good["metrics"]) and "test/acc" not in good["metrics"]

    refused = expkit(root, "promote", str(work["poor"]), "--stage", "production", "--no-wandb", check=False)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "kpis.r2.at_least" in refused.stdout + refused.stderr  # below the preset's R² bar
    promoted = expkit(root, "promote", str(work["good"]), "--stage", "production", "--no-wandb")
    assert "test/r2" in promoted.stdout and "test/mae" in promoted.stdout and "test/acc" not in promoted.stdout
    assert Registry(root / "registry").model("diab")["stages"] == {"production": 1}
    assert poor["metrics"]["test/r2"] < 0.4 <= good["metrics"]["test/r2"]


def test_onnx_export_keeps_the_batch_dynamic(work):
    """The exported graph (standardization inside) gives the module's predictions on the whole
    test split, not only on the batch size it was traced with."""
    out = work["root"] / "export"
    expkit(work["root"], "export", str(work["good"]), "--format", "onnx", "--out", str(out))
    check = json.loads((out / "model.onnx.check.json").read_text())
    assert check["passed"] and check["test_samples"] == round(442 * 0.2) and check["max_abs_diff"] < 1e-2


# -- configuration errors ------------------------------------------------------------------------
def test_misspelled_monitor_stops_with_a_did_you_mean(tmp_path):
    proc = run_cli("train.py", *PRESET, "monitor.metric=val/msee", "trainer.max_epochs=1", "hydra.run.dir=run",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    message = proc.stderr.replace("val/msee", "")
    assert "did you mean" in message.lower() and "val/mse" in message


# -- the DVC pipeline ----------------------------------------------------------------------------
def test_dvc_repro_diabetes_evaluate(tmp_path):
    """``dvc repro diabetes_evaluate`` in a fresh copy of the working tree trains the preset and
    evaluates its best checkpoint: regression metrics and ``actual,predicted`` rows for DVC."""
    from tests.test_dvc import dvc, git

    repo = tmp_path / "repo"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).is_file() and not (ROOT / rel).is_symlink() and not rel.startswith(("registry/", "benchmarks/")):
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_bytes((ROOT / rel).read_bytes())
    git(repo, "init", "-q")
    out = dvc(repo, "repro", "diabetes_evaluate").stdout
    assert "Running stage 'diabetes_train'" in out and "Running stage 'diabetes_evaluate'" in out
    trained = json.loads((repo / "outputs/dvc/diabetes/train/metrics.json").read_text())
    evaluated = json.loads((repo / "outputs/dvc/diabetes/evaluate/metrics.json").read_text())
    assert trained["test/r2"] >= 0.4
    for key in REGRESSION_METRICS:
        assert evaluated[key] == pytest.approx(trained[key], rel=1e-5), key
    predictions = pd.read_csv(repo / "outputs/dvc/diabetes/evaluate/predictions.csv")
    assert list(predictions.columns) == ["actual", "predicted"] and len(predictions) == round(442 * 0.2)
    assert "Running stage" not in dvc(repo, "repro", "diabetes_evaluate").stdout  # up to date: nothing reruns
