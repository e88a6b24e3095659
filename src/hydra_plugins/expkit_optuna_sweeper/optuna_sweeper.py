"""``hydra/sweeper=expkit_optuna``: an Optuna (>= 4) search whose study lives in a database.

    python train.py -m hparams_search=digits_optuna                       # sqlite in the sweep dir
    python train.py -m hparams_search=digits_optuna hydra.sweeper.n_trials=40   # resume, 40 in all
    python train.py -m hparams_search=digits_optuna \\
        hydra.sweeper.storage=postgresql+psycopg2://user:pw@db-host/optuna  # share one study

Each loop asks the study for up to ``n_jobs`` trials, turns their parameters into Hydra overrides,
launches them as one batch (any launcher: local, parallel, SLURM) and tells the study each outcome:
the job's return value (COMPLETE), ``TrialPruned`` (PRUNED) or anything else (FAIL, and the search
goes on). ``n_trials`` counts the study's trials in all (every worker, every earlier run), so
re-running the same command resumes the study; it is checked before each ask, so workers asking
in the same instant may each add one trial beyond it. While a trial runs its worker records
heartbeats; trials whose worker died are marked failed by the next worker that starts. The
command's exit status is the sweep rule (``expkit.launching.sweep.exit_status``): non-zero when a
trial it ran failed or no trial has completed; pruned trials are no failures.

The trials' sweep records (``<trial dir>/sweep_job.json``) are the truth the study is reconciled
with, at the start of every command and before each round fails stale trials
(:meth:`OptunaSweeper._reconcile`): a trial the study still has RUNNING whose record says it ended
(its job finished after the sweeping process was killed, e.g. a SLURM array outliving it) is told
as its record says: ``completed`` with a finite value COMPLETE, ``pruned`` PRUNED, ``failed`` (or
``cancelled``) FAIL. A trial stopped by a signal (record ``interrupted``: it saved ``last.ckpt``) is
not told: it stays RUNNING, and the next command resumes it before asking for new trials, with the
same trial number, parameters and directory (the run continues from its ``last.ckpt``), and tells
its result. The worker that resumes it claims it under a file lock (its record goes back to
``running``) so that no two workers resume one trial, and records its heartbeat at once so that it
is not failed as stale. If the study failed it as stale meanwhile (no heartbeat for
``grace_period``: the re-run came later than that and another worker failed it first), Optuna
forbids telling it again: its parameters are enqueued (``study.enqueue_trial``) as a new trial,
with user attribute ``resumes`` = the old trial's number, which runs in the old trial's directory
(from its ``last.ckpt``) and is recorded there under the old number; it is asked before any new
trial, even when the study already holds ``n_trials``.

Several workers may run the same command on one sweep directory (processes on one machine with the
sqlite file, processes on many machines with PostgreSQL and a shared file system; any launcher).
Each trial runs in ``<sweep dir>/<trial number>``: the study numbers trials uniquely, and the
sweeper creates that directory exclusively before launching, so no two trials ever share one. A
directory that already exists belongs to another study (the storage was replaced or deleted): the
sweep stops with a one-line error rather than mixing two trials' files. So does a storage that
cannot be read (a corrupt ``optuna.db``): ``DataError``, exit code 3.

The search space uses Hydra's sweep syntax: ``choice(a, b)``, ``range(lo, hi, step)`` (ints),
``interval(lo, hi)`` with ``tag(log, ...)`` for a log scale and ``tag(int, ...)`` for integers.
``conditional_params`` maps ``key=value`` of a sampled parameter to parameters that only exist
then (define-by-run: TPE samples them only in those trials).
"""

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
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

from expkit.errors import ConfigError, DataError, ExpkitError
from expkit.launching.signals import SweepInterrupted
from expkit.launching.sweep import (
    TRIAL_ENV,
    TRIAL_ID_ENV,
    read_record,
    update_summary,
    write_record,
)
from expkit.secrets import mask_text, write_masked_yaml

log = logging.getLogger(__name__)

