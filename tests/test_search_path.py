"""A user's own config directory counts everywhere: ``--config-dir`` and ``hydra.searchpath``
options are accepted by the pre-launch checks (single runs and sweeps), and a mistake next to
them is explained against the user's groups, with a did-you-mean over the user's options."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from expkit.paths import config_dir
from tests.conftest import run_cli


@pytest.fixture
def user_conf(tmp_path) -> Path:
    conf = tmp_path / "my_conf" / "model"
    conf.mkdir(parents=True)
    shutil.copy(config_dir() / "model" / "mlp.yaml", conf / "mine.yaml")  # an option only the user has
    return tmp_path / "my_conf"


def last_line(proc) -> str:
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "multirun"])
def test_hydra_searchpath_options_pass_the_checks(multirun, user_conf, tmp_path):
    import subprocess
    import sys

    searchpath = f"hydra.searchpath=[file://{user_conf}]"
    args = ["-m", searchpath, "model=mine,mlp"] if multirun else [searchpath, "model=mine"]
    proc = subprocess.run([sys.executable, "-m", "expkit.cli", "validate", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "valid" in proc.stdout


def test_a_typo_next_to_a_config_dir_is_explained_against_the_users_groups(user_conf, tmp_path):
    option = run_cli("train.py", "--config-dir", str(user_conf), "model=mien", cwd=tmp_path, check=False)
    assert option.returncode == 2
    assert "Did you mean 'model=mine'?" in last_line(option) and "Traceback" not in option.stderr
    key = run_cli("train.py", "--config-dir", str(user_conf), "model=mine", "trainer.max_epoch=3", cwd=tmp_path,
                  check=False)
    assert key.returncode == 2
    assert last_line(key).startswith("error: trainer.max_epoch=3: unknown key")
    assert "Did you mean 'trainer.max_epochs=3'?" in last_line(key)
