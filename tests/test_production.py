"""From experiment to production, end to end on CPU with the bundled data and real components.

Two digits models (tiny budgets) are registered; the better is promoted, the worse refused with the
comparison shown; both export formats are checked with torch.jit and onnxruntime; predict reads a
table without its label column; a new data version goes through the real `dvc repro`, then the
report, the drift check and promotion against production on the new test data.
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

from expkit.registry import evaluation
from expkit.registry.kpis import KPI, judge, kpis_of, parse_kpis
from expkit.registry.store import PromotionRefused, Registry, promote, register
from expkit.tracking.wandb_log import find_run_logs, iter_record_bytes
from tests.conftest import ROOT, compose_config, run_cli, train_side_by_side

TINY = ["logger=none", "callbacks.early_stopping.patience=100"]


def expkit(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The installed ``expkit`` command, as a user runs it."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "COLUMNS": "200"}
    env.pop("WANDB_SERVICE", None)  # this process's W&B service (in-process register) is not the user's
    proc = subprocess.run([sys.executable, "-m", "expkit.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"expkit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Path]:
    """Three runs: a good and a poor digits MLP, and an MLP on a standardized table (features on
    scales 1 to 100)."""
    root = tmp_path_factory.mktemp("production")
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 3, n)
    scales = np.array([1.0, 10.0, 100.0, 0.1])
    table = pd.DataFrame((rng.standard_normal((n, 4)) + y[:, None]) * scales, columns=["a", "b", "c", "d"])
    table["species"] = np.array(["ash", "birch", "cedar"])[y]
    table.to_csv(root / "table.csv", index=False)
    runs = {"good": ["trainer.max_epochs=4"], "poor": ["trainer.max_epochs=1", "model.optimizer.lr=1e-4"],
            "table": ["data=files", f"data.path={root / 'table.csv'}", "data.target_column=species",
                      "data.standardize=true", "trainer.max_epochs=3"]}
    return {"root": root, **train_side_by_side(root, {name: [*o, *TINY] for name, o in runs.items()})}


# -- KPIs ------------------------------------------------------------------------------------
def test_kpis_declared_once_and_monitor_is_their_validation_counterpart():
    cfg = compose_config()
    kpis = parse_kpis(cfg.kpis)
    assert kpis[0].metric == "test/acc" and kpis[0].goal == "max"
    # monitor (checkpoints, early stopping, the sweep objective) is the val/ twin of a KPI metric
    twins = {k.metric.replace("test/", "val/"): k.goal for k in kpis}
    assert twins.get(cfg.monitor.metric) == cfg.monitor.mode
    assert "kpis:" in (ROOT / "params.yaml").read_text()


def test_judge_rule():
    kpis = [KPI("acc", "test/acc", "max", at_least=0.5), KPI("loss", "test/loss", "min", tolerance=0.1),
            KPI("lat", "test/latency_ms", "min", at_most=10.0, tolerance=None)]
    production = {"test/acc": 0.80, "test/loss": 0.50, "test/latency_ms": 1.0}
    assert judge(kpis, {"test/acc": 0.81, "test/loss": 0.55, "test/latency_ms": 9.0}, production).passed
    tie = judge(kpis, {"test/acc": 0.80, "test/loss": 0.10, "test/latency_ms": 1.0}, production)
    assert not tie.passed and "strictly better" in tie.reasons[0]
    assert not judge(kpis, {"test/acc": 0.90, "test/loss": 0.61, "test/latency_ms": 1.0}, production).passed
    assert not judge(kpis, {"test/acc": 0.90, "test/loss": 0.40, "test/latency_ms": 11.0}, production).passed
    assert judge(kpis, {"test/acc": 0.6, "test/loss": 9.0, "test/latency_ms": 1.0}, None).passed  # bounds only
    assert not judge(kpis, {"test/acc": 0.4, "test/loss": 0.1, "test/latency_ms": 1.0}, None).passed


# -- registry and promotion --------------------------------------------------------------------
def test_register_promote_the_better_refuse_the_worse(work):
    root = work["root"]
    good = register(work["good"], "digits", root / "registry")  # with a W&B model artifact (offline)
    import wandb

    wandb.teardown()  # stop this process's W&B service: later subprocesses must not attach to it (WANDB_SERVICE)
    assert "WANDB_SERVICE" not in os.environ
    expkit(root, "register", str(work["poor"]), "--name", "digits")
    registry = Registry(root / "registry")
    poor = registry.version("digits", 2)
    assert (good["version"], poor["version"]) == (1, 2)
    assert good["eval_data"]["fingerprint"] == poor["eval_data"]["fingerprint"]  # the same test split
    assert good["metrics"]["test/acc"] > 0.9 > poor["metrics"]["test/acc"]
    card = json.loads((root / "registry/digits/v1/card.json").read_text())
    assert card["run_record"]["config"]["model"] and card["metrics"] == good["metrics"]
    assert (root / "registry/digits/v1/model.ckpt").is_file()

    with pytest.raises(PromotionRefused, match="below the minimum 0.9"):  # no production yet: bounds only
        promote(str(work["poor"]), "production", root / "registry")
    promoted = expkit(root, "promote", str(work["good"]), "--stage", "production")
    assert "promoted" in promoted.stdout
    refused = expkit(root, "promote", "digits:v2", "--stage", "production", check=False)
    assert refused.returncode == 4
    assert "same test data" in refused.stdout and "worse" in refused.stdout  # the comparison is shown
    assert Registry(root / "registry").model("digits")["stages"] == {"production": 1}

    listing = expkit(root, "models").stdout
    assert "production" in listing and "v2" in listing

    # W&B: v1 logged as a model artifact, then again with the production alias (same digest).
    artifacts = []
    for log in find_run_logs(root / "registry" / "wandb"):
        from wandb.proto import wandb_internal_pb2 as pb

        for raw in iter_record_bytes(log):
            record = pb.Record()
            record.ParseFromString(raw)
            if record.WhichOneof("record_type") == "artifact":
                artifacts.append((record.artifact.name, record.artifact.type, set(record.artifact.aliases), record.artifact.digest))
    v1 = [a for a in artifacts if "expkit-v1" in a[2]]
    assert {a[1] for a in artifacts} == {"model"} and any("production" in a[2] for a in v1)
    assert len({a[3] for a in v1}) == 1


def test_compare_judges_on_the_kpis(work):
    out = expkit(work["root"], "compare", str(work["good"]), str(work["poor"])).stdout
    assert "KPIs, recorded metrics" in out and "does not beat" in out


# -- export and predict ------------------------------------------------------------------------
@pytest.mark.parametrize("run", ["good", "table"])
def test_export_matches_the_lightning_model(work, run, tmp_path):
    out = expkit(work["root"], "export", str(work[run]), "--out", str(tmp_path)).stdout
    assert out.count("100% same predictions") == 2
    import onnxruntime
    import torch

    from expkit.registry.export import export_inputs, exportable

    trained = evaluation.load_trained(work[run])
    x = export_inputs(trained)  # raw features of the test split
    with torch.no_grad():
        reference = exportable(trained)(torch.as_tensor(x)).numpy()

    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    onnx_logits = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]
    script_logits = torch.jit.load(str(tmp_path / "model.pt"))(torch.as_tensor(x)).detach().numpy()
    for logits in (onnx_logits, script_logits):  # raw features in: the scaling is in the graph
        np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=1e-4)
    check = json.loads((tmp_path / "model.onnx.check.json").read_text())
    assert check["passed"] and check["runtime"] == "onnxruntime"


def test_predict_a_table_without_labels(work):
    root = work["root"]
    table = pd.read_csv(root / "table.csv")
    new = table.drop(columns="species")[["d", "c", "b", "a"]]  # no label, columns in another order
    new.to_csv(root / "new.csv", index=False)
    run_cli("predict.py", f"ckpt_path={work['table']}/checkpoints/last.ckpt", "data=files", f"data.path={root / 'new.csv'}",
            f"output={root / 'predictions.csv'}", "hydra.run.dir=logs/predict", cwd=root)
    predictions = pd.read_csv(root / "predictions.csv")
    assert len(predictions) == len(table) and set(predictions.prediction) <= {"ash", "birch", "cedar"}
    # the same preprocessing as training: the checkpoint's statistics, the recorded columns
    import torch

    from expkit.registry.export import exportable

    trained = evaluation.load_trained(work["table"] / "checkpoints" / "last.ckpt")
    with torch.no_grad():  # the model on the raw features, the training statistics in front
        expected = exportable(trained)(torch.as_tensor(table[["a", "b", "c", "d"]].to_numpy(np.float32))).argmax(dim=1).numpy()
    np.testing.assert_array_equal(predictions.class_index.to_numpy(), expected)
    assert (predictions.prediction == table.species).mean() > 0.6
    assert np.allclose(predictions.filter(like="prob_").sum(axis=1), 1.0, atol=1e-5)


def test_expkit_predict_on_arrays(work):
    root = work["root"]
    from sklearn.datasets import load_digits

    np.savez(root / "new_digits.npz", x=(load_digits().images[:25] / 16.0)[:, None].astype(np.float32))
    expkit(root, "predict", f"ckpt_path={work['good']}/checkpoints/last.ckpt", f"data.path={root / 'new_digits.npz'}",
           f"output={root / 'digits_predictions.csv'}", "hydra.run.dir=logs/predict_npz")
    predictions = pd.read_csv(root / "digits_predictions.csv")
    assert (predictions.class_index.to_numpy() == load_digits().target[:25]).mean() > 0.8


def test_predict_refuses_inputs_of_another_shape(work):
    np.savez(work["root"] / "five_features.npz", x=np.zeros((3, 5), np.float32))
    proc = run_cli("predict.py", f"ckpt_path={work['table']}/checkpoints/last.ckpt", "data=files",
                   f"data.path={work['root'] / 'five_features.npz'}", "hydra.run.dir=logs/predict_bad",
                   cwd=work["root"], check=False)
    assert proc.returncode == 3 and "trained on input_shape (4,)" in proc.stderr


def test_kpis_follow_the_config_overrides():
    from omegaconf import OmegaConf

    kpis = kpis_of(OmegaConf.to_container(compose_config(["kpis.accuracy.at_least=0.99"]), resolve=True))
    assert kpis[0].at_least == 0.99
    regression = kpis_of(OmegaConf.to_container(compose_config(["experiment=diabetes_regression"]), resolve=True))
    assert "test/acc" not in {k.metric for k in regression}  # the experiment's KPIs, not a classifier's
    assert kpis_of({"monitor": {"metric": "val/mse", "mode": "min"}})[0].metric == "test/mse"  # none declared


def test_drift_flags_only_the_features_that_moved():
    from expkit.registry.drift import drift
    from expkit.registry.evaluation import feature_stats

    rng = np.random.default_rng(0)
    train = rng.standard_normal((500, 4)) * [1, 10, 1, 0] + [0, 5, 0, 2]  # the last feature is constant
    new = rng.standard_normal((200, 4)) * [1, 10, 3, 0] + [2, 5, 0, 2]    # a shifts by 2 sd, c widens 3x
    result = drift(feature_stats(train), feature_stats(new), threshold=0.5, names=["a", "b", "c", "d"])
    assert [row["feature"] for row in result["moved"]] == ["a", "c"]
    assert not drift(feature_stats(train), feature_stats(new[:, :3]))["comparable"]
