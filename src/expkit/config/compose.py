"""Compose configs as the entry points do, and explain a failed composition in one line.

Hydra's own errors for an unknown key or option carry no suggestion (and an unknown option of an
``optional`` group, ``experiment=digits_cnnn``, is silently ignored). Every command line is
checked here before Hydra runs it:

    model=cnnn           -> no option 'cnnn' in group 'model'. Did you mean 'model=cnn'?
    trainer.max_epoch=5  -> unknown key 'trainer.max_epoch'. Did you mean 'trainer.max_epochs'?

Imports nothing heavy (no torch), so ``--cfg job`` stays fast.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from expkit.config.suggest import did_you_mean
from expkit.errors import ConfigError, exit_with

# Flags after which Hydra composes nothing we could check (help, completion, a rerun).
# --cfg only prints the config: Hydra composes it anyway, and a second composition here would
# double its start-up (the benchmark measures it against a bare Hydra app).
_SKIP_FLAGS = ("help", "hydra_help", "info", "cfg", "shell_completion", "experimental_rerun")


@contextmanager
def hydra_context() -> Iterator[None]:
    """Hydra initialized on expkit's ``conf/`` (or the running app's, inside ``@hydra.main``)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import expkit.resolvers  # noqa: F401  (conf/hydra uses them)
    from expkit.paths import config_dir

    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        yield


