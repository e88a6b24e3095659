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

from expkit.config.suggest import closest
from expkit.errors import ConfigError, DataError

_MISSING = object()


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
    Field("seed", "an integer (0 included) or null", lambda v: v is None or _int(v)),
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
    Field("data.pin_memory", "true, false or null (null: pinned when training on a GPU)", lambda v: v is None or isinstance(v, bool)),
    Field("model", "a config with a _target_ (pick one with model=<option>)", _target_node),
    Field("trainer", "a config with a _target_ (pick one with trainer=<option>)", _target_node),
    Field("trainer.max_epochs", "an integer >= 1 (or -1: no limit)", lambda v: _int(v) and (v >= 1 or v == -1)),
    Field("trainer.min_epochs", "an integer >= 0, or null", lambda v: v is None or _int(v) and v >= 0),
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
    val, test = lookup(config, "data.val_fraction"), lookup(config, "data.test_fraction")
    if _fraction(val) and _fraction(test) and val + test >= 1:
        problems.append(ConfigError(
            f"data.val_fraction + data.test_fraction = {val + test:g} leaves no training data: lower one of them."
        ))
    # A top-level key one typo away from a known one is a misspelling, not a new setting.
    for key in config:
        match = closest(str(key), TOP_LEVEL - {key}) if key not in TOP_LEVEL else None
        if match:
            problems.append(ConfigError(f"{key}: unknown top-level key. Did you mean '{match}'?"))
    ckpt = lookup(config, "ckpt_path")
    if isinstance(ckpt, str) and not Path(ckpt).is_file():
        problems.append(DataError(f"ckpt_path={ckpt}: no such file; pass the path of a .ckpt file, or ckpt_path=null."))
    return problems
