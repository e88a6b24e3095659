"""Predict new inputs with a trained checkpoint: ``python predict.py ckpt_path=... data.path=new.csv``.

The inputs are read and preprocessed exactly as in training, from the checkpoint's recorded
config: the same feature columns (or ``.npz`` array, image mode and size), the same
standardization statistics (saved in the checkpoint). Labels are not needed: a table without the
target column, or an ``.npz`` without ``y``, is predicted as is. Writes one row per input with the
predicted class (its label as in the training data when known), its index and every class
probability, to ``output`` (default ``<run dir>/predictions.csv``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

import expkit.resolvers  # noqa: F401  (registers the run-directory resolver before Hydra composes)
from expkit.config import checked_entry_point
from expkit.errors import DataError
from expkit.paths import config_dir
from expkit.tasks.common import log, run_job

FILES_TARGET = "expkit.data.FilesDataModule"
# How a file is read: the keys of data=files that the training run's config decides.
READ_KEYS = ("target_column", "feature_columns", "x_key", "y_key", "image_mode", "image_size")


def reader_config(data: dict[str, Any], recorded: dict[str, Any], explicit: dict[str, Any]) -> dict[str, Any]:
    """``data=files`` settings to read new inputs: the defaults, then what training recorded, then
    what the command line set explicitly (``data.x_key=...``)."""
    config = dict(data)
    if recorded.get("_target_") == FILES_TARGET:
        config.update({k: recorded[k] for k in READ_KEYS if k in recorded})
    config.update(explicit)
    return config


def training_labels(recorded: dict[str, Any]) -> tuple[list | None, list[str] | None]:
    """Class labels and table feature columns of the training data, when it can still be read
    (``None`` otherwise: predictions then name class indices)."""
    from hydra.utils import instantiate

    try:
        if recorded.get("processed_dir"):
            from expkit.data.processed import read_meta

            return read_meta(recorded["processed_dir"]).get("classes"), None
        if recorded.get("_target_") != FILES_TARGET:
            return None, None
        datamodule = instantiate(recorded, processed_dir=None)
        datamodule.spec  # noqa: B018  (reads the label column: the classes)
        columns = None
        if datamodule.path.suffix.lower() in (".csv", ".parquet", ".pq"):
            header = datamodule._read_table_part(nrows=0)
            columns = datamodule._table_columns([str(c) for c in header.columns])
        return datamodule.classes, columns
    except Exception as exc:  # the training file moved or changed: indices still work
        log.warning("training data %s not readable (%s): predictions name class indices", recorded.get("path"), exc)
        return None, None


def read_inputs(config: dict[str, Any], input_shape: tuple[int, ...], features: list[str] | None) -> np.ndarray:
    """Raw features of the file ``config['path']``, shaped like the training inputs."""
    import pandas as pd

    path = Path(config["path"])
    if not path.exists():
        raise DataError(f"data.path={path}: no such file or directory.")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet", ".pq"):
        table = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        table.columns = [str(c) for c in table.columns]
        features = features or config.get("feature_columns") or [c for c in table.columns if c != config["target_column"]]
        missing = [c for c in features if c not in table.columns]
        if missing:
            raise DataError(f"{path}: the model was trained on columns {features}; {missing} missing.")
        bad = [c for c in features if not pd.api.types.is_numeric_dtype(table[c]) or table[c].isna().any()]
        if bad:
            raise DataError(f"{path}: columns {bad} must be numbers without missing values, as in training.")
        x = table[features].to_numpy(np.float32)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if config["x_key"] not in archive:
                raise DataError(f"{path}: no array {config['x_key']!r} (data.x_key); arrays are {list(archive.keys())}.")
            x = archive[config["x_key"]].astype(np.float32)
    elif path.is_dir():  # images: by-class sub-folders or a flat folder
        from PIL import Image

        from expkit.data.files import IMAGE_SUFFIXES

        files = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        size = config.get("image_size")
        images = []
        for file in files:
            image = Image.open(file).convert(config["image_mode"])
            if size:
                image = image.resize(tuple(reversed(size)))
            array = np.asarray(image, dtype=np.float32) / 255.0
            images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
        x = np.stack(images) if images else np.zeros((0, *input_shape), np.float32)
    else:
        raise DataError(f"data.path={path}: unsupported input {suffix!r}; use .csv, .parquet, .npz or an image folder.")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise DataError(f"{path}: inputs have shape {tuple(x.shape[1:])}, the model was trained on {tuple(input_shape)}.")
    if not np.isfinite(x).all():
        raise DataError(f"{path}: inputs have NaN or infinite values; clean them first.")
    return x


def explicit_data_overrides() -> dict[str, Any]:
    """``data.<key>=value`` overrides given on the command line."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    return {o.key_or_group.split(".", 1)[1]: o.value() for o in overrides
            if o.key_or_group.startswith("data.") and o.key_or_group.count(".") == 1}


def predict(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Predict ``cfg.data.path`` with ``cfg.ckpt_path``; write a CSV of predictions."""
    import pandas as pd
    import torch

    from expkit.registry.evaluation import load_trained
    from expkit.startup import started

    trained = load_trained(cfg.ckpt_path, trust=cfg.get("trust_checkpoint", False))
    started()  # garbage collection resumes (expkit.startup)
    recorded = trained.run_config["data"]
    data = OmegaConf.to_container(cfg.data, resolve=True)
    config = reader_config(data, recorded, explicit_data_overrides())
    classes, features = training_labels(recorded)
    x = read_inputs(config, trained.input_shape, features if not config.get("feature_columns") else None)
    probabilities = torch.softmax(torch.as_tensor(trained.logits(x, batch_size=cfg.batch_size)), dim=-1).numpy()
    index = probabilities.argmax(axis=1) if len(x) else np.zeros(0, np.int64)
    names = [str(c) for c in classes] if classes and len(classes) == trained.num_classes else [str(i) for i in range(trained.num_classes)]
    table = pd.DataFrame({"prediction": [names[i] for i in index], "class_index": index})
    for i, name in enumerate(names):
        table[f"prob_{name}"] = probabilities[:, i]
    output = Path(cfg.output) if cfg.get("output") else run_dir / "predictions.csv"
    output.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(output, index_label="row")
    log.info("Predicted %d inputs of %s with %s -> %s", len(x), config["path"], trained.path, output)
    return {"predict/samples": float(len(x))}


@checked_entry_point("predict")
@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def main(cfg: DictConfig) -> None:
    run_job(predict, cfg)


if __name__ == "__main__":
    main()