STORAGE_FILE = "optuna.db"
RESULTS_FILE = "optimization_results.yaml"
# Seconds a sqlite connection waits for another writer (workers, heartbeats, pruning reports of
# running trials all write the one file) before "database is locked".
SQLITE_TIMEOUT_S = 120


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
    """An Optuna RDB storage on ``url``; sqlite connections wait up to SQLITE_TIMEOUT_S seconds for
    the file's lock instead of failing at once when several processes write."""
    import optuna

    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                                      grace_period=grace_period)


def open_study(url: str, study_name: str, direction: str, pruner: Any, heartbeat_interval: int = 30,
               grace_period: int = 120, attempts: int = 4, sweep_dir: Path | None = None) -> tuple[Any, Any]:
    """Create or load study ``study_name`` in ``url``: ``(study, storage)``. With ``sweep_dir``, a
    study that does not exist yet is created only if that directory holds no trial directories
    (:func:`check_trial_dirs`): a storage that lost the study, or a copy of another study's, is
    refused untouched.

    Workers starting together race to create the tables and the study, and a server may be slow
    to answer: such failures are retried (``attempts`` in all, 1, 2, 3 s apart). A storage that
    cannot be used (a file that is not an Optuna sqlite database, a schema of another Optuna
    version, a server that never answers) raises :class:`DataError` naming it and what to do.
    """
    import fcntl

    import optuna
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    database = make_url(url).database if url.startswith("sqlite") else None
    if database and not Path(database).parent.is_dir():
        raise ConfigError(f"hydra.sweeper.storage={_safe_url(url)}: the directory {Path(database).parent} does not "
                          "exist; create it, or name a file in an existing directory.")
    for attempt in range(attempts):
        try:
            with contextlib.ExitStack() as stack:
                if database:  # workers sharing one sqlite file create its tables one at a time
                    lock = stack.enter_context(open(f"{database}.lock", "w"))
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    names = check_sqlite_file(Path(database))
                    if sweep_dir is not None and names is not None and study_name not in names:
                        check_trial_dirs(sweep_dir, study_name, 0, url)  # before Optuna writes its tables
                storage = make_storage(url, heartbeat_interval, grace_period)
                if sweep_dir is not None and not database and study_name not in optuna.get_all_study_names(storage):
                    check_trial_dirs(sweep_dir, study_name, 0, url)
                study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                            direction=direction, pruner=pruner)
            return study, storage
        except DataError:  # check_sqlite_file, check_trial_dirs: the file is named, and not a race
            raise
        except (ImportError, sqlalchemy.exc.NoSuchModuleError) as exc:  # the URL's driver is not installed
            missing = str(exc.__cause__ or exc).strip().splitlines()[0][:200]
            raise ConfigError(
                f"hydra.sweeper.storage={_safe_url(url)}: SQLAlchemy has no driver for it ({missing}); name an "
                f"installed one in the URL, e.g. postgresql+psycopg2://user:password@host/db (psycopg2 comes with "
                f"expkit; SQLAlchemy's default for postgresql:// is psycopg 3), or install the driver.") from None
        except Exception as exc:
            problem, transient = storage_problem(exc, url)
            last = attempt == attempts - 1
            if problem is not None and (last or not transient):
                raise DataError(problem) from exc
            if last:
                raise
            log.warning("Opening study '%s' failed (%s); retrying", study_name, str(exc).splitlines()[0][:200])
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def check_sqlite_file(path: Path) -> list[str] | None:
    """A sqlite study file that exists is one Optuna may open and write: a regular file, empty (a
    new study; nothing in it to lose) or a database with Optuna's tables. Read only; raises
    :class:`DataError` naming ``path`` and what to do, before Optuna writes its tables into a
    database of something else (or fails on a directory without naming it). Returns the names of
    the studies in it (none for a file that does not exist, is empty or has no tables yet), or
    ``None`` when it cannot be read here (Optuna then opens it and its error is explained,
    :func:`storage_problem`)."""
    import sqlite3

    if not path.exists() or path.is_file() and path.stat().st_size == 0:
        return []
    fix = (f"restore it from a copy, or move the sweep directory {path.parent} away (or set another "
           f"hydra.sweep.dir, or hydra.sweeper.storage) to start the study afresh.")
    if not path.is_file():
        raise DataError(f"{path} is not a readable Optuna study (it is not a file): {fix}")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = sorted(name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"))
            names = [name for (name,) in db.execute("SELECT study_name FROM studies")] if "studies" in tables else []
    except sqlite3.OperationalError as exc:  # unreadable (permissions), or locked: Optuna says which
        log.debug("Could not check %s (%s); Optuna opens it", path, exc)
        return None
    except sqlite3.DatabaseError:  # not a database: Optuna's own error is explained (storage_problem)
        return None
    if tables and "studies" not in tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise DataError(f"{path} is not a readable Optuna study (a SQLite database of something else, tables: "
                        f"{shown}); it is left as it is: {fix}")
    return names


def storage_problem(exc: BaseException, url: str) -> tuple[str | None, bool]:
    """Why the study storage at ``url`` cannot be used, in one line (``None``: ``exc`` is not about
    the storage, e.g. two workers creating its tables at once), and whether retrying may help."""
    import sqlite3

    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        where = parsed.database or url
        # sqlite3.DatabaseError itself ("file is not a database", "disk image is malformed"), not one
        # of its subclasses: those (locked, a table or row another worker created first) are races.
        if type(getattr(exc, "orig", None)) is sqlite3.DatabaseError:
            return (f"{where} is not a readable Optuna study ({first}): restore it from a copy, or move the sweep "
                    f"directory {Path(where).parent} away (or set another hydra.sweep.dir) to start the study "
                    f"afresh."), False
    elif isinstance(exc, sqlalchemy.exc.OperationalError):
        return (f"hydra.sweeper.storage={_safe_url(url)} is not reachable ({first}): check the URL, the user and "
                f"password, and that the database server runs and accepts connections from this machine."), True
    if isinstance(exc, RuntimeError) and "optuna storage upgrade" in str(exc):  # another Optuna's schema
        return (f"the study storage {_safe_url(url)} was written by another Optuna version ({first}): upgrade it "
                f"with `optuna storage upgrade --storage '{_safe_url(url)}'`, or use the Optuna version that wrote "
                f"it."), False
    return None, True


def check_trial_dirs(sweep_dir: Path, study_name: str, known: int | Callable[[], int], url: str) -> None:
    """Refuse a sweep directory holding trial directories the study does not have (numbers at or
    beyond its trial count ``known``, or a function that counts them): its storage was replaced
    or deleted, or another sweep wrote there. Running on would put a new trial's files beside an
    old trial's checkpoints and metrics.

    Raises:
        DataError: naming the directories and what to do.
    """
    # The directories first, then the count: a trial another worker asks meanwhile is counted.
    numbered = sorted(int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    known = known() if callable(known) else known
    foreign = [n for n in numbered if n >= known]
    if foreign:
        names = ", ".join(map(str, foreign[:5])) + (", ..." if len(foreign) > 5 else "")
        raise DataError(
            f"{sweep_dir} holds trial directories ({names}) that study '{study_name}' in {_safe_url(url)} "
            f"does not have (it has {known} trials): its storage was replaced or deleted, or another sweep wrote "
            f"there. Restore the storage, or use a new hydra.sweep.dir (or move {sweep_dir} away).")


def check_trial_records(sweep_dir: Path, study: Any, url: str) -> None:
    """Refuse a sweep directory whose trial directories hold the jobs of another study: a trial's
    recorded overrides (``sweep_job.json``) lack one of the overrides the study gave that trial
    (user attribute ``overrides``; masked ones are not compared). A copy of another study's
    storage (same name, as many trials or more) passes :func:`check_trial_dirs`; running on would
    mix two studies' trials in one directory and one summary.

    Raises:
        DataError: naming the first such directory and what to do.
    """
    for trial in study.get_trials(deepcopy=False):
        given = [o for o in trial.user_attrs.get("overrides") or [] if "***" not in o]
        record = read_record(_trial_dir(sweep_dir, trial)) if given else None
        if not record:
            continue
        recorded = f" {record.get('overrides') or ''} "  # a value may hold spaces: whole overrides compared
        missing = [o for o in given if f" {o} " not in recorded]
        if missing:
            job_dir = _trial_dir(sweep_dir, trial)
            raise DataError(
                f"{job_dir} holds a job of another study: its overrides lack {missing[0]}, which study "
                f"'{study.study_name}' in {_safe_url(url)} gave trial {trial.number}; the storage was replaced (by a "
                f"copy of another study's?), or another sweep wrote there. Restore the storage, or use a new "
                f"hydra.sweep.dir (or move {sweep_dir} away).")


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

        # Heartbeats and stale-trial recovery are marked experimental, and meant for Study.optimize;
        # they are what resuming needs, and _Heartbeats records them for ask-and-tell.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # Every worker writes it (whole, masked as Hydra's job files are: hydra.sweeper.storage may
        # hold a password).
        write_masked_yaml(sweep_dir / "multirun.yaml", self.config)

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
        study, storage = open_study(url, self.study_name, optuna_direction(self.direction),
                                    _build(self.pruner_cfg) or optuna.pruners.NopPruner(),
                                    self.heartbeat_interval, self.grace_period, sweep_dir=sweep_dir)
        check_trial_dirs(sweep_dir, self.study_name, lambda: len(study.get_trials(deepcopy=False)), url)
        check_trial_records(sweep_dir, study, url)
        sampler_cfg = OmegaConf.create(self.sampler_cfg or {"_target_": "optuna.samplers.TPESampler"})
        study.sampler = _build(sampler_cfg)
        log.info("Optuna study '%s' in %s: %d trial(s) so far, %d in all", self.study_name,
                 _safe_url(url), len(study.trials), self.n_trials)

        counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
        while True:
            # The records first: a trial that ended (or was interrupted) is not failed as stale.
            trials: list[Any] = self._reconcile(study, storage, sweep_dir)
            optuna.storages.fail_stale_trials(study)  # trials whose worker died
            self._record_failed_trials(study, sweep_dir)
            try:
                for _ in range(self.n_jobs - len(trials)):  # counted again before each ask: other workers ask too
                    resumes = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                    superseded = _superseded(study)
                    used = [t for t in study.get_trials(deepcopy=False, states=counted) if t.number not in superseded]
                    if not resumes and len(used) >= self.n_trials:
                        break
                    trials.append(self._ask(study, sweep_dir, sampler_cfg))
            except DataError:  # this batch's other trials will not run either
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                raise
            if not trials:
                break
            batch = [self._overrides(trial, space, conditional, fixed, pinned) for trial in trials]
            results: Sequence[Any] = [None] * len(trials)
            with _Heartbeats(storage, [t._trial_id for t in trials], self.heartbeat_interval):
                try:
                    results = self.launcher.launch(batch, initial_job_idx=trials[0].number)
                except SweepInterrupted:  # the started trials stay RUNNING (resumed); the others run next time
                    self._requeue_unstarted(study, trials, sweep_dir)
                    raise
                except Exception as exc:  # e.g. a SLURM job killed: each trial's record says how it ended
                    launch_error = exc
                    log.error("Launching trials %s failed (%s); their outcomes are read from their records",
                              [t.number for t in trials], str(exc).strip().splitlines()[-1:] or type(exc).__name__)
                else:
                    launch_error = None
            for trial, ret in zip(trials, results, strict=True):
                self._tell(study, trial, ret, sweep_dir)
            if launch_error is not None and not any(read_record(_trial_dir(sweep_dir, t)) for t in trials):
                # Not one trial started: the launcher itself is broken (sbatch refused, ...).
                first = (str(launch_error).strip().splitlines() or [type(launch_error).__name__])[0][:300]
                raise ExpkitError(f"the launcher started none of trials {[t.number for t in trials]} "
                                  f"({type(launch_error).__name__}: {first}); see the log above.") from launch_error

        return self._report(study, sweep_dir, url)

    def _ask(self, study: Any, sweep_dir: Path, sampler_cfg: DictConfig) -> Any:
        """A new trial and its own directory ``<sweep dir>/<trial number>``, created here and now: a
        directory that exists already belongs to another study, and the trial fails instead of
        running beside that study's files.

        A seeded sampler draws trial n with seed + n: a resumed study draws new points, the same
        command draws the same ones, and workers that start together do not repeat each other.
        """
        from optuna.trial import TrialState

        expected = len(study.get_trials(deepcopy=False))
        if sampler_cfg.get("seed") is not None:
            study.sampler = _build(OmegaConf.merge(sampler_cfg, {"seed": int(sampler_cfg.seed) + expected}))
        trial = study.ask()
        if sampler_cfg.get("seed") is not None and trial.number != expected:
            study.sampler.reseed_rng()  # another worker asked meanwhile: do not repeat its draws
        if "resumes" in trial.user_attrs:  # an interrupted trial failed as stale: its directory exists
            log.info("Trial %d resumes trial %d (failed as stale after it was interrupted) in %s", trial.number,
                     trial.user_attrs["resumes"], _trial_dir(sweep_dir, trial))
            return trial
        try:
            (sweep_dir / str(trial.number)).mkdir()
        except FileExistsError:
            message = (f"{sweep_dir / str(trial.number)} exists already: it belongs to another study than "
                       f"'{study.study_name}' (its storage was replaced or deleted, or another sweep wrote there). "
                       f"Use a new hydra.sweep.dir, or move {sweep_dir} away.")
            trial.set_user_attr("error", message)
            study.tell(trial, state=TrialState.FAIL)
            raise DataError(message) from None
        return trial

    def _overrides(self, trial: Any, space: dict[str, Override], conditional: dict[str, dict[str, Override]],
                   fixed: Sequence[str], pinned: dict[str, str]) -> list[str]:
        chosen = {key: suggest(trial, key, override) for key, override in space.items()}
        for condition, params in conditional.items():
            key, _, value = condition.partition("=")
            if {**pinned, **chosen}.get(key.strip()) == value.strip():
                chosen.update({k: suggest(trial, k, o) for k, o in params.items() if k not in pinned})
        overrides = [*fixed, *(f"{k}={v}" for k, v in chosen.items())]
        trial.set_user_attr("overrides", [mask_text(o) for o in overrides])  # the study is on disk too
        # The job learns its trial through its environment (not its config: configs stay comparable),
        # and runs in the directory named by its trial number (_ask created it), whichever worker
        # launches it: hydra.job.num only counts this process's jobs. A trial that resumes another
        # runs, and is recorded, as that one (its directory); pruning reports go to its own id.
        number = trial.user_attrs.get("resumes", trial.number)
        return [*overrides, f"hydra.sweep.subdir={number}", f"++hydra.job.env_set.{TRIAL_ENV}={number}",
                f"++hydra.job.env_set.{TRIAL_ID_ENV}={trial._trial_id}"]

    def _reconcile(self, study: Any, storage: Any, sweep_dir: Path) -> list[Any]:
        """Make the study agree with the trials' records, and claim interrupted trials to resume.

        A RUNNING trial whose record says it ended is told so (:meth:`_tell`). A RUNNING trial whose
        record says ``interrupted`` is claimed (its record goes back to ``running`` under a lock,
        its heartbeat is recorded) and returned, up to ``n_jobs`` of them, to be launched again in
        its directory. A FAIL trial whose record says ``interrupted`` (failed as stale) is enqueued
        again with its parameters, to run in its directory (``resumes``)."""
        import fcntl

        import optuna
        from optuna.trial import TrialState

        claimed: list[Any] = []
        with open(sweep_dir / ".optuna_reconcile.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # workers starting together claim each trial once
            resuming = {t.user_attrs.get("resumes") for t in study.get_trials(
                deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))} - {None}
            for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.FAIL)):
                job_dir = _trial_dir(sweep_dir, frozen)
                record = read_record(job_dir) or {}
                status = record.get("status")
                if frozen.state == TrialState.FAIL:
                    number = int(frozen.user_attrs.get("resumes", frozen.number))
                    if status == "interrupted" and number not in resuming:
                        study.enqueue_trial(frozen.params, user_attrs={"resumes": number}, skip_if_exists=False)
                        resuming.add(number)
                        log.info("Trial %d was interrupted and then failed as stale: its parameters are enqueued to "
                                 "resume it in %s", frozen.number, job_dir)
                    continue
                trial = optuna.trial.Trial(study, frozen._trial_id)
                if status in ("completed", "skipped", "failed", "cancelled", "pruned"):
                    log.info("Trial %d ended while no worker watched it (%s): telling the study", frozen.number,
                             status)
                    self._tell(study, trial, None, sweep_dir)
                elif status == "interrupted" and len(claimed) < self.n_jobs:
                    storage.record_heartbeat(frozen._trial_id)  # not stale: it resumes now
                    write_record(job_dir, {**record, "status": "running", "resuming": True})
                    log.info("Resuming interrupted trial %d in %s", frozen.number, job_dir)
                    claimed.append(trial)
        return claimed

    def _requeue_unstarted(self, study: Any, trials: Sequence[Any], sweep_dir: Path) -> None:
        """The trials of a batch the sweep's stop kept from starting (no record in their directory):
        each is failed (a trial cannot go back to waiting) and enqueued again with its parameters,
        to run first, in its directory, when the command runs again; the failed one does not count
        toward ``n_trials`` (:func:`_superseded`) or in the results."""
        from optuna.trial import TrialState

        for trial in trials:
            job_dir = _trial_dir(sweep_dir, trial)
            if read_record(job_dir) is not None:
                continue
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            study.enqueue_trial(trial.params, user_attrs={"resumes": int(job_dir.name)}, skip_if_exists=False)
            log.info("Trial %d did not start before the sweep stopped: it runs first when the command runs again",
                     trial.number)

    def _tell(self, study: Any, trial: Any, ret: Any, sweep_dir: Path) -> None:
        """Tell the study how ``trial`` ended: from its ``JobReturn`` ``ret``, or from its sweep record
        when the launcher returned none (``ret`` is ``None``): COMPLETE with its finite value, PRUNED,
        or FAIL (an error, a non-finite or missing value, a job that never ended)."""
        from optuna.trial import TrialState

        from expkit.errors import Interrupted

        job_dir = _trial_dir(sweep_dir, trial)
        record = read_record(job_dir) or {}
        if (isinstance(getattr(ret, "_return_value", None), Interrupted)
                or ret is None and record.get("status") == "interrupted"):
            # Stopped by a signal after saving last.ckpt: it stays RUNNING, and is resumed (_reconcile).
            log.info("Trial %d interrupted; it resumes when the command runs again", trial.number)
            return
        _set_attr(trial, "job_dir", str(job_dir.resolve()))
        metric = self.config.get("monitor", {}).get("metric", "value")
        if ret is not None:
            value, status = ret._return_value, ret.status
            pruned = type(value).__name__ == "TrialPruned"
            completed = status == JobStatus.COMPLETED
            reason = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else f"returned {value!r}"
        else:
            value, pruned = record.get("value"), record.get("status") == "pruned"
            completed = record.get("status") in ("completed", "skipped")
            reason = record.get("error") or (
                "it did not finish (its process died or its job was cancelled)" if record.get("status") == "running"
                else f"its job ended without a record (status {record.get('status', 'unknown')})")
        if completed and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            study.tell(trial, float(value), skip_if_finished=True)
            log.info("Trial %d: %s = %.6g", trial.number, metric, value)
        elif pruned:
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            log.info("Trial %d pruned (%s)", trial.number, value if ret is not None else reason)
        else:
            _set_attr(trial, "error", mask_text(str(reason))[:500])
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            log.warning("Trial %d failed (%s); the search goes on", trial.number, str(reason).splitlines()[0][:300])

    def _record_failed_trials(self, study: Any, sweep_dir: Path) -> list[int]:
        """Make the sweep records agree with the study: a trial the study has failed whose record
        still says ``running`` (its worker died, or its SLURM job was cancelled, and a worker failed
        it as stale: no heartbeat for ``grace_period`` seconds) is recorded ``failed`` with that
        reason, and the summary table is rebuilt. Returns the trial numbers changed."""
        from optuna.trial import TrialState

        changed = []
        # A directory a trial resumes in belongs to that trial now, not to the one failed as stale.
        resuming = {t.user_attrs.get("resumes") for t in study.get_trials(
            deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))} - {None}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            job_dir = _trial_dir(sweep_dir, trial)
            if int(job_dir.name) in resuming:
                continue
            record = read_record(job_dir)
            if not record or record.get("status") != "running":
                continue
            error = trial.user_attrs.get("error") or (
                f"stale: no heartbeat for {self.grace_period} s (its worker died or its job was cancelled); "
                f"the study marked it failed")
            finished = trial.datetime_complete.timestamp() if trial.datetime_complete else time.time()
            write_record(job_dir, {**record, "status": "failed", "error": error, "finished": finished})
            log.warning("Trial %d failed: %s", trial.number, error)
            changed.append(trial.number)
        if changed:
            update_summary(sweep_dir)
        return changed

    def _report(self, study: Any, sweep_dir: Path, url: str) -> dict[str, Any]:
        from optuna.trial import TrialState

        superseded = _superseded(study)  # failed only to run again: not a trial of their own
        counts = {state.name.lower(): len([t for t in study.get_trials(deepcopy=False, states=(state,))
                                           if t.number not in superseded])
                  for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
        results: dict[str, Any] = {"study_name": self.study_name, "storage": _safe_url(url),
                                   "direction": study.direction.name.lower(), "trials": counts}
        if counts["complete"]:
            best = study.best_trial
            results.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                           best_overrides=best.user_attrs.get("overrides"), best_job_dir=best.user_attrs.get("job_dir"))
        self._record_failed_trials(study, sweep_dir)  # also those other workers failed meanwhile
        write_masked_yaml(sweep_dir / RESULTS_FILE, results)
        if counts["complete"]:
            message = (f"Best trial {results['best_trial']}: value {results['best_value']:.6g} with "
                       f"{' '.join(results['best_overrides'] or [])} ({sweep_dir / RESULTS_FILE})")
        else:
            message = f"No trial completed ({counts}); see {sweep_dir / RESULTS_FILE}"
        log.info(message)
        print(message)
        return results


