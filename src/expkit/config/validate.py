"""Validate a composed config before anything expensive runs.

    from expkit.config import validate
    validate(cfg)          # raises ConfigError (exit 2) or DataError (exit 3) listing every problem

Checks, in order: every required value is set and every interpolation resolves; expkit's own keys
match their schema and agree with each other (``schema.py``); every ``_target_`` imports, its
arguments bind to its signature and lie in their ranges (``targets.py``: annotations, and rules by
class for Lightning's Trainer and torch's optimizers and schedulers); the optimizers, schedulers,
Trainer and Lightning's callbacks are built as far as that costs nothing (``targets.probe_components``;
with ``hardware=True`` the Trainer's devices are checked against this machine); ``data`` builds a
``LightningDataModule`` (constructed only: no data is loaded) whose files exist, and ``model``
names a ``LightningModule``; when the data declares sizes, the model fits them (``expkit.build``)
and is built on PyTorch's ``meta`` device (``targets.probe_model``: no memory); a ``ckpt_path`` is a
readable checkpoint trained on data of the same sizes. No model weights are allocated.

Legal but degenerate values are logged as warnings (``expkit`` logger) and returned by
:func:`check` with the problems.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from expkit.build import INJECTED_ARGUMENTS
from expkit.config.compose import (
    as_launched,
    check_group_options,
    check_resolvable,
    compose,
    compose_job,
    hydra_context,
)
from expkit.config.schema import REQUIRED, check_schema
from expkit.config.targets import check_targets, probe_components, probe_model, target_nodes
from expkit.errors import ConfigError, DataError, ExpkitError

if TYPE_CHECKING:
    from concurrent.futures import Executor

log = logging.getLogger("expkit")


def _combine(problems: list[ExpkitError]) -> ExpkitError:
    """One error for all ``problems``: a data error only when every problem is one."""
    kind = DataError if all(isinstance(p, DataError) for p in problems) else ConfigError
    if len(problems) == 1:
        return problems[0] if isinstance(problems[0], kind) else kind(str(problems[0]))
    lines = "\n".join(f"  - {p}" for p in problems)
    return kind(f"{len(problems)} problems in the config:\n{lines}")


def _data_key(data_cfg: Mapping, path: Path) -> str:
    """The ``data.*`` key whose value ``path`` is, or lies under."""
    for key, value in data_cfg.items():
        if isinstance(value, str) and value and (Path(value) == path or Path(value) in path.parents):
            return f"data.{key}={value}"
    return f"data ({path})"


def _check_data(config: Mapping, task: str) -> tuple[Any, dict[str, Any], list[ExpkitError]]:
    """The datamodule (constructed: nothing loaded), the sizes it declares and its problems; for
    training, an empty split too when the datamodule knows its sample count (``split_sizes``)."""
    from expkit.build import build_datamodule, data_sizes
    from expkit.tracking.data_version import data_files

    data_cfg = config.get("data")
    if not isinstance(data_cfg, Mapping):
        return None, {}, []
    problems: list[ExpkitError] = list(check_targets({"data": data_cfg}, INJECTED_ARGUMENTS))
    if problems:
        return None, {}, problems
    try:
        datamodule = build_datamodule(data_cfg)
        for path in data_files(datamodule):
            if not Path(path).exists() and not getattr(datamodule, "download", False):
                fetch = " (data.download=true fetches it)" if hasattr(datamodule, "download") else ""
                if getattr(datamodule, "processed_dir", None):  # the DVC pipeline's prepared arrays
                    from expkit.data.processed import FIX

                    fetch = f": {FIX}"
                raise DataError(f"{_data_key(data_cfg, Path(path))}: {path} does not exist{fetch}.")
        sizes = data_sizes(datamodule)
        counts = getattr(datamodule, "split_sizes", None)
        if callable(counts) and task == "train":
            counts()
        return datamodule, sizes, []
    except ExpkitError as exc:
        return None, {}, [exc]
    except Exception as exc:
        return None, {}, [ConfigError(f"data: {data_cfg['_target_']} cannot be read ({type(exc).__name__}: {exc}).")]


def _check_model(config: Mapping, sizes: Mapping[str, Any], data: str) -> list[ExpkitError]:
    """The model's target is a ``LightningModule`` and it fits the data (``expkit.build``)."""
    import inspect

    import pytorch_lightning as pl
    from hydra.utils import get_object

    from expkit.build import check_model_fits_data

    model_cfg = config.get("model")
    if not isinstance(model_cfg, Mapping) or not model_cfg.get("_target_"):
        return []
    target = get_object(str(model_cfg["_target_"]))
    if inspect.isclass(target) and not issubclass(target, pl.LightningModule):
        return [ConfigError(f"model._target_={model_cfg['_target_']} is a {target.__name__}, not a LightningModule: "
                            "point model._target_ at a LightningModule class.")]
    try:
        check_model_fits_data(model_cfg, sizes, data)
    except ExpkitError as exc:
        return [exc]
    return probe_model(model_cfg, sizes)


