"""A command's start-up without the garbage collector's passes over the import graph.

Importing torch, Lightning and W&B creates millions of long-lived objects, and on the way CPython's
full (generation-2) collections scan all of them again and again while freeing almost nothing:
about 0.5 s of every run's start-up on the benchmark machine (``benchmarks/``). So a single run
starts with collection paused (``paused_collection``, around the whole command; a multirun's
process lives as long as its sweep and is left alone). Once the run's
long-lived objects exist (``started``, called just before Lightning fits, tests or predicts), they
move to the permanent generation with ``gc.freeze()``, which later collections skip, and
collection resumes: the pattern the ``gc.freeze`` documentation gives for long-lived processes.
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
