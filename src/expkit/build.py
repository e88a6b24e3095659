"""Build a run's components from its config: datamodule, model, callbacks, loggers, trainer.

Every component is ``hydra.utils.instantiate`` of a ``_target_`` node, as in any Hydra app. expkit
passes only what the run itself decides, listed in :data:`INJECTED_ARGUMENTS`: the run directory
(every logger's ``save_dir``, the checkpoint ``dirpath``, the trainer's ``default_root_dir``) and
the trainer's loggers and callbacks.

**Sizes from the data (opt-in).** A datamodule may describe its data with a ``sizes`` attribute:
a mapping from constructor-argument names to integers or tuples of them, readable before
``setup()`` (nothing loaded), e.g. ``{"input_shape": (1, 8, 8), "num_classes": 10}`` (a ``sizes``
of another form, such as a list of split sizes, is not read). The model gets each size its constructor
names and its config leaves unset (absent or ``null``); a size the config pins must agree with the
data. A component of the model config whose class has a ``accepts(**sizes) -> str | None`` method
is asked whether it can take the data (a reason to refuse, or ``None``). A datamodule without
``sizes`` and a model that names none of them are built exactly as Hydra builds them.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from expkit.errors import ConfigError, ExpkitError, IncompatibleModelData
from expkit.tracking.files import CHECKPOINT_DIR

SIZES_ATTRIBUTE = "sizes"

# Arguments expkit passes when it builds a component, by config key (``*``: every entry of that
# group); a config leaves them unset and the pre-launch check does not ask for them.
INJECTED_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "trainer": ("default_root_dir", "logger", "callbacks"),  # build_trainer
    "logger.*": ("save_dir",),  # build_loggers
    "callbacks.*": ("dirpath",),  # build_callbacks (checkpoints)
}


# -- data -----------------------------------------------------------------------------------------
def data_sizes(datamodule: Any) -> dict[str, Any]:
    """The sizes ``datamodule`` declares (its ``sizes`` mapping); ``{}`` when it declares none.

    The protocol is opt-in, so a ``sizes`` attribute that is not a mapping of names to sizes (an
    integer, or a sequence of integers) means something else to its datamodule (e.g. its split
    sizes, ``[240, 80, 80]``) and is ignored: ``{}``.
    """
    sizes = getattr(datamodule, SIZES_ATTRIBUTE, None)
    if not isinstance(sizes, Mapping) or not all(isinstance(k, str) and _is_size(v) for k, v in sizes.items()):
        return {}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items()}


def _is_size(value: Any) -> bool:
    """Whether ``value`` is a size: an integer (``num_classes``) or a sequence of them (``input_shape``)."""
    import numbers

    def integer(v: Any) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    return integer(value) or isinstance(value, (list, tuple)) and all(integer(v) for v in value)


def describe_data(datamodule: Any, sizes: Mapping[str, Any] | None = None) -> str:
    """``data 'digits' (input_shape=(1, 8, 8), num_classes=10)``: a datamodule named in messages."""
    name = getattr(datamodule, "name", None) or type(datamodule).__name__
    sizes = data_sizes(datamodule) if sizes is None else sizes
    shown = ", ".join(f"{k}={v}" for k, v in sizes.items())
    return f"data '{name}'" + (f" ({shown})" if shown else "")


def build_datamodule(data_cfg: Mapping, key: str = "data") -> Any:
    """The ``LightningDataModule`` of ``data_cfg`` (constructed only: no data is loaded).

    Raises :class:`ConfigError` (exit code 2) naming ``key`` and the class when the target is not
    a ``LightningDataModule`` or its constructor rejects the config.
    """
    import pytorch_lightning as pl

    return _instantiate(data_cfg, key, pl.LightningDataModule, "LightningDataModule")


# -- model ----------------------------------------------------------------------------------------
def _target_nodes(node: Any, key: str) -> list[tuple[str, Mapping]]:
    from expkit.config.targets import target_nodes

    return list(target_nodes(node, key))


def _signature_names(target: str) -> set[str]:
    from hydra.utils import get_object

    from expkit.config.targets import parameters

    named, _ = parameters(get_object(target))
    return set(named)


def _is_unset(node: Mapping, name: str) -> bool:
    if isinstance(node, DictConfig):
        return name not in node or OmegaConf.is_missing(node, name) or node[name] is None
    return node.get(name) is None or node.get(name) == "???"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)
    return a == b


def sized_arguments(model_cfg: Mapping, sizes: Mapping[str, Any]) -> dict[str, Any]:
    """The sizes the model's constructor names and ``model_cfg`` leaves unset: what
    :func:`build_model` passes. ``{}`` when the data declares no sizes."""
    if not sizes:
        return {}
    names = _signature_names(str(model_cfg["_target_"]))
    return {k: v for k, v in sizes.items() if k in names and _is_unset(model_cfg, k)}


def unprovided_arguments(model_cfg: Mapping, sizes: Mapping[str, Any]) -> list[str]:
    """Required constructor arguments of the model that neither its config nor the data sets."""
    from hydra.utils import get_object

    from expkit.config.targets import parameters

    try:
        named, _ = parameters(get_object(str(model_cfg["_target_"])))
    except Exception:  # the pre-launch check names targets that do not import
        return []
    positional = len(model_cfg.get("_args_") or [])
    return [name for i, (name, p) in enumerate(named.items())
            if p.default is inspect.Parameter.empty and i >= positional and _is_unset(model_cfg, name) and name not in sizes]


def check_model_fits_data(model_cfg: Mapping, sizes: Mapping[str, Any], data: str, key: str = "model") -> None:
    """Refuse a model that cannot take the data, before anything is built.

    For every ``_target_`` node of ``model_cfg`` (the model and, e.g., its ``net``): a size its
    class takes and the config pins must equal the data's, and a class with ``accepts`` is asked.
    ``data`` names the data in messages (:func:`describe_data`). Raises
    :class:`IncompatibleModelData` (exit code 2) naming both sides. Nothing is checked without sizes.
    """
    from hydra.utils import get_object

    if not sizes:
        return
    missing = unprovided_arguments(model_cfg, sizes)
    if missing:
        raise IncompatibleModelData(
            f"model '{str(model_cfg['_target_']).rsplit('.', 1)[-1]}' ({model_cfg['_target_']}) needs "
            f"{', '.join(missing)}, which {data} does not declare (it declares {', '.join(sizes)}) and the config does not "
            f"set: pick a model for this data, or set {key}.{missing[0]}."
        )
    for node_key, node in _target_nodes(model_cfg, key):
        target = str(node["_target_"])
        try:
            cls = get_object(target)
        except Exception:  # the pre-launch check names targets that do not import
            continue
        label = f"model '{getattr(cls, '__name__', target)}' ({target})"
        names = _signature_names(target)
        for name, size in sizes.items():
            if name in names and not _is_unset(node, name) and not _same(node[name], size):
                pinned = node[name]
                pinned = list(pinned) if isinstance(pinned, (list, tuple)) or OmegaConf.is_list(pinned) else pinned
                raise IncompatibleModelData(
                    f"{label} sets {node_key}.{name}={pinned} but {data}: remove {node_key}.{name} "
                    "(it is derived from the data) or pick matching data."
                )
        accepts = getattr(cls, "accepts", None)
        if callable(accepts):
            wanted = inspect.signature(accepts).parameters
            if all(p in sizes for p, v in wanted.items() if v.default is inspect.Parameter.empty):
                reason = accepts(**{p: sizes[p] for p in wanted if p in sizes})
                if reason:
                    raise IncompatibleModelData(f"{label} cannot be trained on {data}: it {reason}. Pick another model or data.")


def build_model(model_cfg: Mapping, sizes: Mapping[str, Any] | None = None, data: str = "the data",
                key: str = "model") -> Any:
    """The ``LightningModule`` of ``model_cfg``, given the sizes its constructor names and its
    config leaves unset (:func:`sized_arguments`), after :func:`check_model_fits_data`.

    Raises :class:`IncompatibleModelData` or :class:`ConfigError` (exit code 2) naming ``key`` and
    the class when the model cannot take the data, is not a ``LightningModule`` or its constructor
    rejects the config.
    """
    import pytorch_lightning as pl

    sizes = dict(sizes or {})
    check_model_fits_data(model_cfg, sizes, data, key)
    return _instantiate(model_cfg, key, pl.LightningModule, "LightningModule", **sized_arguments(model_cfg, sizes))


def not_built(key: str, target: Any, cause: BaseException | None, fallback: str = "") -> ConfigError:
    """The one-line error for a component whose constructor refused its config (``build`` and the
    pre-launch check say the same)."""
    if cause is not None:
        reason = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
    else:
        reason = fallback
    return ConfigError(f"{key}: {target} could not be built from the config ({reason}); fix {key}.* in the config "
                       "or on the command line.")


def _instantiate(cfg: Mapping, key: str, base: type, base_name: str, **kwargs: Any) -> Any:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    target = cfg.get("_target_") if isinstance(cfg, Mapping) else None
    if not target:
        raise ConfigError(f"{key} has no _target_: pick one with {key}=<option> or set {key}._target_.")
    try:
        obj = instantiate(cfg, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, ExpkitError):
            raise cause from None
        raise not_built(key, target, cause, (str(exc).splitlines() or [""])[0]) from None
    if not isinstance(obj, base):
        raise ConfigError(f"{key}._target_={target} builds a {type(obj).__module__}.{type(obj).__qualname__}, not a "
                          f"{base_name}: point {key}._target_ at a {base_name} class.")
    return obj


# -- trainer and what it holds --------------------------------------------------------------------
def build_loggers(logger_cfg: Mapping | None, run_dir: Path) -> list:
    """One Lightning logger per entry of the ``logger`` group, all writing under the run directory."""
    from hydra.utils import instantiate
    from pytorch_lightning.loggers import WandbLogger

    from expkit.tracking import wandb as wandb_tracking

    wandb_tracking.wait_for_service()  # started in the background by the task, if it logs to W&B
    loggers = [instantiate(cfg, save_dir=str(run_dir)) for cfg in (logger_cfg or {}).values() if cfg]
    for logger in loggers:  # what Lightning logs by itself (the module's hyperparameters) too
        logger.log_hyperparams = _masking(logger.log_hyperparams)
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        wandb_tracking.skip_launch_import_when_nothing_staged()
    return loggers


def _masking(log_hyperparams: Any) -> Any:
    """A logger's ``log_hyperparams`` that masks secrets first (``expkit.secrets``)."""
    import functools

    from expkit.secrets import mask

    @functools.wraps(log_hyperparams)
    def masked(params: Any, *args: Any, **kwargs: Any) -> Any:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(params):
            params = OmegaConf.to_container(params, resolve=True)
        elif not isinstance(params, Mapping):
            params = vars(params) if hasattr(params, "__dict__") else params
        return log_hyperparams(mask(dict(params)) if isinstance(params, Mapping) else params, *args, **kwargs)

    return masked