def _check_checkpoint(config: Mapping, sizes: Mapping[str, Any], trust: bool, task: str) -> list[ExpkitError]:
    """A ``ckpt_path`` is readable, was trained on data of the same sizes and, when the config
    names a model, its weights have the shapes of that model (built on the ``meta`` device)."""
    from expkit.checkpoints import load_checkpoint, nothing_left_to_train, run_record_of
    from expkit.config.targets import meta_model
    from expkit.errors import IncompatibleModelData
    from expkit.rebuild import weight_mismatch

    ckpt = config.get("ckpt_path")
    if not (isinstance(ckpt, str) and Path(ckpt).is_file()):
        return []
    try:
        checkpoint = load_checkpoint(ckpt, trust=trust)
    except ExpkitError as exc:
        return [exc]
    record = run_record_of(checkpoint)
    recorded = {k: _plain(v) for k, v in (record.get("sizes") or {}).items()}
    trained = dict(target_nodes((record.get("config") or {}).get("model") or {}, "model"))
    for key, node in target_nodes(config.get("model") or {}, "model"):
        if key in trained and trained[key]["_target_"] != node["_target_"]:
            return [IncompatibleModelData(f"ckpt_path={ckpt} was trained with {key}._target_={trained[key]['_target_']}, "
                                          f"not {node['_target_']}: pick the model it was trained with (or another checkpoint).")]
    if recorded and sizes and {k: recorded[k] for k in sorted(recorded) if k in sizes} != \
            {k: _plain(sizes[k]) for k in sorted(recorded) if k in sizes}:
        shown = ", ".join(f"{k}={v}" for k, v in recorded.items())
        return [IncompatibleModelData(f"ckpt_path={ckpt} was trained on data with {shown}; the data here has "
                                      + ", ".join(f"{k}={sizes[k]}" for k in recorded if k in sizes)
                                      + ": pick matching data or another checkpoint.")]
    model_cfg = config.get("model")
    if isinstance(model_cfg, Mapping) and model_cfg.get("_target_"):
        # Sized as the task sizes it: training from the data, a rebuild from what the checkpoint recorded.
        model = meta_model(model_cfg, sizes if task == "train" else (recorded or sizes))
        why = None if model is None else weight_mismatch(checkpoint["state_dict"], model)
        if why:
            return [IncompatibleModelData(f"ckpt_path={ckpt}: its weights do not fit model {model_cfg['_target_']} as "
                                          f"configured here ({why}): use the model config and data sizes it was "
                                          "trained with, or another checkpoint.")]
    # A checkpoint that fits, fitted on with the epochs it already has, would train nothing.
    trainer_cfg = config.get("trainer")
    if task == "train" and isinstance(trainer_cfg, Mapping):
        exhausted = nothing_left_to_train(checkpoint, trainer_cfg.get("max_epochs"), f"ckpt_path={ckpt}")
        if exhausted:
            return [exhausted]
    return []


def describe_sizes(sizes: Mapping[str, Any]) -> str:
    """``input_shape=(1, 8, 8), num_classes=10``."""
    return ", ".join(f"{k}={v}" for k, v in sizes.items())


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def validate(cfg: DictConfig | Mapping, task: str | None = None, hardware: bool = True) -> dict[str, Any]:
    """Check ``cfg`` (a composed job config) for ``task`` (``train``/``eval``; default: from
    ``task_name``, training otherwise); return the sizes the data declares (``{}`` without data
    or sizes). ``hardware``: the job runs on this machine, so the Trainer's accelerator and devices
    are checked against it (``False`` for jobs a launcher sends elsewhere, e.g. SLURM).

    Raises one :class:`ConfigError` (exit code 2) listing every problem, or a :class:`DataError`
    (exit code 3) when all problems are missing or unreadable files. Warnings (legal but
    degenerate values) go to the ``expkit`` logger.
    """
    problems, notes, sizes = check(cfg, task, hardware)
    for note in notes:
        log.warning(note)
    if problems:
        raise _combine(problems)
    return sizes


