"""Shared fixtures: composing conf/ as the entry points do, tiny user data, CLI runs."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import expkit.resolvers  # noqa: F401
from expkit.paths import config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = config_dir()


@pytest.fixture(autouse=True)
def offline_wandb(monkeypatch, tmp_path):
    """W&B never needs an account or a network in tests; nothing leaks between tests."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)


def compose_config(overrides: list[str] = (), config_name: str = "train", hydra: bool = False):
    """The config the entry point would compose for ``overrides`` (without running it)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)


def run_cli(script: str, *args: str, cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python <script> args...`` from ``cwd`` like a user would."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def train_side_by_side(root: Path, runs: dict[str, list[str]]) -> dict[str, Path]:
    """Train several runs at once (most of a tiny run is start-up, which overlaps well on 2 cores);
    each run ``name`` goes to ``root/logs/name``."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    procs = {name: subprocess.Popen([sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir=logs/{name}"],
                                    cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, overrides in runs.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"training {name} failed:\n{out[-2000:]}\n{err[-3000:]}"
    return {name: root / "logs" / name for name in runs}


def run_dirs(root: Path, task: str = "train") -> list[Path]:
    return sorted(p for p in (root / "logs" / task / "runs").iterdir() if p.is_dir())


@pytest.fixture(scope="session")
def user_files(tmp_path_factory) -> dict[str, Path]:
    """Small user datasets in every format ``data=files`` reads, plus MNIST-layout IDX files."""
    from PIL import Image

    root = tmp_path_factory.mktemp("user_data")
    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 5)).astype(np.float32) + y[:, None]
    import pandas as pd

    table = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)])
    table["species"] = np.array(["ash", "birch", "cedar"])[y]
    table.to_csv(root / "table.csv", index=False)
    table.to_parquet(root / "table.parquet")
    np.savez(root / "arrays.npz", x=rng.standard_normal((n, 1, 6, 6)).astype(np.float32), y=y)

    images = root / "images"
    for label in ("circle", "square"):
        (images / label).mkdir(parents=True)
        for i in range(12):
            pixels = (rng.random((10, 10)) * 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(images / label / f"{i}.png")

    raw = root / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)

    def write_idx(name: str, array: np.ndarray) -> None:
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        with gzip.open(raw / f"{name}.gz", "wb") as f:
            f.write(header + array.astype(np.uint8).tobytes())

    for split, count in (("train", 60), ("t10k", 20)):
        write_idx(f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        write_idx(f"{split}-labels-idx1-ubyte", np.arange(count) % 10)
    return {
        "csv": root / "table.csv",
        "parquet": root / "table.parquet",
        "npz": root / "arrays.npz",
        "images": images,
        "mnist_root": root / "mnist",
    }


def data_overrides(option: str, files: dict[str, Path]) -> list[str]:
    """Overrides that make data option ``option`` usable in tests (user data needs a path)."""
    extra = {
        "files": [f"data.path={files['csv']}", "data.target_column=species"],
        "mnist": [f"data.root={files['mnist_root']}"],
    }
    return [f"data={option}", *extra.get(option, [])]


def write_project(root: Path, package: str, modules: dict[str, str], configs: dict[str, str]) -> Path:
    """A researcher's project in ``root``: the package ``package`` (``modules``: file name -> source)
    and its own ``conf/`` (``configs``: ``group/option`` -> YAML text)."""
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    for name, source in modules.items():
        (root / package / name).write_text(source)
    for option, text in configs.items():
        (root / "conf" / f"{option}.yaml").parent.mkdir(parents=True, exist_ok=True)
        (root / "conf" / f"{option}.yaml").write_text(text)
    return root
