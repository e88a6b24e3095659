"""``hydra/launcher=expkit_parallel`` (``launcher=parallel``): a multirun's jobs in worker processes.

A fixed pool of ``n_jobs`` worker processes runs the jobs in order of submission. Each worker
takes one *slot* when it starts and keeps it: its own GPU(s) through ``CUDA_VISIBLE_DEVICES`` (read
by CUDA when the worker initializes it) and its share of the CPU threads. On Linux, CPU workers
are forked from this process once it has imported torch (the sweep's pre-launch check does) and
import nothing again; GPU workers are spawned and import torch and Lightning once
(``start_method``). Either way a job costs little more than its training
(``benchmarks/sweep_launchers.py``: parallel 0.62 x sequential wall time for 8 jobs of 3.7 s on 2
cores, each job as fast as alone). The workers are kept between launches (an Optuna search
launches one batch a round), so a search pays for their start once.

Signals (``expkit.launching.signals``): SIGTERM, SIGINT (Ctrl-C) or SIGHUP to the sweeping process
is passed to the workers; each running job stops as a single run does (``last.ckpt`` saved, recorded
``interrupted``), no other job starts, the launcher waits for them (at most ``stop_timeout_s``, then
ends them), shuts the workers down, and the command exits 128 + N. A worker never outlives the
sweeping process: on Linux the kernel signals it (SIGTERM) when that process dies
(``prctl(PR_SET_PDEATHSIG)``); its job, if any, stops as above and the worker exits.
"""

import functools
import gc
import logging
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class ParallelLauncherConf:
    _target_: str = "hydra_plugins.expkit_launchers.parallel_launcher.ParallelLauncher"
    # Worker processes; null: one per GPU group when GPUs are visible, else one per CPU core.
    n_jobs: int | None = None
    # GPUs each worker sees (CUDA_VISIBLE_DEVICES); 0 hides every GPU from the jobs.
    gpus_per_job: int = 1
    # Allow more workers than GPU groups: groups are then shared round-robin.
    share_gpus: bool = False
    # torch/OpenMP threads in each worker; null: CPU cores // workers (at least 1).
    threads_per_job: int | None = None
    # After a signal: how long the running jobs may take to save their state before they are ended.
    stop_timeout_s: float = 60.0


# No ``from __future__ import annotations`` here: Hydra imports plugins without registering them in
# sys.modules, and dataclasses with string annotations need that.
ConfigStore.instance().store(group="hydra/launcher", name="expkit_parallel", node=ParallelLauncherConf, provider="expkit")


def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else what nvidia-smi lists."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip() and g.strip() != "-1"]
    return list(_machine_gpus())


@functools.cache
def _machine_gpus() -> tuple[str, ...]:
    """The GPU indices nvidia-smi lists (asked once a process: the check and the launcher both need them)."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return ()
    return tuple(line.strip() for line in out.splitlines() if line.strip())


def worker_slots(n_jobs: int | None, gpus: Sequence[str], gpus_per_job: int, share_gpus: bool) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` of each worker (``None``: leave it alone, no GPU is visible anyway).

    >>> worker_slots(None, ["0", "1", "2", "3"], 2, False)
    ['0,1', '2,3']
    >>> worker_slots(3, [], 1, False)
    [None, None, None]
    """
    from expkit.errors import ConfigError

    if not gpus or gpus_per_job == 0:
        count = n_jobs or os.cpu_count() or 1
        return ["" if gpus else None] * count
    if gpus_per_job > len(gpus):
        raise ConfigError(f"hydra.launcher.gpus_per_job={gpus_per_job} but only {len(gpus)} GPU(s) are visible "
                          f"({','.join(gpus)}): lower gpus_per_job.")
    groups = [",".join(gpus[i:i + gpus_per_job]) for i in range(0, len(gpus) - gpus_per_job + 1, gpus_per_job)]
    count = n_jobs or len(groups)
    if count > len(groups) and not share_gpus:
        raise ConfigError(
            f"hydra.launcher.n_jobs={count} workers with gpus_per_job={gpus_per_job} need {count * gpus_per_job} "
            f"GPUs; {len(gpus)} are visible ({','.join(gpus)}). Lower n_jobs to {len(groups)}, or set "
            f"hydra.launcher.share_gpus=true to let jobs share GPUs."
        )
    return [groups[i % len(groups)] for i in range(count)]


