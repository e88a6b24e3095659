"""The one way a trained model is rebuilt: its checkpoint and the config the run recorded in it.

``eval.py``, ``predict.py``, the DVC ``evaluate`` stage, the registry and ``expkit export`` all
call :func:`rebuild`, then let Lightning run the module (``trainer.test`` / ``trainer.predict``)
or run it directly. Any ``LightningModule`` works: the module is built from the recorded
``model`` config with the recorded data sizes, and its weights are loaded from the checkpoint's
``state_dict``; the datamodule from the recorded ``data`` config (or another one, to evaluate on
other data), with its state from the checkpoint (e.g. standardization statistics).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expkit.errors import ConfigError, DataError, IncompatibleModelData


@dataclass
class Rebuilt:
    """A checkpoint's module (eval mode, on the CPU), its datamodule and the run's config."""

    path: Path
    model: Any
    datamodule: Any
    config: dict[str, Any]
    sizes: dict[str, Any] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        """The run directory the checkpoint belongs to (``<run>/checkpoints/x.ckpt`` -> ``<run>``)."""
        path = self.path.resolve()
        return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def rebuild(path: str | Path, *, trust: bool = False, data_cfg: Mapping | None = None,
            model_cfg: Mapping | None = None, key: str = "ckpt_path", stage: str = "test") -> Rebuilt:
    """Rebuild the module of the checkpoint ``path`` and its datamodule, for ``stage`` (``test``;
    ``predict``: the data may have no labels).

    ``data_cfg`` / ``model_cfg`` replace the recorded configs (needed for a checkpoint written
    outside expkit, which records none). Raises :class:`DataError` (exit 3) for a missing,
    unreadable or unsafe file, :class:`ConfigError` when no config is known, and
    :class:`IncompatibleModelData` (exit 2) when the data's sizes differ from the training data's
    or the weights do not fit the module.
    """
    from expkit.build import build_datamodule, build_model, data_sizes, describe_data
    from expkit.checkpoints import load_checkpoint, run_record_of

    checkpoint = load_checkpoint(str(path), trust=trust, key=key)
    record = run_record_of(checkpoint)
    config = dict(record.get("config") or {})
    data_cfg = data_cfg or config.get("data")
    model_cfg = model_cfg or config.get("model")
    if not data_cfg or not model_cfg:
        raise ConfigError(f"{key}={path} records no run config (it was not written by an expkit run): "
                          "name the model and data it was trained with, e.g. model=<option> data=<option>.")
    trained_class = (config.get("data") or {}).get("_target_")
    config.update(data=dict(data_cfg), model=dict(model_cfg))
    datamodule = build_datamodule(data_cfg)
    # The datamodule's state (e.g. standardization statistics) is stored under the training
    # datamodule's class name; it applies to the data here too (each model its own preprocessing).
    state = checkpoint.get(_class_name(trained_class) or type(datamodule).__qualname__)
    if state and callable(getattr(datamodule, "load_state_dict", None)):
        datamodule.load_state_dict(state)
    try:
        sizes = data_sizes(datamodule)
    except DataError:
        if stage != "predict":
            raise
        sizes = {}  # inputs without labels: their shape is checked when they are read
    trained_on = {k: _plain(v) for k, v in (record.get("sizes") or sizes).items()}
    differs = {k: v for k, v in trained_on.items() if k in sizes and _plain(sizes[k]) != v}
    if differs:
        raise IncompatibleModelData(
            f"{key}={path} was trained on data with " + ", ".join(f"{k}={v}" for k, v in trained_on.items())
            + f" and cannot be used with {describe_data(datamodule, sizes)}: pick matching data or another checkpoint."
        )
    model = build_model(model_cfg, trained_on, describe_data(datamodule, sizes))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        why = weight_mismatch(checkpoint["state_dict"], model) or " ".join(str(exc).split())[:300]
        raise IncompatibleModelData(f"{key}={path}: its weights do not fit the module {model_cfg['_target_']} built here "
                                    f"({why}): use the model config and data sizes it was trained with (without model=, "
                                    "the config it recorded), or another checkpoint.") from None
    model.eval()
    trained_data = (record.get("config") or {}).get("data")
    if trained_data and dict(data_cfg) != dict(trained_data):  # other data than its own: does the module run on it?
        check_runs_on(model, datamodule, stage, trained_data, state, f"{key}={path}", trained_on)
    return Rebuilt(Path(path), model, datamodule, config, dict(trained_on))


def check_runs_on(model: Any, datamodule: Any, stage: str, trained_data: Mapping, state: Any, label: str,
                  trained_on: Mapping[str, Any]) -> None:
    """Refuse data the module cannot run on before any work, whether or not the data declares
    sizes: one sample of ``datamodule``'s ``stage`` split (a batch's first tensor) goes through
    ``forward``; when that fails and a sample of the data it was trained on (``trained_data``,
    datamodule ``state``) goes through, the data does not fit: :class:`IncompatibleModelData`
    naming the checkpoint (``label``), both shapes and the fix. When the training data cannot be
    read or ``forward`` takes something else, nothing is concluded (the run itself tells)."""
    from expkit.build import build_datamodule, describe_data

    split = stage if stage != "predict" or _overrides(datamodule, "predict_dataloader") else "test"
    here = first_sample(datamodule, split)
    error = None if here is None else _forward_error(model, here)
    if error is None:
        return
    try:
        trained = build_datamodule(trained_data)
        if state and callable(getattr(trained, "load_state_dict", None)):
            trained.load_state_dict(state)
        sample = first_sample(trained, "test")
    except Exception:  # noqa: BLE001 - the training data is gone or unreadable here: nothing to compare
        return
    if sample is None or _forward_error(model, sample) is not None:
        return  # forward takes something else than a batch's first tensor
    sizes = ", ".join(f"{k}={v}" for k, v in trained_on.items())
    raise IncompatibleModelData(
        f"{label} was trained on {describe_data(trained, {})} ({sizes + '; ' if sizes else ''}inputs of shape "
        f"{tuple(sample.shape[1:])}) and does not run on {describe_data(datamodule)} (inputs of shape "
        f"{tuple(here.shape[1:])}: {error}): use it on data of the sizes it was trained on, or pick a "
        "checkpoint trained on this data.")


def _overrides(datamodule: Any, method: str) -> bool:
    from pytorch_lightning.utilities.model_helpers import is_overridden

    return is_overridden(method, datamodule)


def first_sample(datamodule: Any, stage: str) -> Any:
    """The first sample (as a batch of one) of a batch's first tensor in ``datamodule``'s
    ``stage`` split, or ``None`` when the split is empty or its batches hold no tensor."""
    for batch in batches(datamodule, stage):
        tensors = tensors_of(batch)
        return tensors[0][:1] if tensors and tensors[0].ndim else None
    return None


def _forward_error(model: Any, sample: Any) -> str | None:
    """``None`` when ``model`` runs ``sample`` through ``forward``, else the error, in one line."""
    import torch

    try:
        with torch.no_grad():
            model(sample)
    except Exception as exc:  # noqa: BLE001 - any failure: the caller decides what it means
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return None


def weight_mismatch(state: Mapping[str, Any], model: Any) -> str | None:
    """The first weight whose shape differs between a checkpoint's ``state`` (its ``state_dict``)
    and ``model`` (real or on the ``meta`` device), as ``net.0.weight is (16, 8) in the checkpoint
    and (16, 5) here``; ``None`` when every weight both hold has the same shape."""
    import torch

    for name, tensor in model.state_dict().items():
        stored = state.get(name)
        if torch.nn.parameter.is_lazy(tensor) or not hasattr(stored, "shape"):
            continue
        if tuple(stored.shape) != tuple(tensor.shape):
            return f"{name} is {tuple(stored.shape)} in the checkpoint and {tuple(tensor.shape)} here"
    return None


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _class_name(target: str | None) -> str | None:
    """The ``__qualname__`` of a ``_target_`` class (Lightning keys datamodule state by it)."""
    if not target:
        return None
    try:
        from hydra.utils import get_object

        return get_object(target).__qualname__
    except Exception:  # noqa: BLE001 - a class that no longer imports: no state to restore
        return None


def evaluation_trainer(**settings: Any) -> Any:
    """A Lightning ``Trainer`` for evaluating on this machine's CPU, one thread of output: no
    logger, no checkpoints, no progress bar; deterministic (``settings`` override any of these)."""
    import pytorch_lightning as pl

    return pl.Trainer(**{"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
                         "enable_progress_bar": False, "enable_model_summary": False, "deterministic": True, **settings})


def test_metrics(rebuilt: Rebuilt, trainer: Any = None) -> dict[str, float]:
    """The scalar test metrics the module logs (``trainer.test``) on its datamodule's test split.

    Raises :class:`DataError` when the datamodule has no test split or it is empty.
    """
    from pytorch_lightning.utilities.model_helpers import is_overridden

    if not is_overridden("test_step", rebuilt.model) or not is_overridden("test_dataloader", rebuilt.datamodule):
        raise DataError(f"{rebuilt.path}: the module has no test_step or the datamodule no test_dataloader: "
                        "nothing to evaluate.")
    trainer = trainer or evaluation_trainer()
    results = trainer.test(rebuilt.model, datamodule=rebuilt.datamodule, verbose=False)
    if not results or not results[0]:
        raise DataError(f"{rebuilt.path}: the test split gave no metrics (is it empty?).")
    return {k: float(v) for k, v in results[0].items()}


def batches(datamodule: Any, stage: str = "test") -> Iterator[Any]:
    """The batches of ``datamodule``'s ``stage`` split (``train``, ``val``, ``test``, ``predict``)."""
    datamodule.setup({"train": "fit", "val": "validate"}.get(stage, stage))
    loader = getattr(datamodule, f"{stage}_dataloader")()
    yield from loader


def tensors_of(batch: Any) -> list[Any]:
    """The tensors of a batch, in order: a tensor, a tuple/list or a dict of tensors (nested)."""
    import torch

    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, Mapping):
        return [t for key in sorted(batch) for t in tensors_of(batch[key])]
    if isinstance(batch, (list, tuple)):
        return [t for item in batch for t in tensors_of(item)]
    return []


def data_fingerprint(data_cfg: Mapping, stage: str = "test") -> tuple[str, int]:
    """sha256 (16 hex digits) of every tensor of a fresh datamodule's ``stage`` batches, and the
    number of samples: two evaluations with the same fingerprint ran on the same data."""
    from expkit.build import build_datamodule

    digest, samples = hashlib.sha256(), 0
    for batch in batches(build_datamodule(data_cfg), stage):
        parts = tensors_of(batch)
        samples += len(parts[0]) if parts and parts[0].ndim else 0
        for tensor in parts:
            array = tensor.detach().cpu().contiguous().numpy()
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
    if samples == 0:
        raise DataError(f"the {stage} split of data {data_cfg.get('_target_')} is empty: nothing to evaluate.")
    return digest.hexdigest()[:16], samples
