"""The device operations a training step runs: plain Lightning (b) against expkit (c), counted.

    python benchmarks/ops.py                  # MLP on digits (CPU workload: batch 32), steps 10-29 of the first epoch
    python benchmarks/ops.py char_lm_text     # another workload of benchmarks/workloads.py

On a GPU a small model's step is bound by the host: every operation a step launches costs host
time (dispatch and a kernel launch), whatever the kernel does. Timings on a shared machine vary
by 20-30%; this count does not vary at all, so a test holds it (``tests/test_benchmarks.py``: c
runs no more operations per step than b). Counted on the CPU, with a ``TorchDispatchMode``: every
ATen operation that is not a view (a view launches nothing). Work done once every N steps (the
training metrics' sums, the NaN check) falls outside the window and is amortised over N.
"""

from __future__ import annotations

import collections
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

FIRST_STEP, STEPS = 10, 20  # the counted window: clear of warm-up and of the first epoch's end
WINDOWS = {"char_lm_text": (3, 10)}  # (first step, steps) of workloads with under 30 steps an epoch (17)


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


class OpCounter(pl.Callback):
    """Count the non-view ATen operations run from the start of training step ``first`` of the
    first epoch to the start of step ``first + steps``: whole steps, hooks and data included."""

    def __init__(self, first: int = FIRST_STEP, steps: int = STEPS) -> None:
        self.first, self.steps = first, steps
        self.ops: collections.Counter[str] | None = None
        self._mode: _Count | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.first:
            self._mode = _Count()
            self._mode.__enter__()
        elif self._mode is not None and batch_idx == self.first + self.steps:
            self._mode.__exit__(None, None, None)
            self.ops, self._mode = self._mode.ops, None

    def per_step(self) -> float:
        if self.ops is None:
            raise RuntimeError(f"the window (steps {self.first}-{self.first + self.steps - 1}) was not reached")
        return sum(self.ops.values()) / self.steps


def plain_lightning_ops(workload: str = "mlp_digits") -> OpCounter:
    """(b): ``plain_lightning.py``'s module, trainer and data, on ``workload`` (the MLP on digits)."""
    from benchmarks.plain_lightning import build
    from benchmarks.workloads import workloads

    w = workloads(quick=True)[workload]
    counter = OpCounter(*WINDOWS.get(workload, (FIRST_STEP, STEPS)))
    model, trainer, loaders = build(w, callbacks=[counter])
    trainer.fit(model, loaders["train"], loaders["val"])
    return counter


def expkit_ops(workload: str = "mlp_digits") -> OpCounter:
    """(c): what ``train.py`` builds (expkit's module, datamodule, default callbacks and trainer) for
    the same workload, fitted in this process, without a logger (W&B launches nothing on the device)."""
    from benchmarks.workloads import workloads
    from expkit.build import (
        build_callbacks,
        build_datamodule,
        build_model,
        build_trainer,
        data_sizes,
    )
    from expkit.config.compose import compose

    w = workloads(quick=True)[workload]
    cfg = compose("train", [*w.train_overrides(), "trainer.accelerator=cpu", "logger=none"])
    datamodule = build_datamodule(cfg.data)
    model = build_model(cfg.model, data_sizes(datamodule))
    run_dir = Path(tempfile.mkdtemp())
    counter = OpCounter(*WINDOWS.get(workload, (FIRST_STEP, STEPS)))
    trainer = build_trainer(cfg.trainer, None, run_dir, callbacks=[*build_callbacks(cfg.callbacks, run_dir), counter])
    trainer.fit(model, datamodule=datamodule)
    return counter


def main() -> None:
    workload = sys.argv[1] if len(sys.argv) > 1 else "mlp_digits"
    b, c = plain_lightning_ops(workload), expkit_ops(workload)
    print(f"operations per training step: b (plain Lightning) {b.per_step():.1f}, c (expkit) {c.per_step():.1f}")
    for name in sorted(set(b.ops) | set(c.ops), key=lambda k: -(b.ops[k] + c.ops[k])):
        print(f"  {b.ops[name] / b.steps:6.2f} {c.ops[name] / c.steps:6.2f}  {name}")


if __name__ == "__main__":
    main()
