"""Run records, reproduce, resume after kill -9, and the local run browser."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from expkit.tracking.record import RUN_RECORD_FILE
from expkit.tracking.wandb_log import find_run_logs, read_run_log
from tests.conftest import ROOT, run_cli, run_dirs

DETERMINISTIC = ["trainer=cpu", "seed=0", "data=digits", "trainer.max_epochs=3", "logger=none"]


def expkit(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "COLUMNS": "250"}
    proc = subprocess.run([sys.executable, "-m", "expkit.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"expkit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "checkpoint weights differ"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("recorded")
    secrets = {"WANDB_API_KEY": "wandbsecretkey0123456789", "MY_SERVICE_TOKEN": "tokenvalue-abcdef-42"}
    run_cli("train.py", *DETERMINISTIC[:-1], "logger=wandb", cwd=cwd, env=secrets)
    (run_dir,) = run_dirs(cwd)
    return run_dir


def test_run_record_contents(recorded):
    record = json.loads((recorded / RUN_RECORD_FILE).read_text())
    assert record["status"] == "completed" and record["error"] is None
    assert record["overrides"] == ["trainer=cpu", "seed=0", "data=digits", "trainer.max_epochs=3", "logger=wandb"]
    assert record["config"]["trainer"]["deterministic"] is True and record["seed"] == 0
    assert record["metrics"] == json.loads((recorded / "metrics.json").read_text())
    assert {"python", "torch", "pytorch-lightning", "hydra-core", "wandb", "dvc", "expkit"} <= set(record["versions"])
    assert record["hardware"]["cpu_count"] >= 1 and record["hardware"]["gpu_count"] == 0
    assert record["started_at"] <= record["ended_at"]
    assert record["git"] is None or {"commit", "dirty", "diff"} <= set(record["git"])
    assert record["data_version"]["data"] == "digits"
    (log_file,) = find_run_logs(recorded / "wandb")
    wandb_run = read_run_log(log_file)
    assert record["wandb"]["id"] == wandb_run["run"]["id"]
    assert wandb_run["config"]["provenance"]["versions"]["torch"] == record["versions"]["torch"]
    assert (recorded / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_secrets_never_written(recorded):
    for path in recorded.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert b"wandbsecretkey0123456789" not in content, path
            assert b"tokenvalue-abcdef-42" not in content, path


def test_reproduce_is_bitwise_identical(recorded):
    cwd = recorded.parents[3]
    expkit("reproduce", str(recorded), cwd=cwd)
    (copy,) = [d for d in run_dirs(cwd) if d != recorded]
    assert json.loads((copy / "metrics.json").read_text()) == json.loads((recorded / "metrics.json").read_text())
    assert_same_weights(copy / "checkpoints" / "last.ckpt", recorded / "checkpoints" / "last.ckpt")
    assert json.loads((copy / RUN_RECORD_FILE).read_text())["config"] == json.loads((recorded / RUN_RECORD_FILE).read_text())["config"]


def test_reproduce_refuses_when_code_differs(recorded, tmp_path):
    # A record made at another commit, with other package versions.
    run_dir = tmp_path / "old_run"
    run_dir.mkdir()
    record = json.loads((recorded / RUN_RECORD_FILE).read_text())
    record["git"] = {"commit": "0" * 40, "dirty": False, "diff": ""}
    record["versions"]["torch"] = "1.0.0"
    (run_dir / RUN_RECORD_FILE).write_text(json.dumps(record))
    proc = expkit("reproduce", str(run_dir), cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "git commit" in proc.stderr and "package torch" in proc.stderr and "--allow-differences" in proc.stderr
    assert not (tmp_path / "logs").exists()


def test_reproduce_refuses_changed_config(recorded, tmp_path):
    proc = expkit("reproduce", str(recorded), "trainer.max_epochs=4", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "trainer.max_epochs" in proc.stderr


@pytest.mark.slow  # a long run killed and resumed; tests/test_faults.py covers kill -9 + resume by default
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    overrides = ["trainer=cpu", "seed=0", "data=digits", "data.batch_size=16", "trainer.max_epochs=4",
                 "callbacks.early_stopping.patience=100", "logger=wandb"]
    reference_cwd, crash_cwd = tmp_path / "reference", tmp_path / "crash"
    reference_cwd.mkdir(), crash_cwd.mkdir()
    run_cli("train.py", *overrides, cwd=reference_cwd)
    (reference,) = run_dirs(reference_cwd)

    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *overrides], cwd=crash_cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        history = list(crash_cwd.glob("logs/train/runs/*/history.csv"))
        if history and len(history[0].read_text().splitlines()) >= 3:  # header + 2 epochs done
            time.sleep(0.3)  # into the next epoch
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (crashed,) = run_dirs(crash_cwd)
    assert json.loads((crashed / RUN_RECORD_FILE).read_text())["status"] == "running"
    assert not (crashed / "metrics.json").exists()

    refused = expkit("resume", str(crashed), "trainer.max_epochs=6", cwd=crash_cwd, check=False)
    assert refused.returncode == 2 and "trainer.max_epochs" in refused.stderr

    expkit("resume", str(crashed), cwd=crash_cwd)
    assert run_dirs(crash_cwd) == [crashed]  # same directory
    record = json.loads((crashed / RUN_RECORD_FILE).read_text())
    assert record["status"] == "completed" and len(record["segments"]) == 2
    assert json.loads((crashed / "metrics.json").read_text()) == json.loads((reference / "metrics.json").read_text())
    assert_same_weights(crashed / "checkpoints" / "last.ckpt", reference / "checkpoints" / "last.ckpt")
    # The W&B run continues under the same id; the offline segments are linked in the record.
    segment_ids = {s["wandb"]["id"] for s in record["segments"]}
    assert segment_ids == {record["wandb"]["id"]}
    assert len({s["wandb"]["dir"] for s in record["segments"]}) == 2
    history = (crashed / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 4  # every epoch's row, across both segments

    done = expkit("resume", str(crashed), cwd=crash_cwd, check=False)
    assert done.returncode == 2 and "nothing to resume" in done.stderr


def test_runs_table_and_compare(recorded, tmp_path):
    run_cli("train.py", "data=wine", "debug=limit", cwd=tmp_path)
    run_cli("train.py", "data=wine", "debug=limit", "model=transformer", cwd=tmp_path)
    listing = expkit("runs", str(tmp_path / "logs"), cwd=tmp_path).stdout
    assert listing.count("completed") == 2 and "model=transformer" in listing
    rows = [line for line in listing.splitlines() if "debug/runs/" in line]
    assert "model=transformer" in rows[0], "newest first"
    only = expkit("runs", str(tmp_path / "logs"), "--where", "model=transformer", cwd=tmp_path).stdout
    assert only.count("completed") == 1

    def listed(*where: str) -> int:
        out = expkit("runs", str(tmp_path / "logs"), *(a for w in where for a in ("--where", w)), cwd=tmp_path).stdout
        return int(out.split(" run(s) under")[0].split()[-1])

    # A group's option matches whether the command chose it or the defaults did.
    assert listed("model=mlp") == 1 and listed("data=wine") == 2 and listed("model=cnn") == 0
    assert listed("data=wine", "model=transformer") == 1
    # Typed, exact: 2 is 2.0, not 2.0000000001; the quoted text '2' is not the number.
    assert listed("trainer.max_epochs=2") == listed("trainer.max_epochs=2.0") == 2
    assert listed("trainer.max_epochs=2.0000000001") == 0 and listed("trainer.max_epochs='2'") == 0
    for malformed in ("lr", "=3", " =x"):  # no key or no '=': refused, not an empty listing
        refused = expkit("runs", str(tmp_path / "logs"), "--where", malformed, cwd=tmp_path, check=False)
        assert refused.returncode == 2 and refused.stderr.startswith("error: --where") and "KEY=VALUE" in refused.stderr
        assert refused.stderr.count("\n") == 1 and refused.stdout == ""
    status = expkit("runs", str(tmp_path / "logs"), "--status", "interupted", cwd=tmp_path, check=False)
    assert status.returncode == 2 and "did you mean interrupted?" in status.stderr and status.stderr.count("\n") == 1
    typo = expkit("runs", str(tmp_path / "logs"), "--metric", "test/ac", cwd=tmp_path, check=False)
    assert typo.returncode == 2 and "did you mean test/acc" in typo.stderr and typo.stderr.count("\n") == 1
    first, second = run_dirs(tmp_path, task="debug")
    diff = expkit("compare", str(first), str(second), cwd=tmp_path).stdout
    assert "model.net._target_" in diff and "FeatureTransformer" in diff and "test/acc" in diff
