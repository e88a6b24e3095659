"""``hydra/sweeper=expkit_optuna``: an Optuna (>= 4) search whose study lives in a database.

    python train.py -m hparams_search=digits_optuna                       # sqlite in the sweep dir
    python train.py -m hparams_search=digits_optuna hydra.sweeper.n_trials=40   # resume, 40 in all
    python train.py -m hparams_search=digits_optuna \\
        hydra.sweeper.storage=postgresql://user:pw@db-host/optuna          # share one study

Each loop asks the study for up to ``n_jobs`` trials, turns their parameters into Hydra overrides,
launches them as one batch (any launcher: local, parallel, SLURM) and tells the study each outcome:
the job's return value (COMPLETE), ``TrialPruned`` (PRUNED) or anything else (FAIL, and the search
goes on). ``n_trials`` counts the study's trials in all (every worker, every earlier run), so
re-running the same command resumes the study. While a trial runs its worker records heartbeats;
trials whose worker died are marked failed by the next worker that starts.

The search space uses Hydra's sweep syntax: ``choice(a, b)``, ``range(lo, hi, step)`` (ints),
``interval(lo, hi)`` with ``tag(log, ...)`` for a log scale and ``tag(int, ...)`` for integers.
``conditional_params`` maps ``key=value`` of a sampled parameter to parameters that only exist
then (define-by-run: TPE samples them only in those trials).
"""

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from expkit.launching.sweep import TRIAL_ENV, TRIAL_ID_ENV  # how a job learns its trial

log = logging.getLogger(__name__)

STORAGE_FILE = "optuna.db"
RESULTS_FILE = "optimization_results.yaml"


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.expkit_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # sampler and pruner are built here (a resumed study reseeds them)
    # The study's name in its storage; a new name starts a new study.
    study_name: str = "expkit"
    # Any SQLAlchemy URL; null: sqlite file optuna.db in the sweep directory.
    storage: str | None = None
    # minimize/maximize (or min/max, as monitor.mode says).
    direction: str = "minimize"
    # Trials in the whole study (all workers, all runs) after which a worker stops asking.
    n_trials: int = 20
    # Trials launched at once (one launcher batch): launcher=parallel runs them side by side.
    n_jobs: int = 1
    # Sampler and pruner, instantiated by _target_ (null pruner: never prune).
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    pruner: Any = field(default_factory=lambda: {"_target_": "optuna.pruners.MedianPruner", "n_warmup_steps": 2})
    # Seconds between a running trial's heartbeats; a trial silent for grace_period is failed.
    heartbeat_interval: int = 30
    grace_period: int = 120
    # key -> Hydra sweep expression, e.g. model.optimizer.lr: tag(log, interval(1e-4, 1e-1)).
    params: dict[str, str] = field(default_factory=dict)
    # "key=value" of a sampled param -> params sampled only when it has that value.
    conditional_params: dict[str, dict[str, str]] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="expkit_optuna", node=OptunaSweeperConf, provider="expkit")


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    return storage or f"sqlite:///{(Path(sweep_dir) / STORAGE_FILE).resolve()}"


def make_storage(url: str, heartbeat_interval: int = 30, grace_period: int = 120):
    import optuna

    return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)


def optuna_direction(direction: str) -> str:
    value = {"min": "minimize", "max": "maximize"}.get(str(direction), str(direction))
    if value not in ("minimize", "maximize"):
        from expkit.errors import ConfigError

        raise ConfigError(f"hydra.sweeper.direction={direction!r}: use minimize or maximize (or min/max).")
    return value


