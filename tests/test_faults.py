"""Never lose progress or leave a run lying: the last checkpoint, signals, full disks, moved runs,
concurrent registry commands, corrupt state files, writes where they don't belong, and the W&B
record of a resumed run. Each fault is injected for real (signals, kill -9, a full tmpfs,
parallel processes) and the right outcome is the assertion."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from expkit.tracking.wandb_log import find_run_logs, read_run_log
from tests.conftest import ROOT, run_cli, train_side_by_side

WINE = ["data=wine", "trainer=cpu", "seed=0", "callbacks.early_stopping.patience=100"]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def expkit(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "expkit.cli", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"expkit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def epoch_of(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(run: Path, epochs: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        history = run / "history.csv"
        if history.is_file() and len(history.read_text().splitlines()) >= 1 + epochs:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not get through {epochs} epochs: {proc.poll()}")


def test_last_checkpoint_is_the_latest_state_not_the_best(tmp_path):
    # train/loss falls every epoch; maximizing it makes epoch 0 the best and every later one worse.
    run_cli("train.py", *WINE, "trainer.max_epochs=4", "monitor.metric=train/loss", "monitor.mode=max",
            "logger=none", "hydra.run.dir=run", cwd=tmp_path)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert epoch_of(checkpoints / "last.ckpt") == 3
    assert sorted(p.name for p in checkpoints.glob("epoch_*.ckpt")) == ["epoch_000.ckpt"]


def test_sigterm_saves_marks_interrupted_and_a_moved_copy_resumes(tmp_path):
    args = [*WINE, "trainer.max_epochs=6", "data.batch_size=4", "logger=wandb", "hydra.run.dir=first"]
    proc = start(args, tmp_path)
    run = tmp_path / "first"
    wait_for_epochs(run, 2, proc)
    time.sleep(0.3)  # into the next epoch: the signal arrives mid-epoch
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "interrupted" and record["segments"][-1]["status"] == "interrupted"
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    steps_per_epoch = int((run / "history.csv").read_text().splitlines()[1].split(",")[1])
    assert state["global_step"] > 2 * steps_per_epoch  # saved at a step boundary after the last epoch end

    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.copytree(run, moved)
    shutil.rmtree(run)  # nothing may be read from the old place
    # Fewer epochs than it has run: one line, not Lightning's MisconfigurationException traceback.
    short = expkit("resume", str(moved), "trainer.max_epochs=1", "--allow-config-change", cwd=tmp_path, check=False)
    assert short.returncode == 2 and "nothing left to train; set trainer.max_epochs above" in short.stderr, short.stderr[-2000:]
    assert "Traceback" not in short.stderr
    expkit("resume", str(moved), cwd=tmp_path)
    record = json.loads((moved / "run.json").read_text())
    assert record["status"] == "completed" and [s["status"] for s in record["segments"]] == ["interrupted", "completed"]
    assert epoch_of(moved / "checkpoints" / "last.ckpt") == 5
    assert not run.exists()
    epochs = [line.split(",")[0] for line in (moved / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [str(e) for e in range(6)]
    wandb_epochs = sorted(int(item["epoch"]) for log in find_run_logs(moved) for item in read_run_log(log)["history"]
                          if "train/loss" in item)
    assert wandb_epochs == list(range(6))  # every epoch exactly once in the W&B record

    # Fitting on from the finished run with the epochs it already has would train nothing (Lightning
    # stops at once and writes no checkpoint): refused before launch, nothing written.
    again = run_cli("train.py", *WINE, "trainer.max_epochs=6", f"ckpt_path={moved}/checkpoints/last.ckpt",
                    "logger=none", "hydra.run.dir=again", cwd=tmp_path, check=False)
    assert again.returncode == 2, again.stderr[-2000:]
    assert f"ckpt_path={moved}/checkpoints/last.ckpt: the checkpoint has trained 6 epochs and trainer.max_epochs=6: " \
           "nothing left to train" in again.stderr
    assert not (tmp_path / "again" / "run.json").exists()


def test_kill_9_then_resume_keeps_every_epoch_once_in_wandb(tmp_path):
    args = [*WINE, "trainer.max_epochs=5", "data.batch_size=4", "logger=wandb", "hydra.run.dir=run"]
    proc = start(args, tmp_path)
    run = tmp_path / "run"
    wait_for_epochs(run, 3, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    expkit("resume", str(run), cwd=tmp_path)
    segments = find_run_logs(run)
    assert len(segments) == 2
    wandb_epochs = sorted(int(item["epoch"]) for log in segments for item in read_run_log(log)["history"] if "train/loss" in item)
    assert wandb_epochs == list(range(5))


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs (root only); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs as root and must be able to mount a tmpfs: {proc.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_full_disk_fails_the_run_cleanly_and_keeps_every_checkpoint_whole(tiny_disk, tmp_path):
    run = tiny_disk / "run"
    proc = run_cli("train.py", *WINE, "trainer.max_epochs=30", "model.net.hidden_dims=[512,256]", "logger=none",
                   f"hydra.run.dir={run}", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and "No space left" in record["error"]
    checkpoints = list((run / "checkpoints").glob("*.ckpt"))
    assert checkpoints and not list((run / "checkpoints").glob(".*.tmp"))
    for checkpoint in checkpoints:  # every file on disk is whole: the failed one never replaced it
        torch.load(checkpoint, map_location="cpu", weights_only=True)


def test_concurrent_registry_commands_take_turns(tmp_path):
    runs = train_side_by_side(tmp_path, {
        "poor": [*WINE, "trainer.max_epochs=1", "model.optimizer.lr=1e-5", "logger=none"],
        "good": [*WINE, "trainer.max_epochs=8", "logger=none"],
    })
    registry = str(tmp_path / "registry")
    procs = [subprocess.Popen([sys.executable, "-m", "expkit.cli", "register", str(runs[name]), "--name", "wine",
                               "--no-wandb", "--registry", registry], cwd=tmp_path, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("poor", "good")]
    assert all(p.wait(timeout=600) == 0 for p in procs), [p.stderr.read() for p in procs]
    versions = json.loads((tmp_path / "registry" / "registry.json").read_text())["models"]["wine"]["versions"]
    assert sorted(v["version"] for v in versions) == [1, 2]
    version_of = {Path(v["run_dir"]).name: v["version"] for v in versions}

    procs = [subprocess.Popen([sys.executable, "-m", "expkit.cli", "promote", f"wine:v{version_of[name]}", "--stage",
                               "production", "--no-wandb", "--registry", registry], cwd=tmp_path, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("good", "poor")]
    for p in procs:
        p.wait(timeout=600)
    model = json.loads((tmp_path / "registry" / "registry.json").read_text())["models"]["wine"]
    assert model["stages"]["production"] == version_of["good"]
    assert sorted(e["version"] for e in model["history"] if e["event"] == "promote to production") == [1, 2]


@pytest.mark.parametrize("damage", [b"\n}}trailing", None], ids=["trailing-bytes", "truncated"])
def test_corrupt_state_files_are_named_and_never_overwritten(damage, tmp_path):
    run_cli("train.py", *WINE, "trainer.max_epochs=1", "logger=none", "hydra.run.dir=run", cwd=tmp_path)
    record = tmp_path / "run" / "run.json"
    text = record.read_bytes()
    record.write_bytes(text + damage if damage else text[: len(text) // 2])
    before = record.read_bytes()
    for command in (["resume", str(tmp_path / "run")], ["reproduce", str(tmp_path / "run")]):
        proc = expkit(*command, cwd=tmp_path, check=False)
        assert proc.returncode == 3 and "run.json: not a readable run record" in proc.stderr and "Traceback" not in proc.stderr
    listed = expkit("runs", str(tmp_path), cwd=tmp_path)
    assert "run.json: not a readable run record" in listed.stderr
    assert record.read_bytes() == before

    registry = tmp_path / "registry"
    registry.mkdir()
    for content in (b"[]", b'{"models": {"wine": {"versi'):
        (registry / "registry.json").write_bytes(content)
        for command in (["models"], ["promote", "wine:v1"]):
            proc = expkit(*command, "--registry", str(registry), cwd=tmp_path, check=False)
            assert proc.returncode == 3 and "registry.json" in proc.stderr and "Traceback" not in proc.stderr
        assert (registry / "registry.json").read_bytes() == content


def test_nothing_is_written_outside_the_log_folder_or_over_an_input(tmp_path):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    proc = run_cli("train.py", "task_name=../../escaped", cwd=work, check=False)
    assert proc.returncode == 2 and "task_name" in proc.stderr
    assert not (tmp_path / "escaped").exists() and not list(tmp_path.rglob("runs"))

    run_cli("train.py", *WINE, "trainer.max_epochs=1", "logger=none", "hydra.run.dir=run", cwd=tmp_path)
    table = tmp_path / "new.csv"
    import pandas as pd
    from sklearn.datasets import load_wine

    pd.DataFrame(load_wine().data[:5]).to_csv(table, index=False)
    before = table.read_bytes()
    proc = run_cli("predict.py", f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}", "data=files",
                   f"data.path={table}", f"output={table}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "never overwrite their input" in proc.stderr
    assert table.read_bytes() == before

    # A link planted in a run directory is replaced by the run's own file, never followed.
    outside = tmp_path / "outside.json"
    outside.write_text("keep me\n")
    run = tmp_path / "linked"
    (run / ".hydra").mkdir(parents=True)
    (run / "metrics.json").symlink_to(outside)
    run_cli("train.py", *WINE, "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={run}", cwd=tmp_path)
    assert outside.read_text() == "keep me\n" and not (run / "metrics.json").is_symlink()


def test_a_signal_at_an_epochs_last_step_loses_none_of_its_validation(tmp_path):
    """SIGTERM during an epoch's last training step: the checkpoint used to be saved there, and
    resuming from it started the next epoch, so that epoch's validation never ran (its history row,
    pruning and best-checkpoint choice missed it). Now the epoch ends whole first."""
    import os

    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from expkit.callbacks import STOP_SIGNALS, SaveOnSignal
    from expkit.errors import Interrupted

    class Tiny(pl.LightningModule):
        def __init__(self, signal_at: tuple[int, int] | None = None) -> None:
            super().__init__()
            self.layer, self.signal_at, self.validated = torch.nn.Linear(2, 1), signal_at, []

        def training_step(self, batch, batch_idx):
            if (self.current_epoch, batch_idx) == self.signal_at:
                os.kill(os.getpid(), signal.SIGTERM)  # a real signal, in the middle of the step
            return self.layer(batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def on_validation_epoch_end(self):
            if not self.trainer.sanity_checking:
                self.validated.append(self.current_epoch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = DataLoader(TensorDataset(torch.randn(12, 2)), batch_size=4)  # 3 steps an epoch

    def fit(model, ckpt_path=None):
        trainer = pl.Trainer(max_epochs=4, default_root_dir=tmp_path, callbacks=[SaveOnSignal()], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(model, data, data, ckpt_path=ckpt_path)

    first = Tiny(signal_at=(1, 2))  # epoch 1's last step
    try:
        with pytest.raises(Interrupted, match="stopped by SIGTERM"):
            fit(first)
    finally:
        STOP_SIGNALS.restore()
    assert first.validated == [0, 1]
    resumed = Tiny()
    fit(resumed, ckpt_path=tmp_path / "checkpoints" / "last.ckpt")
    assert first.validated + resumed.validated == [0, 1, 2, 3]  # every epoch validated, once