def check(cfg: DictConfig | Mapping, task: str | None = None, hardware: bool = True) -> tuple[list[ExpkitError], list[str], dict[str, Any]]:
    """:func:`validate`'s findings without raising: the problems, the warnings, the data's sizes."""
    from expkit.build import describe_data

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    check_resolvable(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    if task not in REQUIRED:  # e.g. the DVC stage's config name, params
        task = config.get("task_name") if config.get("task_name") in REQUIRED else "train"

    problems: list[ExpkitError] = list(check_schema(config, task))
    datamodule, sizes, found = _check_data(config, task)
    problems += found
    # The model may take the sizes the data declares: they are supplied, not missing.
    rest = {k: v for k, v in config.items() if k != "data"}
    target_problems = check_targets(rest, {**INJECTED_ARGUMENTS, "model": tuple(sizes)})
    problems += target_problems
    notes: list[str] = []
    if not target_problems:  # built only when their arguments bind
        found, notes = probe_components(rest, hardware=hardware)
        problems += found
    if datamodule is not None and not any(str(p).startswith("model") for p in problems):
        problems += _check_model(config, sizes, describe_data(datamodule, sizes))
    if not any(str(p).startswith("ckpt_path") for p in problems):
        problems += _check_checkpoint(config, sizes, trust=config.get("trust_checkpoint") is True, task=task)
    return _traced(problems, interpolations(cfg)), notes, sizes


def interpolations(cfg: DictConfig) -> dict[str, str]:
    """``{key: "${...}"}`` for every value of ``cfg`` that is an interpolation."""
    found: dict[str, str] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, str) and "${" in node:
            found[key] = node

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return found


_LEADING_VALUE = re.compile(r"^([A-Za-z_][\w.]*)=(\S+?)(?=:| must| \()")


def _traced(problems: list[ExpkitError], origins: Mapping[str, str]) -> list[ExpkitError]:
    """Problems with the interpolation each value came from (``model.scheduler.T_max=-1 (from
    ${trainer.max_epochs})``), each key once; a problem whose value only repeats another refused
    key is dropped (``data.shuffle_seed=${seed}`` with a bad ``seed``)."""
    refused = {m.group(1) for m in (_LEADING_VALUE.match(str(p)) for p in problems) if m}
    kept: list[ExpkitError] = []
    named: set[str] = set()
    for problem in problems:
        found = _LEADING_VALUE.match(str(problem))
        if found and found.group(1) in named:  # the schema and the signature may both refuse a key: once
            continue
        named |= {found.group(1)} if found else set()
        origin = origins.get(found.group(1)) if found else None
        if origin is None or not isinstance(problem, ConfigError):
            kept.append(problem)
        elif re.fullmatch(r"\$\{([\w.]+)\}", origin) and origin[2:-1] in refused:
            continue
        else:
            text = str(problem)
            kept.append(type(problem)(f"{text[:found.end()]} (from {origin}){text[found.end():]}{_decode_hint(found, origin)}"))
    return kept


def _decode_hint(found: re.Match, origin: str) -> str:
    """The fix for a string from the environment where a number or boolean is needed: ``oc.env``
    always gives a string, which OmegaConf does not convert (``oc.decode`` does)."""
    if not (found.group(2).startswith("'") and re.fullmatch(r"\$\{oc\.env:[^${}]*\}", origin)):
        return ""
    return (f" oc.env gives a string: ${{oc.decode:{origin}}} gives a number or boolean (on the command line, "
            f"quoted: {found.group(1)}='${{oc.decode:{origin}}}').")


PARALLEL_LAUNCHER = "hydra_plugins.expkit_launchers.parallel_launcher.ParallelLauncher"
# Launchers whose jobs run on this machine: their Trainer devices are checked here. Any other
# launcher's job (SLURM, ...) checks them itself, where it runs, before it builds anything.
LOCAL_LAUNCHERS = (
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    PARALLEL_LAUNCHER,
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
)


def runs_here(launcher: str | None) -> bool:
    """Whether a multirun's jobs run on this machine, by their launcher's ``_target_``."""
    return launcher is None or launcher in LOCAL_LAUNCHERS


