"""DVC stage ``evaluate``: test the training stage's best checkpoint; metrics and plots for DVC.

    python -m expkit.pipeline.evaluate outputs/dvc/train/checkpoints outputs/dvc/evaluate

Writes into the output folder:
- ``metrics.json``: ``test/loss`` and ``test/acc`` (``dvc metrics show``, ``dvc exp show``);
- ``predictions.csv``: ``actual,predicted`` per test sample (the confusion matrix of ``dvc plots show``).

Model and data are rebuilt from the run config stored in the checkpoint, so the test split is
the one training used (the prepared arrays). Plain PyTorch, no Trainer: deterministic on CPU.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from expkit.errors import DataError, ExpkitError, exit_with

PREDICTIONS_FILE = "predictions.csv"


def best_checkpoint(checkpoint_dir: Path) -> Path:
    """The checkpoint ModelCheckpoint ranked best (recorded in ``last.ckpt``), else ``last.ckpt``."""
    import torch

    last = checkpoint_dir / "last.ckpt"
    if not last.is_file():
        raise DataError(
            f"{last} not found: run the training stage first (`dvc repro train`) with callbacks "
            "that keep checkpoints (callbacks.model_checkpoint.save_last: true)."
        )
    state = torch.load(last, map_location="cpu", weights_only=True)
    for key, value in (state.get("callbacks") or {}).items():
        best = value.get("best_model_path") if key.startswith("ModelCheckpoint") else None
        if best and (checkpoint_dir / Path(best).name).is_file():
            return checkpoint_dir / Path(best).name
    return last


def evaluate(checkpoint_dir: Path, out_dir: Path) -> dict[str, float]:
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    from expkit.metrics import ACCURACY, LOSS, metric_key
    from expkit.models.classifier import RUN_CONFIG_KEY
    from expkit.tasks.eval import load_checkpoint
    from expkit.tracking.files import write_metrics

    path = best_checkpoint(Path(checkpoint_dir))
    checkpoint = load_checkpoint(str(path))
    run_config = checkpoint[RUN_CONFIG_KEY]
    hparams = checkpoint["hyper_parameters"]

    datamodule = instantiate(run_config["data"])
    datamodule.load_state_dict(checkpoint.get(type(datamodule).__qualname__, {}))
    datamodule.setup("test")
    model = instantiate(run_config["model"], input_shape=tuple(hparams["input_shape"]),
                        num_classes=int(hparams["num_classes"]), _convert_="all")
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()

    actual, predicted, loss_sum = [], [], 0.0
    with torch.no_grad():
        for x, y in datamodule.test_dataloader():
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            actual += y.tolist()
            predicted += logits.argmax(dim=-1).tolist()
    n = len(actual)
    if n == 0:
        raise DataError(f"the test split of {datamodule.spec.describe()} is empty: raise data.test_fraction.")
    metrics = {
        metric_key("test", LOSS): loss_sum / n,
        metric_key("test", ACCURACY): sum(a == p for a, p in zip(actual, predicted, strict=True)) / n,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics(out_dir, metrics)
    with (out_dir / PREDICTIONS_FILE).open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["actual", "predicted"])
        writer.writerows(zip(actual, predicted, strict=True))
    print(f"evaluated {path} on {n} test samples: {metrics}")
    return metrics


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
