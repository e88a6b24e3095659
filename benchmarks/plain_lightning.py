"""(b) Plain Lightning: a minimal LightningModule and ``Trainer.fit``, no framework around it.

    python benchmarks/plain_lightning.py --workload '<json>' [--device cuda] [--compile] [--wandb DIR]

Same network, data, batch size, epochs, optimizer, schedule and seed as ``train.py``; the
trainer has no logger, checkpointing, progress bar or model summary (Lightning's own floor). It
is timed by the same ``StepTimer`` callback that is injected into ``train.py``. ``--wandb DIR``
adds what a plain Lightning user who tracks with W&B writes: ``WandbLogger`` (offline, in DIR)
and the hyperparameters logged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` from any cwd

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from benchmarks.timing import StepTimer  # noqa: E402
from benchmarks.workloads import WEIGHT_DECAY, Workload, arrays, build_net, num_outputs  # noqa: E402


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Every position one prediction: ``(..., classes)`` logits against ``(...)`` labels."""
    return F.cross_entropy(logits.flatten(0, -2), y.flatten())


class PlainClassifier(pl.LightningModule):
    """Classification of samples, or of every position (the language model: next characters)."""

    def __init__(self, net: torch.nn.Module, epochs: int, lr: float) -> None:
        super().__init__()
        self.net = net
        self.epochs = epochs
        self.lr = lr

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def _eval_step(self, batch, stage):
        x, y = batch
        logits = self(x)
        self.log(f"{stage}_loss", cross_entropy(logits, y))
        self.log(f"{stage}_acc", (logits.argmax(-1) == y).float().mean())

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=WEIGHT_DECAY)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs)]


def build(w: Workload, device: str = "cpu", callbacks: list | None = None, logger=False):
    """Plain Lightning's module, trainer and loaders (``train``, ``val``, ``test``) for ``w``."""
    cuda = device == "cuda"
    splits = arrays(w)
    data = {s: TensorDataset(torch.as_tensor(x), torch.as_tensor(y)) for s, (x, y) in splits.items()}
    model = PlainClassifier(build_net(w, tuple(splits["train"][0].shape[1:]), num_outputs(w)), w.epochs, w.lr)
    trainer = pl.Trainer(
        accelerator="gpu" if cuda else "cpu", devices=1, precision="bf16-mixed" if cuda else "32-true",
        max_epochs=w.epochs, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, benchmark=cuda or None, callbacks=callbacks or [],
    )
    loaders = {"train": DataLoader(data["train"], batch_size=w.batch_size, shuffle=True, pin_memory=cuda,
                                   generator=torch.Generator().manual_seed(w.seed))}
    loaders.update({s: DataLoader(data[s], batch_size=w.batch_size) for s in ("val", "test")})
    return model, trainer, loaders


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True, help="a Workload as JSON")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--wandb", metavar="DIR", help="log to W&B (offline) under DIR")
    args = p.parse_args()
    w = Workload(**json.loads(args.workload))
    pl.seed_everything(w.seed, verbose=False)
    logger = False
    if args.wandb:
        from pytorch_lightning.loggers import WandbLogger

        Path(args.wandb).mkdir(parents=True, exist_ok=True)
        logger = WandbLogger(project="expkit-bench", save_dir=args.wandb, offline=True)
        logger.log_hyperparams(w.to_dict())
    model, trainer, loaders = build(w, args.device, [StepTimer(channels_last=args.channels_last, compile=args.compile)], logger)
    trainer.fit(model, loaders["train"], loaders["val"])
    trainer.test(model, loaders["test"], verbose=False)


if __name__ == "__main__":
    main()
