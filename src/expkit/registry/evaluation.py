"""A trained model, rebuilt from its checkpoint alone, evaluated on a test split.

Every comparison between models (promotion, ``expkit report``) goes through :func:`evaluate`:
the module's own test metrics (``trainer.test``: whatever it logs), ``test/latency_ms`` where a
batch's first tensor is the module's input, per-class precision, recall and F1 for classifiers,
and a fingerprint of the test split (:func:`expkit.rebuild.data_fingerprint`), so two evaluations
are known to be on the same data. Each model keeps its own preprocessing (its datamodule state,
e.g. standardization statistics, travels in its checkpoint).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from expkit.errors import DataError
from expkit.rebuild import Rebuilt, batches, data_fingerprint, rebuild, tensors_of

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


def load_trained(path: str | Path, trust: bool = False, data_cfg: Mapping | None = None) -> Rebuilt:
    """Rebuild the model of ``path`` (run dir, checkpoint dir or file) from its checkpoint, with
    its recorded data (or ``data_cfg``, read with the model's own preprocessing)."""
    return rebuild(resolve_checkpoint(path), trust=trust, data_cfg=data_cfg)


@dataclass
class Evaluation:
    metrics: dict[str, float]
    per_class: list[dict[str, float]] | None
    data_fingerprint: str
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "per_class": self.per_class, "data_fingerprint": self.data_fingerprint,
                "samples": self.samples}


def _first_input(rebuilt: Rebuilt):
    """The first test batch's inputs (its first tensor), or ``None`` when batches are not tensors."""
    for batch in batches(rebuilt.datamodule, "test"):
        tensors = tensors_of(batch)
        return tensors[0] if tensors else None
    return None


def latency_ms(rebuilt: Rebuilt, samples: int = 50) -> float | None:
    """Median milliseconds of a forward pass on one sample, one CPU thread, after a warm-up, on this
    machine (one thread: comparable between busy and idle machines, and what a serving worker
    gets). ``None`` when the module's ``forward`` does not take a batch's first tensor."""
    import torch

    x = _first_input(rebuilt)
    if x is None or not len(x):
        return None
    inputs = [x[i : i + 1] for i in range(min(samples, len(x)))]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            try:
                rebuilt.model(inputs[0])
            except Exception:  # noqa: BLE001 - forward takes something else: no latency to measure
                return None
            times = []
            for item in inputs:
                start = time.perf_counter()
                rebuilt.model(item)
                times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(threads)
    return float(np.median(times))


def per_class_metrics(rebuilt: Rebuilt) -> list[dict[str, float]] | None:
    """Precision, recall, F1 and support per class, for a classifier: batches ``(x, y)`` with one
    integer label per sample and outputs ``(batch, classes)``; ``None`` for any other module."""
    import torch
    from sklearn.metrics import precision_recall_fscore_support

    num_classes = rebuilt.sizes.get("num_classes")
    if num_classes is None:
        return None
    actual, predicted = [], []
    with torch.no_grad():
        for batch in batches(rebuilt.datamodule, "test"):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and batch[1].ndim == 1
                    and not batch[1].is_floating_point()):
                return None
            x, y = batch
            logits = rebuilt.model(x)
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] != num_classes:
                return None
            actual.append(y.numpy())
            predicted.append(logits.argmax(dim=1).numpy())
    labels = list(range(int(num_classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        np.concatenate(actual), np.concatenate(predicted), labels=labels, zero_division=0)
    return [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)]


def evaluate(rebuilt: Rebuilt) -> Evaluation:
    """The module's test metrics on its datamodule's test split, with latency and (classifiers)
    per-class metrics; the split is fingerprinted from a fresh datamodule of the same config."""
    from expkit.rebuild import test_metrics

    metrics = test_metrics(rebuilt)
    latency = latency_ms(rebuilt)
    if latency is not None:
        metrics[LATENCY_METRIC] = latency
    fingerprint, samples = data_fingerprint(rebuilt.config["data"])
    return Evaluation(metrics, per_class_metrics(rebuilt), fingerprint, samples)


def feature_stats(x: np.ndarray, names: list[str] | None = None) -> dict[str, Any]:
    """Per-feature mean and standard deviation of ``x`` (samples first, features flattened)."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return {"samples": int(len(flat)), "mean": flat.mean(axis=0).tolist(), "std": flat.std(axis=0).tolist(),
            **({"names": list(names)} if names and len(names) == flat.shape[1] else {})}


def input_stats(rebuilt_or_data: Rebuilt | Mapping, stage: str = "train") -> dict[str, Any]:
    """:func:`feature_stats` of a split's inputs (each batch's first tensor), from a fresh
    datamodule of the data config with its ``standardize`` switch off, if it has one: the raw
    inputs, as drift compares them."""
    from hydra.utils import get_object

    from expkit.build import build_datamodule
    from expkit.config.targets import parameters

    data_cfg = dict(rebuilt_or_data.config["data"] if isinstance(rebuilt_or_data, Rebuilt) else rebuilt_or_data)
    if "standardize" in parameters(get_object(str(data_cfg["_target_"])))[0]:
        data_cfg["standardize"] = False
    datamodule = build_datamodule(data_cfg)
    parts = [tensors_of(batch)[0].detach().cpu().numpy() for batch in batches(datamodule, stage)]
    parts = [p for p in parts if p.ndim]
    if not parts:
        raise DataError(f"the {stage} split of data {data_cfg.get('_target_')} is empty: no statistics to compare.")
    # A table's columns name its features.
    return feature_stats(np.concatenate([p.reshape(len(p), -1) for p in parts]), getattr(datamodule, "features", None))