def parse_overrides(overrides: Sequence[str]) -> list:
    """Hydra's parsed overrides; a :class:`ConfigError` naming the override that does not parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for line in overrides:
        try:
            parsed.extend(parser.parse_overrides([line]))
        except OverrideParseException as exc:
            reason = str(exc).splitlines()[0]
            raise ConfigError(
                f"{line}: not a valid override ({reason}); write key=value, group=option, +new_key=value or "
                "~key (see https://hydra.cc/docs/advanced/override_grammar/basic)."
            ) from None
    return parsed


def _text(override: Any, value: Any = None) -> str:
    """``key=value`` for one value of ``override`` (its own text when not a sweep)."""
    if value is None:
        return override.input_line
    return f"{override.get_key_element()}={value}"


def _values(override: Any) -> list[str]:
    """The values a (possibly sweep) override takes, as override strings."""
    if override.is_discrete_sweep():
        return [_text(override, v) for v in override.sweep_string_iterator()]
    if override.is_sweep_override():  # interval(a, b): check the key with its lower end
        return [_text(override, override.value().start)]
    return [_text(override)]


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """The jobs of a basic sweep: one override list per combination of the sweep values.

    >>> expand_sweep(["seed=0,1", "model=mlp"])
    [['seed=0', 'model=mlp'], ['seed=1', 'model=mlp']]

    Continuous sweeps (``interval(...)``, chosen by a sweeper such as Optuna) are checked at their
    lower end.
    """
    import itertools

    by_key: dict[str, list[str]] = {}
    for override in parse_overrides(overrides):
        by_key[override.get_key_element()] = _values(override)  # a later override of a key wins
    return [list(job) for job in itertools.product(*by_key.values())]


def probes(overrides: Sequence[str]) -> list[list[str]]:
    """Override lists that, composed, use every value of every sweep at least once: the first
    value of each, then one list per further value (linear in the sweep sizes, not a product)."""
    values = [_values(o) for o in parse_overrides(overrides)]
    first = [v[0] for v in values]
    result = [first]
    for i, options in enumerate(values):
        result += [[*first[:i], option, *first[i + 1 :]] for option in options[1:]]
    return result


def _group_options(group: str, config_name: str | None = None, overrides: Sequence[str] = ()) -> list[str]:
    """The options of config group ``group`` (``[]`` when it is not one); ``overrides`` matter
    when they extend the search path (``hydra.searchpath=[...]``)."""
    from hydra.core.global_hydra import GlobalHydra

    searchpath = [o for o in overrides if o.startswith("hydra.searchpath")]
    try:
        return GlobalHydra.instance().config_loader().get_group_options(group, config_name=config_name, overrides=searchpath)
    except Exception:  # not a group
        return []


def check_group_options(overrides: Sequence[str], config_name: str | None = None) -> None:
    """Every ``group=option`` names an existing option (optional groups included)."""
    for override in parse_overrides(overrides):
        if override.is_delete():
            continue
        group = override.key_or_group
        options = _group_options(group, config_name, overrides)
        if not options:
            continue
        if override.is_discrete_sweep():
            chosen = list(override.sweep_string_iterator())
        else:
            value = override.value()
            chosen = value if isinstance(value, list) else [value]
        for option in chosen:
            if option is None or str(option) in ("null", *options):
                continue
            raise ConfigError(
                f"{override.input_line}: no option '{option}' in group '{group}'."
                f"{did_you_mean(str(option), options, template=group + '={}')} Options: {', '.join(options)}."
            )


def _known_keys(cfg: DictConfig, key: str) -> tuple[str, list[str]]:
    """The longest existing prefix of dotted ``key`` in ``cfg`` and the keys found below it."""
    node: Any = cfg
    prefix: list[str] = []
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            break
        try:
            node = node[part]
        except Exception:
            break
        prefix.append(part)
    keys = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
    return ".".join(prefix), keys


def _suggest_key(key: str, base: DictConfig | None, value: str | None = None) -> str:
    if base is None:
        return ""
    prefix, keys = _known_keys(base, key)
    parts = key.split(".")
    depth = len(prefix.split(".")) if prefix else 0
    if depth >= len(parts):  # the key itself exists: the problem is inside its value, nothing to suggest
        return ""
    missing = parts[depth]
    if not prefix:
        keys += [g for g in _group_options("") if g not in keys]
    suffix = "" if value is None else "=" + value
    return did_you_mean(missing, keys, template=(prefix + "." if prefix else "") + "{}" + suffix)


def explain_composition_error(exc: Exception, probe: Sequence[str], config_name: str) -> ConfigError:
    """A one-line :class:`ConfigError` for Hydra's composition error ``exc`` on overrides ``probe``."""
    message = str(exc)
    first = message.splitlines()[0] if message else type(exc).__name__

    def base_without(key: str) -> DictConfig | None:
        rest = [o for o in probe if not re.match(rf"^[+~]*{re.escape(key)}(=|@|$)", o)]
        try:
            return compose(config_name, rest, hydra=True, check=False)
        except Exception:
            return None

    def line_of(key: str) -> str:
        return next((o for o in probe if re.match(rf"^[+~]*{re.escape(key)}(=|$)", o)), key)

    if found := re.search(r"Could not override '([^']+)'", message):
        key = found.group(1)
        value = line_of(key).split("=", 1)[1] if "=" in line_of(key) else None
        return ConfigError(
            f"{line_of(key)}: unknown key '{key}'.{_suggest_key(key, base_without(key), value)} "
            f"(To add a new key, write +{line_of(key).lstrip('+')}.)"
        )
    if found := re.search(r"Could not delete from config. '([^']+)'", message):
        key = found.group(1)
        return ConfigError(f"~{key}: there is no key '{key}' to delete.{_suggest_key(key, base_without(key))}")
    if found := re.search(r"An item is already at '([^']+)'", message):
        key = found.group(1)
        value = line_of(key).split("=", 1)[-1]
        return ConfigError(f"+{key}={value}: '{key}' exists already; write {key}={value} to change it.")
    if message.startswith("Ambiguous value for argument"):
        line = re.search(r"argument '([^']+)'", message).group(1)
        return ConfigError(
            f"{line}: several values need --multirun (-m) to run one job each; a list is written "
            f"{line.split('=', 1)[0]}=[{line.split('=', 1)[1]}]."
        )
    cause = f" ({str(exc.__cause__).splitlines()[0]})" if exc.__cause__ is not None else ""
    return ConfigError(f"the config does not compose: {first}{cause}")


def compose(config_name: str, overrides: Sequence[str] = (), *, hydra: bool = False, check: bool = True) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with ``overrides`` as ``python train.py`` would, without
    creating a run directory. With ``check``, a bad override raises a one-line :class:`ConfigError`
    with a did-you-mean suggestion instead of Hydra's error."""
    import yaml
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    with hydra_context():
        if not check:
            return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)
        check_group_options(overrides, config_name)
        try:
            return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)
        except HydraException as exc:
            raise explain_composition_error(exc, overrides, config_name) from None
        except (yaml.YAMLError, OmegaConfBaseException) as exc:  # a config file that is not valid YAML
            raise ConfigError(f"a config file does not load: {' '.join(str(exc).split())}") from None


