"""Bind every ``_target_`` node of a config to its target's signature, without calling it.

Finds, with the full config key: targets that do not import, arguments the target does not take,
required arguments nobody sets (a ``_partial_`` node's are passed by the code that calls it),
values of the wrong type for a simple annotation (``int``, ``float``, ``bool``, ``str``,
``Literal``, sequences, ``Optional``/unions of these), values outside the range an annotation
gives (``typing.Annotated[float, Range(ge=0, lt=1)]``, or ``annotated_types``' ``Ge``/``Gt``/
``Le``/``Lt``/``Interval``/``MinLen``/``MaxLen``) and NaN anywhere.

Classes whose signatures carry no ranges get them from :data:`RULES`, by class (Lightning's
``Trainer``, torch's optimizers and LR schedulers; their subclasses too). Then
:func:`probe_components` builds what can be built without memory or side effects, so each
library's own argument checks run before launch: a torch optimizer on a one-number parameter
(one step), its LR scheduler (a few steps), Lightning's ``Trainer`` (with no logger or callback;
``hardware=True`` also checks ``accelerator``/``devices``/``strategy``/``precision`` against this
machine) and Lightning's or expkit's callbacks. :func:`probe_model` builds the model on PyTorch's
``meta`` device (shapes only, no memory), so ``torch.nn`` layers refuse their arguments
(``dropout=1.5``, a negative width) and a layer of width 0 is found.
"""

from __future__ import annotations

import contextlib
import fnmatch
import inspect
import logging
import math
import os
import re
import types
import typing
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from expkit.config.suggest import did_you_mean
from expkit.errors import ConfigError

HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


def target_nodes(node: Any, key: str = "") -> Iterator[tuple[str, Mapping]]:
    """``(full key, node)`` for every mapping with a ``_target_``, outermost first."""
    if isinstance(node, Mapping):
        if "_target_" in node:
            yield key, node
        for k, v in node.items():
            yield from target_nodes(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from target_nodes(v, f"{key}[{i}]")


def locate(path: str, key: str) -> Any:
    """Import ``path`` (``package.module.Name``); a :class:`ConfigError` with a suggestion if it does not."""
    import importlib

    parts = path.split(".")
    module, i = None, len(parts)
    while i > 0:  # the longest importable module prefix
        try:
            module = importlib.import_module(".".join(parts[:i]))
            break
        except ModuleNotFoundError as exc:
            if exc.name is not None and not ".".join(parts[:i]).startswith(exc.name):
                raise ConfigError(f"{key}={path}: importing it fails ({exc}).") from None
            i -= 1
        except Exception as exc:  # an import-time error of the user's module
            raise ConfigError(f"{key}={path}: importing it fails ({type(exc).__name__}: {exc}).") from None
    if module is None:
        raise ConfigError(f"{key}={path}: no module '{parts[0]}' to import; check the spelling or install it.")
    obj: Any = module
    for j in range(i, len(parts)):
        if not hasattr(obj, parts[j]):
            names = [n for n in dir(obj) if not n.startswith("_")]
            where = ".".join(parts[:j])
            raise ConfigError(
                f"{key}={path}: '{where}' has no '{parts[j]}'.{did_you_mean(parts[j], names, template=where + '.{}')}"
            )
        obj = getattr(obj, parts[j])
    return obj


def parameters(target: Any) -> tuple[dict[str, inspect.Parameter], bool]:
    """The keyword parameters ``target`` takes and whether it takes any others (``**kwargs``).

    A class whose ``__init__`` passes ``**kwargs`` on to ``super().__init__`` takes its parents'
    parameters too (``FilesDataModule`` takes ``ArrayDataModule``'s ``batch_size``), and the keys
    it reads from ``kwargs`` by name on the way (``kwargs.pop("note", None)``); one that uses
    ``kwargs`` any other way, or passes it elsewhere, takes anything.
    """
    if not inspect.isclass(target):
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):
            return {}, True
        named = {n: p for n, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        return named, any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    named: dict[str, inspect.Parameter] = {}
    consumed: list[str] = []  # read from **kwargs by a subclass that passes the rest on
    for cls in target.__mro__:
        if "__init__" not in vars(cls):
            continue
        if cls is object:
            break
        try:
            sig = inspect.signature(cls.__init__)
        except (TypeError, ValueError):
            return named, True
        for name, param in list(sig.parameters.items())[1:]:  # skip self
            if param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                if named and param.default is param.empty:  # a parent's: the subclass passes it on
                    param = param.replace(default=None)
                named.setdefault(name, param)
        var_keyword = next((p.name for p in sig.parameters.values() if p.kind == p.VAR_KEYWORD), None)
        if var_keyword is None:
            break
        keys = _kwargs_read_then_forwarded(cls.__init__, var_keyword)
        if keys is None:  # **kwargs goes elsewhere (e.g. WandbLogger -> wandb.init): anything goes
            return named, True
        consumed += keys
    for name in consumed:
        named.setdefault(name, inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None))
    return named, False


