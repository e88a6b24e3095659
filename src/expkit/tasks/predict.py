"""Predict new inputs with a trained checkpoint: ``python predict.py ckpt_path=... data.path=new.csv``.

The module and its datamodule are rebuilt from the checkpoint (``expkit.rebuild``): the data is
read and preprocessed exactly as in training, from the recorded config (the same feature columns,
``.npz`` array, image mode and size; the same standardization statistics, saved in the
checkpoint), with the ``data.*`` keys given on the command line changed (``data.path``). Lightning
runs the module's ``predict_step`` over the datamodule's ``predict_dataloader``; for expkit's
datamodules that is every sample of ``data.path`` (labels not needed), for others whatever their
``predict_dataloader`` yields.

Written to ``output`` (default ``<run dir>/predictions.csv``), one row per input: for a classifier
(outputs ``(n, classes)``) the predicted class (its label as in the training data when known), its
index and every class probability; otherwise the outputs, one column each. Outputs with more
dimensions (per-token outputs, images) go to a ``.npy`` file of the same name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from expkit.config import run_app
from expkit.errors import ConfigError
from expkit.tasks.common import log, resolved, run_job


def command_line_data() -> tuple[bool, dict[str, Any]]:
    """Whether the command line picked a ``data=`` option, and the ``data.<key>=value`` it set."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    chosen = any(o.key_or_group == "data" for o in overrides)
    keys = {o.key_or_group.split(".", 1)[1]: o.value() for o in overrides
            if o.key_or_group.startswith("data.") and o.key_or_group.count(".") == 1 and not o.is_delete()}
    return chosen, keys


def data_config(recorded: Mapping[str, Any], default: Mapping[str, Any], chosen: bool, explicit: Mapping[str, Any]) -> dict:
    """The data config to predict with: the training run's (``recorded``) with the command line's
    ``data.*`` keys, when its datamodule takes them and no ``data=`` option was ``chosen``; else
    that option (or the default, ``data=files``) reading as training read: every key it shares
    with the recorded config (standardization, columns, arrays) is training's unless the command
    line sets it."""
    from hydra.utils import get_object

    from expkit.config.targets import parameters

    named, takes_any = parameters(get_object(str(recorded["_target_"])))
    if not chosen and (takes_any or set(explicit) <= set(named)):
        return {**recorded, **explicit}
    takes = parameters(get_object(str(default["_target_"])))[0]
    return {**default, **{k: v for k, v in recorded.items() if k in takes and k != "_target_"}, **explicit}


def predict_loader(rebuilt: Any) -> Any:
    """The datamodule's ``predict_dataloader``, else its ``test_dataloader``; a module without its
    own ``predict_step`` gets each batch's first tensor through ``forward`` (Lightning's default
    would pass the whole batch). Raises :class:`ConfigError` when the datamodule has neither."""
    from pytorch_lightning.utilities.model_helpers import is_overridden

    from expkit.rebuild import tensors_of

    datamodule, model = rebuilt.datamodule, rebuilt.model
    for stage, method in (("predict", "predict_dataloader"), ("test", "test_dataloader")):
        if is_overridden(method, datamodule):
            datamodule.setup(stage)
            loader = getattr(datamodule, method)()
            break
    else:
        raise ConfigError(f"data: {type(datamodule).__name__} has no predict_dataloader or test_dataloader: "
                          "give it one to predict with.")
    if not is_overridden("predict_step", model):
        model.predict_step = lambda batch, batch_idx, dataloader_idx=0: model(tensors_of(batch)[0])
    return loader


def write_predictions(outputs: Any, output: Path, datamodule: Any, sizes: Mapping[str, Any]) -> tuple[Path, int]:
    """Write the concatenated predict outputs to ``output`` (CSV; ``.npy`` beside it for outputs
    of more than two dimensions); returns the file written and the number of rows."""
    import numpy as np
    import pandas as pd
    import torch

    values = torch.cat([torch.as_tensor(o).reshape(len(o), *torch.as_tensor(o).shape[1:]) for o in outputs]).float().numpy() \
        if outputs else np.zeros((0,), np.float32)
    output.parent.mkdir(parents=True, exist_ok=True)
    if values.ndim > 2:
        path = output.with_suffix(".npy")
        np.save(path, values)
        return path, len(values)
    num_classes = sizes.get("num_classes")
    if values.ndim == 2 and num_classes is not None and values.shape[1] == num_classes:
        classes = list(getattr(datamodule, "classes", None) or [])
        names = [str(c) for c in classes] if len(classes) == num_classes else [str(i) for i in range(num_classes)]
        index = values.argmax(axis=1) if len(values) else np.zeros(0, np.int64)
        table = pd.DataFrame({"prediction": [names[i] for i in index], "class_index": index})
        for i, name in enumerate(names):
            table[f"prob_{name}"] = values[:, i]
    elif values.ndim <= 1 or values.shape[1] == 1:
        table = pd.DataFrame({"prediction": values.reshape(len(values))})
    else:
        table = pd.DataFrame({f"prediction_{i}": values[:, i] for i in range(values.shape[1])})
    table.to_csv(output, index_label="row")
    return output, len(values)


def predict(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Predict with ``cfg.ckpt_path`` on the data the command line names; write the predictions."""
    from expkit.build import build_trainer
    from expkit.checkpoints import RunCheckpointIO, load_checkpoint, run_record_of
    from expkit.rebuild import rebuild
    from expkit.startup import started

    trust = bool(cfg.get("trust_checkpoint", False))
    recorded = run_record_of(load_checkpoint(cfg.ckpt_path, trust=trust)).get("config") or {}
    chosen, explicit = command_line_data()
    default = resolved(cfg.data) if cfg.get("data") else {}
    data_cfg = data_config(recorded["data"], default, chosen, explicit) if recorded.get("data") else default
    output = Path(cfg.output) if cfg.get("output") else run_dir / "predictions.csv"
    source = data_cfg.get("path")
    if source and Path(str(source)).resolve() == output.resolve():
        raise ConfigError(f"output={cfg.output}: it is the input data.path; predictions never overwrite their input: "
                          "choose another output file.")
    rebuilt = rebuild(cfg.ckpt_path, trust=trust, data_cfg=data_cfg, stage="predict")
    trainer = build_trainer(cfg.trainer, None, run_dir, plugins=[RunCheckpointIO(trust=trust)])
    started()  # garbage collection resumes (expkit.startup)
    outputs = trainer.predict(rebuilt.model, dataloaders=predict_loader(rebuilt))
    written, rows = write_predictions(outputs or [], output, rebuilt.datamodule, rebuilt.sizes)
    log.info("Predicted %d inputs of %s with %s -> %s", rows, source or data_cfg.get("_target_"), cfg.ckpt_path, written)
    return {"predict/samples": float(rows)}


def job(cfg: DictConfig) -> None:
    """Hydra's task function: the run, recorded."""
    run_job(predict, cfg)


def main(config_path: str | os.PathLike | None = None) -> None:
    """``python predict.py [overrides]``: the Hydra app on ``config_path`` (default expkit's ``conf/``)."""
    run_app("predict", job, config_path)


if __name__ == "__main__":
    main()

