"""The device operations a training step runs: plain Lightning (b) against expkit (c), counted.

    python benchmarks/ops.py            # MLP on digits, batch 32, steps 10-29 of the first epoch

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
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

FIRST_STEP, STEPS = 10, 20  # the counted window: clear of warm-up and of the first epoch's end


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


def plain_lightning_ops(batch_size: int = 32) -> OpCounter:
    """(b): ``plain_lightning.py``'s module and trainer, on the MLP digits workload."""
    from torch.utils.data import DataLoader, TensorDataset

    from benchmarks.plain_lightning import PlainClassifier
    from benchmarks.workloads import arrays, build_net, num_classes, workloads

    w = workloads()["mlp_digits"]
    splits = arrays(w)
    data = {s: TensorDataset(torch.as_tensor(x), torch.as_tensor(y)) for s, (x, y) in splits.items()}
    model = PlainClassifier(build_net(w, tuple(splits["train"][0].shape[1:]), num_classes(w)), 1)
    counter = OpCounter()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[counter],
                         default_root_dir=tempfile.mkdtemp())
    trainer.fit(model, DataLoader(data["train"], batch_size=batch_size, shuffle=True),
                DataLoader(data["val"], batch_size=batch_size))
    return counter


def expkit_ops(batch_size: int = 32, overrides: tuple[str, ...] = ()) -> OpCounter:
    """(c): what ``train.py`` builds (expkit's module, datamodule, default callbacks and trainer),
    fitted in this process, without a logger (W&B launches nothing on the device)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import expkit.resolvers  # noqa: F401
    from expkit.paths import config_dir
    from expkit.tasks.common import build_callbacks, build_trainer

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["model=mlp", "data=digits", "trainer.accelerator=cpu", "trainer.max_epochs=1",
                                          "logger=none", f"data.batch_size={batch_size}", *overrides])
    datamodule = instantiate(cfg.data)
    spec = datamodule.spec
    model = instantiate(cfg.model, input_shape=spec.input_shape, num_classes=spec.num_classes, _convert_="all")
    run_dir = Path(tempfile.mkdtemp())
    counter = OpCounter()
    trainer = build_trainer(cfg, run_dir, callbacks=[*build_callbacks(cfg.callbacks, run_dir), counter])
    trainer.fit(model, datamodule=datamodule)
    return counter


def main() -> None:
    b, c = plain_lightning_ops(), expkit_ops()
    print(f"operations per training step: b (plain Lightning) {b.per_step():.1f}, c (expkit) {c.per_step():.1f}")
    for name in sorted(set(b.ops) | set(c.ops), key=lambda k: -(b.ops[k] + c.ops[k])):
        print(f"  {b.ops[name] / b.steps:6.2f} {c.ops[name] / c.steps:6.2f}  {name}")


if __name__ == "__main__":
    main()