def _kwargs_read_then_forwarded(function: Any, name: str) -> list[str] | None:
    """The keys ``function`` reads from its ``**name`` by literal name (``name.pop("k", ...)``,
    ``name.get("k")``, ``name["k"]``, ``"k" in name``) when the only other use of ``name`` is
    ``super().__init__(..., **name)``; ``None`` when it uses ``name`` otherwise, does not pass it
    to ``super().__init__`` or its source cannot be read."""
    import ast
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return None

    def is_kwargs(node: ast.AST) -> bool:
        return isinstance(node, ast.Name) and node.id == name

    def literal(node: ast.AST) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    keys: list[str] = []
    allowed: set[int] = set()  # the ids of the Name nodes whose use is understood
    forwarded = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and is_kwargs(func.value) and func.attr in ("pop", "get", "setdefault") \
                    and node.args and literal(node.args[0]) is not None:
                keys.append(literal(node.args[0]))
                allowed.add(id(func.value))
            to_super = isinstance(func, ast.Attribute) and func.attr == "__init__" and isinstance(func.value, ast.Call) \
                and isinstance(func.value.func, ast.Name) and func.value.func.id == "super"
            for keyword in node.keywords:
                if keyword.arg is None and is_kwargs(keyword.value) and to_super:
                    forwarded = True
                    allowed.add(id(keyword.value))
        elif isinstance(node, ast.Subscript) and is_kwargs(node.value) and literal(node.slice) is not None:
            keys.append(literal(node.slice))
            allowed.add(id(node.value))
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.In, ast.NotIn)) \
                and is_kwargs(node.comparators[0]) and literal(node.left) is not None:
            keys.append(literal(node.left))
            allowed.add(id(node.comparators[0]))
    uses = [node for node in ast.walk(tree) if is_kwargs(node)]
    if not forwarded or any(id(node) not in allowed for node in uses):
        return None
    return list(dict.fromkeys(keys))


def _hints(target: Any) -> dict[str, Any]:
    functions = [c.__init__ for c in target.__mro__ if "__init__" in vars(c)] if inspect.isclass(target) else [target]
    hints: dict[str, Any] = {}
    for function in reversed(functions):
        try:
            hints.update(typing.get_type_hints(function, include_extras=True))
        except Exception:  # unresolvable forward references: no type checks from this one
            continue
    return hints


