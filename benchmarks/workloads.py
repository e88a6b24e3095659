"""The benchmarked workloads, and the data and networks the hand-written and plain Lightning runs use.

Each workload is trained three ways on the same data, network, batch size, number of steps and
seed. The hand-written loop must not import Lightning (its start-up is the floor), so the
networks come from ``expkit/models/nets.py`` loaded as a plain file: that module imports only
torch, while the ``expkit.models`` package imports Lightning.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEED = 42
LR, WEIGHT_DECAY = 0.002, 1e-4  # conf/model/optimizer/adamw.yaml


@dataclass
class Workload:
    name: str
    description: str
    data: str  # "digits" or "synthetic"
    model: str  # "mlp" or "cnn"
    batch_size: int
    epochs: int
    net_kwargs: dict = field(default_factory=dict)  # beyond conf/model/<model>.yaml's defaults
    synthetic: dict = field(default_factory=dict)  # num_samples, input_shape, num_classes
    seed: int = SEED

    def to_dict(self) -> dict:
        return asdict(self)

    def train_overrides(self) -> list[str]:
        """``train.py`` overrides giving this workload; everything else stays expkit's default."""
        out = [f"model={self.model}", f"data={self.data}", f"data.batch_size={self.batch_size}",
               f"trainer.max_epochs={self.epochs}", f"seed={self.seed}"]
        out += [f"data.{k}={_hydra(v)}" for k, v in self.synthetic.items()]
        out += [f"model.net.{k}={_hydra(v)}" for k, v in self.net_kwargs.items()]
        return out


def _hydra(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


# Defaults of conf/model/*.yaml (the nets' own defaults agree; a test of expkit holds them in sync).
NET_DEFAULTS = {"mlp": {"hidden_dims": [256, 128], "dropout": 0.1},
                "cnn": {"channels": [32, 64], "hidden_dim": 128, "dropout": 0.25}}
HEAVY_CHANNELS = [64, 128, 256]


def workloads(device: str = "cpu", quick: bool = False) -> dict[str, Workload]:
    """CPU: sizes that run in seconds on 2 cores. GPU: larger batches and more data, so a step is
    worth timing. ``quick``: one epoch each, for smoke tests."""
    gpu = device == "cuda"
    heavy_samples = 16384 if gpu else 1024
    items = [
        Workload("mlp_digits", "default MLP on digits (python train.py)", "digits", "mlp",
                 batch_size=256 if gpu else 32, epochs=20 if gpu else 10),
        Workload("cnn_digits", "CNN on digits (model=cnn)", "digits", "cnn",
                 batch_size=256 if gpu else 32, epochs=20 if gpu else 5),
        Workload("cnn_synthetic_heavy", f"CNN channels {HEAVY_CHANNELS} on synthetic 3x32x32, "
                 f"{heavy_samples} samples (compute-heavy)", "synthetic", "cnn",
                 batch_size=256 if gpu else 64, epochs=5 if gpu else 3,
                 net_kwargs={"channels": HEAVY_CHANNELS},
                 synthetic={"num_samples": heavy_samples, "input_shape": [3, 32, 32], "num_classes": 10}),
    ]
    if quick:
        for w in items:
            w.epochs = 1
    return {w.name: w for w in items}


def load_nets():
    """``expkit/models/nets.py`` as a module of its own, without importing Lightning."""
    spec = importlib.util.spec_from_file_location("bench_nets", ROOT / "src" / "expkit" / "models" / "nets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_net(w: Workload, input_shape: tuple[int, ...], num_classes: int):
    nets = load_nets()
    cls = {"mlp": nets.MLP, "cnn": nets.CNN}[w.model]
    return cls(input_shape=input_shape, num_classes=num_classes, **{**NET_DEFAULTS[w.model], **w.net_kwargs})


def arrays(w: Workload) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train/val/test arrays equal to what expkit's datamodule for ``w.data`` trains on."""
    if w.data == "digits":
        from sklearn.datasets import load_digits  # what a hand-written script would call

        bunch = load_digits()
        x, y = (bunch.images / 16.0).astype(np.float32)[:, None, :, :], bunch.target.astype(np.int64)
    else:  # expkit.data.SyntheticDataModule with its defaults (noise 1.0, data_seed 0)
        s = w.synthetic
        rng = np.random.default_rng(0)
        prototypes = rng.standard_normal((s["num_classes"], *s["input_shape"]))
        y = rng.integers(0, s["num_classes"], s["num_samples"])
        x = (prototypes[y] + rng.standard_normal((s["num_samples"], *s["input_shape"]))).astype(np.float32)
        y = y.astype(np.int64)
    # expkit.data.base.split_indices with val/test fractions 0.15 and split seed 0
    order = np.random.default_rng(0).permutation(len(y))
    n_test = n_val = round(len(y) * 0.15)
    idx = {"train": order[n_test + n_val:], "val": order[n_test:n_test + n_val], "test": order[:n_test]}
    return {stage: (x[i], y[i]) for stage, i in idx.items()}


def num_classes(w: Workload) -> int:
    return 10 if w.data == "digits" else int(w.synthetic["num_classes"])
