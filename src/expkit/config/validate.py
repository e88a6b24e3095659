"""Validate a composed config before anything expensive runs.

    from expkit.config import validate
    validate(cfg)          # raises ConfigError (exit 2) or DataError (exit 3) listing every problem

Checks, in order: every required value is set and every interpolation resolves; expkit's own keys
match their schema (``schema.py``); every ``_target_`` imports and its arguments bind to its
signature (``targets.py``); the datamodule's declared spec (no dataset is built: a user's file is
read for its header and labels only) fits the model; the files the config names exist; a
``ckpt_path`` is a readable expkit checkpoint that fits model and data. No model weights are
allocated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from expkit.config.compose import check_resolvable, compose, hydra_context
from expkit.config.schema import REQUIRED, check_schema
from expkit.config.targets import check_targets
from expkit.errors import ConfigError, DataError, ExpkitError


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


def _check_data_and_model(config: Mapping, trust: bool) -> tuple[Any, list[ExpkitError]]:
    """The data's declared spec and the problems found with data, model and checkpoint."""
    from hydra.utils import instantiate

    from expkit.models import check_model_fits_data
    from expkit.models.checkpoint import check_checkpoint_fits, load_checkpoint

    problems: list[ExpkitError] = []
    spec = None
    data_cfg = config.get("data")
    if isinstance(data_cfg, Mapping):
        try:
            datamodule = instantiate(data_cfg)  # constructors only record settings: no data is loaded
            for path in datamodule.data_files():
                if not Path(path).exists() and not getattr(datamodule, "download", False):
                    fetch = " (data.download=true fetches it)" if hasattr(datamodule, "download") else ""
                    if getattr(datamodule, "processed_dir", None):  # the DVC pipeline's prepared arrays
                        from expkit.data.processed import FIX

                        fetch = f": {FIX}"
                    raise DataError(f"{_data_key(data_cfg, Path(path))}: {path} does not exist{fetch}.")
            spec = datamodule.spec
        except ExpkitError as exc:
            problems.append(exc)
        except Exception as exc:
            problems.append(ConfigError(f"data: {data_cfg['_target_']} cannot be built ({type(exc).__name__}: {exc})."))
    model_cfg = config.get("model")
    if spec is not None and isinstance(model_cfg, Mapping) and "net" in model_cfg:
        try:
            check_model_fits_data(model_cfg, spec)
        except ExpkitError as exc:
            problems.append(exc)
    ckpt = config.get("ckpt_path")
    if isinstance(ckpt, str) and Path(ckpt).is_file():
        try:
            checkpoint = load_checkpoint(ckpt, trust=trust)
            check_checkpoint_fits(checkpoint, ckpt, spec, model_cfg if isinstance(model_cfg, Mapping) else None)
        except ExpkitError as exc:
            problems.append(exc)
    return spec, problems


def validate(cfg: DictConfig | Mapping, task: str | None = None) -> Any:
    """Check ``cfg`` (a composed job config) for ``task`` (``train``/``eval``; default: from
    ``task_name``, training otherwise); return the data's declared spec (``None`` without data).

    Raises one :class:`ConfigError` (exit code 2) listing every problem, or a :class:`DataError`
    (exit code 3) when all problems are missing or unreadable files.
    """
    from expkit.tasks.common import INJECTED_ARGUMENTS

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    check_resolvable(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    task = task or (config.get("task_name") if config.get("task_name") in REQUIRED else "train")

    problems: list[ExpkitError] = [*check_schema(config, task), *check_targets(config, INJECTED_ARGUMENTS)]
    spec = None
    # Building the datamodule with a config already known to be wrong would only repeat its problem.
    if not any(str(p).startswith(("data", "model.net", "ckpt_path")) for p in problems):
        spec, found = _check_data_and_model(config, trust=config.get("trust_checkpoint") is True)
        problems += found
    if problems:
        raise _combine(problems)
    return spec


def validate_sweep(jobs: Sequence[Sequence[str]], config_name: str = "train") -> list[Any]:
    """Compose and validate every job (a list of overrides) of a sweep before the first starts;
    the first bad job raises, its overrides named. Returns each job's data spec.

    >>> validate_sweep([["model=mlp", "seed=0"], ["model=cnn", "data=wine"]])  # doctest: +SKIP
    ConfigError: job 1 (model=cnn data=wine): model 'CNN' ... cannot be trained on data 'wine' ...
    """
    task = config_name if config_name in REQUIRED else "train"
    specs = []
    with hydra_context():
        for number, job in enumerate(jobs):
            try:
                specs.append(validate(compose(config_name, job), task))
            except ExpkitError as exc:
                label = " ".join(job) or "no overrides"
                raise type(exc)(f"job {number} ({label}): {exc}" if len(jobs) > 1 else str(exc)) from None
    return specs
