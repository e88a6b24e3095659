"""Predict new inputs with a trained checkpoint: ``python predict.py ckpt_path=... data.path=new.csv``.

The module and its datamodule are rebuilt from the checkpoint (``expkit.rebuild``): the data is
read and preprocessed exactly as in training, from the recorded config (the same feature columns,
``.npz`` array, image mode and size; the same standardization statistics, saved in the
checkpoint), with the ``data.*`` keys given on the command line changed (``data.path``). Lightning
runs the module's ``predict_step`` over the datamodule's ``predict_dataloader``; for expkit's
datamodules that is every sample of ``data.path`` (labels not needed), for others whatever their
``predict_dataloader`` yields. A checkpoint written outside expkit records no config: name the
options it was trained with (``model=<option> data=<option>``).

Written to ``output`` (default ``<run dir>/predictions.csv``), one row per input: for a classifier
(outputs ``(n, classes)``) the predicted class (its label as in the training data when known), its
index and every class probability; otherwise the outputs, one column each. A ``predict_step``
returning a dict gets a column per key (``mean``, ``std``; ``mean_0``, ``mean_1`` for several values
per row), a tuple ``output_0``, ``output_1`` ... Outputs with more dimensions (per-token outputs,
images) go to a ``.npy`` file of the same name (``<output>_<key>.npy`` for a named one). Anything
else (a number per batch, strings, outputs of different row counts) is refused in one line.
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


def chosen_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """The ``data=`` option's config without the keys its datamodule does not take that are unset
    (predict.yaml's ``data.path: null`` placed on a datamodule of one's own that reads no file)."""
    from hydra.utils import get_object

    from expkit.config.targets import parameters

    named, takes_any = parameters(get_object(str(data["_target_"])))
    return {k: v for k, v in data.items() if k == "_target_" or takes_any or k in named or v is not None}


def predict_split(datamodule: Any) -> str:
    """The split predict reads: ``predict`` when the datamodule has a ``predict_dataloader``, else
    ``test``. Raises :class:`ConfigError` when it has neither."""
    from pytorch_lightning.utilities.model_helpers import is_overridden

    for stage in ("predict", "test"):
        if is_overridden(f"{stage}_dataloader", datamodule):
            return stage
    raise ConfigError(f"data: {type(datamodule).__name__} has no predict_dataloader or test_dataloader: "
                      "give it one to predict with.")


def predict_loader(rebuilt: Any) -> Any:
    """The datamodule's ``predict_dataloader``, else its ``test_dataloader`` (:func:`predict_split`);
    a module without its own ``predict_step`` gets each batch's first tensor through ``forward``
    (Lightning's default would pass the whole batch)."""
    from pytorch_lightning.utilities.model_helpers import is_overridden

    from expkit.rebuild import tensors_of

    datamodule, model = rebuilt.datamodule, rebuilt.model
    stage = predict_split(datamodule)
    datamodule.setup(stage)
    loader = getattr(datamodule, f"{stage}_dataloader")()
    if not is_overridden("predict_step", model):
        model.predict_step = lambda batch, batch_idx, dataloader_idx=0: model(tensors_of(batch)[0])
    return loader


PREDICT_OUTPUTS = ("a tensor with one row per input, or a dict or tuple of such tensors "
                   "(one column per output; more dimensions go to a .npy)")


def _rows(value: Any, name: str, model: str) -> Any:
    """One batch's output ``name`` as an array of one row per input; :class:`ConfigError` otherwise."""
    import numpy as np
    import torch

    try:
        array = (value.detach().cpu().float() if isinstance(value, torch.Tensor) else torch.as_tensor(value).float()).numpy()
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{model}.predict_step returns {name} of type {type(value).__name__}: "
                          f"return {PREDICT_OUTPUTS}.") from None
    if array.ndim == 0:
        raise ConfigError(f"{model}.predict_step returns {name} as one number per batch: return {PREDICT_OUTPUTS}.")
    return np.asarray(array)


