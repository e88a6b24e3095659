"""Bind every ``_target_`` node of a config to its target's signature, without calling it.

Finds, with the full config key: targets that do not import, arguments the target does not take,
required arguments nobody sets (a ``_partial_`` node's are passed by the code that calls it), and
values of the wrong type for a simple annotation (``int``, ``float``, ``bool``, ``str``,
``Literal``, sequences, ``Optional``/unions of these).
"""

from __future__ import annotations

import fnmatch
import inspect
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from expkit.config.suggest import did_you_mean
from expkit.errors import ConfigError

HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}
_FORWARDS_KWARGS = re.compile(r"super\(\)\.__init__\([^)]*\*\*\w+")


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
    parameters too (``FilesDataModule`` takes ``ArrayDataModule``'s ``batch_size``).
    """
    if not inspect.isclass(target):
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):
            return {}, True
        named = {n: p for n, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        return named, any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    named: dict[str, inspect.Parameter] = {}
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
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            return named, False
        try:
            forwards = bool(_FORWARDS_KWARGS.search(inspect.getsource(cls.__init__)))
        except (OSError, TypeError):
            forwards = False
        if not forwards:  # **kwargs goes elsewhere (e.g. WandbLogger -> wandb.init): anything goes
            return named, True
    return named, False


def _hints(target: Any) -> dict[str, Any]:
    functions = [c.__init__ for c in target.__mro__ if "__init__" in vars(c)] if inspect.isclass(target) else [target]
    hints: dict[str, Any] = {}
    for function in reversed(functions):
        try:
            hints.update(typing.get_type_hints(function))
        except Exception:  # unresolvable forward references: no type checks from this one
            continue
    return hints


def conforms(value: Any, hint: Any) -> bool:
    """False only when ``value`` clearly is not a ``hint`` (unknown annotations always pass)."""
    if hint is Any or isinstance(value, Mapping) and "_target_" in value:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
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
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if all(typing.get_origin(m) is typing.Literal or m is type(None) for m in members):
        values = [repr(v) for m in members if m is not type(None) for v in typing.get_args(m)]
        return "one of " + ", ".join(values) + (", or null" if type(None) in members else "")
    text = hint.__name__ if isinstance(hint, type) else str(hint)
    return re.sub(r"\b(typing|collections\.abc|torch)\.", "", text)


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
        for arg in given:
            if arg in hints and arg in named and not conforms(node[arg], hints[arg]):
                problems.append(ConfigError(
                    f"{key}.{arg}={node[arg]!r}: {name} expects {_show(hints[arg])}, got {type(node[arg]).__name__}."
                ))
    return problems
