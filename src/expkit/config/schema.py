"""The typed schema of expkit's own config keys: what each must be, in one table.

Components (``_target_`` nodes) are checked against their own signatures (``targets.py``); this
covers the keys the tasks themselves read. A key absent from the config is not checked here
(``REQUIRED`` lists those a task cannot run without).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expkit.config.suggest import closest, edit_distance
from expkit.errors import ConfigError, DataError

_MISSING = object()
# Lightning seeds NumPy, which takes 0 .. 2**32 - 1; expkit reseeds every epoch with seed + epoch + 1.
MAX_SEED = 2**32 - 1


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1


def _target_node(value: Any) -> bool:
    return isinstance(value, Mapping) and "_target_" in value


def _group_of_targets(value: Any) -> bool:
    """``logger``/``callbacks``: null, or named entries that are each null or a ``_target_`` node."""
    return value is None or isinstance(value, Mapping) and all(v is None or _target_node(v) for v in value.values())


@dataclass(frozen=True)
class Field:
    key: str
    expected: str  # finishes "must be ..."
    check: Callable[[Any], bool]


FIELDS: tuple[Field, ...] = (
    Field("task_name", "a non-empty string", lambda v: isinstance(v, str) and bool(v)),
    Field("tags", "a list of strings, e.g. tags=[baseline,cnn]", lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v)),
    Field("seed", f"an integer from 0 to {MAX_SEED} (NumPy's seed range), or null", lambda v: v is None or _int(v) and 0 <= v <= MAX_SEED),
    Field("monitor", "a mapping with metric and mode", lambda v: isinstance(v, Mapping)),
    Field("monitor.metric", "the name of a metric the module logs, e.g. val/loss", lambda v: isinstance(v, str) and bool(v)),
    Field("monitor.mode", "min or max", lambda v: v in ("min", "max")),
    Field("test", "true or false", lambda v: isinstance(v, bool)),
    Field("ckpt_path", "a path to a checkpoint file, or null", lambda v: v is None or isinstance(v, str)),
    Field("trust_checkpoint", "true or false", lambda v: isinstance(v, bool)),
    Field("data", "a config with a _target_ (pick one with data=<option>)", _target_node),
    Field("data.batch_size", "an integer >= 1", lambda v: _int(v) and v >= 1),
    Field("data.val_fraction", "a number in [0, 1)", _fraction),
    Field("data.test_fraction", "a number in [0, 1)", _fraction),
    Field("data.num_workers", "an integer >= 0", lambda v: _int(v) and v >= 0),
    Field("data.split_seed", "an integer >= 0 (NumPy seeds the split)", lambda v: _int(v) and v >= 0),
    Field("data.shuffle_seed", "an integer >= 0, or null", lambda v: v is None or _int(v) and v >= 0),
    Field("data.pin_memory", "true, false or null (null: pinned when training on a GPU)", lambda v: v is None or isinstance(v, bool)),
    Field("model", "a config with a _target_ (pick one with model=<option>)", _target_node),
    Field("trainer", "a config with a _target_ (pick one with trainer=<option>)", _target_node),
    Field("logger", "null or named logger configs with a _target_ each", _group_of_targets),
    Field("callbacks", "null or named callback configs with a _target_ each", _group_of_targets),
    Field("paths.data_dir", "a directory path", lambda v: isinstance(v, str) and bool(v)),
    Field("paths.log_dir", "a directory path", lambda v: isinstance(v, str) and bool(v)),
)

# Keys a task cannot run without, by the task's name (``task_name``, or ``debug`` for train's debug modes).
REQUIRED: dict[str, tuple[str, ...]] = {
    "train": ("seed", "monitor.metric", "monitor.mode", "test", "data", "model", "trainer"),
    "eval": ("ckpt_path", "trainer"),
}
TOP_LEVEL = {f.key.split(".")[0] for f in FIELDS}


def lookup(config: Mapping, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


# -- consistency between keys: each rule returns what is wrong (one line with the fix) or None ----
def _validates(config: Mapping) -> str | None:
    """The monitored metric, when it is a validation metric (``val/...``)."""
    metric = lookup(config, "monitor.metric")
    return metric if isinstance(metric, str) and metric.startswith("val/") else None


def _max_epochs(config: Mapping) -> int | None:
    value = lookup(config, "trainer.max_epochs")
    return value if _int(value) and value >= 1 else None


def no_training_data(config: Mapping, task: str) -> str | None:
    val, test = lookup(config, "data.val_fraction"), lookup(config, "data.test_fraction")
    if _fraction(val) and _fraction(test) and val + test >= 1:
        return f"data.val_fraction + data.test_fraction = {val + test:g} leaves no training data: lower one of them."
    return None


def no_validation_data(config: Mapping, task: str) -> str | None:
    """Training validates every epoch (the monitored metric, the best checkpoint, early stopping
    and the final validation of the best checkpoint all need it): an empty split is refused."""
    if task == "train" and lookup(config, "data.val_fraction") == 0:
        return ("data.val_fraction=0 leaves the validation split empty, and training validates every epoch (the best "
                "checkpoint, early stopping, monitor.metric); set data.val_fraction above 0, e.g. data.val_fraction=0.15.")
    return None


def no_test_data(config: Mapping, task: str) -> str | None:
    if task == "train" and lookup(config, "data.test_fraction") == 0 and lookup(config, "test") is True:
        return ("data.test_fraction=0 leaves the test split empty but test=true tests the best checkpoint on it; "
                "set data.test_fraction above 0 (e.g. 0.15), or test=false to train without a test split.")
    return None


def never_validated(config: Mapping, task: str) -> str | None:
    """A validation metric is monitored but validation never runs."""
    metric, epochs = _validates(config), _max_epochs(config)
    every = lookup(config, "trainer.check_val_every_n_epoch")
    if task != "train" or metric is None:
        return None
    if epochs and _int(every) and every > epochs:
        return (f"trainer.check_val_every_n_epoch={every} > trainer.max_epochs={epochs}: validation never runs, so "
                f"monitor.metric={metric} is never measured; lower trainer.check_val_every_n_epoch to at most {epochs}.")
    return None


def no_validation_batches(config: Mapping, task: str) -> str | None:
    limit = lookup(config, "trainer.limit_val_batches")
    if task == "train" and _number(limit) and limit == 0:
        return ("trainer.limit_val_batches=0 skips validation, and training validates (the best checkpoint, early "
                "stopping, monitor.metric, the final validation); remove it or set it above 0, e.g. 1.0 (every batch).")
    return None


def epochs_order(config: Mapping, task: str) -> str | None:
    low, high = lookup(config, "trainer.min_epochs"), _max_epochs(config)
    if task == "train" and _int(low) and high and low > high:
        return f"trainer.min_epochs={low} > trainer.max_epochs={high}: raise trainer.max_epochs or lower trainer.min_epochs."
    return None


def seeds_in_range(config: Mapping, task: str) -> str | None:
    """Every epoch is reseeded with ``seed + epoch + 1`` (``expkit.reproducibility.EpochSeeder``)."""
    seed, epochs = lookup(config, "seed"), _max_epochs(config)
    if task == "train" and _int(seed) and 0 <= seed <= MAX_SEED and epochs and seed + epochs > MAX_SEED:
        return (f"seed={seed}: epoch e is seeded with seed + e + 1, which passes {MAX_SEED} (NumPy's largest seed) within "
                f"trainer.max_epochs={epochs}; use a seed of at most {MAX_SEED - epochs}.")
    return None


CONSISTENCY = (no_training_data, no_validation_data, no_validation_batches, no_test_data, never_validated, epochs_order,
               seeds_in_range)


def check_schema(config: Mapping, task: str = "train") -> list[ConfigError]:
    """Every schema problem of the resolved ``config`` of ``task``, one error each."""
    problems: list[ConfigError] = []
    for key in REQUIRED.get(task, ()):
        if lookup(config, key) is _MISSING:
            problems.append(ConfigError(f"{key} is not set: the {task} task needs it (see conf/{task}.yaml)."))
    for field in FIELDS:
        value = lookup(config, field.key)
        if value is not _MISSING and not field.check(value):
            problems.append(ConfigError(f"{field.key}={value!r} must be {field.expected}."))
    for rule in CONSISTENCY:
        found = rule(config, task)
        if found:
            problems.append(ConfigError(found))
    # A top-level key one typo away from a known one is a misspelling, not a new setting.
    for key in config:
        match = closest(str(key), TOP_LEVEL - {key}) if key not in TOP_LEVEL else None
        # Only a misspelling: a new key that contains a known one (+extra_data=...) is deliberate.
        if match and edit_distance(str(key), match) <= max(1, len(str(key)) // 3):
            problems.append(ConfigError(f"{key}: unknown top-level key. Did you mean '{match}'?"))
    ckpt = lookup(config, "ckpt_path")
    if isinstance(ckpt, str) and not Path(ckpt).is_file():
        problems.append(DataError(f"ckpt_path={ckpt}: no such file; pass the path of a .ckpt file, or ckpt_path=null."))
    return problems
