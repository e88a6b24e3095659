"""Step timestamps every benchmarked process writes the same way (no torch import here).

The runner passes ``BENCH_T0`` (its ``time.time()`` just before starting the process) and
``BENCH_OUT`` (where this process writes its JSON); the runner derives every metric from the raw
timestamps, so the three variants are measured by one piece of code.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class StepClock:
    """Wall-clock timestamps (``time.time()``, comparable across processes) of each training step,
    and the process's CPU time (``time.process_time()``) at its end: on a loaded machine CPU time
    stays comparable where wall time does not."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, float, float, float]] = []  # (epoch, start, end, CPU time at end)
        self.extra: dict = {}
        self._start: float | None = None

    def start(self) -> None:
        self._start = time.time()

    def end(self, epoch: int) -> None:
        end = time.time()
        self.steps.append((epoch, self._start if self._start is not None else end, end, time.process_time()))
        self._start = None

    def write(self, path: str | os.PathLike | None = None) -> Path | None:
        path = path or os.environ.get("BENCH_OUT")
        if not path:
            return None
        data = {"t0": float(os.environ.get("BENCH_T0", "nan")), "written_at": time.time(),
                "steps": self.steps, **self.extra}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
        return path