def check_resolvable(cfg: DictConfig) -> None:
    """Every required value (``???``) is set and every interpolation resolves (the ``hydra`` node aside)."""
    from omegaconf.errors import OmegaConfBaseException

    job = cfg.copy()
    with open_dict(job):
        job.pop("hydra", None)
    try:
        missing = sorted(OmegaConf.missing_keys(job))
        if missing:
            raise ConfigError(
                "required value(s) not set: " + ", ".join(missing) + f"; pass them on the command line, e.g. {missing[0]}=..."
            )
        OmegaConf.to_container(job, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{key}: the value does not resolve ({str(exc).splitlines()[0]}).") from None


def check_command_line(argv: Sequence[str], config_name: str, *, compose_single_run: bool = True) -> bool:
    """Check a task's command line (Hydra's flags and overrides) before Hydra runs it: every override
    parses and names an existing key or option, and every value of a sweep composes.

    A single run's composition is left to Hydra when ``compose_single_run`` is false (see
    :func:`checked_composition`); returns whether the composition was checked here."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra

    args, _ = get_args_parser().parse_known_args(list(argv))
    if any(getattr(args, flag, None) for flag in _SKIP_FLAGS):
        return True
    config_name = args.config_name or config_name
    overrides = list(args.overrides)
    sweeps = [o for o in parse_overrides(overrides) if o.is_sweep_override()]
    if sweeps and not args.multirun:
        line = sweeps[0].input_line
        raise ConfigError(
            f"{line}: several values need --multirun (-m) to run one job each; a list is written "
            f"{line.split('=', 1)[0]}=[{line.split('=', 1)[1]}]."
        )
    if not args.multirun and not compose_single_run:
        return False
    if args.config_dir and not GlobalHydra.instance().is_initialized():
        # Its configs are found only inside Hydra's app: a single run is checked on Hydra's own
        # composition (checked_composition), a sweep's jobs by the ValidateSweep callback.
        return True
    jobs = probes(overrides)
    for probe in jobs:
        try:
            check_resolvable(compose(config_name, probe, hydra=True))
        except ConfigError as exc:
            if len(jobs) == 1:
                raise
            raise ConfigError(f"{exc} (in the sweep's job {' '.join(probe)})") from None
    return True


@contextmanager
def checked_composition(argv: Sequence[str], config_name: str) -> Iterator[None]:
    """Check a single run's config on Hydra's own composition, and compose it once instead of twice.

    Composing expkit's config takes about 0.15 s. Hydra composes a run's config twice: once to
    read ``hydra.mode`` (``Hydra.get_mode``, a probe in multirun mode) and once for the run. While
    this context is active:

    - The probe composes the run's config (run mode) instead. If the config leaves ``hydra.mode``
      unset or sets it to RUN, the run then gets that composition, with the ``hydra.mode=RUN``
      override Hydra adds applied to it. If this composition fails, Hydra's own probe runs; if
      the config sets another mode (a multirun), every composition after it is Hydra's own (the
      ``validate_sweep`` callback checks each job).
    - The run's composition is checked. When it fails, the command line is checked as
      :func:`check_command_line` does: a one-line error with a did-you-mean, exit code 2. When it
      succeeds, every ``group=option`` must still name an existing option (Hydra ignores a missing
      option of an optional group) and every value must resolve.

    Compositions after it (inside the task) are Hydra's own again.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import get_args_parser
    from hydra.types import RunMode

    original = ConfigLoaderImpl.load_configuration
    parsed, _ = get_args_parser().parse_known_args(list(argv))
    config_name = parsed.config_name or config_name
    probed: dict[str, Any] = {}  # "tried"; then the run's config ("cfg", "overrides") if the probe composed it

    def checked(cfg: DictConfig) -> DictConfig:
        try:
            with shared_group_listing():
                check_group_options(parsed.overrides, config_name)
            check_resolvable(cfg)
        except ConfigError as exc:
            exit_with(exc)
        return cfg

    def probe(self, **kwargs: Any) -> DictConfig:
        probed["tried"] = True
        try:
            cfg = original(self, **{**kwargs, "run_mode": RunMode.RUN, "validate_sweep_overrides": True})
        except Exception:
            return original(self, **kwargs)  # Hydra's own probe decides; the run explains errors
        if cfg.hydra.mode not in (None, RunMode.RUN):  # the config makes it a multirun: Hydra's own from here
            from expkit.startup import started

            ConfigLoaderImpl.load_configuration = original
            started()  # the sweep's process lives as long as the sweep: collect as usual
            return cfg
        probed.update(cfg=checked(cfg), overrides=list(kwargs["overrides"]))
        return cfg

    def load_configuration(self, **kwargs: Any) -> DictConfig:
        if kwargs.get("run_mode") != RunMode.RUN:  # Hydra's probe for hydra.mode (first), or a multirun
            return original(self, **kwargs) if probed else probe(self, **kwargs)
        ConfigLoaderImpl.load_configuration = original
        overrides, base = list(kwargs["overrides"]), probed.get("overrides")
        added = overrides[len(base):] if base is not None and overrides[: len(base)] == base else None
        if added in ([], ["hydra.mode=RUN"]):  # the probe composed this run's config
            cfg = probed["cfg"]
            if added:  # what Hydra's composition does with an override of the hydra node
                ConfigLoaderImpl._apply_overrides_to_config(parse_overrides(added), cfg)
                cfg.hydra.overrides.hydra.extend(added)
            return cfg
        try:
            cfg = original(self, **kwargs)
        except Exception:
            try:
                check_command_line(argv, config_name)
            except ConfigError as exc:
                exit_with(exc)
            raise  # nothing to explain: Hydra reports its own error
        return checked(cfg)

    ConfigLoaderImpl.load_configuration = load_configuration
    try:
        yield
    finally:
        ConfigLoaderImpl.load_configuration = original