def suggest(trial: Any, name: str, override: Override) -> str:
    """Sample one parameter for ``trial`` from a Hydra sweep override; the value as override text."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    sweep = override.value()
    if isinstance(sweep, ChoiceSweep):
        if all(isinstance(v, (str, int, float, bool)) for v in sweep.list):  # plain values stay typed
            return str(trial.suggest_categorical(name, list(sweep.list)))
        return trial.suggest_categorical(name, list(override.sweep_string_iterator()))
    if isinstance(sweep, RangeSweep):
        values = list(override.sweep_string_iterator())
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
            return str(trial.suggest_int(name, int(values[0]), int(values[-1]), step=int(sweep.step)))
        return trial.suggest_categorical(name, values)
    if isinstance(sweep, IntervalSweep):
        log_scale = "log" in sweep.tags
        if "int" in sweep.tags:
            return str(trial.suggest_int(name, int(sweep.start), int(sweep.end), log=log_scale))
        return repr(trial.suggest_float(name, float(sweep.start), float(sweep.end), log=log_scale))
    raise ValueError(f"hydra.sweeper.params.{name}: unsupported sweep {override.input_line!r}")


class OptunaSweeper(Sweeper):
    def __init__(self, study_name: str = "expkit", storage: str | None = None, direction: str = "minimize",
                 n_trials: int = 20, n_jobs: int = 1, sampler: Any = None, pruner: Any = None,
                 heartbeat_interval: int = 30, grace_period: int = 120,
                 params: dict[str, str] | None = None,
                 conditional_params: dict[str, dict[str, str]] | None = None) -> None:
        self.study_name, self.storage, self.direction = study_name, storage, direction
        self.n_trials, self.n_jobs = n_trials, max(1, n_jobs)
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.params = dict(params or {})
        self.conditional = {k: dict(v) for k, v in (conditional_params or {}).items()}
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # --- the search ----------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        import warnings

        import optuna
        from optuna.trial import TrialState

        # Heartbeats and stale-trial recovery are marked experimental; they are what resuming needs.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        parser = OverridesParser.create()
        space = {key: parser.parse_override(f"{key}={value}") for key, value in self.params.items()}
        fixed: list[str] = []
        pinned: dict[str, str] = {}
        for override in parser.parse_overrides(arguments):
            key = override.get_key_element()
            if override.is_sweep_override():  # a sweep on the command line joins the search space
                space[key] = override
            else:  # a plain value on the command line pins that parameter
                fixed.append(override.input_line)
                pinned[key] = override.get_value_element_as_str()
                space.pop(key, None)
        conditional = {
            cond: {key: parser.parse_override(f"{key}={value}") for key, value in params.items()}
            for cond, params in self.conditional.items()
        }

        url = storage_url(self.storage, sweep_dir)
        for attempt in range(3):  # workers starting together race to create the tables and the study
            try:
                storage = make_storage(url, self.heartbeat_interval, self.grace_period)
                study = optuna.create_study(
                    study_name=self.study_name, storage=storage, load_if_exists=True,
                    direction=optuna_direction(self.direction),
                    pruner=_build(self.pruner_cfg) or optuna.pruners.NopPruner(),
                )
                break
            except Exception as exc:
                if attempt == 2 or "ConfigError" in type(exc).__name__:
                    raise
                log.warning("Opening study '%s' failed (%s); retrying", self.study_name, exc)
                time.sleep(1 + attempt)
        # A seeded sampler would draw the same parameters again in every resumed run: offset its seed
        # by the trials the study already has (same command, same study, same draws).
        sampler_cfg = OmegaConf.create(self.sampler_cfg or {"_target_": "optuna.samplers.TPESampler"})
        if sampler_cfg.get("seed") is not None:
            sampler_cfg.seed = int(sampler_cfg.seed) + len(study.trials)
        study.sampler = _build(sampler_cfg)
        log.info("Optuna study '%s' in %s: %d trial(s) so far, %d in all", self.study_name,
                 _safe_url(url), len(study.trials), self.n_trials)
        next_job = 1 + max((int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit()), default=-1)

        while True:
            optuna.storages.fail_stale_trials(study)  # trials whose worker died
            counted = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                               TrialState.FAIL, TrialState.RUNNING))
            n = min(self.n_jobs, self.n_trials - len(counted))
            if n <= 0:
                break
            trials = [study.ask() for _ in range(n)]
            batch = [self._overrides(trial, space, conditional, fixed, pinned) for trial in trials]
            with _Heartbeats(storage, [t._trial_id for t in trials], self.heartbeat_interval):
                results = self.launcher.launch(batch, initial_job_idx=next_job)
            next_job += n
            for trial, overrides, ret in zip(trials, batch, results, strict=True):
                self._tell(study, trial, overrides, ret)

        return self._report(study, sweep_dir, url)

    def _overrides(self, trial: Any, space: dict[str, Override], conditional: dict[str, dict[str, Override]],
                   fixed: Sequence[str], pinned: dict[str, str]) -> list[str]:
        chosen = {key: suggest(trial, key, override) for key, override in space.items()}
        for condition, params in conditional.items():
            key, _, value = condition.partition("=")
            if {**pinned, **chosen}.get(key.strip()) == value.strip():
                chosen.update({k: suggest(trial, k, o) for k, o in params.items() if k not in pinned})
        overrides = [*fixed, *(f"{k}={v}" for k, v in chosen.items())]
        trial.set_user_attr("overrides", overrides)
        # The job learns its trial through its environment (not its config: configs stay comparable).
        return [*overrides, f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}",
                f"++hydra.job.env_set.{TRIAL_ID_ENV}={trial._trial_id}"]

    def _tell(self, study: Any, trial: Any, overrides: list[str], ret: Any) -> None:
        from optuna.trial import TrialState

        value = ret._return_value
        job_dir = str(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg is not None else None
        trial.set_user_attr("job_dir", job_dir)
        if ret.status == JobStatus.COMPLETED and isinstance(value, (int, float)) and math.isfinite(value):
            study.tell(trial, float(value), skip_if_finished=True)
            log.info("Trial %d: %s = %.6g", trial.number, self.config.get("monitor", {}).get("metric", "value"), value)
        elif type(value).__name__ == "TrialPruned":
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            log.info("Trial %d pruned (%s)", trial.number, value)
        else:
            reason = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else f"returned {value!r}"
            trial.set_user_attr("error", reason[:500])
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            log.warning("Trial %d failed (%s); the search goes on", trial.number, reason.splitlines()[0][:300])

    def _report(self, study: Any, sweep_dir: Path, url: str) -> dict[str, Any]:
        from optuna.trial import TrialState

        counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,)))
                  for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
        results: dict[str, Any] = {"study_name": self.study_name, "storage": _safe_url(url),
                                   "direction": study.direction.name.lower(), "trials": counts}
        if counts["complete"]:
            best = study.best_trial
            results.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                           best_overrides=best.user_attrs.get("overrides"), best_job_dir=best.user_attrs.get("job_dir"))
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
        if counts["complete"]:
            message = (f"Best trial {results['best_trial']}: value {results['best_value']:.6g} with "
                       f"{' '.join(results['best_overrides'] or [])} ({sweep_dir / RESULTS_FILE})")
        else:
            message = f"No trial completed ({counts}); see {sweep_dir / RESULTS_FILE}"
        log.info(message)
        print(message)
        return results


def _build(spec: Any) -> Any:
    """A sampler or pruner from its ``_target_`` config."""
    from hydra.utils import instantiate

    return None if spec is None else instantiate(spec)


def _safe_url(url: str) -> str:
    """The storage URL without its password, for logs and result files."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class _Heartbeats:
    """Record a heartbeat for each running trial while its batch runs (from this, the sweeping
    process: a trial's job may run anywhere)."""

    def __init__(self, storage: Any, trial_ids: Sequence[int], interval: int) -> None:
        self.storage, self.trial_ids, self.interval = storage, list(trial_ids), interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="optuna-heartbeats")

    def _beat(self) -> None:
        while True:
            for trial_id in self.trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # a missed beat is not worth failing the sweep for
                    log.debug("heartbeat for trial %s failed: %s", trial_id, exc)
            if self.stop.wait(self.interval):
                return

    def __enter__(self) -> "_Heartbeats":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()

