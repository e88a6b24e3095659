"""A classifier LightningModule: a network, cross-entropy, torchmetrics accuracy, an optimizer.

It logs ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``test/loss`` and ``test/acc``.
Outputs may carry extra dimensions before the classes (per-token logits ``(batch, time, classes)``
against labels ``(batch, time)``): every position is one prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from expkit.callbacks import ends_epoch

LOSS, ACCURACY = "loss", "acc"
EVAL_STAGES = ("val", "test")
TRAIN_SUM_EVERY = 50  # training steps whose losses and predictions are kept before they are summed


class Classifier(pl.LightningModule):
    """Multiclass classification with cross-entropy.

    Args:
        net: partial network constructor; called with ``input_shape`` and ``num_outputs``.
        optimizer: partial optimizer; called with the parameters.
        scheduler: partial LR scheduler or ``None``; called with the optimizer.
        input_shape: shape of one sample (from the data's ``sizes``, see ``expkit.build``).
        num_classes: number of classes (from the data's ``sizes``).
        scheduler_monitor: metric a ``ReduceLROnPlateau`` scheduler watches.
    """

    def __init__(
        self,
        net: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        input_shape: Sequence[int],
        num_classes: int,
        scheduler: Callable[..., Any] | None = None,
        scheduler_monitor: str = f"val/{LOSS}",
    ) -> None:
        super().__init__()
        # Shapes go into the checkpoint as plain data (Hydra passes a list config); the partials are
        # rebuilt from the run's recorded config.
        input_shape, num_classes = tuple(int(d) for d in input_shape), int(num_classes)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net(input_shape=tuple(input_shape), num_outputs=num_classes)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # Validation and test: torchmetrics, computed at the epoch's end (and synced across ranks).
        # Keys "val"/"test" would clash with nn.Module methods, hence the suffix.
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_metrics": MetricCollection(
                    # validate_args=False: the datamodule checks labels once; the per-batch checks cost
                    # host time and, on a GPU, a synchronisation every step.
                    {ACCURACY: MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=False)},
                    prefix=f"{stage}/",
                )
                for stage in EVAL_STAGES
            }
        )
        # Training: the unsummed steps, and running sums on the device (see _accumulate_train_metrics).
        self._train_pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._train_sums: torch.Tensor | None = None
        self._train_count = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @staticmethod
    def _flat(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every position one prediction: ``(..., classes)`` logits against ``(...)`` labels."""
        return (logits.reshape(-1, logits.shape[-1]), y.reshape(-1)) if logits.ndim > 2 else (logits, y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits, y = self._flat(self(x), y)
        loss = F.cross_entropy(logits, y)
        self._accumulate_train_metrics(logits, y, loss)
        return loss

    def _accumulate_train_metrics(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        """Keep the batch's loss, predictions and labels for the epoch's loss and accuracy.

        A training step is the hot loop, and on a GPU a small model's step is bound by the host:
        every device operation a step launches costs host time. The ``self.log`` and torchmetrics
        ``update`` calls a step would otherwise make cost about 0.8 ms of host work (a quarter of
        a small MLP's step on a CPU, measured by ``benchmarks/run.py``); adding to running sums
        costs five launches. Here a step launches one (the argmax) and keeps references; every
        ``TRAIN_SUM_EVERY`` steps and at the epoch's end they are summed in a few launches, never
        synchronising with a GPU. Logged once at the epoch's last batch (``on_train_batch_end``):
        the sample-weighted mean loss and the micro accuracy of the epoch, as epoch-level logging gives.
        """
        self._train_pending.append((loss.detach(), logits.detach().argmax(dim=-1), y))
        if len(self._train_pending) >= TRAIN_SUM_EVERY:
            self._sum_pending_train_steps()

    def _sum_pending_train_steps(self) -> None:
        if not self._train_pending:
            return
        losses, predictions, targets = zip(*self._train_pending, strict=True)
        self._train_pending = []
        by_size: dict[int, list[torch.Tensor]] = {}  # mean losses, grouped by batch size (the last batch is smaller)
        for loss, target in zip(losses, targets, strict=True):
            by_size.setdefault(len(target), []).append(loss)
        with torch.no_grad():
            loss_sum = sum(torch.stack(group).sum() * size for size, group in by_size.items())
            correct = (torch.cat(predictions) == torch.cat(targets)).sum()
            sums = torch.stack([loss_sum.float(), correct.float()])
            self._train_sums = sums if self._train_sums is None or self._train_sums.device != sums.device else self._train_sums + sums
        self._train_count += sum(len(t) for t in targets)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if ends_epoch(self.trainer, batch_idx):  # not in on_train_epoch_end: every callback's epoch end sees it
            self._log_train_metrics()

    def on_train_epoch_end(self) -> None:
        self._log_train_metrics()  # an epoch that ended early (should_stop mid-epoch); no-op otherwise

    def _log_train_metrics(self) -> None:
        self._sum_pending_train_steps()
        if self._train_sums is None or not self._train_count:
            return
        local_count = self._train_count
        sums = torch.cat([self._train_sums, self._train_sums.new_tensor([local_count])])
        loss_sum, correct, count = self.trainer.strategy.reduce(sums, reduce_op="sum")  # over all ranks
        for name, value in ((LOSS, loss_sum / count), (ACCURACY, correct / count)):
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=local_count)
        self._train_sums.zero_()
        self._train_count = 0

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, stage: str) -> None:
        x, y = batch
        logits, y = self._flat(self(x), y)
        metrics = self.metrics[f"{stage}_metrics"]
        first_batch = batch_idx == 0 or not any(m.update_called for m in metrics.values(copy_state=False))
        metrics.update(logits, y)
        # Epoch-level only; sync_dist averages the loss across ranks, torchmetrics syncs itself.
        self.log(f"{stage}/{LOSS}", F.cross_entropy(logits, y), on_step=False, on_epoch=True,
                 batch_size=len(y), prog_bar=True, sync_dist=True)
        if first_batch:
            # Lightning keeps the metric objects, computes them at the epoch's end and resets them:
            # handing them over once an epoch gives the same values as every step, without the
            # ~0.15 ms of host work each log_dict call costs.
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, batch_idx, "test")

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(dim=-1)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if not self.scheduler_factory:  # null, or the empty model/scheduler=none
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.scheduler_monitor, "interval": "epoch"},
        }