_HELP_FLAGS = {"--help", "-h", "--hydra-help"}


@contextmanager
def shared_group_listing() -> Iterator[None]:
    """Make Hydra's ``--help`` list the config groups without a deep copy of the config repository
    per group.

    Hydra answers each of the ~110 group queries behind ``--help`` (every group and subgroup,
    twice) with a fresh ``CachingConfigRepository``, a deep copy of the whole repository
    (hydra#2907): about 0.4 s for expkit's ``conf/``, twice what a bare Hydra app spends. Listing
    groups only reads the repository, so while the help is printed one copy per (config name,
    overrides) serves every query. Hydra's own code is restored afterwards.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.object_type import ObjectType

    original = ConfigLoaderImpl.get_group_options
    repos: dict[tuple, Any] = {}

    def get_group_options(self, group_name, results_filter=ObjectType.CONFIG, config_name=None, overrides=None):
        key = (id(self), config_name, tuple(overrides or ()))
        if key not in repos:
            repos[key] = self._parse_overrides_and_create_caching_repo(config_name, list(overrides or ()))[1]
        return repos[key].get_group_options(group_name, results_filter)

    ConfigLoaderImpl.get_group_options = get_group_options
    try:
        yield
    finally:
        ConfigLoaderImpl.get_group_options = original


def checked_entry_point(config_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a ``@hydra.main`` function so its command line is checked first: a bad override
    exits with code 2 and one line (``HYDRA_FULL_ERROR=1``: a traceback) before anything runs.
    Launched from the command line, a single run starts with garbage collection paused
    (``expkit.startup``) until its task calls ``expkit.startup.started()``; a multirun's process
    lives as long as its sweep and collects as usual."""

    def decorate(hydra_main: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(hydra_main)
        def entry(*args: Any, **kwargs: Any) -> Any:
            if args or kwargs:  # called with a cfg, not launched from the command line
                return hydra_main(*args, **kwargs)
            return _run_checked(hydra_main, config_name)

        return entry

    return decorate


def _run_checked(hydra_main: Callable[..., Any], config_name: str) -> Any:
    argv = sys.argv[1:]
    try:
        checked = check_command_line(argv, config_name, compose_single_run=False)
    except ConfigError as exc:
        exit_with(exc)
    if _HELP_FLAGS & set(argv):
        with shared_group_listing():
            return hydra_main()
    if not checked:
        from expkit.startup import paused_collection

        with paused_collection(), checked_composition(argv, config_name):
            return hydra_main()
    return hydra_main()