def _superseded(study: Any) -> set[int]:
    """The numbers of the FAIL trials a later trial runs again in their directory (user attribute
    ``resumes``): interrupted and then failed as stale, or kept from starting by a signal. They do
    not count toward ``n_trials``, nor as failures."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    resumed_at = {}  # directory -> the number of the newest trial that runs in it again
    for t in trials:
        if "resumes" in t.user_attrs:
            resumed_at[int(t.user_attrs["resumes"])] = max(t.number, resumed_at.get(int(t.user_attrs["resumes"]), -1))
    return {t.number for t in trials if t.state == TrialState.FAIL
            and resumed_at.get(int(t.user_attrs.get("resumes", t.number)), -1) > t.number}


def _trial_dir(sweep_dir: Path, trial: Any) -> Path:
    """Where ``trial`` runs: ``<sweep dir>/<its number>``, or the directory of the interrupted trial
    it resumes (user attribute ``resumes``)."""
    return Path(sweep_dir) / str(trial.user_attrs.get("resumes", trial.number))


def _set_attr(trial: Any, key: str, value: Any) -> None:
    """Set a user attribute unless another worker finished the trial meanwhile (it told the study
    from the same record)."""
    import optuna

    # optuna >= 4.3 raises UpdateFinishedTrialError (a RuntimeError); older ones a bare RuntimeError
    # from the same check (BaseStorage.check_trial_is_updatable). Remove with optuna<4.3's support.
    finished = getattr(optuna.exceptions, "UpdateFinishedTrialError", RuntimeError)
    with contextlib.suppress(finished):
        trial.set_user_attr(key, value)


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