def logs_to_wandb(logger_cfg: Mapping | None) -> bool:
    """Whether the ``logger`` group has a W&B logger (``WandbLogger`` or a subclass)."""
    from hydra.utils import get_class
    from pytorch_lightning.loggers import WandbLogger

    targets = [cfg.get("_target_") for cfg in (logger_cfg or {}).values() if cfg]
    return any(target and issubclass(get_class(target), WandbLogger) for target in targets)


def build_callbacks(callbacks_cfg: Mapping | None, run_dir: Path) -> list:
    """Lightning callbacks; checkpoints go to ``<run_dir>/checkpoints`` unless a dirpath is set."""
    from hydra.utils import get_class, instantiate
    from pytorch_lightning.callbacks import ModelCheckpoint

    callbacks = []
    for cfg in (callbacks_cfg or {}).values():
        if not cfg:
            continue
        extra = {}
        if issubclass(get_class(cfg["_target_"]), ModelCheckpoint) and not cfg.get("dirpath"):
            extra["dirpath"] = str(Path(run_dir) / CHECKPOINT_DIR)
        callbacks.append(instantiate(cfg, **extra))
    return callbacks


def build_trainer(trainer_cfg: Mapping, logger_cfg: Mapping | None, run_dir: Path, callbacks: Sequence = (),
                  plugins: Sequence = ()) -> Any:
    """The Lightning ``Trainer`` of ``trainer_cfg``, logging with ``logger_cfg``'s loggers into
    ``run_dir``, calling ``callbacks``, with ``plugins`` after the config's own
    (``trainer.plugins``)."""
    from hydra.utils import instantiate

    loggers = build_loggers(logger_cfg, run_dir)
    configured = instantiate(trainer_cfg.get("plugins")) if trainer_cfg.get("plugins") else []
    configured = list(configured) if isinstance(configured, (list, tuple)) or OmegaConf.is_list(configured) else [configured]
    return instantiate(trainer_cfg, default_root_dir=str(run_dir), logger=loggers or False, callbacks=list(callbacks),
                       plugins=[*configured, *plugins] or None)