def conforms(value: Any, hint: Any) -> bool:
    """False only when ``value`` clearly is not a ``hint`` (unknown annotations always pass)."""
    if hint is Any or isinstance(value, Mapping) and "_target_" in value:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        return conforms(value, args[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(conforms(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    sequence_types = (list, tuple, Sequence, typing.Sequence)
    if hint in sequence_types or origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        element = args[0] if args and (origin is not tuple or len(args) == 2 and args[1] is Ellipsis) else None
        return element is None or all(conforms(v, element) for v in value)
    if hint in (dict, Mapping) or origin in (dict, Mapping):
        return isinstance(value, Mapping)
    if getattr(hint, "__name__", None) == "Tensor":  # a tensor argument in a config is a number
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def _show(hint: Any) -> str:
    hint = _strip(hint)
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if all(typing.get_origin(m) is typing.Literal or m is type(None) for m in members):
        values = [repr(v) for m in members if m is not type(None) for v in typing.get_args(m)]
        return "one of " + ", ".join(values) + (", or null" if type(None) in members else "")
    text = hint.__name__ if isinstance(hint, type) else str(hint)
    return re.sub(r"\b(typing|collections\.abc|torch)\.", "", text)


# -- value ranges ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """``Annotated`` metadata: the value (each element of a sequence) lies in this range and is a
    finite number. ``annotated_types``' ``Ge``, ``Gt``, ``Le``, ``Lt`` and ``Interval`` are read
    the same way (any metadata with ``ge``/``gt``/``le``/``lt`` attributes).

    >>> def __init__(self, dropout: Annotated[float, Range(ge=0, lt=1)] = 0.1): ...
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None


# The annotations expkit's own components use (and any component may).
Probability = Annotated[float, Range(ge=0, lt=1)]  # dropout: 1 would drop every activation
PositiveInt = Annotated[int, Range(ge=1)]  # widths, counts, periods
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]

_BOUNDS = ("ge", "gt", "le", "lt")


def _strip(hint: Any) -> Any:
    """``hint`` without ``Annotated`` metadata (at the top level)."""
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint


def _bounds(metadata: Sequence[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in metadata:
        for bound in (*_BOUNDS, "min_length", "max_length"):
            if getattr(item, bound, None) is not None:
                found[bound] = getattr(item, bound)
    return found


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def admits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is a ``hint`` and within every range its ``Annotated`` metadata gives
    (nested: ``Sequence[Annotated[int, Range(ge=1)]]`` checks each element; a union admits what
    one of its members admits). Unknown annotations admit anything."""
    if isinstance(value, Mapping) and "_target_" in value:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        if not admits(value, args[0]):
            return False
        bounds = _bounds(args[1:])
        if "min_length" in bounds or "max_length" in bounds:
            size = len(value) if isinstance(value, (list, tuple, str)) else None
            if size is None or size < bounds.get("min_length", 0) or size > bounds.get("max_length", math.inf):
                return False
        if any(k in bounds for k in _BOUNDS):
            if not _number(value) or not math.isfinite(value):
                return False
            return (bounds.get("ge") is None or value >= bounds["ge"]) and (bounds.get("gt") is None or value > bounds["gt"]) \
                and (bounds.get("le") is None or value <= bounds["le"]) and (bounds.get("lt") is None or value < bounds["lt"])
        return True
    if origin is typing.Union or origin is types.UnionType:
        return any(admits(value, a) for a in args)
    if origin in (list, tuple, Sequence) or hint in (list, tuple, Sequence, typing.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(admits(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(admits(v, args[0]) for v in value)
    return conforms(value, hint)


def describe(hint: Any) -> str:
    """What ``hint`` admits, in words: ``an integer >= 1``, ``-1 or an integer >= 1, or null``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        members = [describe(a) for a in args if a is not type(None)]
        text = " or ".join(dict.fromkeys(members))
        return text + (", or null" if type(None) in args else "")
    if origin is typing.Literal:
        return " or ".join(repr(a) if isinstance(a, str) else str(a) for a in args)
    if origin is Annotated:
        base, bounds = args[0], _bounds(args[1:])
        noun = {int: "an integer", float: "a finite number"}.get(base, describe(base))
        low = next(((op, bounds[k]) for k, op in (("ge", "["), ("gt", "(")) if k in bounds), None)
        high = next(((op, bounds[k]) for k, op in (("le", "]"), ("lt", ")")) if k in bounds), None)
        if low and high:
            return f"{noun} in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
        if low:
            return f"{noun} {'>=' if low[0] == '[' else '>'} {low[1]:g}"
        if high:
            return f"{noun} {'<=' if high[0] == ']' else '<'} {high[1]:g}"
        if "min_length" in bounds:
            return f"{noun} with at least {bounds['min_length']} element(s)"
        return noun
    if origin in (list, tuple, Sequence) or hint in (list, tuple, Sequence):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)}: " + ", ".join(describe(a) for a in args)
        return "a list" + (f", each {describe(args[0])}" if args else "")
    if hint is type(None):
        return "null"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, _show(hint))


def show_value(value: Any) -> str:
    """``value`` as it is written on the command line: ``[64,-4]``, ``nan``, ``0.001``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{show_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, (list, tuple)):
        return any(_has_nan(v) for v in value)
    return False


_NonNegativeFraction = Annotated[float, Range(ge=0, le=1)]
_Batches = NonNegativeInt | _NonNegativeFraction | None

# Ranges for classes whose signatures do not carry them, by the class's import path (subclasses
# too): what Lightning and torch take without complaint at construction but fails, or learns
# nothing, once running. The probes below run these libraries' own checks.
RULES: dict[str, dict[str, Any]] = {
    "pytorch_lightning.Trainer": {
        "max_epochs": Literal[-1] | PositiveInt | None,  # 0: trains nothing
        "min_epochs": NonNegativeInt | None,
        "max_steps": Literal[-1] | PositiveInt,
        "min_steps": NonNegativeInt | None,
        "accumulate_grad_batches": PositiveInt,  # 0: a division by zero at the first step
        "limit_train_batches": PositiveInt | Annotated[float, Range(gt=0, le=1)] | None,
        "limit_val_batches": _Batches,
        "limit_test_batches": _Batches,
        "limit_predict_batches": _Batches,
        "overfit_batches": NonNegativeInt | _NonNegativeFraction,
        "val_check_interval": PositiveInt | Annotated[float, Range(gt=0, le=1)] | None,
        "check_val_every_n_epoch": PositiveInt | None,
        "log_every_n_steps": PositiveInt | None,
        "gradient_clip_val": NonNegativeFloat | None,  # negative: clipping flips gradients
        "num_sanity_val_steps": Literal[-1] | NonNegativeInt | None,
        "num_nodes": PositiveInt,
    },
    "torch.optim.Optimizer": {
        "lr": PositiveFloat,  # 0: the weights never change
        "weight_decay": NonNegativeFloat,
        "momentum": Annotated[float, Range(ge=0, lt=1)],  # 1 or more: the velocity never decays
        "dampening": _NonNegativeFraction,
        "eps": PositiveFloat,
        "betas": tuple[Probability, Probability],
        "alpha": NonNegativeFloat,
    },
    "torch.optim.lr_scheduler.CosineAnnealingLR": {"T_max": PositiveInt, "eta_min": NonNegativeFloat},
    "torch.optim.lr_scheduler.CosineAnnealingWarmRestarts": {"T_0": PositiveInt, "T_mult": PositiveInt, "eta_min": NonNegativeFloat},
    "torch.optim.lr_scheduler.StepLR": {"step_size": PositiveInt, "gamma": PositiveFloat},
    "torch.optim.lr_scheduler.MultiStepLR": {"gamma": PositiveFloat},
    "torch.optim.lr_scheduler.ExponentialLR": {"gamma": PositiveFloat},  # 0: lr 0 after a step
    "torch.optim.lr_scheduler.ReduceLROnPlateau": {
        "factor": Annotated[float, Range(gt=0, lt=1)], "patience": NonNegativeInt,
        "cooldown": NonNegativeInt, "min_lr": NonNegativeFloat,
    },
}


def _import(path: str) -> Any:
    import importlib

    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except Exception:  # the library is not installed: its rules cannot apply
        return None


def rules_for(target: Any) -> dict[str, Any]:
    """The :data:`RULES` of ``target``'s class and its bases. A rule's library is imported only
    when it is loaded already (a subclass of its class implies it is)."""
    import sys

    if not inspect.isclass(target):
        return {}
    found: dict[str, Any] = {}
    for path, rules in RULES.items():
        paths = [path, "lightning.pytorch.Trainer"] if path == "pytorch_lightning.Trainer" else [path]
        for candidate in paths:
            cls = _import(candidate) if candidate.split(".")[0] in sys.modules else None
            if cls is not None and issubclass(target, cls):
                found.update(rules)
    return found


def _example(key: str, target: Any, arg: str, hint: Any) -> str:
    """`` e.g. key=<the target's own default>`` when that default is admitted, else ``""``."""
    try:
        default = parameters(target)[0][arg].default
    except (KeyError, TypeError, ValueError):
        return ""
    if default is inspect.Parameter.empty or default is None or not admits(default, hint):
        return ""
    return f"; e.g. {key}={show_value(list(default) if isinstance(default, tuple) else default)} ({_name(target)}'s default)"


def _name(target: Any) -> str:
    return getattr(target, "__name__", str(target))


def injected_for(key: str, injected: Mapping[str, Sequence[str]]) -> set[str]:
    return {name for pattern, names in injected.items() if fnmatch.fnmatchcase(key, pattern) for name in names}


def check_targets(config: Mapping, injected: Mapping[str, Sequence[str]]) -> list[ConfigError]:
    """Every problem with the ``_target_`` nodes of the resolved ``config``, one error each."""
    problems: list[ConfigError] = []
    for key, node in target_nodes(config):
        try:
            target = locate(str(node["_target_"]), f"{key}._target_")
        except ConfigError as exc:
            problems.append(exc)
            continue
        name = getattr(target, "__name__", str(node["_target_"]))
        named, takes_any = parameters(target)
        given = [k for k in node if k not in HYDRA_KEYS]
        positional = list(node.get("_args_") or [])
        if not takes_any:
            for arg in given:
                if arg not in named:
                    problems.append(ConfigError(
                        f"{key}.{arg}: {name} ({node['_target_']}) takes no argument '{arg}'."
                        f"{did_you_mean(arg, named, template=key + '.{}')} It takes: {', '.join(named)}."
                    ))
        supplied = set(given) | injected_for(key, injected)
        positional_names = [n for n, p in named.items() if p.kind != p.KEYWORD_ONLY][: len(positional)]
        partial = node.get("_partial_") is True  # the code that calls it passes the rest
        for arg, param in named.items():
            if not partial and param.default is inspect.Parameter.empty and arg not in supplied and arg not in positional_names:
                problems.append(ConfigError(
                    f"{key}.{arg}: {name} ({node['_target_']}) needs argument '{arg}', which is not set: "
                    f"add {key}.{arg}=<value>."
                ))
        hints = _hints(target)
        rules = rules_for(target)
        for arg in given:
            value, shown = node[arg], f"{key}.{arg}={show_value(node[arg])}"
            if arg in hints and arg in named and not conforms(value, hints[arg]):
                problems.append(ConfigError(
                    f"{key}.{arg}={value!r}: {name} expects {_show(hints[arg])}, got {type(value).__name__}."
                ))
            elif _has_nan(value):  # NaN compares false with everything: no component means it
                problems.append(ConfigError(f"{shown}: not a number; set {key}.{arg} to a number."))
            else:
                for hint in (hints.get(arg) if arg in named else None, rules.get(arg)):
                    if hint is not None and not admits(value, hint):
                        problems.append(ConfigError(
                            f"{shown} must be {describe(hint)} ({name}){_example(f'{key}.{arg}', target, arg, hint)}."
                        ))
                        break
    return problems


# -- probes: components built as far as they can be without memory or side effects ---------------
log = logging.getLogger("expkit")

# Lightning's device and precision arguments: checked against this machine only with hardware=True.
HARDWARE_ARGUMENTS = ("accelerator", "devices", "strategy", "num_nodes", "precision", "plugins", "sync_batchnorm")


def _culprits(message: str, values: Mapping[str, Any]) -> list[str]:
    """``key=value`` of the config ``values`` (by full key) an error message is about: those it
    names (the last part of the key), else those whose value it shows."""
    named = [k for k in values if re.search(rf"(?<![\w.]){re.escape(k.rsplit('.', 1)[-1])}(?!\w)", message)]
    if not named:
        shown = set(re.findall(r"(?<![\w.])-?(?:\d+\.?\d*(?:e[-+]?\d+)?|nan|inf)(?![\w.])", message))
        named = [k for k, v in values.items() if shown & {show_value(x) for x in (v if isinstance(v, (list, tuple)) else [v])}
                 and not isinstance(v, bool)]
    return [f"{k}={show_value(values[k])}" for k in named]


def leaves(node: Any, key: str) -> dict[str, Any]:
    """Every value of ``node`` below ``key`` that is not a mapping, by full key (lists whole)."""
    if isinstance(node, Mapping):
        found: dict[str, Any] = {}
        for k, v in node.items():
            if str(k) not in HYDRA_KEYS:
                found.update(leaves(v, f"{key}.{k}"))
        return found
    return {key: node}


def _refusal(key: str, node: Mapping, target: Any, exc: BaseException, what: str) -> ConfigError:
    reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    culprits = _culprits(str(exc), leaves(node, key)) or [key]
    return ConfigError(f"{', '.join(culprits)}: {_name(target)} ({node['_target_']}) {what} ({reason}); "
                       f"change {' or '.join(c.split('=', 1)[0] for c in culprits)}.")


@contextlib.contextmanager
def _quiet(caught: list[warnings.WarningMessage] | None = None) -> Iterator[None]:
    """Silence what libraries print while a probe builds their objects; keep their warnings in
    ``caught``."""
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always")
            yield
        if caught is not None:
            caught.extend(recorded)
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _dummy_parameter() -> Any:
    import torch

    return torch.nn.Parameter(torch.ones(2))


def _probe_optimizer(key: str, node: Mapping, target: Any) -> tuple[Any, list[ConfigError]]:
    """Build the optimizer on a two-number parameter and take one step (torch checks its
    arguments when it builds and steps); its learning rate must be finite and above 0."""
    from hydra.utils import instantiate

    if "params" in node:
        return None, []
    parameter = _dummy_parameter()
    try:
        with _quiet():
            optimizer = instantiate({k: v for k, v in node.items() if k != "_partial_"}, params=[parameter])

            def closure() -> Any:  # some optimizers (LBFGS) evaluate the loss themselves
                optimizer.zero_grad()
                loss = (parameter**2).sum()
                loss.backward()
                return loss

            optimizer.step(closure)
    except Exception as exc:  # noqa: BLE001 - torch raises ValueError, TypeError, RuntimeError
        return None, [_refusal(key, node, target, _cause(exc), "refuses its arguments")]
    lr = optimizer.param_groups[0].get("lr")
    if _number(lr) and lr == 0 and "lr" in node:
        return optimizer, [ConfigError(f"{key}.lr={show_value(node['lr'])}: with a learning rate of 0 the weights never "
                                       f"change; set {key}.lr above 0{_example(f'{key}.lr', target, 'lr', PositiveFloat)}.")]
    return optimizer, []


def _probe_scheduler(key: str, node: Mapping, target: Any, optimizer: Any) -> list[ConfigError]:
    """Build the LR scheduler on an SGD optimizer with the configured optimizer's learning rate
    (SGD steps without a closure; its momentum serves cycling schedulers) and step it 4 times
    (epochs, as Lightning steps it by default): it must not fail, and the rate must stay finite,
    never go below 0 and not stay at 0."""
    import torch
    from hydra.utils import instantiate

    if "optimizer" in node:
        return []
    lr = optimizer.param_groups[0].get("lr") if optimizer is not None else None
    optimizer = torch.optim.SGD([_dummy_parameter()], lr=float(lr) if _number(lr) and lr > 0 else 0.1, momentum=0.9)
    rates: list[float] = []
    try:
        with _quiet():
            scheduler = instantiate({k: v for k, v in node.items() if k != "_partial_"}, optimizer=optimizer)
            plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
            for _ in range(4):
                optimizer.step()
                scheduler.step(1.0) if plateau else scheduler.step()
                rates.append(float(optimizer.param_groups[0]["lr"]))
    except Exception as exc:  # noqa: BLE001 - a scheduler may raise anything at its first step
        return [_refusal(key, node, target, _cause(exc), "fails when stepped")]
    if not all(math.isfinite(r) and r >= 0 for r in rates) or not any(rates):
        return [ConfigError(f"{key} ({_name(target)}): the learning rate over the first epochs would be "
                            f"{', '.join(f'{r:g}' for r in rates)}; change {', '.join(f'{k}={show_value(v)}' for k, v in leaves(node, key).items())} "
                            "so that it stays a finite number above 0.")]
    return []


def _cause(exc: BaseException) -> BaseException:
    """The error a component raised, without Hydra's InstantiationException around it."""
    while exc.__cause__ is not None and type(exc).__name__ == "InstantiationException":
        exc = exc.__cause__
    return exc


@contextlib.contextmanager
def _torch_flags_kept() -> Iterator[None]:
    """Lightning's Trainer sets process-wide torch flags when built (deterministic algorithms,
    cuDNN benchmark, a cuBLAS variable); a probe leaves them as they were."""
    import torch

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        if saved[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[3]


def _probe_trainer(key: str, node: Mapping, target: Any, hardware: bool) -> tuple[list[ConfigError], list[str]]:
    """Build the Trainer with no logger and no callback (Lightning checks its arguments when it is
    built; nothing is written): first on one CPU, so ``accelerator``, ``devices``, ``strategy``,
    ``precision`` ... are only type-checked; then, with ``hardware``, as configured, which checks
    them against this machine (a job launched elsewhere, e.g. on SLURM, checks them where it
    runs). Lightning's warnings about devices and precision (``16-mixed`` on a CPU runs as
    ``bf16-mixed``) come back as warnings."""
    from hydra.utils import instantiate

    kwargs = {k: v for k, v in node.items() if k not in HYDRA_KEYS and k not in ("logger", "callbacks", "default_root_dir")}
    portable = {**{k: v for k, v in kwargs.items() if k not in HARDWARE_ARGUMENTS}, "accelerator": "cpu", "devices": 1}
    caught: list[warnings.WarningMessage] = []
    trainer = None
    for attempt in ("portable", "hardware") if hardware else ("portable",):
        try:
            with _torch_flags_kept(), _quiet(caught if attempt == "hardware" else None):
                arguments = dict(kwargs if attempt == "hardware" else portable)
                for name in ("strategy", "plugins"):  # objects by _target_ (DDPStrategy(...), a precision plugin)
                    if isinstance(arguments.get(name), (Mapping, list)):
                        arguments[name] = instantiate(arguments[name])
                trainer = target(**arguments, logger=False, callbacks=[])
        except Exception as exc:  # noqa: BLE001 - Lightning raises MisconfigurationException, ValueError, TypeError
            if attempt == "portable":
                return [_refusal(key, node, target, exc, "refuses its arguments")], []
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            culprits = _culprits(str(exc), leaves(node, key)) or \
                [f"{key}.{k}={show_value(node[k])}" for k in ("accelerator", "devices") if k in node] or [key]
            return [ConfigError(f"{', '.join(culprits)}: Lightning cannot run this Trainer on this machine ({reason}); pick "
                                f"what this machine has (e.g. {key}.accelerator=cpu {key}.devices=1), or launch the job where "
                                "it is (e.g. launcher=slurm).")], []
    notes = []
    for warning in caught:
        text = " ".join(str(warning.message).split())
        if "accelerator_connector" in warning.filename and "srun" not in text:
            notes.append(f"{key}: {text}")
    cores = os.cpu_count() or 1
    if hardware and type(trainer.accelerator).__name__ == "CPUAccelerator" and trainer.num_devices > cores:
        notes.append(f"{key}.devices={show_value(node.get('devices'))}: {trainer.num_devices} CPU processes share the {cores} "
                     "cores of this machine (slower than fewer devices).")
    return [], notes


_OWN_CALLBACK_MODULES = ("pytorch_lightning.", "lightning.", "expkit.")


def probe_components(config: Mapping, hardware: bool = False) -> tuple[list[ConfigError], list[str]]:
    """Build every torch optimizer and LR scheduler, Lightning ``Trainer`` and Lightning's or
    expkit's callbacks of the resolved ``config`` as far as that costs no memory and leaves no
    trace (see the module docstring); run after :func:`check_targets` found nothing wrong with
    them. Returns the problems (one :class:`ConfigError` each) and warnings (legal but
    degenerate values, one line each)."""
    import sys

    problems: list[ConfigError] = []
    notes: list[str] = []
    if "torch" not in sys.modules:  # no component of this config is a torch or Lightning class
        return problems, notes
    import pytorch_lightning as pl
    import torch

    optimizers: dict[str, Any] = {}
    for key, node in target_nodes(config):
        try:
            target = locate(str(node["_target_"]), key)
        except ConfigError:
            continue
        if not inspect.isclass(target):
            continue
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        if issubclass(target, torch.optim.Optimizer):
            optimizers[parent], found = _probe_optimizer(key, node, target)
            problems += found
        elif issubclass(target, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)):
            problems += _probe_scheduler(key, node, target, optimizers.get(parent))
        elif issubclass(target, pl.Trainer):
            found, warned = _probe_trainer(key, node, target, hardware)
            problems += found
            notes += warned
        elif issubclass(target, pl.Callback) and target.__module__.startswith(_OWN_CALLBACK_MODULES):
            try:  # Lightning's and expkit's callbacks only check their arguments when built
                with _quiet():
                    from hydra.utils import instantiate

                    instantiate(dict(node))
            except Exception as exc:  # noqa: BLE001
                problems.append(_refusal(key, node, target, _cause(exc), "refuses its arguments"))
    return problems, notes


def _torch_nn_frame(exc: BaseException) -> Any:
    """The innermost traceback frame of ``exc`` inside ``torch/nn/`` (a layer refusing its
    arguments), or ``None``."""
    import traceback

    frames = [f for f, _ in traceback.walk_tb(exc.__traceback__)]
    inside = [f for f in frames if f"{os.sep}torch{os.sep}nn{os.sep}" in f.f_code.co_filename]
    return inside[-1] if inside else None


def _raised_in_torch(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside torch (outside ``torch.nn``): an operation the ``meta``
    device does not support, or a device this machine lacks (``.cuda()``)."""
    import traceback

    frames = [f for f, _ in traceback.walk_tb(exc.__traceback__)]
    return bool(frames) and f"{os.sep}torch{os.sep}" in frames[-1].f_code.co_filename


def _layer_culprits(frame: Any, values: Mapping[str, Any], exc: BaseException) -> list[str]:
    """``key=value`` of the config ``values`` passed to the refusing layer (the arguments of the
    ``torch.nn`` function ``frame`` runs), e.g. ``model.d=five`` that became ``Linear``'s
    ``in_features``. For a ``TypeError`` the values that are not numbers go first."""
    code = frame.f_code
    names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    arguments = [frame.f_locals[n] for n in names if n != "self" and n in frame.f_locals]

    def same(value: Any, argument: Any) -> bool:
        if isinstance(value, (list, tuple)) or isinstance(argument, (list, tuple)):
            return isinstance(value, (list, tuple)) and isinstance(argument, (list, tuple)) and list(value) == list(argument)
        try:
            return type(value) is type(argument) and bool(value == argument)
        except Exception:  # a tensor or another value without a plain comparison
            return False

    matched = [k for k, v in values.items() if any(same(v, a) for a in arguments)]
    if isinstance(exc, TypeError):
        matched = [k for k in matched if not _number(values[k])] or matched
    shown = {c.split("=", 1)[0] for c in _culprits(str(exc), values)}
    return [f"{k}={show_value(values[k])}" for k in ([k for k in matched if k in shown] or matched)]


def meta_model(model_cfg: Mapping, sizes: Mapping[str, Any]) -> Any | None:
    """The model of ``model_cfg`` built on PyTorch's ``meta`` device (shapes only, no memory),
    sized from the data as :func:`expkit.build.build_model` sizes it; ``None`` when it does not
    build there (:func:`probe_model` says why, where that is the config's fault)."""
    import torch
    from hydra.utils import instantiate

    from expkit.build import sized_arguments

    try:
        with torch.device("meta"), _quiet(), _torch_flags_kept():
            return instantiate(model_cfg, **sized_arguments(model_cfg, sizes))
    except Exception:  # noqa: BLE001 - left to probe_model and the real build
        return None


def probe_model(model_cfg: Mapping, sizes: Mapping[str, Any], key: str = "model") -> list[ConfigError]:
    """Build the model on PyTorch's ``meta`` device (shapes only: no memory, no computation),
    sized from the data as :func:`expkit.build.build_model` sizes it, and refuse what ``torch.nn``
    refuses (``nn.Dropout(p=1.5)``, a negative width, heads that do not divide the width), what
    the model's own constructor refuses (a ``ValueError``, ``TypeError``, ``LookupError`` or
    ``AssertionError`` it raises, refused as the real build refuses it) and layers that pass
    nothing on: a weight with a dimension of 0 (a width of 0) or a dropout that drops everything.
    Failures of other kinds, or raised inside torch (a module that reads files, needs a real
    device or an operation the ``meta`` device lacks), are left to the real build."""
    import torch
    from hydra.utils import instantiate

    from expkit.build import sized_arguments
    from expkit.errors import ExpkitError

    values = leaves(model_cfg, key)
    try:
        with torch.device("meta"), _quiet(), _torch_flags_kept():
            model = instantiate(model_cfg, **sized_arguments(model_cfg, sizes))
    except Exception as exc:  # noqa: BLE001
        cause = _cause(exc)
        if isinstance(cause, ExpkitError):
            return [cause] if isinstance(cause, ConfigError) else []
        frame = _torch_nn_frame(cause)
        if "meta" in str(cause) or frame is None and (
                _raised_in_torch(cause) or not isinstance(cause, (ValueError, TypeError, LookupError, AssertionError))):
            log.debug("%s: not checked on the meta device (%s: %s)", key, type(cause).__name__, cause)
            return []
        if frame is None:  # the model's own constructor refuses its arguments: as build_model says it
            from expkit.build import not_built

            return [not_built(key, model_cfg["_target_"], cause)]
        layer = type(frame.f_locals.get("self")).__name__ if "self" in frame.f_locals else frame.f_code.co_name
        named = [k for k in values if re.search(rf"(?<![\w.]){re.escape(k.rsplit('.', 1)[-1])}(?!\w)", str(cause))]
        culprits = ([f"{k}={show_value(values[k])}" for k in named] or _layer_culprits(frame, values, cause)
                    or _culprits(str(cause), values) or [key])
        return [ConfigError(f"{', '.join(culprits)}: torch.nn.{layer} refuses it when {_name(model_cfg.get('_target_'))} "
                            f"is built ({type(cause).__name__}: {' '.join(str(cause).split())[:200]}); change "
                            f"{' or '.join(c.split('=', 1)[0] for c in culprits)}.")]
    empty = [(name, tuple(p.shape)) for name, p in model.named_parameters()
             if not isinstance(p, torch.nn.parameter.UninitializedParameter) and p.numel() == 0]
    if empty:
        zeros = [f"{k}={show_value(v)}" for k, v in values.items()
                 if (v == 0 and not isinstance(v, bool)) or (isinstance(v, (list, tuple)) and 0 in v)]
        return [ConfigError(f"{', '.join(zeros) or key}: a layer of width 0 ({empty[0][0]} has shape {empty[0][1]}) passes "
                            "nothing on, so the model cannot learn; use widths >= 1.")]
    for name, module in model.named_modules():
        rate = getattr(module, "p", None) if isinstance(module, torch.nn.modules.dropout._DropoutNd) else None
        if rate is not None and rate >= 1:
            culprits = [f"{k}={show_value(v)}" for k, v in values.items() if _number(v) and v == rate] or [key]
            return [ConfigError(f"{', '.join(culprits)}: {name} ({type(module).__name__}) would drop every activation "
                                f"in training, so nothing is learnt; use a dropout rate in [0, 1).")]
    return []