# What a worker's slot sets in its environment (_init_worker); every other variable a job sees is
# the sweeping process's (_execute).
SLOT_VARIABLES = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker(slots: Any, threads: int, parent: int, stopping: Any) -> None:
    """Runs first in each worker: never outlive the sweeping process ``parent``, take the signals
    (``WorkerSignals``), take a slot, pin its GPUs and threads before torch is imported."""
    from expkit.launching.signals import WORKER_SIGNALS

    WORKER_SIGNALS.setup(parent, stopping)
    cuda = slots.get()
    if cuda is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda
    for var in SLOT_VARIABLES[1:]:
        os.environ[var] = str(threads)
    if "torch" in sys.modules:  # forked from a process that imported torch: the variables come too late
        sys.modules["torch"].set_num_threads(threads)


def start_method(slots: Sequence[str | None]) -> str:
    """How workers start: on Linux, for CPU workers (``slots`` all ``None``: no GPU visible), forked
    from this process once it has imported torch, so that no worker imports torch and Lightning
    again (3-4 s of CPU each); spawned otherwise. Workers with GPUs are always spawned: torch
    caches the device count it read in this process, which a forked worker would inherit instead
    of reading its own CUDA_VISIBLE_DEVICES."""
    torch = sys.modules.get("torch")
    if sys.platform != "linux" or torch is None or any(slot is not None for slot in slots):
        return "spawn"
    return "fork"


def _execute(payload: bytes) -> bytes | None:
    """Run one job in a worker; ``None``: not run, the sweep is stopping. The job sees the
    environment the sweeping process had when it launched the job (as a job of the basic or SLURM
    launcher does; the workers may have started before, during the pre-launch check), with this
    worker's slot variables."""
    import cloudpickle

    from expkit.callbacks import STOP_SIGNALS
    from expkit.launching.signals import WORKER_SIGNALS

    # Installed before the check: a stop signal passed on after it reaches the job, which stops.
    STOP_SIGNALS.install()
    if not WORKER_SIGNALS.may_start_job():
        STOP_SIGNALS.restore()
        return None
    hydra_context, task_function, sweep_config, singleton_state, environment = cloudpickle.loads(payload)
    slot = {var: os.environ[var] for var in SLOT_VARIABLES if var in os.environ}
    os.environ.clear()
    os.environ.update({**environment, **slot})
    setup_globals()
    Singleton.set_state(singleton_state)
    try:
        ret = run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    finally:  # however the job ended (Lightning's SIGTERMException is a SystemExit)
        WORKER_SIGNALS.take_signals()
        WORKER_SIGNALS.exit_if_orphaned()  # the sweeping process died (the kernel's SIGTERM stopped the job)
    return cloudpickle.dumps(ret)


@dataclass
class _Pool:
    """The workers of this process's sweep: started once, shared by the pre-launch check
    (:func:`validation_workers`) and every launch (an Optuna search launches a batch a round);
    idle, they end with this process."""

    executor: ProcessPoolExecutor | None = None
    settings: tuple = ()  # (n_jobs, gpus_per_job, share_gpus, threads_per_job) it was started with
    size: int = 0  # workers
    stopping: Any = None  # a multiprocessing Event the workers read: set, they start no job
    # The job configs the pre-launch check composed, by their overrides (composed_jobs).
    composed: dict = field(default_factory=dict)


_shared = _Pool()


