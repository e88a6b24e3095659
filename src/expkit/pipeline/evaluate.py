"""DVC stage ``evaluate``: test the training stage's best checkpoint; metrics and plots for DVC.

    python -m expkit.pipeline.evaluate outputs/dvc/train/checkpoints outputs/dvc/evaluate

Writes into the output folder:
- ``metrics.json``: the module's test metrics (``trainer.test``: whatever it logs; ``dvc metrics
  show``, ``dvc exp show``);
- ``predictions.csv``: ``actual,predicted`` per test sample: the class for a classifier (the
  confusion matrix of ``dvc plots show``), the value for a regressor with one target; only the
  header for other modules.

Model and data are rebuilt from the run config stored in the checkpoint (``expkit.rebuild``), so
the test split is the one training used (the prepared arrays). On the CPU, deterministic.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from expkit.errors import DataError, ExpkitError, exit_with

PREDICTIONS_FILE = "predictions.csv"


def best_checkpoint(checkpoint_dir: Path) -> Path:
    """The checkpoint the monitoring ModelCheckpoint ranked best (its state is in ``last.ckpt``),
    in ``checkpoint_dir`` itself (a moved run keeps its old absolute paths there); else
    ``last.ckpt``."""
    from expkit.checkpoints import load_checkpoint

    last = checkpoint_dir / "last.ckpt"
    if not last.is_file():
        raise DataError(
            f"{last} not found: run the training stage first (`dvc repro train`) with callbacks "
            "that keep checkpoints (callbacks.last_checkpoint)."
        )
    state = load_checkpoint(str(last), key=str(last))
    for key, value in (state.get("callbacks") or {}).items():
        monitored = key.startswith("ModelCheckpoint") and isinstance(value, dict) and value.get("monitor")
        best = value.get("best_model_path") if monitored else None
        if best and (checkpoint_dir / Path(best).name).is_file():
            return checkpoint_dir / Path(best).name
    return last


def evaluate(checkpoint_dir: Path, out_dir: Path) -> dict[str, float]:
    from expkit.rebuild import rebuild, test_metrics
    from expkit.tracking.files import write_metrics

    path = best_checkpoint(Path(checkpoint_dir))
    rebuilt = rebuild(path)
    metrics = test_metrics(rebuilt)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics(out_dir, metrics)
    rows = test_predictions(rebuilt)
    with (out_dir / PREDICTIONS_FILE).open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["actual", "predicted"])
        writer.writerows(rows)
    print(f"evaluated {path} on the test split: {metrics}")
    return metrics


def test_predictions(rebuilt) -> list[tuple]:
    """``(actual, predicted)`` per test sample of a module whose batches are ``(x, y)`` with one
    label or one number per sample: the class (argmax) of a classifier, the value of a
    regressor. ``[]`` for other modules (per-token outputs, several targets)."""
    import torch

    from expkit.rebuild import batches

    rows: list[tuple] = []
    with torch.no_grad():
        for batch in batches(rebuilt.datamodule, "test"):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and batch[1].ndim == 1):
                return []
            x, y = batch
            out = rebuilt.model(x)
            if not y.is_floating_point() and out.ndim == 2:
                predicted = out.argmax(dim=1)
            elif y.is_floating_point() and out.reshape(len(y), -1).shape[1] == 1:
                predicted = out.reshape(len(y))
            else:
                return []
            rows += zip(y.tolist(), predicted.tolist(), strict=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m expkit.pipeline.evaluate <checkpoint dir> <output dir>", file=sys.stderr)
        return 2
    try:
        evaluate(Path(args[0]), Path(args[1]))
    except ExpkitError as exc:
        exit_with(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
