"""A trained model, rebuilt from its checkpoint alone, evaluated on a test split.

Every comparison between models (promotion, ``expkit report``) goes through :func:`evaluate`:
the same metrics (``test/loss``, ``test/acc``, ``test/latency_ms``), per-class precision, recall
and F1, and a fingerprint of the test split (sha256 of its raw arrays), so two evaluations are
known to be on the same data. Each model applies its own preprocessing (its standardization
statistics travel in its checkpoint) to the raw test arrays.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from expkit.errors import DataError

LATENCY_METRIC = "test/latency_ms"  # median time of one single-sample forward pass (one thread) on this machine


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a run directory (its best checkpoint), a checkpoint folder or a file."""
    from expkit.pipeline.evaluate import best_checkpoint

    path = Path(path)
    if path.is_file():
        return path
    for folder in (path / "checkpoints", path):
        if (folder / "last.ckpt").is_file():
            return best_checkpoint(folder)
    raise DataError(f"{path}: no checkpoint found (expected a .ckpt file, or a run directory with checkpoints/last.ckpt).")


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (``<run>/checkpoints/x.ckpt`` -> ``<run>``)."""
    checkpoint = Path(checkpoint).resolve()
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


@dataclass
class TrainedModel:
    """A checkpoint's network in eval mode, its run config and its preprocessing."""

    path: Path
    model: Any
    run_config: dict
    input_shape: tuple[int, ...]
    num_classes: int
    feature_mean: np.ndarray | None = None
    feature_std: np.ndarray | None = None

    def preprocess(self, x: np.ndarray):
        """Raw features -> the model's input tensor, exactly as training scaled them."""
        import torch

        if self.feature_mean is not None:
            x = (x - self.feature_mean) / self.feature_std
        return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)

    def logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        import torch

        with torch.no_grad():
            parts = [self.model(self.preprocess(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.num_classes), np.float32)


def load_trained(path: str | Path, trust: bool = False) -> TrainedModel:
    """Rebuild the model of ``path`` (run dir, checkpoint dir or file) from its checkpoint."""
    from hydra.utils import get_class, instantiate

    from expkit.models.checkpoint import load_checkpoint
    from expkit.models.classifier import RUN_CONFIG_KEY

    ckpt = resolve_checkpoint(path)
    checkpoint = load_checkpoint(str(ckpt), trust=trust)
    run_config = checkpoint[RUN_CONFIG_KEY]
    hparams = checkpoint["hyper_parameters"]
    shape, classes = tuple(hparams["input_shape"]), int(hparams["num_classes"])
    model = instantiate(run_config["model"], input_shape=shape, num_classes=classes, _convert_="all")
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    # The datamodule's state (standardization statistics) is saved under its class name.
    stats = checkpoint.get(get_class(run_config["data"]["_target_"]).__qualname__) or {}
    mean = np.asarray(stats["feature_mean"]) if stats.get("feature_mean") is not None else None
    std = np.asarray(stats["feature_std"]) if stats.get("feature_std") is not None else None
    return TrainedModel(ckpt, model, run_config, shape, classes, mean, std)


def raw_splits(data_config: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The train/val/test arrays of a recorded data config, before any standardization."""
    from hydra.utils import instantiate

    datamodule = instantiate(data_config, standardize=False)
    datamodule.setup("fit")
    return {stage: (ds.tensors[0].numpy(), ds.tensors[1].numpy()) for stage, ds in datamodule.datasets.items()}


def fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in (np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.int64)):
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


@dataclass
class Evaluation:
    metrics: dict[str, float]
    per_class: list[dict[str, float]]
    data_fingerprint: str
    samples: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "per_class": self.per_class, "data_fingerprint": self.data_fingerprint,
                "samples": self.samples}


def latency_ms(trained: TrainedModel, x: np.ndarray, samples: int = 50) -> float:
    """Median milliseconds of a forward pass on one sample, one CPU thread, after a warm-up, on this
    machine (one thread: comparable between busy and idle machines, and what a serving worker gets)."""
    import torch

    inputs = [trained.preprocess(x[i : i + 1]) for i in range(min(samples, len(x)))]
    times = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            trained.model(inputs[0])
            for item in inputs:
                start = time.perf_counter()
                trained.model(item)
                times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(threads)
    return float(np.median(times))


def evaluate(trained: TrainedModel, x: np.ndarray, y: np.ndarray) -> Evaluation:
    """KPI metrics and per-class metrics of ``trained`` on raw test arrays ``x``, ``y``."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import precision_recall_fscore_support

    from expkit.metrics import ACCURACY, LOSS, metric_key

    if len(y) == 0:
        raise DataError("the test split is empty: raise data.test_fraction.")
    logits = trained.logits(x)
    predicted = logits.argmax(axis=1)
    loss = F.cross_entropy(torch.as_tensor(logits), torch.as_tensor(y, dtype=torch.long)).item()
    labels = list(range(trained.num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, labels=labels, zero_division=0)
    per_class = [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for c, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)]
    metrics = {metric_key("test", LOSS): float(loss), metric_key("test", ACCURACY): float((predicted == y).mean()),
               LATENCY_METRIC: latency_ms(trained, x)}
    return Evaluation(metrics, per_class, fingerprint(x, y), int(len(y)))


def feature_stats(x: np.ndarray) -> dict[str, Any]:
    """Per-feature mean and standard deviation of ``x`` (samples first, features flattened)."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return {"samples": int(len(flat)), "mean": flat.mean(axis=0).tolist(), "std": flat.std(axis=0).tolist()}