def validate_sweep(jobs: Sequence[Sequence[str]], config_name: str = "train", *, master: DictConfig | None = None,
                   options_checked: bool = False, workers: Callable[[], Executor | None] | None = None,
                   composed: dict[tuple[str, ...], bytes] | None = None) -> list[dict[str, Any]]:
    """Compose and validate every job (a list of overrides) of a sweep before the first starts;
    the first bad job raises, its overrides named. Returns the sizes each job's data declares.

    ``master``: the sweep's own (master) config; each job is then composed as its launcher will
    compose it (``ConfigLoader.load_sweep_config``: the sweep's Hydra overrides, then the job's),
    else as ``compose(config_name, job)`` does. ``options_checked``: the caller has checked that
    every ``group=option`` of the jobs exists (``check_group_options``; the ``validate_sweep``
    callback does, on the sweep's overrides); else each distinct override is checked once here.
    The first job is validated here, which imports torch and Lightning; then ``workers()``, when
    given, may return an executor whose processes (forked from this one: they have its Hydra and
    its imports) validate the other jobs side by side; ``None``: here, one after another.
    ``composed``: when given (with ``master``), receives each job's composed config, pickled (tens
    of kB, whatever the sweep's size), by its overrides, for a launcher that would compose it again.

    >>> validate_sweep([["model=mlp", "seed=0"], ["model=cnn", "data=wine"]])  # doctest: +SKIP
    ConfigError: job 1 (model=cnn data=wine): model 'CNN' ... cannot be trained on data 'wine' ...
    """
    from expkit.startup import paused_collection, started

    task = config_name if config_name in REQUIRED else "train"
    check_job = functools.partial(_validate_job, jobs=jobs, config_name=config_name, task=task, master=master,
                                  keep=composed is not None)
    with hydra_context():
        if not options_checked:  # each distinct override once: jobs share most of theirs
            check_group_options(list(dict.fromkeys(o for job in jobs for o in job)), config_name)
        with paused_collection():  # the first job's check imports torch and Lightning (expkit.startup)
            checked = [check_job(0)] if jobs else []
            started()
        executor = workers() if workers is not None and len(jobs) > 1 else None
        rest = range(1, len(jobs))
        checked += executor.map(check_job, rest) if executor is not None else map(check_job, rest)  # the first error in job order
    from expkit.launching.sweep import is_optuna

    if master is None or not is_optuna(master.hydra):  # the Optuna sweeper puts each trial in its own
        check_job_dirs(jobs, [output_dir for _, _, output_dir in checked])
    if composed is not None:
        composed.update((tuple(job), cfg) for job, (_, cfg, _) in zip(jobs, checked, strict=True))
    return [sizes for sizes, _, _ in checked]


def check_job_dirs(jobs: Sequence[Sequence[str]], output_dirs: Sequence[str]) -> None:
    """No two jobs of a sweep share a directory (``hydra.sweep.subdir`` that does not depend on the
    job): they would write each other's checkpoints and records at once (``launcher=parallel``), or
    the later would move the earlier away. Raises :class:`ConfigError` naming them and the fix."""
    by_dir: dict[str, list[int]] = {}
    for number, output_dir in enumerate(output_dirs):
        by_dir.setdefault(output_dir, []).append(number)
    shared = [(d, numbers) for d, numbers in by_dir.items() if len(numbers) > 1]
    if shared:
        output_dir, numbers = shared[0]
        named = ", ".join(f"{n} ({' '.join(jobs[n]) or 'no overrides'})" for n in numbers[:4]) + (", ..." if len(numbers) > 4 else "")
        raise ConfigError(f"hydra.sweep.subdir: jobs {named} would all run in {output_dir}; make hydra.sweep.subdir "
                          "depend on the job, e.g. include ${hydra.job.num} (the default).")


def _validate_job(number: int, jobs: Sequence[Sequence[str]], config_name: str, task: str, master: DictConfig | None,
                  keep: bool) -> tuple[dict[str, Any], bytes | None, str]:
    """Compose and validate job ``number`` of ``jobs`` (:func:`validate_sweep`); its error names it.
    Returns the sizes its data declares, with ``keep`` its composed config, pickled, and its
    directory (``hydra.runtime.output_dir``)."""
    import pickle

    from expkit.launching.signals import SweepInterrupted, pending_signal

    if (signum := pending_signal()) is not None:  # the sweep was stopped while its jobs were checked
        raise SweepInterrupted(signum)
    job = list(jobs[number])
    try:
        cfg = compose(config_name, job, hydra=True, check_options=False) if master is None else compose_job(master, job)
        composed = pickle.dumps(cfg) if keep else None  # as Hydra composes it: the launcher numbers it
        launcher = OmegaConf.select(cfg, "hydra.launcher._target_")
        with as_launched(cfg, number):  # ${hydra:job.num} and the like resolve as in the job
            checked = cfg.copy()
            with open_dict(checked):
                del checked["hydra"]  # the job's config, as its task gets it
            return validate(checked, task, hardware=runs_here(launcher)), composed, str(cfg.hydra.runtime.output_dir)
    except ExpkitError as exc:
        label = " ".join(job) or "no overrides"
        raise type(exc)(f"job {number} ({label}): {exc}" if len(jobs) > 1 else str(exc)) from None
