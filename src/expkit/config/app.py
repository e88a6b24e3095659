"""expkit's entry points are plain Hydra apps; this adds one-line explanations to Hydra's errors.

Hydra parses the command line (every flag: ``--config-dir/-cd``, ``--config-name/-cn``,
``--config-path/-cp``, ``--cfg``, ``--info``, ``-m``, ...) and composes the config, exactly as a
bare Hydra 1.3 app with the same ``conf/`` does: nothing valid is refused. When Hydra's
composition fails, the failure is explained in one line with a did-you-mean
(:func:`expkit.config.compose.explain_composition_error`, which composes variants with the app's
own config loader, so the configs of ``--config-dir`` and ``hydra.searchpath`` are seen), exit
code 2. ``HYDRA_FULL_ERROR=1`` shows Hydra's own traceback instead.

Inside the app, :func:`check_choices` refuses what Hydra silently accepts: an option of an
``optional`` group that does not exist (``experiment=digits_cnnn``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from expkit.errors import ConfigError, ExpkitError, exit_with, full_error

_task_started = False  # set when Hydra calls the task function: later errors are the task's
_primary_path: str | None = None  # the app's primary config directory (run_app's config_path)


def run_app(config_name: str, task_function: Callable[[Any], Any], config_path: str | os.PathLike | None = None) -> Any:
    """Run ``task_function`` as a Hydra app on ``config_path`` (default: expkit's ``conf/``; a
    research repo passes its own ``conf/``, which expkit's configs extend through
    ``hydra_plugins.expkit_searchpath``) with primary config ``config_name``.

    Garbage collection is paused during start-up (``expkit.startup``) for a single run.
    """
    import hydra

    import expkit.resolvers  # noqa: F401  (conf/hydra uses them)
    from expkit.paths import config_dir
    from expkit.startup import paused_collection

    global _task_started, _primary_path
    path = str(Path(config_path).resolve()) if config_path else str(config_dir())
    _primary_path = path

    def task(cfg: Any) -> Any:
        global _task_started
        _task_started = True
        return task_function(cfg)

    task.__module__, task.__qualname__ = task_function.__module__, task_function.__qualname__  # Hydra's job name
    app = hydra.main(version_base="1.3", config_path=path, config_name=config_name)(task)
    check_flags()  # argparse's errors in one line; a relative --config-path next to the script
    saved = {key: os.environ.get(key) for key in ("EXPKIT_FULL_ERROR", "HYDRA_FULL_ERROR")}
    os.environ["EXPKIT_FULL_ERROR"] = "1" if full_error() else "0"  # the user's choice, for child processes too
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors here, and they are explained below
    _task_started = False
    multirun = bool({"-m", "--multirun"} & set(sys.argv[1:]))
    try:
        if multirun:  # the sweep's process lives as long as the sweep: collect as usual
            from expkit.launching.sweep import run_multirun

            return run_multirun(app)  # exits by the sweep's exit-status rule (launching.sweep.exit_status)
        with paused_collection():
            return app()
    except Exception as exc:
        if multirun and isinstance(exc, ExpkitError):  # the sweep's own error (e.g. its study storage)
            exit_with(exc)
        if _task_started:
            raise
        explained = explain(exc, config_name)
        if explained is None:  # before the task: the command line or its config, in Hydra's words
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            explained = ConfigError(f"the command line does not run: {first}")
        if full_error():  # Hydra's traceback, then the explanation
            raise explained from exc
        exit_with(explained)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_flags() -> None:
    """Parse this process's command line with Hydra's own argument parser first, so that a flag
    error is one line (exit 2) instead of argparse's usage block; and make a relative
    ``--config-path``/``-cp`` relative to the script that was run, as in a bare Hydra app (Hydra
    resolves it next to the module of the task function, which here is expkit's)."""
    import argparse

    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        args, unknown = parser.parse_known_args(sys.argv[1:])
    except argparse.ArgumentError as exc:
        exit_with(ConfigError(f"{exc}; see --help for the flags."))
    if unknown and any(u.startswith("-") for u in unknown):
        exit_with(ConfigError(f"unrecognized argument(s): {' '.join(unknown)}; see --help for the flags."))
    if args.config_path and "://" not in args.config_path and not os.path.isabs(args.config_path):
        absolute = str((Path(sys.argv[0]).resolve().parent / args.config_path).resolve())
        for flag in ("--config-path", "-cp"):
            for i, arg in enumerate(sys.argv[1:], start=1):
                if arg == flag and i + 1 < len(sys.argv) and sys.argv[i + 1] == args.config_path:
                    sys.argv[i + 1] = absolute
                elif arg == f"{flag}={args.config_path}":
                    sys.argv[i] = f"{flag}={absolute}"


def explain(exc: Exception, config_name: str) -> ConfigError | None:
    """A one-line :class:`ConfigError` for Hydra's failure ``exc`` to parse or compose this process's
    command line, or ``None`` when it is not such a failure."""
    import yaml
    from hydra._internal.utils import get_args_parser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(exc, (HydraException, OmegaConfBaseException, yaml.YAMLError)):
        return None
    args, _ = get_args_parser().parse_known_args(sys.argv[1:])
    config_name = args.config_name or config_name
    with app_search_path(args.config_path or _primary_path, args.config_dir):
        return _explain(exc, args.overrides, config_name)


@contextlib.contextmanager
def app_search_path(primary: str | None, config_dir: str | None) -> Iterator[None]:
    """Hydra initialized with the search path the failed app had: its primary config directory and
    ``--config-dir`` (as Hydra's own entry point builds it), so an explanation sees the user's
    groups and options. ``hydra.searchpath=[...]`` overrides are applied per composition."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    if primary is None or GlobalHydra.instance().is_initialized():
        yield
        return
    search_path = create_config_search_path(primary if "://" in primary else f"file://{primary}")
    if config_dir:
        search_path.prepend(provider="command-line", path=f"file://{Path(config_dir).resolve()}",
                            anchor=SearchPathQuery(provider="schema"))
    Hydra.create_main_hydra2(task_name="explain", config_search_path=search_path)
    try:
        yield
    finally:
        GlobalHydra.instance().clear()


def _explain(exc: Exception, overrides: list[str], config_name: str) -> ConfigError:
    import yaml
    from hydra.errors import OverrideParseException

    from expkit.config.compose import (
        check_group_options,
        explain_composition_error,
        group_options,
        parse_overrides,
    )
    from expkit.config.suggest import did_you_mean

    try:
        parse_overrides(overrides)
        check_group_options(overrides, config_name)  # model=cnnn: the options, a did-you-mean
    except ConfigError as found:
        return found
    except Exception:  # noqa: BLE001 - the composition below explains it
        pass
    if isinstance(exc, OverrideParseException):
        return ConfigError(f"the command line does not parse: {(str(exc).splitlines() or [''])[0]}")
    if "Cannot find primary config" in str(exc):
        configs = [c for c in group_options("") if not c.startswith("_")]
        return ConfigError(f"--config-name {config_name}: no such primary config.{did_you_mean(config_name, configs)} "
                           f"Primary configs: {', '.join(configs)}.")
    if isinstance(exc, yaml.YAMLError) or "while parsing" in str(exc) or "while scanning" in str(exc):
        return ConfigError(f"a config file does not load: {' '.join(str(exc).split())[:400]}")
    try:
        return explain_composition_error(exc, overrides, config_name)
    except Exception:  # noqa: BLE001 - explaining must never hide Hydra's own message
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        return ConfigError(f"the config does not compose: {first}")


def check_choices(overrides: list[str], config: Any = None) -> None:
    """Refuse a ``group=option`` whose option does not exist, which Hydra silently ignores for an
    ``optional`` group (``experiment=digits_cnnn``). Runs inside the app, on its config loader, so
    options from ``--config-dir`` and ``hydra.searchpath`` count."""
    from hydra.core.hydra_config import HydraConfig

    from expkit.config.compose import check_group_options, written_overrides

    # hydra.searchpath=[...] is one of Hydra's own overrides (hydra.overrides.hydra), not the task's,
    # and it extends the groups only for the composition that reads it: pass it along.
    hydra_overrides = []
    if config is not None:  # a multirun's master config (HydraConfig is set per job)
        hydra_overrides = written_overrides(config.hydra, "hydra")
    elif HydraConfig.initialized():
        hydra_overrides = written_overrides(HydraConfig.get(), "hydra")
    searchpath = [o for o in hydra_overrides if o.startswith("hydra.searchpath")]
    check_group_options([*searchpath, *overrides])
