"""A command's start-up without the garbage collector's passes over the import graph.

Importing torch, Lightning and W&B creates millions of long-lived objects, and on the way CPython's
full (generation-2) collections scan all of them again and again while freeing almost nothing:
about 0.5 s of every run's start-up on the benchmark machine (``benchmarks/``). So start-up runs
with collection paused (``paused_collection``). Once the long-lived objects exist (``started``),
they move to the permanent generation with ``gc.freeze()``, which later collections skip, and
collection resumes: the pattern the ``gc.freeze`` documentation gives for long-lived processes.

- A single run pauses around the whole command and calls ``started`` just before Lightning fits,
  tests or predicts.
- A multirun's process lives as long as its sweep (waiting on SLURM, asking Optuna) and collects as
  usual, except while its pre-launch check validates the first job, which imports torch and
  Lightning (``expkit.config.validate.validate_sweep``); their objects are frozen after it. The
  sweep's later collections skip them, so do the collections of the parallel launcher's forked
  workers, which therefore never copy the pages they lie on, and so does the interpreter's last
  collection at exit (about 1 s of a sweep's end on the benchmark machine).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_paused = False  # True while this module, not the user, holds the collector off


@contextmanager
def paused_collection() -> Iterator[None]:
    """Pause the garbage collector until ``started()`` or the end of the block, whichever is first.
    A no-op where collection is already off or paused."""
    global _paused
    if _paused or not gc.isenabled():
        yield
        return
    gc.disable()
    _paused = True
    try:
        yield
    finally:
        if _paused:
            _paused = False
            gc.enable()


def started() -> None:
    """The run's long-lived objects exist: freeze them out of future collections and resume
    collecting. Does nothing unless ``paused_collection`` paused it."""
    global _paused
    if _paused:
        gc.freeze()
        _paused = False
        gc.enable()