def worker_pool(n_jobs: int | None, gpus_per_job: int, share_gpus: bool, threads_per_job: int | None,
                batch: int) -> ProcessPoolExecutor:
    """The worker pool for a batch of ``batch`` jobs under the launcher's settings: the current one
    when it was started with the same settings, has as many workers as the batch can use and none
    died; else a new one (one worker per slot, at most one per job). Forked workers start after
    this process's objects are frozen (``gc.freeze``, ``expkit.startup``)."""
    import multiprocessing

    settings = (n_jobs, gpus_per_job, share_gpus, threads_per_job)
    slots = worker_slots(n_jobs, visible_gpus(), gpus_per_job, share_gpus)[:batch]
    pool = _shared.executor
    if pool is not None and not getattr(pool, "_broken", False) and _shared.settings == settings \
            and _shared.size >= len(slots):
        return pool
    if pool is not None:
        pool.shutdown()
    threads = threads_per_job or max(1, (os.cpu_count() or 1) // len(slots))
    log.info("Starting %d workers (%d thread(s) each%s)", len(slots), threads,
             "" if slots[0] is None else ", CUDA_VISIBLE_DEVICES " + " | ".join(s or "none" for s in slots))
    method = start_method(slots)
    if method == "fork":  # no collection in a worker touches (and copies) the pages of what it inherits
        gc.freeze()
    context = multiprocessing.get_context(method)
    slot_queue = context.Queue()
    for slot in slots:
        slot_queue.put(slot)
    _shared.stopping = context.Event()
    _shared.executor = ProcessPoolExecutor(max_workers=len(slots), mp_context=context, initializer=_init_worker,
                                           initargs=(slot_queue, threads, os.getpid(), _shared.stopping))
    _shared.settings, _shared.size = settings, len(slots)
    return _shared.executor


def validation_workers(settings: Any, jobs: int) -> ProcessPoolExecutor | None:
    """The sweep's workers, for its pre-launch check (``expkit.config.validate.validate_sweep``)
    to validate ``jobs`` jobs side by side, or ``None`` (validate in this process): only forked CPU
    workers (:func:`start_method`) can, as they have this process's Hydra and imports. The
    launcher then runs the jobs on the same workers.

    ``settings``: ``hydra.launcher`` (``n_jobs``, ``gpus_per_job``, ``share_gpus``, ``threads_per_job``)."""
    slots = worker_slots(settings.get("n_jobs"), visible_gpus(), settings.get("gpus_per_job", 1),
                         settings.get("share_gpus", False))
    if start_method(slots) != "fork":
        return None
    return worker_pool(settings.get("n_jobs"), settings.get("gpus_per_job", 1), settings.get("share_gpus", False),
                       settings.get("threads_per_job"), jobs)


def composed_jobs() -> dict[tuple[str, ...], bytes]:
    """Where the sweep's pre-launch check leaves the job configs it composed and validated
    (pickled), by their overrides: each is the config Hydra's ``load_sweep_config`` gives the
    launcher for those overrides, so the next launch runs it instead of composing it again (~0.15 s
    of this process's CPU a job, which the workers' first jobs would lose). Emptied by every launch."""
    return _shared.composed


def _pass_on(signum: int) -> None:
    """The sweeping process's signal handler while jobs run (``SweepSignals.forward``): no worker
    starts another job; each running job gets the signal and stops as a single run does."""
    _shared.stopping.set()
    for process in list((_shared.executor._processes or {}).values()):  # the executor's workers
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            pass


def _stop(futures: list, signum: int, timeout_s: float) -> None:
    """After ``signum``: cancel the jobs no worker has taken, wait (at most ``timeout_s``) for the
    running ones to save their state and record their end, end the workers that are still at it,
    shut the pool down, and stop the sweep."""
    from expkit.launching.signals import SweepInterrupted

    pool = _shared.executor
    for future in futures:
        future.cancel()
    pending = [f for f in futures if not f.done()]
    if pending:
        log.info("Stopping: waiting up to %gs for %d job(s) to save their state", timeout_s, len(pending))
        pending = list(wait(pending, timeout=timeout_s)[1])
    if pending:
        log.warning("%d job(s) did not stop within %gs (hydra.launcher.stop_timeout_s): ending them", len(pending), timeout_s)
        for process in list((pool._processes or {}).values()):
            process.kill()
    pool.shutdown(wait=True, cancel_futures=True)
    _shared.executor, _shared.size = None, 0
    raise SweepInterrupted(signum)


def _after_a_worker_died(futures: list, sweep_dir: Path, first_idx: int, timeout_s: float) -> list[JobReturn]:
    """A worker process died (``kill -9``, the out-of-memory killer): Python's process pool then
    ends every other worker (SIGTERM: their jobs save ``last.ckpt`` and are recorded
    ``interrupted``, to resume). Let no worker start a queued job, wait (at most ``timeout_s``) for
    them to have stopped, end those still there (one whose result nobody reads any more waits
    forever), record this command's jobs still ``running`` (the dead worker's) as failed, and
    return each job's outcome: a failed ``JobReturn`` for every job whose worker could not send one."""
    import signal

    import cloudpickle
    from hydra.core.utils import JobStatus

    from expkit.errors import ExpkitError, Interrupted
    from expkit.launching.sweep import LAUNCH_ENV, read_record, update_summary, write_record

    pool = _shared.executor
    _shared.stopping.set()  # a worker that took a queued job returns it unrun
    processes = list((pool._processes or {}).values())  # the executor's workers
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(10)
    pool.shutdown(wait=False, cancel_futures=True)
    _shared.executor, _shared.size = None, 0
    reason = ("its worker process died (killed by a signal: kill -9, or the out-of-memory killer?); the process "
              "pool then stopped the other workers, whose jobs saved their state: run the command again to resume them")
    launch, records = os.environ.get(LAUNCH_ENV), {}
    for job_dir in (p for p in sweep_dir.iterdir() if p.is_dir()):
        record = read_record(job_dir)
        if not record or record.get("launch") != launch:
            continue
        if record.get("status") == "running":  # the dead worker's job: it could not record its end
            record = {**record, "status": "failed", "error": reason, "finished": time.time()}
            write_record(job_dir, record)
            log.error("Job %s failed: %s", record.get("job"), reason)
        records[record.get("job_id")] = record
    update_summary(sweep_dir)
    returns = []
    for idx, future in enumerate(futures, start=first_idx):
        if not future.cancelled() and future.exception() is None:
            returns.append(cloudpickle.loads(future.result()))
            continue
        # Its record tells how it ended (hydra.job.id, set by _launch: this process's pid, the job's number).
        record = records.get(f"{os.getpid()}_{idx}", {})
        ret = JobReturn()
        ret.status = JobStatus.FAILED
        if record.get("status") == "interrupted":
            signum = int(record.get("signal") or signal.SIGTERM)
            ret._return_value = Interrupted(f"stopped by {signal.Signals(signum).name}", signum)
        else:
            ret._return_value = ExpkitError(record.get("error") or reason)
        returns.append(ret)
    return returns


class ParallelLauncher(Launcher):
    def __init__(self, n_jobs: int | None = None, gpus_per_job: int = 1, share_gpus: bool = False,
                 threads_per_job: int | None = None, stop_timeout_s: float = 60.0) -> None:
        self.n_jobs, self.gpus_per_job, self.share_gpus = n_jobs, gpus_per_job, share_gpus
        self.threads_per_job, self.stop_timeout_s = threads_per_job, stop_timeout_s
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from expkit.launching.signals import SWEEP_SIGNALS

        SWEEP_SIGNALS.forward = _pass_on  # a signal from here on reaches the jobs (_pass_on, _stop)
        try:
            return self._launch(job_overrides, initial_job_idx, SWEEP_SIGNALS)
        finally:
            SWEEP_SIGNALS.forward = None

    def _launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, signals: Any) -> Sequence[JobReturn]:
        import cloudpickle

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)

        pool = worker_pool(self.n_jobs, self.gpus_per_job, self.share_gpus, self.threads_per_job, len(job_overrides))
        log.info("Launching %d jobs on %d workers", len(job_overrides), _shared.size)
        futures = []
        composed, _shared.composed = _shared.composed, {}
        # Each job is submitted as soon as it is composed (unless the pre-launch check composed it):
        # new workers start (and import torch) while the later jobs are composed.
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            checked = composed.get(tuple(overrides))
            if checked is not None:
                sweep_config = pickle.loads(checked)
            else:
                sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"{os.getpid()}_{idx}"
                sweep_config.hydra.job.num = idx
            payload = cloudpickle.dumps((self.hydra_context, self.task_function, sweep_config, Singleton.get_state(),
                                         dict(os.environ)))
            if signals.received is not None:
                break
            futures.append(pool.submit(_execute, payload))
        pending = set(futures)
        while pending and signals.received is None:  # woken now and then to see whether a signal came
            pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)[1]
        if signals.received is not None:
            _stop(futures, signals.received, self.stop_timeout_s)
        if any(not f.cancelled() and isinstance(f.exception(), BrokenProcessPool) for f in futures):
            # A worker died, and the pool with it.
            return _after_a_worker_died(futures, sweep_dir, initial_job_idx, self.stop_timeout_s)
        return [cloudpickle.loads(f.result()) for f in futures]
