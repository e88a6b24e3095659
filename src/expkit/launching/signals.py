"""Stopping a multirun by a signal: SIGTERM, SIGINT (Ctrl-C) or SIGHUP to the sweeping process.

A sweep stops as a single run does, whatever reaches it (the sweeping process alone, as a scheduler
or ``kill`` sends it, or the whole process group, as Ctrl-C in a terminal does): each running job
finishes its step, saves ``last.ckpt`` and is recorded ``interrupted``; no further job starts; the
command exits 128 + the signal's number (``expkit.launching.sweep.exit_status``). Running the
command again resumes the sweep. Who passes the signal to the running jobs:

- ``launcher=local``: the job runs in this process; its own handler (``expkit.callbacks.StopSignals``)
  stops it, and the sweep recorder stops the sweep after it (``SweepRecorder.on_job_end``);
- ``launcher=parallel``: the launcher (``forward``) passes it to its workers and waits for them;
  a worker starts no job once the sweep stops and never outlives the sweeping process
  (:class:`WorkerSignals`).

A second signal ends the process at once, by that signal (as without expkit).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

NAMES = ("SIGTERM", "SIGINT", "SIGHUP")


class SweepInterrupted(BaseException):
    """The sweep was stopped by signal ``signum``. A ``BaseException``: Hydra's job and callback
    wrappers catch ``Exception`` only, so it ends the launcher's loop and the sweeper's."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class SweepSignals:
    """The sweeping process's handler of :data:`NAMES`, installed for the whole multirun
    (``expkit.launching.sweep.run_multirun``).

    ``received``: the first signal. ``forward``: set by a launcher whose jobs run in other
    processes while it waits for them; it passes the signal on, and the launcher raises
    :class:`SweepInterrupted` once they have stopped. Without one, no job is running in this
    process when the handler is called (a running job's own handler takes the signal), so it
    raises :class:`SweepInterrupted` where the sweep is."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.forward: Callable[[int], None] | None = None
        self._previous: dict[int, Any] = {}
        self._deferred = 0

    def _handle(self, signum: int, frame: Any) -> None:
        # No import here: the signal may come in the middle of one (torch's, Lightning's, during the
        # pre-launch check), which importing expkit.callbacks (Lightning) would re-enter and break.
        if pending_signal() is not None:  # the second one: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum
        if self.forward is not None:
            self.forward(signum)
        elif not self._deferred:
            raise SweepInterrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Within it, a first signal is only recorded (``received``, :func:`pending_signal`): the code
        inside stops at its own safe points. For code that imports torch and Lightning (the
        pre-launch check): an exception raised by the handler in the middle of their native
        initialisation can abort the process (SIGABRT, seen once in the test suite under load:
        tests/test_sweep_guards.py) instead of unwinding it."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self.received = None
        for name in NAMES:
            number = getattr(signal, name)
            if name == "SIGHUP" and signal.getsignal(number) == signal.SIG_IGN:
                continue  # nohup
            self._previous[number] = signal.signal(number, self._handle)

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()
        self.forward = None


SWEEP_SIGNALS = SweepSignals()


def pending_signal() -> int | None:
    """The stop signal this process has received and not yet acted on, if any: the sweeping
    process's (:data:`SWEEP_SIGNALS`) or a running job's (``expkit.callbacks.STOP_SIGNALS``).
    Whatever fails while one is pending failed because of it (an import cut short by the handler's
    exception leaves a half-initialized module behind): the signal, not the error, is the outcome."""
    if SWEEP_SIGNALS.received is not None:
        return SWEEP_SIGNALS.received
    callbacks = sys.modules.get("expkit.callbacks")  # not imported here: it imports Lightning
    return getattr(getattr(callbacks, "STOP_SIGNALS", None), "received", None)


class WorkerSignals:
    """A worker process's side (``launcher=parallel``): it never outlives the sweeping process, and
    starts no job once the sweep stops. Kept in this module, which a worker imports once, rather
    than in the launcher's (Hydra loads plugins without registering them in ``sys.modules``, so a
    worker may hold two copies of that one)."""

    def __init__(self) -> None:
        self.parent: int | None = None
        self.stopping: Any = None  # a multiprocessing Event the sweeping process sets when the sweep stops

    def setup(self, parent: int, stopping: Any) -> None:
        """In the worker, first: the kernel sends it SIGTERM when the sweeping process ``parent``
        dies (Linux: ``prctl(PR_SET_PDEATHSIG)``; its job, if any, stops as on any SIGTERM), and
        between jobs it takes :data:`NAMES` itself (the sweeping process passes them on)."""
        self.parent, self.stopping = parent, stopping
        if sys.platform == "linux":
            import ctypes

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        self.take_signals()
        self.exit_if_orphaned()  # the parent died before prctl

    def take_signals(self) -> None:
        """Handle :data:`NAMES` with this worker's handler: at the start, and after each job (a job
        may leave another one behind: Lightning's, which ``StopSignals`` saved as its previous)."""
        for name in NAMES:
            signal.signal(getattr(signal, name), self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.exit_if_orphaned(signum)

    def exit_if_orphaned(self, signum: int = signal.SIGTERM) -> None:
        """End this worker when the sweeping process is gone: no one waits for its jobs."""
        if os.getppid() != self.parent:
            os._exit(128 + signum)

    def may_start_job(self) -> bool:
        return not self.stopping.is_set()


WORKER_SIGNALS = WorkerSignals()