def named_outputs(outputs: list[Any], model: str) -> dict[str | None, Any]:
    """The predict outputs of every batch, concatenated per output: ``{None: array}`` for a tensor,
    ``{key: array}`` for a dict, ``{"output_<i>": array}`` for a tuple or list (each array one row per
    input). Raises :class:`ConfigError` for anything else, or outputs whose row counts disagree."""
    import numpy as np

    batches: list[dict[str | None, Any]] = []
    for out in outputs:
        if isinstance(out, Mapping):
            named = {str(k): v for k, v in out.items()}
        elif isinstance(out, (tuple, list)) and all(hasattr(v, "shape") for v in out):
            named = {f"output_{i}": v for i, v in enumerate(out)}
        else:
            named = {None: out}
        if not named:
            raise ConfigError(f"{model}.predict_step returns an empty {type(out).__name__}: return {PREDICT_OUTPUTS}.")
        rows = {k: _rows(v, "its output" if k is None else f"'{k}'", model) for k, v in named.items()}
        lengths = {k: len(v) for k, v in rows.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"{model}.predict_step returns outputs of different row counts in one batch "
                              f"({', '.join(f'{k}: {n}' for k, n in lengths.items())}): return one row per input in each.")
        if batches and rows.keys() != batches[0].keys():
            raise ConfigError(f"{model}.predict_step returns outputs {sorted(map(str, rows))} for one batch and "
                              f"{sorted(map(str, batches[0]))} for another: return the same outputs for every batch.")
        batches.append(rows)
    if not batches:
        return {None: np.zeros((0,), np.float32)}
    try:
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    except ValueError:
        shapes = {str(k): sorted({b[k].shape[1:] for b in batches}) for k in batches[0]}
        raise ConfigError(f"{model}.predict_step returns outputs whose shape changes between batches ({shapes}): "
                          f"return {PREDICT_OUTPUTS}.") from None


def write_predictions(outputs: Any, output: Path, datamodule: Any, sizes: Mapping[str, Any],
                      model: str = "the module") -> tuple[Path, int]:
    """Write the concatenated predict outputs to ``output``: a CSV of one row per input and one
    column per output (``prediction`` for one number; a dict's keys; ``output_<i>`` for a tuple);
    an output of more than two dimensions goes to a ``.npy`` beside it (``<output>.npy`` for a single
    tensor, ``<output>_<name>.npy`` for a named one). Returns the main file written and the number of
    rows."""
    import numpy as np
    import pandas as pd

    values = named_outputs(list(outputs), model)
    rows = len(next(iter(values.values())))
    output.parent.mkdir(parents=True, exist_ok=True)
    if None in values:  # a single tensor: a classifier's labels and probabilities, else its numbers
        single = values[None]
        if single.ndim > 2:
            path = output.with_suffix(".npy")
            np.save(path, single)
            return path, rows
        table = _single_table(single, datamodule, sizes)
    else:
        table, saved = pd.DataFrame(index=pd.RangeIndex(rows)), []
        for name, array in values.items():
            if array.ndim > 2:
                path = output.with_name(f"{output.stem}_{name}.npy")
                np.save(path, array)
                saved.append(path)
            elif array.ndim == 1 or array.shape[1] == 1:
                table[name] = array.reshape(rows)
            else:
                for i in range(array.shape[1]):
                    table[f"{name}_{i}"] = array[:, i]
        if saved and table.shape[1] == 0:
            return saved[0], rows
    table.to_csv(output, index_label="row")
    return output, rows


