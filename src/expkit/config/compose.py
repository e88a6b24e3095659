"""Compose configs with Hydra's own loader, and explain a failed composition in one line.

Hydra's own errors for an unknown key or option carry no suggestion (and an unknown option of an
``optional`` group, ``experiment=digits_cnnn``, is silently ignored). When Hydra fails, the entry
point (``expkit.config.app``) explains it here, composing variants with the same loader:

    model=cnnn           -> no option 'cnnn' in group 'model'. Did you mean 'model=cnn'?
    trainer.max_epoch=5  -> unknown key 'trainer.max_epoch'. Did you mean 'trainer.max_epochs'?

Inside a running app every function here uses the app's config loader (its search path: the
app's ``conf/``, ``--config-dir``, ``hydra.searchpath``); outside one, expkit's ``conf/``.
Imports nothing heavy (no torch), so ``--cfg job`` stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from expkit.config.suggest import did_you_mean
from expkit.errors import ConfigError


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


def _loader() -> Any:
    """The running app's config loader (``None`` outside an app)."""
    from hydra.core.global_hydra import GlobalHydra

    return GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None


def written_overrides(hydra_cfg: DictConfig, kind: str = "task") -> list[str]:
    """The command line's ``task`` (or ``hydra``) overrides as written, from a config's ``hydra``
    node (``HydraConfig.get()`` or ``cfg.hydra``), as Hydra's sweeper and launchers read them.

    Iterating ``hydra.overrides`` would resolve each override as an interpolation:
    ``hydra.sweep.subdir=${hydra.job.num}`` fails before a launcher sets the number, and
    ``seed=${oc.env:SEED,3}`` would become ``seed=3`` (an int) where the job gets the string '3'."""
    return list(OmegaConf.to_container(hydra_cfg.overrides[kind], resolve=False))


def parse_overrides(overrides: Sequence[str]) -> list:
    """Hydra's parsed overrides (``glob(...)`` expanded over the app's group options); a
    :class:`ConfigError` naming the override that does not parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create(config_loader=_loader())
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
    """The jobs of a basic sweep: one override list per combination of the sweep values, as
    Hydra's basic sweeper makes them (a later override of a key wins; ``glob``, ``sort``,
    ``shuffle``, ``range`` and ``choice`` expanded by Hydra's parser).

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


def group_options(group: str, config_name: str | None = None, overrides: Sequence[str] = ()) -> list[str]:
    """The options of config group ``group`` (``[]`` when it is not one); ``overrides`` matter
    when they extend the search path (``hydra.searchpath=[...]``)."""
    from hydra.core.global_hydra import GlobalHydra

    searchpath = [o for o in overrides if o.startswith("hydra.searchpath")]
    try:
        with hydra_context():
            return GlobalHydra.instance().config_loader().get_group_options(group, config_name=config_name, overrides=searchpath)
    except Exception:  # not a group
        return []


def _option(option: Any) -> Any:
    """A group option as Hydra's defaults list reads it: ``model=${oc.env:MODEL,cnn}`` is the
    resolved option; ``None`` (not checked here: Hydra's composition explains it) when it does not
    resolve on its own, e.g. it names a config value."""
    from omegaconf.errors import OmegaConfBaseException

    if not (isinstance(option, str) and "${" in option):
        return option
    try:
        return OmegaConf.create({"option": option}).option
    except OmegaConfBaseException:
        return None


def check_group_options(overrides: Sequence[str], config_name: str | None = None) -> None:
    """Every ``group=option`` names an existing option (optional groups included)."""
    for override in parse_overrides(overrides):
        if override.is_delete() or override.is_hydra_override():
            continue
        group = override.key_or_group
        options = group_options(group, config_name, overrides)
        if not options:
            continue
        if override.is_discrete_sweep():  # each value may itself be a list: logger=[csv],[none]
            from hydra.core.override_parser.types import Transformer

            values = list(override.sweep_iterator(transformer=Transformer.identity))
        else:
            values = [override.value()]
        chosen = [_option(option) for value in values for option in (value if isinstance(value, list) else [value])]
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
        keys += [g for g in group_options("") if g not in keys]
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


def compose(config_name: str, overrides: Sequence[str] = (), *, hydra: bool = False, check: bool = True,
            check_options: bool = True) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with ``overrides`` as ``python train.py`` would, without
    creating a run directory. With ``check``, a bad override raises a one-line :class:`ConfigError`
    with a did-you-mean suggestion instead of Hydra's error; ``check_options=False`` leaves out
    :func:`check_group_options` (the caller checked the options already, e.g. a whole sweep's)."""
    import yaml
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    with hydra_context():
        if not check:
            return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)
        if check_options:
            check_group_options(overrides, config_name)
        try:
            return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)
        except HydraException as exc:
            raise explain_composition_error(exc, overrides, config_name) from None
        except (yaml.YAMLError, OmegaConfBaseException) as exc:  # a config file that is not valid YAML
            raise ConfigError(f"a config file does not load: {' '.join(str(exc).split())}") from None


def compose_job(master: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """A multirun job's config as its launcher composes it (Hydra's ``load_sweep_config``: the
    sweep's own Hydra overrides, then the job's ``overrides``, on the running app's loader), with
    Hydra's composition errors explained in one line (:func:`explain_composition_error`).

    The sweep directory is resolved in ``master`` first, as Hydra's sweeper does before it composes
    any job: the job's config copies the master's resolved values (``${now:...}``,
    ``${expkit.uid:}``), so it names the same sweep directory."""
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    config_name = master.hydra.job.config_name
    str(master.hydra.sweep.dir)  # resolved (and cached) once for the whole sweep
    try:
        return _loader().load_sweep_config(master, list(overrides))
    except HydraException as exc:  # explained on the sweep's search path
        searchpath = [o for o in written_overrides(master.hydra, "hydra") if o.startswith("hydra.searchpath")]
        raise explain_composition_error(exc, [*searchpath, *overrides], config_name) from None
    except (yaml.YAMLError, OmegaConfBaseException) as exc:  # a config file that is not valid YAML
        raise ConfigError(f"a config file does not load: {' '.join(str(exc).split())}") from None


@contextmanager
def as_launched(cfg: DictConfig, number: int) -> Iterator[None]:
    """Multirun job ``number``'s composed config ``cfg`` completed as its launcher and Hydra's
    ``run_job`` complete it when the job starts (its ``hydra.job.num`` and ``id``, its
    ``hydra.runtime.output_dir`` from ``hydra.sweep.dir``/``subdir``), and ``HydraConfig`` set
    to it, so that ``${hydra:job.num}`` or ``${hydra:runtime.output_dir}`` in the job's config
    resolve before launch as they will in the job. ``HydraConfig`` is restored afterwards."""
    import os

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import read_write
    from omegaconf.errors import OmegaConfBaseException

    hydra_config = HydraConfig.instance()
    saved = hydra_config.cfg
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.job.num = number
        cfg.hydra.job.id = str(number)  # the basic launcher's; others name it after their process or SLURM job
    try:
        hydra_config.set_config(cfg)  # the job directory may name ${hydra:...} values
        try:
            output_dir = os.path.join(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir))
        except OmegaConfBaseException as exc:
            written = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
            raise ConfigError(f"hydra.sweep.subdir={written['subdir']}: the job's directory does not resolve "
                              f"({str(exc).splitlines()[0]}).") from None
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.runtime.output_dir = os.path.abspath(output_dir)
        hydra_config.set_config(cfg)
        yield
    finally:
        hydra_config.cfg = saved


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
