"""The benchmarked workloads, and the data and networks the hand-written and plain Lightning runs use.

Each workload is trained three ways on the same data, network, batch size, number of steps and
seed. The hand-written loop must not import Lightning (its start-up is the floor), so the
networks come from ``expkit/models/nets.py`` loaded as a plain file (that module imports only
torch, while the ``expkit.models`` package imports Lightning), and the character language
model's from ``benchmarks/char_transformer.py`` (its layers, built the same way).
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
    data: str  # "digits", "synthetic" or "text"
    model: str  # "mlp", "cnn" or "char_lm"
    batch_size: int
    epochs: int
    net_kwargs: dict = field(default_factory=dict)  # beyond conf/model/<model>.yaml's defaults
    data_kwargs: dict = field(default_factory=dict)  # data.<key>: synthetic sizes, the text's seq_len
    lr: float = LR  # conf/model/<model>.yaml's (a test holds them equal); train.py gets it from there
    seed: int = SEED

    def to_dict(self) -> dict:
        return asdict(self)

    def train_overrides(self) -> list[str]:
        """``train.py`` overrides giving this workload; everything else stays expkit's default."""
        out = [f"model={self.model}", f"data={self.data}", f"data.batch_size={self.batch_size}",
               f"trainer.max_epochs={self.epochs}", f"seed={self.seed}"]
        out += [f"data.{k}={_hydra(v)}" for k, v in self.data_kwargs.items()]
        net = "model" if self.model in WHOLE_MODELS else "model.net"  # where the network's arguments live
        out += [f"{net}.{k}={_hydra(v)}" for k, v in self.net_kwargs.items()]
        return out

    @property
    def tokens_per_sample(self) -> int | None:
        """Positions predicted per sample (sequence workloads; tokens/s is reported for them)."""
        return int(self.data_kwargs["seq_len"]) if self.data == "text" else None


def _hydra(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


# Defaults of conf/model/*.yaml (the nets' own defaults agree; a test of expkit holds them in sync).
NET_DEFAULTS = {"mlp": {"hidden_dims": [256, 128], "dropout": 0.1},
                "cnn": {"channels": [32, 64], "hidden_dim": 128, "dropout": 0.25},
                "char_lm": {"d_model": 128, "num_layers": 2, "num_heads": 4, "dim_feedforward": None, "dropout": 0.1}}
WHOLE_MODELS = ("char_lm",)  # model configs that are the network themselves (no model.net)
CHAR_LM_LR = 0.003  # conf/model/char_lm.yaml
TEXT_SPLIT = {"val_fraction": 0.1, "test_fraction": 0.1, "split_seed": 0}  # conf/data/text.yaml
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
                 data_kwargs={"num_samples": heavy_samples, "input_shape": [3, 32, 32], "num_classes": 10}),
        Workload("char_lm_text", "character Transformer language model on the bundled text "
                 "(model=char_lm data=text), 64-character windows", "text", "char_lm",
                 batch_size=64 if gpu else 32, epochs=10 if gpu else 3, data_kwargs={"seq_len": 64}, lr=CHAR_LM_LR),
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


def build_net(w: Workload, input_shape: tuple[int, ...], num_outputs: int):
    """``w``'s network for samples of ``input_shape`` (a text window: ``(seq_len,)``) and
    ``num_outputs`` outputs per prediction (classes; characters for the language model)."""
    kwargs = {**NET_DEFAULTS[w.model], **w.net_kwargs}
    if w.model == "char_lm":
        from benchmarks.char_transformer import CharTransformer

        return CharTransformer(vocab_size=num_outputs, seq_len=input_shape[0], **kwargs)
    nets = load_nets()
    cls = {"mlp": nets.MLP, "cnn": nets.CNN}[w.model]
    return cls(input_shape=input_shape, num_outputs=num_outputs, **kwargs)


def bundled_text() -> str:
    """scikit-learn's dataset descriptions, concatenated in sorted order (conf/data/text.yaml's text)."""
    from importlib.util import find_spec

    folder = Path(find_spec("sklearn").origin).parent / "datasets" / "descr"
    return "".join(f.read_text(encoding="utf-8") for f in sorted(folder.glob("*.rst")))


def text_arrays(w: Workload) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Windows of ``seq_len`` characters and their next characters, split as
    ``expkit.data.CharTextDataModule`` splits them (what a hand-written script would do)."""
    text = bundled_text()
    index = {c: i for i, c in enumerate(sorted(set(text)))}
    tokens = np.array([index[c] for c in text], dtype=np.int64)
    seq_len = int(w.data_kwargs["seq_len"])
    count = (len(tokens) - 1) // seq_len
    x = tokens[: count * seq_len].reshape(count, seq_len)
    y = tokens[1 : count * seq_len + 1].reshape(count, seq_len)
    order = np.random.default_rng(TEXT_SPLIT["split_seed"]).permutation(count)
    n_test, n_val = round(count * TEXT_SPLIT["test_fraction"]), round(count * TEXT_SPLIT["val_fraction"])
    idx = {"train": order[n_test + n_val:], "val": order[n_test:n_test + n_val], "test": order[:n_test]}
    return {stage: (x[np.sort(i)], y[np.sort(i)]) for stage, i in idx.items()}


def arrays(w: Workload) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train/val/test arrays equal to what expkit's datamodule for ``w.data`` trains on."""
    if w.data == "text":
        return text_arrays(w)
    if w.data == "digits":
        from sklearn.datasets import load_digits  # what a hand-written script would call

        bunch = load_digits()
        x, y = (bunch.images / 16.0).astype(np.float32)[:, None, :, :], bunch.target.astype(np.int64)
    else:  # expkit.data.SyntheticDataModule with its defaults (noise 1.0, data_seed 0)
        s = w.data_kwargs
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


def num_outputs(w: Workload) -> int:
    """Outputs per prediction: classes, or the text's characters."""
    if w.data == "text":
        return len(set(bundled_text()))
    return 10 if w.data == "digits" else int(w.data_kwargs["num_classes"])