def _single_table(values: Any, datamodule: Any, sizes: Mapping[str, Any]) -> Any:
    """The CSV of a single output tensor: for a classifier (``(n, classes)``) the predicted class, its
    index and each class probability; otherwise one column per output value."""
    import numpy as np
    import pandas as pd

    num_classes = sizes.get("num_classes")
    if values.ndim == 2 and num_classes is not None and values.shape[1] == num_classes:
        classes = list(getattr(datamodule, "classes", None) or [])
        names = [str(c) for c in classes] if len(classes) == num_classes else [str(i) for i in range(num_classes)]
        index = values.argmax(axis=1) if len(values) else np.zeros(0, np.int64)
        table = pd.DataFrame({"prediction": [names[i] for i in index], "class_index": index})
        for i, name in enumerate(names):
            table[f"prob_{name}"] = values[:, i]
        return table
    if values.ndim <= 1 or values.shape[1] == 1:
        return pd.DataFrame({"prediction": values.reshape(len(values))})
    return pd.DataFrame({f"prediction_{i}": values[:, i] for i in range(values.shape[1])})


def check(cfg: DictConfig, run_dir: Path) -> tuple[Any, dict[str, Any], Path]:
    """The pre-launch check: the checkpoint's module and the data to predict rebuilt
    (``expkit.rebuild``: a checkpoint that does not fit the data is refused here) and the output
    path checked. Returns what it rebuilt, the data config and the output path."""
    from expkit.checkpoints import load_checkpoint, run_record_of
    from expkit.rebuild import rebuild

    trust = bool(cfg.get("trust_checkpoint", False))
    recorded = run_record_of(load_checkpoint(cfg.ckpt_path, trust=trust)).get("config") or {}
    chosen, explicit = command_line_data()
    default = chosen_data(resolved(cfg.data)) if cfg.get("data") else {}
    data_cfg = data_config(recorded["data"], default, chosen, explicit) if recorded.get("data") else default
    output = Path(cfg.output) if cfg.get("output") else run_dir / "predictions.csv"
    source = data_cfg.get("path")
    if source and Path(str(source)).resolve() == output.resolve():
        raise ConfigError(f"output={cfg.output}: it is the input data.path; predictions never overwrite their input: "
                          "choose another output file.")
    # model=<option> names the module of a checkpoint written outside expkit (it records none).
    rebuilt = rebuild(cfg.ckpt_path, trust=trust, data_cfg=data_cfg, stage="predict",
                      model_cfg=resolved(cfg.model) if cfg.get("model") else None)
    predict_split(rebuilt.datamodule)
    return rebuilt, data_cfg, output


def predict(cfg: DictConfig, run_dir: Path, checked: tuple[Any, dict[str, Any], Path] | None = None) -> dict[str, float]:
    """Predict with ``cfg.ckpt_path`` on the data the command line names; write the predictions.
    ``checked``: what :func:`check` returned when the job ran it already (``run_job``); else it
    runs here."""
    from expkit.build import build_trainer
    from expkit.checkpoints import RunCheckpointIO
    from expkit.startup import started

    rebuilt, data_cfg, output = checked if checked is not None else check(cfg, run_dir)
    trust = bool(cfg.get("trust_checkpoint", False))
    trainer = build_trainer(cfg.trainer, None, run_dir, plugins=[RunCheckpointIO(trust=trust)])
    started()  # garbage collection resumes (expkit.startup)
    outputs = trainer.predict(rebuilt.model, dataloaders=predict_loader(rebuilt))
    written, rows = write_predictions(outputs or [], output, rebuilt.datamodule, rebuilt.sizes,
                                      model=type(rebuilt.model).__name__)
    log.info("Predicted %d inputs of %s with %s -> %s", rows, data_cfg.get("path") or data_cfg.get("_target_"),
             cfg.ckpt_path, written)
    return {"predict/samples": float(rows)}


def job(cfg: DictConfig) -> None:
    """Hydra's task function: the run, recorded."""
    run_job(predict, cfg, check)


def main(config_path: str | os.PathLike | None = None) -> None:
    """``python predict.py [overrides]``: the Hydra app on ``config_path`` (default expkit's ``conf/``)."""
    run_app("predict", job, config_path)


if __name__ == "__main__":
    main()

